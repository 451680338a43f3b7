"""Hardening checks over HTTP that tests/test_app_server.py does not make: rate limits per reviewer and per
address (and no way around them with a forged X-Forwarded-For), every admin handler in the app's config refused
without the password, hostile strings (path traversal, NUL, SQL) in every string parameter of every handler
refused without reading or writing outside the data folder or changing the schema, and blinding of every
response a reviewer gets before voting."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import re
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_review import PRESETS, launched, make_services
from PIL import Image
from starlette.datastructures import Headers
from test_app_server import Api, image_urls

from review.images import png_has_metadata
from review.study.services import AppConfig, client_address
from review.study.trials import StudyConfig

PASSWORD = "s3cret-admin"
LIMITS = StudyConfig(gold_rate=0.0, vote_burst=2, vote_per_s=0.0, address_burst=12, address_per_s=0.0,
                     trial_burst=3, trial_per_s=0.0, admin_burst=1000, admin_per_s=1000.0)
PUBLIC = {"open_page", "next_pair", "vote", "tick", "load"}  # review and leaderboard handlers (no password)
SQL = ["'; DROP TABLE votes;--", "x' OR '1'='1", 'a"); DELETE FROM trials; --']
_addresses = (f"10.9.{i // 250}.{i % 250 + 1}" for i in itertools.count())


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    outside = root / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text(f"TOKEN-{secrets.token_hex(8)}")
    services = make_services(root / "study", password=PASSWORD, study=LIMITS)
    services.config = dataclasses.replace(services.config, trust_proxy=True)
    jobs: list[Any] = []

    def run_job(job, progress):  # stores the job's strings through the real store, as PairRunner would
        face = services.store.list_pairs()[0]["face_id"]
        plan = job.submission
        row = services.store.upsert_condition(face_id=face, prompt=plan.prompt, seed=plan.seeds[0], stack="tiny",
                                              **plan.settings.as_dict())
        jobs.append((job, row))
        return [{"pair_id": row["id"], "preset": plan.presets[0], "seed": plan.seeds[0]}]

    services.run_job = run_job
    with launched(services) as base:  # uvicorn reads no proxy headers (review.ui.serving): one reader, ours
        yield base, services, jobs, root, secret


def client(base: str, address: str | None = None) -> Api:
    """An Api whose requests carry ``X-Forwarded-For: address`` (a fresh one unless given)."""
    api = Api(base)
    api.http.headers["x-forwarded-for"] = address or next(_addresses)
    return api


def session() -> str:
    return secrets.token_hex(6)


def db_state(services) -> tuple[list[tuple], dict[str, int]]:
    """(schema rows, row count per table) read through a separate read-only connection."""
    with sqlite3.connect(f"file:{services.store.path}?mode=ro", uri=True) as conn:
        schema = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        tables = [r[1] for r in schema if r[0] == "table"]
        return schema, {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def tree(folder: Path, skip: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*")
            if p.is_file() and skip not in p.parents}


# -- rate limits ------------------------------------------------------------------------------------------------
def test_votes_are_limited_per_reviewer_across_sessions_and_addresses(app):
    base, services, _, _, _ = app
    api, me = client(base), session()
    page = api.open_page(me)
    reviewer, card = page["browserstate"], page["review-card"]
    for _ in range(2):
        assert api.vote(me, card["trial"], "left")[0]
        ok, card = api.next(me)
        assert ok
    ok, error = api.vote(me, card["trial"], "left")
    assert not ok and "Too many votes" in error
    other, again = client(base), session()  # the same reviewer id from another tab and address
    page = other.open_page(again, reviewer=reviewer)
    assert page["browserstate"] == reviewer
    trial = page["review-card"]["trial"]
    ok, error = other.vote(again, trial, "right")
    assert not ok and "Too many votes" in error
    stranger = client(base)  # another reviewer is not affected
    assert stranger.open_page(session())["browserstate"] != reviewer
    assert services.store.get_vote(card["trial"]) is None and services.store.get_vote(trial) is None


def test_votes_keep_only_a_salted_hash_of_the_client_address(app):
    base, services, _, _, _ = app
    address, me = "10.8.0.1", session()
    api = client(base, address)
    trial = api.open(me)["trial"]
    assert api.vote(me, trial, "same")[0]
    stored = services.store.get_vote(trial)["client"]
    assert stored == services.client_tag(address) and re.fullmatch(r"[0-9a-f]{16}", stored)
    assert stored != hashlib.sha256(address.encode()).hexdigest()[:16]  # salted: not the bare address hash


def test_requests_and_new_pairs_are_limited_per_address(app):
    base, _, _, _, _ = app
    api, me = client(base), session()
    api.open(me)  # 1 request, 1 new pair
    results = [api.call("next_pair", ["preference"], me) for _ in range(LIMITS.address_burst)]
    assert all(ok for ok, _ in results[:-1])
    assert not results[-1][0] and "Too many requests" in results[-1][1]
    fresh = client(base)  # another address still gets pairs, up to its own new-pair limit
    for _ in range(LIMITS.trial_burst):
        fresh.open(session())
    ok, error = fresh.call("open_page", ["", "preference", ""], session())
    assert not ok and "Too many new pairs" in error


def test_a_forged_forwarded_for_does_not_escape_the_limit_without_a_trusted_proxy(app):
    base, services, _, _, _ = app
    kept = services.config
    services.config = dataclasses.replace(kept, trust_proxy=False)
    try:
        api, me = client(base), session()
        api.open(me)
        results = []
        for _ in range(LIMITS.address_burst):
            api.http.headers["x-forwarded-for"] = next(_addresses)  # a new claimed address every call
            results.append(api.call("next_pair", ["preference"], me))
    finally:
        services.config = kept
    assert not results[-1][0] and "Too many requests" in results[-1][1]


def test_a_client_written_forwarded_for_entry_does_not_escape_the_limit_behind_a_proxy(app):
    base, _, _, _, _ = app
    api, me = client(base), session()
    real = next(_addresses)
    api.http.headers["x-forwarded-for"] = f"{next(_addresses)}, {real}"
    api.open(me)
    results = []
    for _ in range(LIMITS.address_burst):  # the proxy appends the real peer; the client forges the first entry
        api.http.headers["x-forwarded-for"] = f"{next(_addresses)}, {real}"
        results.append(api.call("next_pair", ["preference"], me))
    assert not results[-1][0] and "Too many requests" in results[-1][1]


def test_uvicorns_proxy_headers_let_the_client_pick_its_address_unless_the_proxy_addresses_are_known():
    """Why ``client_address`` and not uvicorn's ProxyHeadersMiddleware (docs/hardening.md): the Spaces proxy's
    addresses are not published, and trusting every peer ("*") makes uvicorn take the left-most entry, which
    the client wrote; counting trusted hops from the right needs no addresses."""
    import asyncio

    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    header, seen = b"6.6.6.6, 203.0.113.9", []  # the client forged 6.6.6.6; the proxy appended 203.0.113.9

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    def uvicorn_client(trusted: str) -> str:
        scope = {"type": "http", "client": ("10.1.2.3", 443), "headers": [(b"x-forwarded-for", header)]}
        asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))
        return seen[-1]

    assert uvicorn_client("*") == "6.6.6.6"  # the client's own pick
    assert uvicorn_client("10.0.0.0/8") == "203.0.113.9"  # right only with the proxy's network known
    assert client_address(Headers(raw=[(b"x-forwarded-for", header)]), "10.1.2.3", True, 1) == "203.0.113.9"


@pytest.mark.parametrize(("lines", "hops", "expected"), [
    (["203.0.113.9"], 1, "203.0.113.9"),
    (["6.6.6.6, 203.0.113.9"], 1, "203.0.113.9"),  # the client wrote the first entry, the proxy appended
    (["6.6.6.6", "203.0.113.9"], 1, "203.0.113.9"),  # the same as two header lines
    (["6.6.6.6, 203.0.113.9, 10.0.0.2"], 2, "203.0.113.9"),  # two trusted proxies
    (["203.0.113.9"], 2, "203.0.113.9"),  # fewer entries than hops: all proxy-written, the left-most
    ([" , 203.0.113.9 ,"], 1, "203.0.113.9"),
    ([""], 1, "192.0.2.7"),  # nothing usable: the socket peer
])
def test_the_client_address_is_the_entry_the_trusted_proxy_wrote(lines, hops, expected):
    headers = Headers(raw=[(b"x-forwarded-for", line.encode()) for line in lines])
    assert client_address(headers, "192.0.2.7", True, hops) == expected
    assert client_address(headers, "192.0.2.7", False, hops) == "192.0.2.7"  # proxy not trusted
    # Gradio's dict-backed headers: one line; a header named "getlist" is a value, not a method
    plain = {"x-forwarded-for": ", ".join(lines), "getlist": "x"}
    assert client_address(plain, "192.0.2.7", True, hops) == expected
    with pytest.raises(ValueError, match="proxy_hops"):
        AppConfig(proxy_hops=0)


def test_a_stored_vote_is_acknowledged_even_when_the_next_pair_is_refused(app):
    base, services, _, _, _ = app
    api, me = client(base), session()
    trial = api.open(me)["trial"]
    for _ in range(LIMITS.trial_burst - 1):  # other tabs behind the same address use up its new pairs
        api.open(session())
    ok, card = api.vote(me, trial, "left")  # stored; the next pair is refused: said instead of a pair
    assert ok and services.store.get_vote(trial)["choice"] == "left"
    assert card["trial"] == "" and "Too many new pairs" in card["progress"]


# -- admin handlers ---------------------------------------------------------------------------------------------
ADMIN_TABS = ("Generate", "Export")


def app_config(api: Api) -> tuple[list[dict], dict[int, dict], dict[int, str]]:
    """(dependencies with a server function, components by id, component id -> label of its tab)."""
    config = api.http.get("config").json()
    components = {c["id"]: c for c in config["components"]}
    tabs: dict[int, str] = {}

    def walk(node: dict, tab: str | None) -> None:
        component = components.get(node["id"], {})
        if component.get("type") == "tabitem":
            tab = component["props"].get("label")
        if tab:
            tabs[node["id"]] = tab
        for child in node.get("children") or []:
            walk(child, tab)

    walk(config["layout"], None)
    return [d for d in config["dependencies"] if d.get("backend_fn")], components, tabs


def in_admin_tab(dep: dict, tabs: dict[int, str]) -> bool:
    ids = [*dep["inputs"], *dep["outputs"], *(target for target, _ in dep.get("targets") or [])]
    return any(tabs.get(i) in ADMIN_TABS for i in ids)


def asks_password(dep: dict, components: dict[int, dict]) -> bool:
    return any(components[i]["props"].get("label") == "Admin password" for i in dep["inputs"])


def defaults(dep: dict, components: dict[int, dict], password: Any) -> list[Any]:
    """A plausible value per input: the component's initial value; ``password`` where the admin password goes."""
    return [password if components[i]["props"].get("label") == "Admin password" else components[i]["props"].get("value")
            for i in dep["inputs"]]


def test_every_handler_of_the_admin_tabs_asks_for_the_password(app):
    base, _, _, _, _ = app
    deps, components, tabs = app_config(client(base))
    admin = [d for d in deps if in_admin_tab(d, tabs)]
    assert {re.sub(r"_\d+$", "", d["api_name"]) for d in admin} >= {"unlock", "generate", "prepare"}
    assert [d["api_name"] for d in admin if not asks_password(d, components)] == []
    assert not any(asks_password(d, components) for d in deps if not in_admin_tab(d, tabs))


@pytest.mark.parametrize("password", ["", "wrong", PASSWORD.upper(), PASSWORD + "\x00", None, 0, [PASSWORD]])
def test_every_admin_fn_index_refuses_without_the_password(app, password):
    base, services, jobs, _, _ = app
    api = client(base)
    deps, components, tabs = app_config(api)
    before = db_state(services)
    admin = [d for d in deps if in_admin_tab(d, tabs)]
    for dep in admin:
        ok, error = api.call(dep["api_name"], defaults(dep, components, password), session())
        assert not ok and "admin password" in error.lower(), (dep["api_name"], error)
    assert len(admin) >= 4 and jobs == [] and db_state(services) == before
    assert not any(services.dirs.exports.iterdir())


# -- hostile strings -------------------------------------------------------------------------------------------
def hostile(secret: Path, data_root: Path) -> list[str]:
    relative = Path("..") / ".." / secret.parent.name / secret.name
    return ["../../etc/passwd", "/etc/passwd", str(secret), str(relative), f"../{relative}",
            f"{data_root}/../{secret.parent.name}/{secret.name}", f"x\x00{secret}", *SQL]


def test_hostile_strings_in_every_parameter_are_refused_and_touch_nothing_outside(app):
    base, services, jobs, root, secret = app
    token, schema_before = secret.read_text(), db_state(services)[0]
    votes_before = db_state(services)[1]["votes"]
    outside_before = tree(root, services.dirs.root)
    deps, components, _ = app_config(client(base))
    handlers = {re.sub(r"_\d+$", "", d["api_name"]): d for d in deps}
    api, tried = client(base), 0
    for name, dep in handlers.items():
        for slot, component in enumerate(dep["inputs"]):
            if components[component]["type"] not in ("textbox", "radio", "dropdown", "browserstate", "image", "number"):
                continue
            for value in hostile(secret, services.dirs.root):
                api.http.headers["x-forwarded-for"] = next(_addresses)
                me, data, event = session(), defaults(dep, components, PASSWORD), None
                if name == "vote":  # a live trial of a fresh reviewer, so the checks run past session and limits
                    event = {"trial": api.open(me)["trial"], "choice": "left", "shown_ms": -1}
                bad = {"path": value, "meta": {"_type": "gradio.FileData"}} if components[component]["type"] == "image" \
                    else value
                data[slot] = [bad] if components[component]["props"].get("multiselect") else bad
                ok, output = api.call(dep["api_name"], data, me, event)
                tried += 1
                assert token not in json.dumps(output), (name, slot, value)
                if name in ("vote", "unlock", "generate", "prepare"):
                    assert not ok, (name, slot, value, output)
    odd = {"trial": [None, 7, [], {"trial": "x"}], "choice": [None, 7, [], {"choice": "left"}],
           "shown_ms": [True, [], {"ms": 1}]}  # shown_ms may be a number or absent (None)
    for key in ("trial", "choice", "shown_ms"):  # the vote's event data: what the trial card sends
        for value in [*hostile(secret, services.dirs.root), *odd[key]]:
            api.http.headers["x-forwarded-for"] = next(_addresses)
            me = session()
            event = {"trial": api.open(me)["trial"], "choice": "left", "shown_ms": -1, key: value}
            ok, output = api.call("vote", ["preference"], me, event)
            tried += 1
            assert not ok and token not in json.dumps(output), (key, value, output)
    for event in (None, "left", [1, 2], 3):  # not a data object at all: refused in words
        api.http.headers["x-forwarded-for"] = next(_addresses)
        me = session()
        api.open(me)
        ok, output = api.call("vote", ["preference"], me, event)
        assert not ok and "Unknown trial" in output, (event, output)
    for value in hostile(secret, services.dirs.root):  # the session hash is a request value too
        ok, output = api.call("open_page", ["", "preference", ""], value)
        assert token not in json.dumps(output)
        tried += 1
    assert tried > 100
    schema, counts = db_state(services)
    assert schema == schema_before and counts["votes"] == votes_before and jobs == []
    assert tree(root, services.dirs.root) == outside_before and secret.read_text() == token
    assert not any(services.dirs.exports.iterdir())


def test_file_routes_serve_nothing_outside_gradios_cache(app):
    base, services, _, _, secret = app
    api, token = client(base), secret.read_text()
    root = services.dirs.root
    for path in (str(secret), "/etc/passwd", "../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                 f"{root}/../{secret.parent.name}/{secret.name}", f"{root}/exports", f"{root}/serve", f"{root}/images",
                 str(services.store.path),
                 f"{root}/serve/../study.db", "app.py", "/proc/self/environ"):
        response = api.http.get(f"gradio_api/file={path}")
        assert response.status_code in (403, 404), path
        assert token not in response.text
    # the review images' own route answers only the names it handed out (never a stored file's own name)
    served = services.served.add(services.dirs.images / services.store.list_pairs()[0]["full_file"])
    assert api.http.get(f"review-image/{served}").status_code == 200
    stored = [p.name for p in services.dirs.images.iterdir()] + [p.name for p in services.dirs.faces.iterdir()]
    for name in (*stored, "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", secret.name, "%00.png", "a" * 32 + ".png"):
        response = api.http.get(f"review-image/{name}")
        assert response.status_code == 404, name
        assert token not in response.text


def test_sql_text_is_stored_verbatim_and_changes_no_schema(app, tmp_path):
    base, services, jobs, _, _ = app
    api = client(base)
    schema, counts = db_state(services)
    me = SQL[0] + secrets.token_hex(4)  # the session hash itself
    opened = api.open(me)
    assert services.store.get_trial(opened["trial"])["session"] == me
    face = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(face)
    uploaded = api.http.post("gradio_api/upload", files={"files": ("face.png", face.read_bytes(), "image/png")})
    file_data = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
    form = [PASSWORD, file_data, SQL[0], SQL[1], ["fast"], "", "7", 4, 64, 64, 0.8, 0.8, 5.0]
    ok, data = api.call("generate", form, session())
    assert ok, data
    job, row = jobs[-1]
    stored = services.store.get_condition(row["id"])
    assert job.submission.prompt == SQL[0] and stored["prompt"] == SQL[0] and stored["negative_prompt"] == SQL[1]
    after_schema, after = db_state(services)
    assert after_schema == schema
    assert after["conditions"] == counts["conditions"] + 1 and after["votes"] == counts["votes"]
    assert {t: n for t, n in after.items() if t not in ("conditions", "trials", "reviewers")} == \
        {t: n for t, n in counts.items() if t not in ("conditions", "trials", "reviewers")}
    jobs.clear()


def test_exports_are_written_only_under_the_export_folder(app):
    base, services, _, root, _ = app
    outside_before = tree(root, services.dirs.root)
    ok, data = client(base).call("prepare", [PASSWORD], session())
    assert ok, data
    folders = list(services.dirs.exports.iterdir())
    assert len(folders) == 1 and re.fullmatch(r"[0-9a-f]{32}", folders[0].name)
    assert sorted(p.name for p in folders[0].iterdir()) == ["study-dataset", "study-dataset.zip"]
    names = {p.name for p in (folders[0] / "study-dataset").rglob("*") if p.is_file()}
    assert {"README.md", "votes.parquet", "votes.csv", "votes.json", "leaderboard.json"} <= names
    assert tree(root, services.dirs.root) == outside_before


# -- blinding ---------------------------------------------------------------------------------------------------
ASSIGNMENT = re.compile(r"\b(full|selective|preset|layers?|" + "|".join(PRESETS) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def gold_app(tmp_path_factory):  # one app for the module: each test works in sessions of its own
    services = make_services(tmp_path_factory.mktemp("gold"), password=PASSWORD, seeds=tuple(range(16)),
                             study=StudyConfig(gold_rate=0.3, trials_per_session=5, vote_burst=100, vote_per_s=100.0))
    with launched(services) as base:
        yield Api(base), services


def pixels(api: Api, url: str, tmp_path: Path) -> np.ndarray:
    response = api.http.get(url)
    response.raise_for_status()
    path = tmp_path / hashlib.sha256(response.content).hexdigest()
    path.write_bytes(response.content)
    assert png_has_metadata(path) == []
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_the_page_config_names_no_preset(gold_app):
    api, _ = gold_app
    assert not re.search(r"\b(" + "|".join(PRESETS) + r")\b", api.http.get("config").text)


def test_nothing_a_reviewer_gets_reveals_the_assignment_and_gold_twins_are_two_copies(gold_app, tmp_path):
    """With the study default (reveal=none) neither a trial nor a vote's answer names an arm, a preset or gold;
    the vote's answer is the same words whatever the answer was."""
    api, services = gold_app
    me, urls, golds = session(), [], 0
    data = api.open(me)
    for _ in range(5):
        assert not ASSIGNMENT.search(json.dumps(data)), data  # trial id, image URLs and names, texts, buttons
        urls += image_urls(data)  # left and right (the reference face is the same for every trial)
        trial = services.store.get_trial(data["trial"])
        if trial["is_gold"]:
            golds += 1
            left, right = image_urls(data)
            left_pixels, right_pixels = pixels(api, left, tmp_path), pixels(api, right, tmp_path)
            difference = np.abs(left_pixels.astype(int) - right_pixels)
            assert left != right and (0 < difference.max() <= 2 if trial["gold_kind"] == "identical"
                                      else difference.mean() > 20)
        ok, receipt = api.vote(me, data["trial"], "same")
        assert ok and not ASSIGNMENT.search(json.dumps(receipt)) and not re.search(r"(?i)check|gold", receipt["reveal"])
        # the next pair comes at once (its card has no reveal); the session's end keeps the words, the same always
        assert (receipt["trial"] and receipt["reveal"] == "") or \
            (receipt["trial"] == "" and receipt["reveal"] == "Thank you, your vote is in.")
        ok, data = api.next(me)
        assert ok and data["trial"] == receipt["trial"]
    assert golds == 1 and len(set(urls)) == len(urls) == 10


def test_abx_x_and_its_match_have_different_urls_and_no_names(gold_app, tmp_path):
    api, services = gold_app
    data = api.open(session(), mode="abx")
    assert not ASSIGNMENT.search(json.dumps(data))
    a, x, b = image_urls(data)
    assert len({a, x, b}) == 3
    pa, px, pb = (pixels(api, u, tmp_path).astype(int) for u in (a, x, b))
    assert (np.abs(px - pa).max() <= 2) != (np.abs(px - pb).max() <= 2)  # X is A or B, each in its own copy
    assert not (px == pa).all() and not (px == pb).all()
    # the sizes (Content-Length, the network panel) cannot match X either: one byte length for the trial
    assert len({int(api.http.get(u).headers["content-length"]) for u in (a, x, b)}) == 1

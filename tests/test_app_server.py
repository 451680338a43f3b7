"""The launched app refuses what the page never sends, when called straight over Gradio's HTTP queue API:
foreign trials, second votes, choices outside the mode, admin calls without the password. Served images are
per-trial copies: same pixels under different URLs, no metadata, data folders not reachable."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fixtures_review import free_port, launched, make_services
from PIL import Image

from review.images import png_has_metadata
from review.study.trials import RateLimiter, StudyConfig

PASSWORD = "s3cret-admin"
ROOT = Path(__file__).resolve().parent.parent


class Api:
    """Gradio's protocols by hand, as the page speaks them: a queued event is POST queue/join and then queue/data
    (SSE) read until the event completes; a ``queue=False`` event (the review tab's) is one POST to run/predict.
    The review page's state is one value, the trial card (``review/ui/review_card.py``)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)
        config = self.http.get("config").json()
        deps = [d for d in config["dependencies"] if d.get("backend_fn")]
        self.fn = {d["api_name"]: d["id"] for d in deps}
        self.direct = {d["id"] for d in deps if d.get("queue") is False}
        names = {c["id"]: (c.get("props") or {}).get("elem_id") or c["type"] for c in config["components"]}
        self.outputs = {d["api_name"]: [names[o] for o in d["outputs"]] for d in deps}

    def call(self, api_name: str, data: list[Any], session: str, event: Any = None) -> tuple[bool, Any]:
        """(success, output data or error message); ``event``: the event's data (the card's vote)."""
        body = {"data": data, "fn_index": self.fn[api_name], "session_hash": session, "event_data": event,
                "trigger_id": None}
        if body["fn_index"] in self.direct:
            response = self.http.post("gradio_api/run/predict", json=body)
            if response.status_code == 200:
                return True, response.json()["data"]
            return False, response.json().get("error") or response.text
        joined = self.http.post("gradio_api/queue/join", json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return True, output.get("data")
                    return False, output.get("error") or str(output)
        raise AssertionError(f"no completion for {api_name}")

    def named(self, api_name: str, data: list[Any]) -> dict[str, Any]:
        """An output list as {elem_id (or component type): value}."""
        return dict(zip(self.outputs[api_name], data, strict=True))

    def open_page(self, session: str, reviewer: str = "", mode: str = "preference", invite: str = "") -> dict:
        """The page load's outputs by name: ``browserstate`` (the reviewer token), ``review-card``, ..."""
        ok, data = self.call("open_page", [reviewer, mode, invite], session)
        assert ok, data
        return self.named("open_page", data)

    def open(self, session: str, reviewer: str = "", mode: str = "preference", invite: str = "") -> dict:
        """The trial card of a page load."""
        return self.open_page(session, reviewer, mode, invite)["review-card"]

    def next(self, session: str, mode: str = "preference") -> tuple[bool, Any]:
        """'Next pair' / a mode change: (success, the card or the error)."""
        ok, data = self.call("next_pair", [mode], session)
        return ok, (self.named("next_pair", data)["review-card"] if ok else data)

    def vote(self, session: str, trial_id: Any, choice: Any, mode: str = "preference",
             shown_ms: Any = -1) -> tuple[bool, Any]:
        """The vote, sent as the card sends it; (success, the next card or the error message)."""
        ok, data = self.call("vote", [mode], session, {"trial": trial_id, "choice": choice, "shown_ms": shown_ms})
        return ok, (self.named("vote", data)["review-card"] if ok else data)


def image_urls(card: dict) -> list[str]:
    """The compared images' URLs in a trial card (left, X, right; relative to the page)."""
    return [image["src"] for image in card["images"]]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("study"), password=PASSWORD, seeds=(0,), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, admin_burst=100))
    calls: list[Any] = []
    services.run_job = lambda job, progress: calls.append(job) or [{"pair_id": 99, "preset": "x"}]
    with launched(services) as base:
        yield Api(base), services, calls


def session() -> str:
    return secrets.token_hex(6)


def test_every_event_is_private(app):
    api, _, _ = app
    assert api.http.get("gradio_api/info").json() == {"named_endpoints": {}, "unnamed_endpoints": {}}


def test_a_vote_for_another_sessions_trial_is_refused(app):
    api, services, _ = app
    mine, theirs = session(), session()
    trial_id = api.open(mine)["trial"]
    api.open(theirs)
    ok, error = api.vote(theirs, trial_id, "left")
    assert not ok and "not given to this session" in error
    ok, error = api.vote(session(), trial_id, "left")  # a session that never opened the page
    assert not ok and "open the review page" in error
    ok, error = api.vote(theirs, "0" * 32, "left")
    assert not ok and "Unknown trial" in error
    assert services.store.get_vote(trial_id) is None


def test_a_second_vote_on_one_trial_is_refused(app):
    api, services, _ = app
    me = session()
    trial_id = api.open(me)["trial"]
    ok, _ = api.vote(me, trial_id, "right")
    assert ok
    ok, error = api.vote(me, trial_id, "left")
    assert not ok and "already has your vote" in error
    assert services.store.get_vote(trial_id)["choice"] == "right"


def test_the_vote_brings_the_next_trial_and_latency_is_the_servers_own(tmp_path):
    services = make_services(tmp_path, seeds=(0,), presets=("fast", "balanced"), study=StudyConfig(gold_rate=0.0))
    with launched(services) as base:
        api, me = Api(base), session()
        first = api.open(me)
        time.sleep(0.3)
        ok, card = api.vote(me, first["trial"], "left", shown_ms=5)  # the page claims 5 ms (the server saw 300)
        assert ok and card["trial"] and card["trial"] != first["trial"] and len(image_urls(card)) == 2
        assert card["face"] == first["face"] and card["reveal"] == "" and card["staged"] is None
        assert services.store.get_vote(first["trial"])["latency_ms"] >= 300  # the server's clock, not the page's
        ok, again = api.next(me)  # the card's trial is the session's open trial
        assert ok and again["trial"] == card["trial"]
        ok, done = api.vote(me, card["trial"], "right", shown_ms=10**9)  # ignored too
        assert ok and services.store.get_vote(card["trial"])["latency_ms"] < 10_000
        assert done["trial"] == "" and "thank you" in done["progress"]  # nothing left: the page says why
        assert not done["more"] and done["answers"] == [] and done["images"] == []  # and offers no dead end


def test_a_stored_vote_is_acknowledged_when_preparing_the_next_pair_fails(tmp_path, monkeypatch):
    from review.study.review_desk import ReviewDesk

    services = make_services(tmp_path, seeds=(0,), presets=("fast", "balanced"), study=StudyConfig(gold_rate=0.0))
    served = ReviewDesk._new_trial

    def fails_after_the_first(self, session, seat, address):
        if services.store.trial_rows():
            raise OSError("disk full")
        return served(self, session, seat, address)

    monkeypatch.setattr(ReviewDesk, "_new_trial", fails_after_the_first)
    with launched(services) as base:
        api, me = Api(base), session()
        trial = api.open(me)["trial"]
        ok, card = api.vote(me, trial, "same")
        assert ok and services.store.get_vote(trial)["choice"] == "same"  # acknowledged because stored
        assert card["trial"] == "" and "could not be prepared" in card["progress"] and card["more"]


@pytest.mark.parametrize("choice", ["a", "middle", "", 3, None, ["left"]])
def test_a_choice_outside_the_mode_is_refused(app, choice):
    api, services, _ = app
    me = session()
    trial_id = api.open(me)["trial"]
    ok, error = api.vote(me, trial_id, choice)
    assert not ok and "Choice must be one of left, right, same" in error
    assert services.store.get_vote(trial_id) is None


@pytest.mark.parametrize("password", ["", "wrong", PASSWORD + " ", None])
def test_admin_calls_without_the_password_are_refused(app, password):
    api, services, calls = app
    pairs = len(services.store.list_pairs())
    form = [password, None, "a portrait", "", ["fast"], "", "0", 4, 64, 64, 0.8, 0.8, 5.0]
    ok, error = api.call("generate", form, session())
    assert not ok and "admin password" in error.lower()
    ok, error = api.call("unlock", [password], session())
    assert not ok and "admin password" in error.lower()
    ok, error = api.call("prepare", [password], session())
    assert not ok and "admin password" in error.lower()
    assert calls == [] and len(services.store.list_pairs()) == pairs


def test_the_right_password_reaches_the_job_and_the_exports(app, tmp_path):
    api, services, calls = app
    face = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(face)
    uploaded = api.http.post("gradio_api/upload", files={"files": ("face.png", face.read_bytes(), "image/png")})
    file_data = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
    form = [PASSWORD, file_data, "a portrait", "", ["fast"], "balanced", "0-1", 4, 64, 64, 0.8, 0.8, 5.0]
    ok, data = api.call("generate", form, session())
    assert ok, data
    assert calls[-1].submission.seeds == (0, 1) and calls[-1].submission.presets == ("fast", "balanced")
    ok, data = api.call("prepare", [PASSWORD], session())
    assert ok and len(data) == 2
    names = [Path(f["path"]).name for f in data[1]["value"]]
    assert names[0] == "study-dataset.zip" and {"votes.parquet", "trials.json", "README.md"} <= set(names)
    calls.clear()


def test_password_attempts_are_rate_limited_per_address(app):
    api, services, _ = app
    kept, services.admin_limiter = services.admin_limiter, RateLimiter(2, 0.0)
    try:
        results = [api.call("unlock", [password], session()) for password in ("x", "y", PASSWORD)]
    finally:
        services.admin_limiter = kept
    assert [ok for ok, _ in results] == [False, False, False]
    assert "Too many password attempts" in results[2][1]


def _fetch_png(api: Api, url: str, tmp_path: Path) -> tuple[bytes, np.ndarray, list[str]]:
    response = api.http.get(url)
    response.raise_for_status()
    path = tmp_path / hashlib.sha256(response.content).hexdigest()
    path.write_bytes(response.content)
    pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    return response.content, pixels, png_has_metadata(path)


def test_each_serve_is_its_own_copy_under_its_own_url_without_metadata(app, tmp_path):
    api, services, _ = app
    first, second = api.open(session()), api.open(session())  # one pair in the study: both show it
    urls = image_urls(first) + image_urls(second)
    assert len(urls) == 4 and len(set(urls)) == 4
    served = [_fetch_png(api, url, tmp_path) for url in urls]
    assert all(chunks == [] for _, _, chunks in served)
    assert len({hashlib.sha256(data).hexdigest() for data, _, _ in served}) == 4
    pair = services.store.list_pairs()[0]
    names = [Path(u).name for u in urls]
    for name, (_, pixels, _) in zip(names, served, strict=True):
        trial = next(t for t in services.store.trial_rows() if name in (t["left_image"], t["right_image"]))
        arm = trial["left_arm"] if name == trial["left_image"] else \
            ("selective" if trial["left_arm"] == "full" else "full")
        original = Image.open(services.dirs.images / pair["full_file" if arm == "full" else "sel_file"])
        difference = np.abs(np.asarray(original.convert("RGB")).astype(int) - pixels)
        assert difference.max() == 1 and 0 < (difference > 0).sum() <= 256  # ±1 on a few values: per-serve dither
    assert len({pixels.tobytes() for _, pixels, _ in served}) == 4  # no two copies share their pixels


def test_the_data_folders_are_not_served(app):
    api, services, _ = app
    pair = services.store.list_pairs()[0]
    for path in (services.dirs.images / pair["full_file"], services.store.path):
        response = api.http.get(f"gradio_api/file={path}")
        assert response.status_code in (403, 404)


def test_generate_is_disabled_without_a_configured_password(tmp_path):
    services = make_services(tmp_path, password=None, seeds=(0,), presets=("fast",))
    services.run_job = lambda job, progress: pytest.fail("ran without a password")
    with launched(services) as base:
        api = Api(base)
        ok, error = api.call("generate", ["", None, "p", "", ["fast"], "", "0", 4, 64, 64, 0.8, 0.8, 5.0],
                             session())
        assert not ok and "disabled" in error
        voter, idle = session(), session()
        voted = api.open(voter)["trial"]
        assert api.vote(voter, voted, "same")[0]
        api.open(idle)  # an open, unanswered trial: its key must not be exported
        ok, data = api.call("prepare", [""], session())  # public export: answered trials only
        assert ok
        (trials_file,) = [f["path"] for f in data[1]["value"] if f["path"].endswith("trials.json")]
        trials = json.loads(Path(trials_file).read_text())["rows"]
        assert [t["trial_id"] for t in trials] == [voted]
        assert "session" not in trials[0] and "client" not in trials[0]
        assert trials[0]["reviewer_id"] != services.store.get_trial(voted)["reviewer_id"]  # hashed


@pytest.mark.slow
def test_app_py_takes_flags_and_environment_and_serves_the_page(tmp_path):
    """python app.py: environment variables set the defaults, the tiny stack shows its banner."""
    env = {**os.environ, "REVIEW_DB": str(tmp_path / "env.db"), "REVIEW_DATA": str(tmp_path / "data"),
           "REVIEW_DEMO": "0", "REVIEW_GOLD_RATE": "0.25", "COLUMNS": "400"}
    env.pop("REVIEW_WEIGHTS", None)
    port = free_port()
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # --help runs while the server starts (two processes, two cores)
        help_text = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=60, check=True).stdout
        for flag in ("--weights", "--db", "--data", "--host", "--port", "--gold-rate", str(tmp_path / "env.db"),
                     "0.25", "127.0.0.1", "7860"):
            assert flag in help_text
        deadline, page = time.monotonic() + 60, None
        while time.monotonic() < deadline and page is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.5)
        assert page is not None, "app.py did not start"
        assert "Offline tiny stack: random weights; images are noise, not faces." in page
        assert (tmp_path / "env.db").exists() and (tmp_path / "data" / "images").is_dir()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_generate_form_uses_the_shared_upload_and_settings_checks(tmp_path):
    """make_job refuses what the batch CLI refuses (same messages) and normalises the upload to RGB PNG."""
    from PIL import Image

    from review.study.trials import VoteRefused
    from review.ui.generate_tab import make_job

    services = make_services(tmp_path, seeds=(0,), presets=("fast",))
    cmyk = tmp_path / "face.jpg"
    Image.new("CMYK", (96, 96), (0, 0, 0, 0)).save(cmyk)
    job = make_job(services, str(cmyk), "a portrait", "", ["fast"], "", "1-2", 4, 128, 128, 0.8, 0.8, 5.0)
    assert job.submission.seeds == (1, 2) and Image.open(job.face_path).mode == "RGB" and job.notes
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(VoteRefused, match="not an image"):
        make_job(services, str(tmp_path / "junk.png"), "x", "", ["fast"], "", "1", 4, 128, 128, 0.8, 0.8, 5.0)
    with pytest.raises(VoteRefused, match="steps"):
        make_job(services, str(cmyk), "x", "", ["fast"], "", "1", 500, 128, 128, 0.8, 0.8, 5.0)
    with pytest.raises(VoteRefused, match="accepted"):
        make_job(services, str(cmyk), "x", "", [], "bogus:9", "1", 4, 128, 128, 0.8, 0.8, 5.0)

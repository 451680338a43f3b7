"""Study settings, server-signed reviewers, invite links, Hugging Face reviewers, admin pages, the leaderboard's
gate and the end-of-session summary: what each accepts, and that every refusal says why and stores nothing."""

from __future__ import annotations

import os
import random
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures_review import launched, make_services
from test_app_server import Api

from review.__main__ import main as review_main
from review.store import Store
from review.study.identity import IdentityRefused, Signer, parse_allow_list
from review.study.reveals import THANKS
from review.study.review_desk import ReviewDesk
from review.study.settings import SettingError, StudySettings, check_setting
from review.study.trials import RateLimiter, StudyConfig, VoteRefused

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-admin"
FAST = dict(vote_burst=1000, vote_per_s=1000.0, address_burst=10_000, trial_burst=10_000)


def counts(store: Store) -> dict[str, int]:
    """Rows per table, through a separate read-only connection."""
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables} | {
            "settings_rows": conn.execute("SELECT group_concat(key || '=' || value) FROM settings").fetchone()[0]}


# -- settings ---------------------------------------------------------------------------------------------------
def test_settings_are_checked_and_resolved_flag_over_stored_over_default():
    assert StudySettings.resolve({}) == StudySettings("none", "open", False)
    stored = {"reveal": "end", "identity": "invite", "leaderboard_public": "1"}
    assert StudySettings.resolve(stored) == StudySettings("end", "invite", True)
    assert StudySettings.resolve(stored, {"reveal": "EACH", "identity": None, "leaderboard_public": "no"}) == \
        StudySettings("each", "invite", False)
    for key, value, message in (("reveal", "sometimes", "reveal must be one of none, end, each"),
                                ("identity", "", "identity must be one of"), ("colour", "red", "unknown setting"),
                                ("leaderboard_public", "maybe", "leaderboard_public must be one of 0, 1"),
                                ("reveal", None, "reveal must be")):
        with pytest.raises(SettingError, match=message):
            check_setting(key, value)
    with pytest.raises(ValueError, match="reveal must be"):
        StudyConfig(reveal="always")
    assert StudyConfig(reveal=True).reveal == "each" and StudyConfig(reveal=False).reveal == "none"


def test_the_store_keeps_settings_and_one_install_secret(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        assert store.get_settings() == {}
        store.put_setting("reveal", "end")
        store.put_setting("reveal", "each")
        secret = store.install_secret()
        assert re.fullmatch(r"[0-9a-f]{64}", secret) and store.install_secret() == secret
        assert store.get_settings() == {"reveal": "each"}  # the secret is never listed
        for key, value in (("secret:install", "0" * 64), ("", "x"), ("reveal", None)):
            with pytest.raises(ValueError):
                store.put_setting(key, value)  # type: ignore[arg-type]
    with Store(tmp_path / "s.db") as again, Store(tmp_path / "other.db") as other:
        assert again.install_secret() == secret != other.install_secret()  # kept with its database


def test_the_settings_command_stores_checked_values_or_nothing(tmp_path: Path, capsys):
    db = tmp_path / "study.db"
    Store(db).close()
    assert review_main(["settings", "--db", str(db), "reveal=end", "leaderboard_public=yes"]) == 0
    assert "reveal=end" in capsys.readouterr().out
    before = counts(Store(db))
    for bad in (["reveal=later"], ["identity=open", "mode=abx"], ["reveal"], ["leaderboard_public=2"]):
        assert review_main(["settings", "--db", str(db), *bad]) == 2
        assert "error:" in capsys.readouterr().err
    with Store(db) as store:
        assert store.get_settings() == {"reveal": "end", "leaderboard_public": "1"} and counts(store) == before
    assert review_main(["settings", "--db", str(tmp_path / "missing.db")]) == 2
    assert not (tmp_path / "missing.db").exists()


def test_app_py_refuses_a_bad_setting_before_creating_anything(tmp_path: Path):
    env = {**os.environ, "REVIEW_DB": str(tmp_path / "app.db"), "REVIEW_DATA": str(tmp_path / "data"),
           "REVIEW_DEMO": "0", "REVIEW_LEADERBOARD_PUBLIC": "perhaps"}
    run = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "leaderboard_public must be one of 0, 1" in run.stderr
    assert not (tmp_path / "app.db").exists() and not (tmp_path / "data").exists()


# -- invites ----------------------------------------------------------------------------------------------------
def invite_desk(tmp_path: Path, **study) -> ReviewDesk:
    services = make_services(tmp_path, seeds=tuple(range(4)), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, identity="invite", **FAST, **study))
    return ReviewDesk(services, rng=random.Random(1))


def test_the_invites_command_prints_signed_single_use_links(tmp_path: Path, capsys):
    desk = invite_desk(tmp_path)
    db = str(desk.store.path)
    assert review_main(["invites", "--db", db, "--n", "3", "--base-url", "https://x.example/study/"]) == 0
    links = capsys.readouterr().out.split()
    assert len(links) == 3 and all(link.startswith("https://x.example/study/?invite=i1.") for link in links)
    before = counts(desk.store)
    for bad in (["--n", "0"], ["--n", "3", "--base-url", "ftp://x"], ["--n", "2", "--days", "-1"]):
        assert review_main(["invites", "--db", db, *bad]) == 2 and "error:" in capsys.readouterr().err
    assert counts(desk.store) == before
    token = links[0].split("invite=")[1]
    view = desk.open("s1", "", "preference", "a", invite=token)
    assert view.trial_id and view.token.startswith("r1.")
    assert desk.store.get_reviewer(view.reviewer_id)["identity_kind"] == "invite"
    assert desk.store.get_trial(view.trial_id)["identity_kind"] == "invite"
    # the same browser (its token) comes back without the link, or with it
    assert desk.open("s2", view.token, "preference", "a").reviewer_id == view.reviewer_id
    assert desk.open("s3", view.token, "preference", "a", invite=token).reviewer_id == view.reviewer_id


def test_bad_invites_are_refused_with_a_reason_and_store_nothing(tmp_path: Path, clock_now=None):
    desk = invite_desk(tmp_path)
    invite_id, token = desk.signer.new_invite()
    desk.store.add_invites([invite_id])
    old_id, old_token = desk.signer.new_invite()
    desk.store.add_invites([old_id], expires_at="2000-01-01T00:00:00.000+00:00")
    unknown = desk.signer.new_invite()[1]  # signed, never stored
    foreign = Signer("cd" * 32).new_invite()[1]
    anonymous = Signer(desk.store.install_secret()).token(desk.signer.new_reviewer("anonymous"))
    before = counts(desk.store)
    for session, kw, message in (
            ("n1", {}, "by invitation"),
            ("n2", {"invite": "not-a-token"}, "not valid"),
            ("n3", {"invite": token[:-1] + ("0" if token[-1] != "0" else "1")}, "not valid"),  # altered
            ("n4", {"invite": foreign}, "not valid"),
            ("n5", {"invite": unknown}, "not valid for this study"),
            ("n6", {"invite": old_token}, "expired"),
            ("n7", {"token": anonymous}, "by invitation"),  # an open-study reviewer is not an invitee
            ("n8", {"invite": ["x"]}, "not valid")):
        with pytest.raises(IdentityRefused, match=message):
            desk.open(session, kw.get("token", ""), "preference", "a", invite=kw.get("invite"))
    assert counts(desk.store) == before
    first = desk.open("ok", "", "preference", "a", invite=token)
    after = counts(desk.store)
    with pytest.raises(IdentityRefused, match="already used"):
        desk.open("again", "", "preference", "a", invite=token)  # another browser with a spent link
    assert counts(desk.store) == after and desk.store.get_invite(invite_id)["reviewer_id"] == first.reviewer_id


# -- Hugging Face reviewers -------------------------------------------------------------------------------------
def test_hugging_face_reviewers_need_a_login_on_the_allow_list(tmp_path: Path):
    services = make_services(tmp_path, seeds=(0, 1), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, identity="hf", **FAST))
    services.config = services.config.__class__(**{**services.config.__dict__,
                                                   "hf_allow": parse_allow_list(" Alice, bob ")})
    desk = ReviewDesk(services, rng=random.Random(0))
    before = counts(desk.store)
    with pytest.raises(IdentityRefused, match="Hugging Face login"):
        desk.open("s0", "", "preference", "a")
    with pytest.raises(IdentityRefused, match="not on this study's list"):
        desk.open("s1", "", "preference", "a", hf_user="mallory")
    assert counts(desk.store) == before
    alice = desk.open("s2", "", "preference", "a", hf_user="alice")
    assert desk.open("s3", "", "preference", "a", hf_user="ALICE").reviewer_id == alice.reviewer_id
    assert "alice" not in alice.reviewer_id and desk.store.get_reviewer(alice.reviewer_id)["identity_kind"] == "hf"


# -- reveal=end ---------------------------------------------------------------------------------------------------
def test_reveal_end_says_nothing_until_the_last_vote_then_only_counts(tmp_path: Path):
    services = make_services(tmp_path, seeds=tuple(range(24)), presets=("fast",),
                             study=StudyConfig(gold_rate=0.3, reveal="end", trials_per_session=8, **FAST))
    desk = ReviewDesk(services, rng=random.Random(3))
    view, reveals, golds = desk.open("s", None, "preference", "a"), [], 0
    while view.trial_id:
        row = desk.store.get_trial(view.trial_id)
        golds += row["is_gold"]
        receipt, view = desk.cycle("s", view.trial_id, row["expected"] or "left", "preference", "a")
        reveals.append(receipt.reveal)
    assert len(reveals) == 8 and set(reveals[:-1]) == {THANKS}
    assert golds and reveals[-1].startswith("Session complete: 8 answers")
    assert f"Check pairs answered as expected: {golds} of {golds}." in reveals[-1]
    assert not re.search(r"(?i)\b(full|selective|fast|left|right)\b", reveals[-1])


# -- admin pages and the leaderboard -------------------------------------------------------------------------------
def test_one_unlock_makes_an_admin_page_and_only_failures_spend_the_budget(tmp_path: Path):
    services = make_services(tmp_path, seeds=(0,), presets=("fast",))
    services.admin_limiter = RateLimiter(2, 0.0)
    for _ in range(6):  # the right password, many times: never locked out
        services.check_admin(PASSWORD, "10.0.0.1", session=None)
    services.check_admin(PASSWORD, "10.0.0.1", session="page-1")
    services.check_admin("", "10.0.0.1", session="page-1")  # the unlocked page needs no password again
    assert services.is_admin("page-1") and not services.is_admin("page-2")
    for _ in range(2):
        with pytest.raises(VoteRefused, match="Wrong admin password"):
            services.check_admin("guess", "10.0.0.1", session="page-2")
    with pytest.raises(VoteRefused, match="Too many password attempts"):
        services.check_admin(PASSWORD, "10.0.0.1", session="page-2")  # the budget is spent by failures
    services.config = services.config.__class__(**{**services.config.__dict__, "hf_admins": frozenset({"carol"})})
    assert not services.grant_admin("page-3", "mallory") and not services.is_admin("page-3")
    assert services.grant_admin("page-3", "Carol") and services.is_admin("page-3")


def test_export_and_leaderboard_follow_the_pages_unlock_over_http(tmp_path: Path):
    services = make_services(tmp_path, seeds=(0,), presets=("fast",), password=PASSWORD,
                             study=StudyConfig(gold_rate=0.0))
    computed: list[bool] = []

    def board(without: bool) -> SimpleNamespace:
        computed.append(without)
        return SimpleNamespace(table={"headers": ["preset"], "data": [["fast"]]}, ssim_plot=None,
                               identity_plot=None, markdown="**verdicts**")

    services.board = board
    with launched(services) as base:
        api = Api(base)
        refresh = next(name for name in api.fn if name.startswith("refreshed"))
        admin, reviewer = secrets.token_hex(6), secrets.token_hex(6)
        ok, data = api.call(refresh, [False, None], reviewer)
        assert ok and "for the admin" in data[4] and not data[0] and computed == []  # nothing computed
        ok, error = api.call("prepare", [""], admin)
        assert not ok and "admin password" in error.lower()
        assert api.call("unlock", [PASSWORD], admin)[0]
        ok, data = api.call("prepare", [""], admin)  # Export shares the unlock: no password again
        assert ok and data[0].startswith("All rows")
        ok, error = api.call("prepare", [""], reviewer)
        assert not ok
        ok, data = api.call(refresh, [False, None], admin)
        assert ok and data[4] == "" and data[3] == "**verdicts**"  # the admin page gets the leaderboard
        assert "fast" in data[0]


def test_invites_and_tampered_tokens_over_http(tmp_path: Path):
    services = make_services(tmp_path, seeds=(0, 1), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, identity="invite", **FAST))
    with launched(services) as base:
        api = Api(base)
        signer = Signer(services.store.install_secret())
        invite_id, token = signer.new_invite()
        services.store.add_invites([invite_id])
        before = counts(services.store)
        for reviewer, invite, message in (("", "", "by invitation"), ("", token + "0", "not valid"),
                                          ("r1." + signer.tag + ".a." + "0" * 32 + "." + "1" * 32, "", "not valid")):
            ok, error = api.call("open_page", [reviewer, "preference", invite], secrets.token_hex(6))
            assert not ok and message in error
        assert counts(services.store) == before
        page = api.open_page(secrets.token_hex(6), invite=token)
        kept = page["browserstate"]
        assert kept.startswith(f"r1.{signer.tag}.i.") and page["review-card"]["trial"]
        assert api.open_page(secrets.token_hex(6), reviewer=kept)["browserstate"] == kept  # no link needed
        ok, error = api.call("open_page", ["", "preference", token], secrets.token_hex(6))
        assert not ok and "already used" in error


def test_an_hf_study_asks_for_a_login(tmp_path: Path, monkeypatch):
    import gradio.oauth

    # off Spaces Gradio mocks the login with the machine's own Hugging Face account (asked of the hub at start)
    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: {
        "userinfo": {"preferred_username": "alice", "name": "Alice", "picture": "", "profile": "", "website": "",
                     "aud": "", "auth_time": 0, "nonce": "", "iat": 0, "iss": "", "sub": "1"},
        "access_token": "x", "scope": "openid profile", "expires_at": 0})
    services = make_services(tmp_path, seeds=(0,), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, identity="hf", **FAST))
    with launched(services) as base:
        api = Api(base)
        assert "login" in api.http.get("config").text.lower()  # the page has Gradio's LoginButton
        before = counts(services.store)
        ok, error = api.call("open_page", ["", "preference", ""], secrets.token_hex(6))
        assert not ok and "Hugging Face login" in error and counts(services.store) == before

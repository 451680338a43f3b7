"""The SQLite store: literal rows, migrations, constraints, integrity triggers, threads and processes."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from review.store import (
    LATEST,
    MIGRATIONS,
    ConnectionConfig,
    DuplicateVote,
    Store,
    StoreBusy,
    StoreError,
    StoreIntegrityError,
    condition_key,
)

T0 = "2025-01-01T00:00:00.000+00:00"
FACE_SHA = "a" * 64
IMG = [f"{i:x}" * 32 + ".png" for i in range(6)]  # valid opaque names "000...0.png", "111...1.png", ...
TRIAL = "c" * 32
CONDITION = dict(prompt="a portrait", negative_prompt="blurry", seed=3, steps=4, width=64, height=64,
                 ip_weight=0.8, cn_scale=0.8, guidance_scale=5.0, stack="tiny")


class TickClock:
    """Fixed timestamps: T0 until advanced."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> str:
        return self.now


@pytest.fixture
def clock() -> TickClock:
    return TickClock()


@pytest.fixture
def store(tmp_path: Path, clock: TickClock):
    with Store(tmp_path / "study.db", clock=clock) as s:
        yield s


def add_pair(store: Store, preset: str = "fast", condition: dict | None = None) -> dict:
    """face -> condition -> two images -> full and selective generations -> pair."""
    face = store.add_face(sha256=FACE_SHA, file="faces/ada.jpg", label="ada", width=640, height=480)
    cond = store.upsert_condition(face_id=face["id"], **(condition or CONDITION))
    full = store.get_generation(cond["id"], "full")
    if full is None:
        image = store.add_image(file=IMG[store.db["images"].count], sha256="b" * 64, width=64, height=64)
        full = store.add_generation(condition_id=cond["id"], preset="full", layers=["l0", "l1", "l2"],
                                    layer_count=3, image_id=image["id"], total_s=1.5, step_times=[0.3, 0.5, 0.4],
                                    device="cuda:0", dtype="float16",
                                    versions={"torch": "2.4", "diffusers": "0.30"}, run_id="run1",
                                    id_cos_ref=0.5)
    image = store.add_image(file=IMG[store.db["images"].count], sha256="d" * 64, width=64, height=64)
    sel = store.add_generation(condition_id=cond["id"], preset=preset, layers=["l2"], layer_count=1,
                               image_id=image["id"], total_s=1.0, step_times=[0.1, 0.3, 0.2], device="cuda:0",
                               dtype="float16", versions={"torch": "2.4"}, run_id="run2", id_cos_ref=None,
                               id_failure="no face detected")
    return store.add_pair(full_generation_id=full["id"], selective_generation_id=sel["id"], ssim=0.93,
                          id_cos_sel_full=None, id_cos_sel_ref=None, id_cos_full_ref=0.5,
                          identity_failure="selective: no face detected")


def add_trial(store: Store, pair_id: int, trial_id: str = TRIAL, reviewer: str = "rev1", **kw) -> dict:
    store.get_or_create_reviewer(reviewer)
    args = dict(session="sess1", mode="preference", left_arm="selective", left_image=IMG[4], right_image=IMG[5])
    args.update(kw)
    return store.create_trial(reviewer_id=reviewer, pair_id=pair_id, trial_id=trial_id, **args)


def schema(db) -> list[tuple]:
    return sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall())


NAMES = ["v1_core_tables", "v2_identity_latency_gold", "v3_blinding_identity_settings", "v4_timing_mode"]


def bookkeeping(applied_at: dict[str, str] | None = None) -> list[dict]:
    """The rows sqlite-utils' Migrations keeps for this study: one per migration, applied_at from the clock."""
    dates = applied_at or {}
    return [{"id": i, "migration_set": "instantid-review", "name": name, "applied_at": dates.get(name, T0)}
            for i, name in enumerate(NAMES, start=1)]


def legacy_study(path: Path, version: int = LATEST) -> None:
    """A study file exactly as the code before sqlite_utils.Migrations left it: the same frozen migrations,
    recorded in schema_migrations(version, applied_at), in WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    db = Database(conn)
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for v in range(1, version + 1):
        db.execute("BEGIN IMMEDIATE")
        MIGRATIONS[v - 1](db)
        db["schema_migrations"].insert({"version": v, "applied_at": f"2024-0{v}-01T00:00:00.000+00:00"})
        db.execute("COMMIT")
    conn.close()


# -- opening and migrations ------------------------------------------------------------------------------------
def test_new_store_is_migrated_with_wal_and_foreign_keys(store: Store):
    assert list(store.db["_sqlite_migrations"].rows) == bookkeeping()
    assert store.schema_version() == LATEST == len(MIGRATIONS) == len(NAMES)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 2_000
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 256
    assert store.db.execute("PRAGMA journal_size_limit").fetchone()[0] == 2**20
    assert set(store.db.table_names()) == {"faces", "conditions", "images", "generations", "pairs", "reviewers",
                                           "trials", "votes", "_sqlite_migrations", "settings", "invites"}


def test_migrate_again_changes_nothing(tmp_path: Path, clock: TickClock):
    path = tmp_path / "study.db"
    with Store(path, clock=clock) as first:
        before = schema(first.db)
    clock.now = "2030-01-01T00:00:00.000+00:00"
    with Store(path, clock=clock) as second:
        assert second.migrate() == []
        assert schema(second.db) == before
        assert list(second.db["_sqlite_migrations"].rows) == bookkeeping()


def test_v1_database_migrates_to_latest_and_keeps_its_rows(tmp_path: Path, clock: TickClock):
    path = tmp_path / "old.db"
    old = Store(path, clock=clock, migrate=False)
    assert old.migrate(target=1) == [1]
    db = old.db  # rows written the way schema v1 stored them (no latency_ms, no is_gold, no identity columns)
    db["faces"].insert({"sha256": FACE_SHA, "file": "f.jpg", "width": 8, "height": 8, "created_at": T0})
    db["conditions"].insert({"key": "e" * 64, "face_id": 1, "prompt": "p", "negative_prompt": "", "seed": 1,
                             "steps": 4, "width": 64, "height": 64, "ip_weight": 0.8, "cn_scale": 0.8,
                             "guidance_scale": 5.0, "stack": "tiny", "created_at": T0})
    for i in (0, 1):
        db["images"].insert({"file": IMG[i], "sha256": "b" * 64, "width": 64, "height": 64, "created_at": T0})
        db["generations"].insert({"condition_id": 1, "preset": ["full", "fast"][i], "layers": "[]",
                                  "layer_count": 0, "image_id": i + 1, "total_s": 1.0, "step_times": "[]",
                                  "device": "cpu", "dtype": "float32", "versions": "{}", "run_id": "r",
                                  "created_at": T0})
    db["pairs"].insert({"condition_id": 1, "preset": "fast", "layer_count": 0, "full_generation_id": 1,
                        "selective_generation_id": 2, "ssim": 0.5, "created_at": T0})
    db["reviewers"].insert({"id": "rev1", "created_at": T0, "last_seen": T0})
    db["trials"].insert({"id": TRIAL, "reviewer_id": "rev1", "session": "s", "pair_id": 1, "mode": "preference",
                         "left_arm": "full", "left_image": IMG[2], "right_image": IMG[3], "created_at": T0})
    db["votes"].insert({"trial_id": TRIAL, "reviewer_id": "rev1", "choice": "left", "outcome": "full",
                        "created_at": T0})
    old.close()

    clock.now = "2025-02-02T00:00:00.000+00:00"
    with Store(path, clock=clock) as new:
        assert new.schema_version() == LATEST
        assert list(new.db["_sqlite_migrations"].rows) == bookkeeping(
            {name: "2025-02-02T00:00:00.000+00:00" for name in NAMES[1:]})
        assert list(new.db["votes"].rows) == [
            {"id": 1, "trial_id": TRIAL, "reviewer_id": "rev1", "choice": "left", "outcome": "full",
             "correct": None, "client": None, "created_at": T0, "latency_ms": None}]
        assert new.get_trial(TRIAL)["is_gold"] == 0
        assert new.get_pair(1)["identity_failure"] is None
        assert new.integrity_check() == []
        migrated = schema(new.db)
    with Store(tmp_path / "fresh.db", clock=clock) as fresh:
        assert migrated == schema(fresh.db)  # an old file ends with exactly the schema of a new one


def test_database_newer_than_the_code_is_refused(tmp_path: Path, clock: TickClock):
    path = tmp_path / "future.db"
    with Store(path, clock=clock) as s:
        s.db["_sqlite_migrations"].insert({"migration_set": "instantid-review", "name": "v5_from_the_future",
                                           "applied_at": T0})
    with pytest.raises(StoreError, match=f"has schema v{LATEST + 1} .*v5_from_the_future.*newer than this code"):
        Store(path, clock=clock)
    with Store(path, read_only=True) as s:  # read-only commands see the version (and refuse it themselves)
        assert s.schema_version() == LATEST + 1


def test_legacy_database_newer_than_the_code_is_refused_and_left_as_it_was(tmp_path: Path, clock: TickClock):
    path = tmp_path / "future.db"
    legacy_study(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", [LATEST + 1, T0])
    with pytest.raises(StoreError, match=f"has schema v{LATEST + 1}, newer than this code"):
        Store(path, clock=clock)
    with Store(path, read_only=True) as s:
        assert s.schema_version() == LATEST + 1 and "_sqlite_migrations" not in s.db.table_names()


def test_a_database_of_the_old_bookkeeping_opens_up_to_date_under_the_new_one(tmp_path: Path, clock: TickClock):
    """Files made before sqlite_utils.Migrations: schema_migrations v1..v4 is adopted (dates kept), nothing is
    re-applied, the old table goes, and the schema is exactly a new file's."""
    path = tmp_path / "legacy.db"
    legacy_study(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO reviewers (id, created_at, last_seen) VALUES ('rev1', ?, ?)", [T0, T0])
    with Store(path, read_only=True) as ro:  # read-only: the version is read from the old table, nothing written
        assert ro.schema_version() == LATEST
        assert "schema_migrations" in ro.db.table_names() and "_sqlite_migrations" not in ro.db.table_names()
    clock.now = "2030-01-01T00:00:00.000+00:00"
    with Store(path, clock=clock) as s:
        assert s.schema_version() == LATEST and s.migrate() == []
        assert list(s.db["_sqlite_migrations"].rows) == bookkeeping(
            {name: f"2024-0{v}-01T00:00:00.000+00:00" for v, name in enumerate(NAMES, start=1)})
        assert "schema_migrations" not in s.db.table_names()
        assert s.get_reviewer("rev1") == {"id": "rev1", "created_at": T0, "last_seen": T0, "identity_kind": "legacy"}
        assert s.integrity_check() == []
        adopted = schema(s.db)
    with Store(tmp_path / "fresh.db", clock=clock) as fresh:
        assert adopted == schema(fresh.db)


def test_a_v2_database_of_the_old_bookkeeping_is_adopted_and_migrated_in_one_step(tmp_path: Path, clock: TickClock):
    path = tmp_path / "legacy-v2.db"
    legacy_study(path, version=2)
    with Store(path, clock=clock, migrate=False) as s:
        assert s.schema_version() == 2
        assert s.migrate(target=2) == []  # nothing to apply, but the old bookkeeping is adopted
        assert [r["name"] for r in s.db["_sqlite_migrations"].rows] == NAMES[:2]
        assert s.migrate() == [3, 4]
        assert list(s.db["_sqlite_migrations"].rows) == bookkeeping(
            {"v1_core_tables": "2024-01-01T00:00:00.000+00:00",
             "v2_identity_latency_gold": "2024-02-01T00:00:00.000+00:00"})


# -- literal rows ----------------------------------------------------------------------------------------------
def test_face_and_condition_rows(store: Store):
    face = store.add_face(sha256=FACE_SHA, file="faces/ada.jpg", label="ada", width=640, height=480)
    assert store.add_face(sha256=FACE_SHA, file="elsewhere.jpg", width=1, height=1) == face  # same sha: same row
    cond = store.upsert_condition(face_id=face["id"], **CONDITION)
    assert store.upsert_condition(face_id=face["id"], **CONDITION) == cond
    assert list(store.db["faces"].rows) == [
        {"id": 1, "sha256": FACE_SHA, "file": "faces/ada.jpg", "label": "ada", "width": 640, "height": 480,
         "created_at": T0}]
    key = "89ad45705f490b855c7d7d38995cf68e252b7d770d24184d229fde601810f729"  # pinned: keys must stay stable
    assert key == condition_key(FACE_SHA, **CONDITION)
    assert list(store.db["conditions"].rows) == [
        {"id": 1, "key": key, "face_id": 1, "prompt": "a portrait", "negative_prompt": "blurry", "seed": 3,
         "steps": 4, "width": 64, "height": 64, "ip_weight": 0.8, "cn_scale": 0.8, "guidance_scale": 5.0,
         "stack": "tiny", "created_at": T0}]
    other = store.upsert_condition(face_id=face["id"], **{**CONDITION, "seed": 4})
    assert other["id"] == 2 and other["key"] != key


def test_generation_and_pair_rows(store: Store):
    pair = add_pair(store)
    assert list(store.db["images"].rows) == [
        {"id": 1, "file": IMG[0], "sha256": "b" * 64, "width": 64, "height": 64, "created_at": T0},
        {"id": 2, "file": IMG[1], "sha256": "d" * 64, "width": 64, "height": 64, "created_at": T0}]
    assert list(store.db["generations"].rows) == [
        {"id": 1, "condition_id": 1, "preset": "full", "layers": '["l0", "l1", "l2"]', "layer_count": 3,
         "image_id": 1, "total_s": 1.5, "step_times": "[0.3, 0.5, 0.4]", "step_median_s": 0.4,
         "device": "cuda:0", "dtype": "float16", "versions": '{"diffusers": "0.30", "torch": "2.4"}',
         "run_id": "run1", "created_at": T0, "id_cos_ref": 0.5, "id_failure": None, "timing_mode": "eager"},
        {"id": 2, "condition_id": 1, "preset": "fast", "layers": '["l2"]', "layer_count": 1, "image_id": 2,
         "total_s": 1.0, "step_times": "[0.1, 0.3, 0.2]", "step_median_s": 0.2, "device": "cuda:0",
         "dtype": "float16", "versions": '{"torch": "2.4"}', "run_id": "run2", "created_at": T0,
         "id_cos_ref": None, "id_failure": "no face detected", "timing_mode": "eager"}]
    assert list(store.db["pairs"].rows) == [pair] == [
        {"id": 1, "condition_id": 1, "preset": "fast", "layer_count": 1, "full_generation_id": 1,
         "selective_generation_id": 2, "ssim": 0.93, "created_at": T0, "id_cos_sel_full": None,
         "id_cos_sel_ref": None, "id_cos_full_ref": 0.5, "identity_failure": "selective: no face detected"}]
    generation = store.get_generation(1, "fast")
    assert generation["layers"] == ["l2"] and generation["versions"] == {"torch": "2.4"}
    assert store.get_generation(1, "balanced") is None


def test_list_pairs_joins_condition_timing_and_files(store: Store):
    add_pair(store)
    add_pair(store, preset="balanced")
    rows = store.list_pairs()
    assert [r["pair_id"] for r in rows] == [1, 2]
    assert {k: rows[0][k] for k in ("preset", "layer_count", "prompt", "seed", "face_label", "full_step_median_s",
                                    "sel_step_median_s", "full_total_s", "sel_total_s", "full_device",
                                    "sel_device", "full_run_id", "sel_run_id", "full_file", "sel_file")} == {
        "preset": "fast", "layer_count": 1, "prompt": "a portrait", "seed": 3, "face_label": "ada",
        "full_step_median_s": 0.4, "sel_step_median_s": 0.2, "full_total_s": 1.5, "sel_total_s": 1.0,
        "full_device": "cuda:0", "sel_device": "cuda:0", "full_run_id": "run1", "sel_run_id": "run2",
        "full_file": IMG[0], "sel_file": IMG[1]}
    assert rows[1]["full_generation_id"] == rows[0]["full_generation_id"] == 1  # one full arm per condition
    assert store.get_pair(2) == rows[1] and store.get_pair(99) is None


def test_trial_and_vote_rows(store: Store, clock: TickClock):
    pair = add_pair(store)
    add_trial(store, pair["id"])
    clock.now = "2025-01-01T00:00:05.000+00:00"
    vote = store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="left", outcome="selective",
                             latency_ms=4200, client="h:9f2c")
    assert list(store.db["trials"].rows) == [
        {"id": TRIAL, "reviewer_id": "rev1", "session": "sess1", "pair_id": 1, "mode": "preference",
         "left_arm": "selective", "x_arm": None, "left_image": IMG[4], "right_image": IMG[5], "x_image": None,
         "created_at": T0, "is_gold": 0, "identity_kind": "legacy", "gold_kind": None, "expected": None,
         "reveal": None}]
    assert list(store.db["votes"].rows) == [vote] == [
        {"id": 1, "trial_id": TRIAL, "reviewer_id": "rev1", "choice": "left", "outcome": "selective",
         "correct": None, "client": "h:9f2c", "created_at": "2025-01-01T00:00:05.000+00:00", "latency_ms": 4200}]
    assert list(store.db["reviewers"].rows) == [
        {"id": "rev1", "created_at": T0, "last_seen": "2025-01-01T00:00:05.000+00:00", "identity_kind": "legacy"}]
    assert store.get_vote(TRIAL) == vote


def test_get_or_create_reviewer_keeps_created_at(store: Store, clock: TickClock):
    store.get_or_create_reviewer("rev1")
    clock.now = "2025-03-03T00:00:00.000+00:00"
    assert store.get_or_create_reviewer("rev1", "anonymous") == {  # the kind is set when the row is made
        "id": "rev1", "created_at": T0, "last_seen": "2025-03-03T00:00:00.000+00:00", "identity_kind": "legacy"}


def test_abx_trial_vote_marks_correctness(store: Store):
    pair = add_pair(store)
    add_trial(store, pair["id"], mode="abx", left_arm="selective", x_arm="full", x_image=IMG[3], is_gold=True)
    assert store.get_trial(TRIAL)["is_gold"] == 1
    with pytest.raises(StoreIntegrityError, match="do not fit"):  # A is the selective side, X is full
        store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="a", outcome="correct", correct=True)
    vote = store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="b", outcome="correct", correct=True)
    assert (vote["choice"], vote["outcome"], vote["correct"]) == ("b", "correct", 1)


def test_gold_preference_vote_only_has_to_agree_on_same(store: Store):
    """Gold trials show identical images, so left/right name no real arm; only 'same' <-> 'same' is checked."""
    pair = add_pair(store)
    add_trial(store, pair["id"], trial_id="1" * 32, is_gold=True, left_arm="full")
    add_trial(store, pair["id"], trial_id="2" * 32, is_gold=True, left_arm="full")
    vote = store.record_vote(trial_id="1" * 32, reviewer_id="rev1", choice="right", outcome="full", correct=False)
    assert (vote["outcome"], vote["correct"]) == ("full", 0)
    with pytest.raises(StoreIntegrityError, match="do not fit"):
        store.record_vote(trial_id="2" * 32, reviewer_id="rev1", choice="same", outcome="full")


# -- refusals --------------------------------------------------------------------------------------------------
def test_second_vote_for_a_trial_is_refused(store: Store, clock: TickClock):
    add_trial(store, add_pair(store)["id"])
    first = store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="same", outcome="same")
    clock.now = "2025-06-06T00:00:00.000+00:00"
    with pytest.raises(DuplicateVote):
        store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="right", outcome="full")
    assert list(store.db["votes"].rows) == [first]
    assert store.db["reviewers"].get("rev1")["last_seen"] == T0  # the failed transaction touched nothing


@pytest.mark.parametrize("write", [
    lambda s: s.add_generation(condition_id=99, preset="full", layers=[], layer_count=0, image_id=1, total_s=1.0,
                               step_times=[], device="cpu", dtype="float32", versions={}, run_id="r"),
    lambda s: s.create_trial(reviewer_id="rev1", session="s", pair_id=99, mode="preference", left_arm="full",
                             left_image=IMG[4], right_image=IMG[5]),
    lambda s: s.create_trial(reviewer_id="ghost", session="s", pair_id=1, mode="preference", left_arm="full",
                             left_image=IMG[4], right_image=IMG[5]),
    lambda s: s.record_vote(trial_id="f" * 32, reviewer_id="rev1", choice="left", outcome="full"),
    lambda s: s.upsert_condition(face_id=99, **CONDITION),
], ids=["generation-condition", "trial-pair", "trial-reviewer", "vote-trial", "condition-face"])
def test_rows_pointing_at_missing_rows_are_refused(store: Store, write):
    add_pair(store)
    store.get_or_create_reviewer("rev1")
    before = {t: store.db[t].count for t in store.db.table_names()}
    with pytest.raises(StoreIntegrityError):
        write(store)
    assert {t: store.db[t].count for t in store.db.table_names()} == before


@pytest.mark.parametrize("changes", [
    {"mode": "ranking"}, {"left_arm": "middle"}, {"trial_id": "not-a-uuid"}, {"left_image": "full_seed3.png"},
    {"right_image": IMG[4]}, {"mode": "abx", "x_arm": "full"}, {"x_arm": "full", "x_image": IMG[3]},
], ids=["mode", "left_arm", "trial_id", "leaky_name", "same_images", "abx_without_x", "preference_with_x"])
def test_trial_checks_refuse_bad_values(store: Store, changes: dict):
    pair = add_pair(store)
    with pytest.raises(StoreIntegrityError, match="CHECK constraint failed"):
        add_trial(store, pair["id"], **changes)
    assert store.db["trials"].count == 0


@pytest.mark.parametrize("vote, match", [
    ({"choice": "up", "outcome": "full"}, "do not fit"),  # the trigger runs before the CHECK
    ({"choice": "left", "outcome": "better"}, "do not fit"),
    ({"choice": "left", "outcome": "full"}, "do not fit"),  # left is the selective arm in this trial
    ({"choice": "right", "outcome": "same"}, "do not fit"),
    ({"choice": "a", "outcome": "correct"}, "do not fit"),  # ABX answers on a preference trial
    ({"choice": "left", "outcome": "selective", "latency_ms": -1}, "CHECK"),
    ({"choice": "left", "outcome": "selective", "reviewer_id": "rev2"}, "differs from the trial reviewer"),
])
def test_votes_that_do_not_fit_their_trial_are_refused(store: Store, vote: dict, match: str):
    add_trial(store, add_pair(store)["id"])
    store.get_or_create_reviewer("rev2")
    with pytest.raises(StoreIntegrityError, match=match):
        store.record_vote(**{"trial_id": TRIAL, "reviewer_id": "rev1", **vote})
    assert store.db["votes"].count == 0


def test_other_checks_refuse_bad_values(store: Store):
    with pytest.raises(StoreIntegrityError, match="CHECK"):
        store.add_image(file="../etc/passwd.png", sha256="b" * 64, width=1, height=1)
    with pytest.raises(StoreIntegrityError, match="CHECK"):
        store.add_face(sha256="short", file="f.jpg", width=1, height=1)
    face = store.add_face(sha256=FACE_SHA, file="f.jpg", width=1, height=1)
    with pytest.raises(StoreIntegrityError, match="CHECK"):
        store.upsert_condition(face_id=face["id"], **{**CONDITION, "width": 63})
    pair = add_pair(store)
    with pytest.raises(StoreIntegrityError, match="CHECK"):
        store.add_pair(full_generation_id=1, selective_generation_id=2, ssim=1.5)
    with pytest.raises(StoreIntegrityError, match="UNIQUE"):  # one pair per (condition, preset)
        store.add_pair(full_generation_id=1, selective_generation_id=2, ssim=0.5)
    assert list(store.db["pairs"].rows) == [pair]


def test_pair_arms_must_belong_to_one_condition(store: Store):
    add_pair(store)
    add_pair(store, preset="balanced", condition={**CONDITION, "seed": 9})  # condition 2: generations 3, 4
    with pytest.raises(StoreIntegrityError, match="same condition|one condition"):
        store.add_pair(full_generation_id=1, selective_generation_id=4, ssim=0.5)
    with pytest.raises(StoreIntegrityError, match="CHECK"):  # 'full' is never the selective arm
        store.add_pair(full_generation_id=1, selective_generation_id=1, ssim=1.0)


# -- reads for the picker and exports --------------------------------------------------------------------------
def test_vote_counts_and_pairs_seen(store: Store):
    add_pair(store)
    add_pair(store, preset="balanced")
    add_trial(store, 1, trial_id="1" * 32)
    add_trial(store, 1, trial_id="2" * 32, mode="abx", x_arm="full", x_image=IMG[3])
    add_trial(store, 2, trial_id="3" * 32, reviewer="rev2", is_gold=True)
    store.record_vote(trial_id="1" * 32, reviewer_id="rev1", choice="left", outcome="selective")
    store.record_vote(trial_id="3" * 32, reviewer_id="rev2", choice="same", outcome="same")
    assert store.vote_counts() == [
        {"pair_id": 1, "condition_id": 1, "preset": "fast", "layer_count": 1, "pairs": 1, "trials": 2, "votes": 1},
        {"pair_id": 2, "condition_id": 1, "preset": "balanced", "layer_count": 1, "pairs": 1, "trials": 0,
         "votes": 0}]
    assert store.vote_counts("preset", mode="preference", include_gold=True) == [
        {"preset": "balanced", "pairs": 1, "trials": 1, "votes": 1},
        {"preset": "fast", "pairs": 1, "trials": 1, "votes": 1}]
    assert store.vote_counts("condition") == [{"condition_id": 1, "pairs": 2, "trials": 2, "votes": 1}]
    assert store.pairs_seen_by("rev1") == {1: 2}
    assert store.pairs_seen_by("rev1", mode="abx") == {1: 1}
    assert store.pairs_seen_by("nobody") == {}
    with pytest.raises(ValueError):
        store.vote_counts("reviewer")  # type: ignore[arg-type]


def test_export_rows_are_flat(store: Store):
    add_trial(store, add_pair(store)["id"])
    add_trial(store, 1, trial_id="d" * 32)
    store.record_vote(trial_id=TRIAL, reviewer_id="rev1", choice="right", outcome="full", latency_ms=900)
    assert store.vote_rows() == [{
        "vote_id": 1, "choice": "right", "outcome": "full", "correct": None, "latency_ms": 900, "client": None,
        "voted_at": T0, "trial_id": TRIAL, "reviewer_id": "rev1", "session": "sess1", "mode": "preference",
        "left_arm": "selective", "x_arm": None, "is_gold": 0, "served_at": T0, "gold_kind": None, "expected": None,
        "identity_kind": "legacy", "reveal": None, "pair_id": 1, "preset": "fast",
        "layer_count": 1, "condition_id": 1, "ssim": 0.93, "id_cos_sel_full": None, "id_cos_sel_ref": None,
        "id_cos_full_ref": 0.5, "identity_failure": "selective: no face detected", "face_id": 1,
        "prompt": "a portrait", "seed": 3, "steps": 4, "width": 64, "height": 64, "stack": "tiny"}]
    trials = store.trial_rows()
    assert [(t["trial_id"], t["vote_id"], t["outcome"]) for t in trials] == [
        (TRIAL, 1, "full"), ("d" * 32, None, None)]


def test_integrity_check_reports_orphans(store: Store):
    add_pair(store)
    assert store.integrity_check() == []
    store.db.execute("PRAGMA foreign_keys = OFF")
    store.db["pairs"].update(1, {"selective_generation_id": 77})
    store.db.execute("PRAGMA foreign_keys = ON")
    assert store.integrity_check() == ["foreign key: pairs rowid 1 -> generations missing"]


# -- concurrency -----------------------------------------------------------------------------------------------
def test_threads_share_one_store(store: Store):
    add_pair(store)
    ids = [f"{i:032x}" for i in range(200)]
    for trial_id in ids:
        add_trial(store, 1, trial_id=trial_id)
    errors: list[BaseException] = []

    def vote(chunk: list[str]) -> None:
        try:
            for trial_id in chunk:
                store.record_vote(trial_id=trial_id, reviewer_id="rev1", choice="same", outcome="same")
                store.vote_counts()
        except (StoreError, sqlite3.Error) as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=vote, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.db["votes"].count == 200


def test_locked_database_is_retried_then_reported(tmp_path: Path, clock: TickClock, caplog):
    path = tmp_path / "study.db"
    config = ConnectionConfig(busy_timeout_ms=50, retries=4, backoff_s=0.05)
    # 4 x 50 ms of SQLite's own wait + backoff of at most 0.05+0.05, 0.1+0.05, 0.2+0.05 s; the defaults: 8.5 s
    assert config.max_write_wait_s == pytest.approx(0.7) and ConnectionConfig().max_write_wait_s == pytest.approx(8.5)
    caplog.set_level(logging.WARNING, logger="review.store.connection")
    with Store(path, clock=clock, config=config) as s:
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        release = threading.Timer(0.15, lambda: blocker.execute("COMMIT"))
        release.start()
        assert s.get_or_create_reviewer("rev1")["id"] == "rev1"  # waited, retried, succeeded
        release.join()
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="held its write lock for more than 0.7 s"):
            s.get_or_create_reviewer("rev2")
        assert time.monotonic() - started < 5
        assert caplog.messages == [f"{path} is busy (another writer holds the lock): retrying"] * 2  # once a write
        blocker.execute("ROLLBACK")
        blocker.close()
        assert [r["id"] for r in s.db["reviewers"].rows] == ["rev1"]


def _vote_worker(path: str, start: int, count: int, barrier) -> None:
    """A separate process recording votes into the same file."""
    with Store(path) as s:
        barrier.wait()
        for i in range(start, start + count):
            s.record_vote(trial_id=f"{i:032x}", reviewer_id="rev1", choice="left", outcome="selective",
                          latency_ms=i)


def _open_worker(path: str, barrier) -> None:
    barrier.wait()
    Store(path, clock=lambda: T0).close()


def test_two_processes_write_400_votes_into_one_file(tmp_path: Path):
    path = tmp_path / "study.db"
    with Store(path) as s:
        add_pair(s)
        for i in range(400):
            add_trial(s, 1, trial_id=f"{i:032x}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_vote_worker, args=(str(path), i * 200, 200, barrier)) for i in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    with Store(path) as s:
        assert s.db["votes"].count == 400
        assert sorted(r["latency_ms"] for r in s.db["votes"].rows) == list(range(400))
        assert s.integrity_check() == []


@pytest.mark.parametrize("legacy_version", [None, 2])
def test_processes_opening_a_new_or_old_file_migrate_it_once(tmp_path: Path, legacy_version: int | None):
    path = tmp_path / "new.db"
    if legacy_version is not None:
        legacy_study(path, legacy_version)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [ctx.Process(target=_open_worker, args=(str(path), barrier)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with Store(path) as s:
        dates = {} if legacy_version is None else {"v1_core_tables": "2024-01-01T00:00:00.000+00:00",
                                                   "v2_identity_latency_gold": "2024-02-01T00:00:00.000+00:00"}
        assert list(s.db["_sqlite_migrations"].rows) == bookkeeping(dates)
        assert "schema_migrations" not in s.db.table_names()


def test_images_and_metrics_feed_the_store_directly(store: Store, tmp_path: Path):
    """The job runner's path: write_image -> add_image, ssim + identity_scores -> add_pair."""
    import numpy as np

    from review.generation.metrics import identity_scores, ssim
    from review.images import read_image, write_image

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(2)]
    face = store.add_face(sha256=FACE_SHA, file="f.jpg", width=16, height=16)
    cond = store.upsert_condition(face_id=face["id"], **CONDITION)
    gens = []
    for preset, image in zip(("full", "fast"), pixels, strict=True):
        stored = store.add_image(**write_image(tmp_path / "img", image)._asdict())
        gens.append(store.add_generation(condition_id=cond["id"], preset=preset, layers=[], layer_count=0,
                                         image_id=stored["id"], total_s=np.float32(1.0), step_times=[np.float64(0.5)],
                                         device="cpu", dtype="float32", versions={}, run_id="r"))
    files = [p["file"] for p in store.db["images"].rows]
    value = ssim(*(read_image(tmp_path / "img", f) for f in files))
    score = identity_scores(np.ones(4), np.ones(4), None, {"selective": "no face detected"})
    pair = store.add_pair(full_generation_id=gens[0]["id"], selective_generation_id=gens[1]["id"], ssim=value,
                          **score.as_row())
    assert pair["ssim"] == value and pair["id_cos_full_ref"] == 1.0 and pair["id_cos_sel_ref"] is None
    assert store.get_pair(pair["id"])["full_file"] == files[0]


def test_study_version_counts_pairs_and_votes(tmp_path):
    with Store(tmp_path / "v.db") as store:
        assert store.study_version() == (0, 0)
        assert store.get_face(1) is None and store.get_image(1) is None

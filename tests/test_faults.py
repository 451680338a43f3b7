"""Fault injection against the store and the running app: the database file deleted or replaced, read-only
storage, a full disk (small tmpfs, where this machine lets the tests mount one), another program holding the write
lock, damaged pages, foreign and truncated files, a retried vote, SIGTERM mid-generation.

Each fault asserts: no acknowledged vote is lost (and nothing is acknowledged that was not stored), the error says
what is wrong in words, and the store / app works again once the fault is cleared."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures_review import launched, make_services, make_study

from review.store import ConnectionConfig, Store, StoreBusy, StoreOpenError, StoreUnavailable
from review.study.review_desk import ReviewDesk
from review.study.trials import StudyConfig

FAST = ConnectionConfig(busy_timeout_ms=100, retries=2, backoff_s=0.01)


def trial(store: Store, n: int, pair_id: int = 1, reviewer: str = "rev1") -> str:
    trial_id = f"{n:032x}"
    store.get_or_create_reviewer(reviewer)
    store.create_trial(reviewer_id=reviewer, session="s", pair_id=pair_id, mode="preference", left_arm="full",
                       left_image=f"{2 * n:032x}.png", right_image=f"{2 * n + 1:032x}.png", trial_id=trial_id)
    return trial_id


def vote(store: Store, trial_id: str, reviewer: str = "rev1") -> None:
    store.record_vote(trial_id=trial_id, reviewer_id=reviewer, choice="left", outcome="full")


def stored_votes(path: Path) -> set[str]:
    with Store(path, migrate=False, read_only=True) as store:
        return {row["trial_id"] for row in store.vote_rows()}


@pytest.fixture
def study(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    store, _ = make_study(tmp_path / "data", seeds=(0,), presets=("fast",))
    store.close()
    path = tmp_path / "data" / "study.db"
    with Store(path, config=FAST) as store:
        yield store, path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root only); skipped where this machine does not allow mounting one."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# -- the file removed or replaced while the store is open ---------------------------------------------------------
def test_a_deleted_database_is_never_written_and_acknowledged(study):
    store, path = study
    acked = []
    for n in range(3):
        vote(store, trial(store, n))
        acked.append(f"{n:032x}")
    backup = path.with_suffix(".backup")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(path, backup)
    path.unlink()
    with pytest.raises(StoreUnavailable, match="was removed") as caught:
        vote(store, trial(store, 9))
    assert caught.value.kind == "replaced"
    with pytest.raises(StoreUnavailable, match="removed"):
        store.vote_rows()  # reads refuse too: never answer from a file nobody can see any more
    assert store.health() == {"writable": False, "state": "replaced", "reason": caught.value.reason}
    assert not path.exists()  # no reader re-created an empty file at the path
    shutil.copy(backup, path)  # the admin restores the backup; the open store still refuses (another inode) ...
    with pytest.raises(StoreUnavailable, match="replaced"):
        vote(store, trial(store, 10))
    assert stored_votes(path) == set(acked)  # ... and a restarted store serves every acknowledged vote
    with Store(path) as again:
        vote(again, trial(again, 11))
        assert len(again.vote_rows()) == 4


def test_a_replaced_database_is_refused_not_reported_as_malformed(study, tmp_path):
    store, path = study
    vote(store, trial(store, 1))
    other, _ = make_study(tmp_path / "other", seeds=(5,), presets=("balanced",))
    other.close()
    os.replace(tmp_path / "other" / "study.db", path)
    with pytest.raises(StoreUnavailable, match="replaced by another file") as caught:
        vote(store, trial(store, 2))
    assert "malformed" not in str(caught.value)
    assert not Path(f"{path}-wal").exists()  # the old file's WAL was set aside, not left for the new file
    assert Path(f"{path}-wal.replaced").exists()
    with Store(path) as fresh:  # the new file is intact: the replaced store wrote nothing into it
        assert fresh.integrity_check() == [] and fresh.vote_rows() == []


# -- read-only storage and a full disk (tmpfs) -------------------------------------------------------------------
def test_read_only_storage_is_refused_readably_still_read_and_recovers(tmpfs):
    """Linux refuses to remount a file system read-only while a file on it is open for writing ("mount point is
    busy"), so the storage turns read-only between two runs of the app here; the error a write meets on
    read-only storage while running is SQLITE_READONLY, mapped below."""
    make_study(tmpfs, seeds=(0,), presets=("fast",))[0].close()
    path = tmpfs / "study.db"
    with Store(path, config=FAST) as store:
        vote(store, trial(store, 1))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(StoreOpenError, match="read-only") as caught:
            Store(path, config=FAST)
        assert "\n" not in str(caught.value)
        assert stored_votes(path) == {f"{1:032x}"}  # read-only commands still read it
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    with Store(path, config=FAST) as store:  # writable again: the app starts and writes
        vote(store, trial(store, 2))
        assert store.health()["writable"] is True


def test_a_write_refused_as_read_only_becomes_a_readable_error(study):
    from review.store.errors import storage_error

    _, path = study
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as raw:
        conn.execute("INSERT INTO reviewers (id, created_at, last_seen) VALUES ('x', 'now', 'now')")
    conn.close()
    readable = storage_error(str(path), raw.value)
    assert readable is not None and readable.kind == "read-only" and readable.reason == "its storage is read-only"


def test_a_full_disk_refuses_votes_readably_keeps_every_acknowledged_one_and_recovers(tmpfs):
    make_study(tmpfs, seeds=(0,), presets=("fast",))[0].close()
    path = tmpfs / "study.db"
    filler = tmpfs / "filler"
    acked: list[str] = []
    with Store(path, config=FAST) as store:
        free = shutil.disk_usage(tmpfs).free
        filler.write_bytes(b"\0" * max(0, free - 64 * 1024))  # leave 64 KiB
        caught = None
        for n in range(1, 2000):
            try:
                trial_id = trial(store, n)
                vote(store, trial_id)
            except StoreUnavailable as exc:
                caught = exc
                break
            acked.append(trial_id)
        assert caught is not None and caught.kind == "full" and "disk is full" in caught.reason
        assert store.health()["state"] == "full"
        filler.unlink()
        vote(store, trial(store, 5000))  # space freed: the same store writes again
        acked.append(f"{5000:032x}")
        assert store.integrity_check() == []
    assert set(acked) <= stored_votes(path)


# -- another program holding the write lock -----------------------------------------------------------------------
def test_readers_do_not_wait_behind_a_held_write_lock_and_the_writer_waits_a_bounded_time(study):
    store, path = study
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        states: list[dict] = []
        errors: list[BaseException] = []

        def write() -> None:
            try:
                vote(store, trial(store, 1))
            except StoreUnavailable as exc:  # expected: StoreBusy
                errors.append(exc)

        writer = threading.Thread(target=write)
        started = time.monotonic()
        writer.start()
        time.sleep(0.05)
        read_started = time.monotonic()
        assert store.list_pairs() and store.vote_counts()  # on this thread's reader: no wait for the writer
        read_s = time.monotonic() - read_started
        states.append(store.health())
        writer.join()
        waited = time.monotonic() - started
        assert read_s < 0.5, read_s
        assert len(errors) == 1 and isinstance(errors[0], StoreBusy), errors
        assert "write lock" in str(errors[0]) and waited < FAST.max_write_wait_s + 1
        assert states[0]["state"] == "busy" and "busy" in states[0]["reason"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    vote(store, trial(store, 2))  # the lock is gone: writes go through again
    assert store.health()["writable"] is True


# -- damaged and foreign files at start-up ------------------------------------------------------------------------
def _schema(path: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()


@pytest.mark.parametrize("fault, message", [
    ("damaged_pages", "it is damaged"),
    ("truncated", "truncated or damaged"),
    ("garbage", "not an SQLite database"),
    ("foreign_with_votes", "another application's database"),
    ("foreign_other", "another application's database"),
    ("fake_migrations", "schema_migrations says v2 but tables"),
    ("odd_migrations", "schema_migrations table is not a study's"),
    ("fake_bookkeeping", "_sqlite_migrations says v1_core_tables was applied but tables"),
    ("other_migration_set", "another application's database"),
    ("odd_bookkeeping", "_sqlite_migrations table is not sqlite-utils'"),
])
def test_a_damaged_or_foreign_database_is_refused_in_one_sentence_and_left_as_it_was(tmp_path, fault, message):
    path = tmp_path / "study.db"
    if fault in ("damaged_pages", "truncated"):
        make_study(tmp_path, seeds=(0, 1, 2), presets=("fast", "balanced"))[0].close()
        with Store(path) as store:
            for n in range(300):
                vote(store, trial(store, n, pair_id=1 + n % 6))
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(path.read_bytes())
        if fault == "truncated":
            path.write_bytes(bytes(data[:10]))
        else:
            for page in range(2, len(data) // 4096):  # scribble over the b-tree pages, keep the header page
                data[page * 4096 + 8: page * 4096 + 40] = b"\xa5" * 32
            path.write_bytes(bytes(data))
    elif fault == "garbage":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a study" * 50)
    else:
        conn = sqlite3.connect(path)
        conn.execute({"foreign_with_votes": "CREATE TABLE votes (id INTEGER PRIMARY KEY, poll TEXT)",
                      "foreign_other": "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
                      "fake_migrations": "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                         "applied_at TEXT)",
                      "odd_migrations": "CREATE TABLE schema_migrations (id TEXT)",
                      "odd_bookkeeping": "CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, note TEXT)",
                      }.get(fault, "CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, "
                                   "name TEXT, applied_at TEXT)"))
        if fault == "fake_migrations":
            conn.execute("INSERT INTO schema_migrations VALUES (2, 'x')")
        if fault in ("fake_bookkeeping", "other_migration_set"):  # sqlite-utils' table: this study's set or another
            migration_set = "instantid-review" if fault == "fake_bookkeeping" else "another-app"
            conn.execute("INSERT INTO _sqlite_migrations VALUES (1, ?, 'v1_core_tables', 'x')", [migration_set])
        conn.commit()
        conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreOpenError) as caught:
        Store(path)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text
    assert any(fix in text for fix in ("backup", "point --db", "check the"))
    if fault not in ("damaged_pages", "truncated", "garbage"):
        assert path.read_bytes() == before  # no table added, no WAL switch: the foreign file is untouched


def test_read_only_commands_leave_a_foreign_database_byte_identical_and_in_its_journal_mode(tmp_path, capsys):
    from review.cli.export import main_export
    from review.cli.leaderboard import main_leaderboard

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert main_leaderboard(["--db", str(path)]) == 2
    assert main_export(["--db", str(path), "--format", "csv", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("another application's database") == 2 and "Traceback" not in err
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_the_leaderboard_reads_a_study_without_writing_to_it(tmp_path, capsys):
    from review.cli.leaderboard import main_leaderboard

    store, _ = make_study(tmp_path, seeds=(0,), presets=("fast",))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path = tmp_path / "study.db"
    before = path.read_bytes()
    assert main_leaderboard(["--db", str(path)]) == 0
    assert path.read_bytes() == before


# -- a retried vote -------------------------------------------------------------------------------------------------
def test_a_retried_vote_gets_the_same_acknowledgement_and_the_next_pair(tmp_path):
    services = make_services(tmp_path, seeds=(0, 1), study=StudyConfig(gold_rate=0.0))
    desk = ReviewDesk(services)
    view = desk.open("sess", None, "preference", "a1")
    first = desk.cycle("sess", view.trial_id, "left", "preference", "a1")
    again = desk.cycle("sess", view.trial_id, "left", "preference", "a1")  # the client timed out and retried
    assert again[0].reveal == first[0].reveal and again[0].voted == first[0].voted == 1
    assert again[1].trial_id == first[1].trial_id is not None  # the same next pair, not a refusal
    assert len(services.store.vote_rows()) == 1
    with pytest.raises(Exception, match="already has your vote"):  # another choice is still a second vote
        desk.vote("sess", view.trial_id, "right", "a1")


# -- the running app ------------------------------------------------------------------------------------------------
def test_the_app_says_why_a_vote_was_not_saved_reports_health_and_serves_again(tmp_path):
    from test_app_server import Api

    services = make_services(tmp_path, seeds=(0, 1), study=StudyConfig(gold_rate=0.0))
    path = Path(services.store.path)
    services.store.close()
    services.store = Store(path, config=FAST)
    with launched(services) as base:
        api = Api(base)
        assert httpx.get(f"{base}healthz").json()["writable"] is True
        data = api.open("sess-a")
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another program takes the write lock
        try:
            ok, error = api.vote("sess-a", data["trial"], "left")
            assert not ok and "busy" in error and "Your vote was not saved" in error
            assert services.store.get_vote(data["trial"]) is None
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        ok, answer = api.vote("sess-a", data["trial"], "left")  # the page keeps the vote and sends it again
        assert ok and services.store.get_vote(data["trial"])["choice"] == "left"
        path.unlink()  # the file is removed under the running app
        ok, error = api.vote("sess-a", answer["trial"], "right")
        assert not ok and "removed or replaced" in error and "Your vote was not saved" in error
        health = httpx.get(f"{base}healthz")
        assert health.status_code == 503 and health.json()["state"] == "replaced"
        big = httpx.post(f"{base}gradio_api/run/predict", content=b"[" + b"0," * (2 * 2**20) + b"0]",
                         headers={"content-type": "application/json"})
        assert big.status_code == 413


@pytest.mark.slow
def test_sigterm_mid_generation_stops_after_the_current_image_and_tells_the_admin(tmp_path):
    """app.py with the tiny stack makes demo pairs on an empty database; SIGTERM arrives while the job loads the
    engine (it holds the generation lock by then), so the image in progress is the first: exactly one is stored
    (arriving after the first image instead costs a second generation and proves nothing more)."""
    port = __import__("fixtures_review").free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "REVIEW_STOP_GRACE_S": "60", "GRADIO_ANALYTICS_ENABLED": "False"}
    db = tmp_path / "review.db"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([os.sys.executable, str(root / "app.py"), "--db", str(db), "--data",
                             str(tmp_path / "data"), "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        log: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "loading the tiny engine" in line:  # inside the job, under the generation lock
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("".join(log[-30:]))
        proc.terminate()  # SIGTERM
        rest, _ = proc.communicate(timeout=120)
        log.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(log)
    assert proc.returncode is not None and "Traceback" not in text, text[-3000:]
    assert "SIGTERM: no new generation jobs" in text
    assert "generation stopped after 1 of 6 images" in text, text[-3000:]
    with Store(db) as store:  # what was stored is consistent; the app starts again on it
        assert store.integrity_check() == []
        assert [g["preset"] for g in store.db["generations"].rows] == ["full"]  # the image in progress, no more
        generated = {g["condition_id"] for g in store.db["generations"].rows}
        assert generated <= {c["id"] for c in store.db["conditions"].rows}
        assert all(store.db["generations"].count_where("condition_id = ?", [c["id"]])
                   for c in store.db["conditions"].rows)  # no condition without a generation


def test_generate_failures_are_reported_in_words():
    import errno

    from instantid import NoFaceError
    from review.study.services import JobStopped
    from review.ui.generate_tab import job_failure

    full = job_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert full.startswith("Generation failed: the disk is full") and "no partial file" in full
    assert "the storage is read-only" in job_failure(OSError(errno.EROFS, "Read-only file system"))
    stored = job_failure(StoreUnavailable("/x/study.db", "full", "the disk is full"))
    assert stored.startswith("The study database cannot be written: the disk is full.") and "/x/" not in stored
    assert job_failure(JobStopped("the app is shutting down")).startswith("Generation stopped: the app is shutting")
    assert job_failure(NoFaceError("no face found")).startswith("The reference photo cannot be used")


def test_review_generate_refuses_a_damaged_or_foreign_db_before_loading_the_engine(tmp_path, capsys, monkeypatch):
    import instantid
    from review.cli.generate import main_generate

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine must not load for a bad --db")

    monkeypatch.setattr(instantid, "load_engine", no_engine)

    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    face = Path(__file__).resolve().parent.parent / "data" / "faces" / "astronaut.jpg"
    assert main_generate(["--db", str(db), "--faces", str(face), "--prompts", "a portrait"]) == 2
    assert "another application's database" in capsys.readouterr().err
    assert db.read_bytes() == before

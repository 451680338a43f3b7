"""The study's SQLite store: the only place in the project that runs SQL (sqlite-utils).

``Store(path)`` opens (WAL, foreign keys, busy timeout), checks the file (``review.store.opening``: an SQLite file,
``PRAGMA quick_check``, a study's schema, never a foreign database), migrates, and offers small typed methods. One
Store may be shared by threads (one writer under a lock, one reader connection per thread); several processes may
write to one file (bounded busy wait + retries). ``Store(path, read_only=True)`` opens ``mode=ro`` and never writes.
Rows come back as plain dicts (JSON columns of ``generations`` decoded); timestamps come from the injected clock.
The store records what it is told and enforces integrity; it never randomizes or picks (study logic lives elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import statistics
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from instantid import GenerationSettings  # torch-free: the one definition of the settings columns

from . import queries as q
from .connection import (
    Connection,
    ConnectionConfig,
    DuplicateVote,
    StoreBusy,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
    utc_now,
)
from .migrations import LATEST, MIGRATIONS
from .migrations import migrate as _migrate
from .migrations import schema_version as _schema_version
from .opening import StoreOpenError, check_database, check_path, open_error

__all__ = [
    "LATEST", "MIGRATIONS", "ConnectionConfig", "DuplicateVote", "Store", "StoreBusy", "StoreError",
    "StoreIntegrityError", "StoreOpenError", "StoreUnavailable", "condition_inputs", "condition_key",
    "utc_now",
]

logger = logging.getLogger(__name__)

Row = dict[str, Any]
CountBy = Literal["pair", "preset", "condition"]
IdentityKind = Literal["legacy", "anonymous", "invite", "hf"]
SECRET_PREFIX = "secret:"  # settings keys never returned by get_settings nor written by put_setting
_GENERATION_JSON = ("layers", "step_times", "versions")


def condition_inputs(*, prompt: str, seed: int, stack: str, **settings: Any) -> Row:
    """A condition's generation inputs as stored: the prompt, the seed, ``instantid.GenerationSettings``' fields
    (its own field list and types, never re-listed here; TypeError for a missing or unknown one) and the stack."""
    return {"prompt": prompt, "seed": int(seed), **GenerationSettings.typed(settings), "stack": stack}


def condition_key(face_sha256: str, **inputs: Any) -> str:
    """sha256 of every generation input (``condition_inputs``' keywords; the face by content hash, so keys are
    stable across databases)."""
    keyed = {"face_sha256": face_sha256, **condition_inputs(**inputs)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def _decode_generation(row: Row | None) -> Row | None:
    if row is not None:
        for column in _GENERATION_JSON:
            row[column] = json.loads(row[column])
    return row


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


class Store:
    """Typed access to the study database; see the module docstring."""

    def __init__(self, path: str | Path, *, clock: Callable[[], str] | None = None,
                 config: ConnectionConfig | None = None, migrate: bool = True, read_only: bool = False,
                 check: Literal["quick", "full"] | None = "quick") -> None:
        """Open (and for writing create) the study at ``path``. ``check``: ``quick`` runs ``PRAGMA quick_check``,
        ``full`` ``integrity_check``; a damaged, foreign or unreadable file raises StoreOpenError (one sentence:
        which file, what is wrong, what to do). ``read_only``: the file must exist; nothing is written."""
        self.path = Path(path) if str(path) != ":memory:" else path
        self._clock = clock or utc_now
        self.read_only = read_only
        if isinstance(self.path, Path):
            check_path(self.path, must_exist=read_only, writable=not read_only)
        try:
            existing = isinstance(self.path, Path) and self.path.exists() and self.path.stat().st_size > 0
            if existing and not read_only:
                # an existing file is checked through a mode=ro connection first: nothing (not even the WAL
                # switch) is written to a file before it is known to be an intact study
                probe = Connection(path, config, read_only=True)
                try:
                    check_database(probe, check)
                finally:
                    probe.close()
                check = None
            self._conn = Connection(path, config, read_only=read_only)
        except StoreUnavailable as exc:
            raise open_error(str(self.path), exc) from exc
        try:
            check_database(self._conn, check)
            if migrate and not read_only:
                self.migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def db(self) -> Database:
        """The sqlite-utils Database, for tests and read-only inspection; project code calls methods instead."""
        return self._conn.db

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: latest); returns the versions applied now."""
        return _migrate(self._conn, self._clock, target)

    def schema_version(self) -> int:
        return _schema_version(self._conn)

    def health(self) -> dict[str, Any]:
        """Can the study be written now? ``{"writable", "state", "reason"}`` (state: ok, busy, full, read-only,
        damaged, replaced, io); cheap: a file identity check, the file system's flags and free space, the last
        write's outcome and an empty write transaction when no writer is waiting."""
        from .opening import health

        return health(self._conn)

    def integrity_check(self) -> list[str]:
        """Problems found by ``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check``; empty when healthy."""
        problems = [r["integrity_check"] for r in self._conn.rows("PRAGMA integrity_check")]
        problems = [p for p in problems if p != "ok"]
        for r in self._conn.rows("PRAGMA foreign_key_check"):
            problems.append(f"foreign key: {r['table']} rowid {r['rowid']} -> {r['parent']} missing")
        return problems

    def snapshot(self, path: str | Path) -> Path:
        """A consistent copy of the database at ``path`` (SQLite's online backup API; safe while in use)."""
        import sqlite3

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(str(path))
        try:
            with self._conn.lock:
                self._conn.db.conn.backup(target)
        finally:
            target.close()
        return path

    def _get(self, table: str, where: str, args: Sequence[Any]) -> Row | None:
        rows = self._conn.rows(f"SELECT * FROM {table} WHERE {where}", list(args))
        return rows[0] if rows else None

    # -- faces, conditions, images, generations ------------------------------------------------------------
    def add_face(self, *, sha256: str, file: str, width: int, height: int, label: str | None = None) -> Row:
        """Add a reference face; an already stored sha256 returns the existing row unchanged."""
        row = {"sha256": sha256, "file": file, "label": label, "width": int(width), "height": int(height),
               "created_at": self._clock()}
        self._conn.write(lambda db: db.execute(q.INSERT_FACE, row))
        return self.get_face_by_sha(sha256)  # type: ignore[return-value]

    def get_face_by_sha(self, sha256: str) -> Row | None:
        return self._get("faces", "sha256 = ?", [sha256])

    def upsert_condition(self, *, face_id: int, **inputs: Any) -> Row:
        """The condition with these inputs (``condition_inputs``' keywords; key = ``condition_key(face sha,
        inputs)``); inserted when new."""
        inputs = condition_inputs(**inputs)

        def write(db: Database) -> str:
            face = db.execute("SELECT sha256 FROM faces WHERE id = ?", [face_id]).fetchone()
            if face is None:
                raise StoreIntegrityError(f"no face with id {face_id}")
            key = condition_key(face[0], **inputs)
            db.execute(q.INSERT_CONDITION, {**inputs, "key": key, "face_id": face_id,
                                            "created_at": self._clock()})
            return key

        key = self._conn.write(write)
        return self._get("conditions", "key = ?", [key])  # type: ignore[return-value]

    def get_condition(self, condition_id: int) -> Row | None:
        return self._get("conditions", "id = ?", [condition_id])

    def get_condition_by_key(self, key: str) -> Row | None:
        """The condition stored under ``condition_key(...)``, or None (a lookup that writes nothing)."""
        return self._get("conditions", "key = ?", [key])

    def add_image(self, *, file: str, sha256: str, width: int, height: int) -> Row:
        """Record an image file written by ``review.images.write_image`` (opaque name, unique)."""
        row = {"file": file, "sha256": sha256, "width": int(width), "height": int(height),
               "created_at": self._clock()}
        return self._conn.write(lambda db: db["images"].get(db["images"].insert(row).last_pk))

    def add_generation(self, *, condition_id: int, preset: str, layers: Sequence[str], layer_count: int,
                       image_id: int, total_s: float, step_times: Sequence[float], device: str, dtype: str,
                       versions: dict[str, Any], run_id: str, id_cos_ref: float | None = None,
                       id_failure: str | None = None, timing_mode: str = "eager") -> Row:
        """One arm's output ('full' for the full arm). step_median_s is derived here from step_times;
        ``timing_mode``: how its steps ran (GenerationResult.timing_mode: 'graphs', 'eager' or 'mixed')."""
        times = [float(t) for t in step_times]
        row = {"condition_id": condition_id, "preset": preset, "layers": json.dumps(list(layers)),
               "layer_count": int(layer_count), "image_id": image_id, "total_s": float(total_s),
               "step_times": json.dumps(times), "step_median_s": statistics.median(times) if times else None,
               "device": device, "dtype": dtype, "versions": json.dumps(versions, sort_keys=True),
               "run_id": run_id, "id_cos_ref": _opt_float(id_cos_ref), "id_failure": id_failure,
               "timing_mode": timing_mode, "created_at": self._clock()}
        stored = self._conn.write(lambda db: db["generations"].get(db["generations"].insert(row).last_pk))
        return _decode_generation(stored)  # type: ignore[return-value]

    def get_generation(self, condition_id: int, preset: str) -> Row | None:
        return _decode_generation(self._get("generations", "condition_id = ? AND preset = ?",
                                            [condition_id, preset]))

    # -- pairs -----------------------------------------------------------------------------------------------
    def add_pair(self, *, full_generation_id: int, selective_generation_id: int, ssim: float,
                 id_cos_sel_full: float | None = None, id_cos_sel_ref: float | None = None,
                 id_cos_full_ref: float | None = None, identity_failure: str | None = None) -> Row:
        """Pair a full and a selective generation of one condition; condition, preset and layer count are
        taken from the selective generation (a trigger refuses arms of different conditions)."""

        def write(db: Database) -> Row:
            sel = db.execute("SELECT condition_id, preset, layer_count FROM generations WHERE id = ?",
                             [selective_generation_id]).fetchone()
            if sel is None:
                raise StoreIntegrityError(f"no generation with id {selective_generation_id}")
            row = {"condition_id": sel[0], "preset": sel[1], "layer_count": sel[2],
                   "full_generation_id": full_generation_id, "selective_generation_id": selective_generation_id,
                   "ssim": float(ssim), "id_cos_sel_full": _opt_float(id_cos_sel_full),
                   "id_cos_sel_ref": _opt_float(id_cos_sel_ref), "id_cos_full_ref": _opt_float(id_cos_full_ref),
                   "identity_failure": identity_failure, "created_at": self._clock()}
            return db["pairs"].insert(row).last_pk

        pair_id = self._conn.write(write)
        return self._get("pairs", "id = ?", [pair_id])  # type: ignore[return-value]

    def get_pair(self, pair_id: int) -> Row | None:
        """One pair joined with its condition, both generations' timing/device/run and both image files."""
        rows = self._conn.rows(q.GET_PAIR, [pair_id])
        return rows[0] if rows else None

    def list_pairs(self) -> list[Row]:
        """Every pair as get_pair returns it (full_/sel_ step_median_s, total_s, device, dtype, run_id, file)."""
        return self._conn.rows(q.LIST_PAIRS)

    # -- reviewers, trials, votes ----------------------------------------------------------------------------
    def get_or_create_reviewer(self, reviewer_id: str, identity_kind: IdentityKind = "legacy") -> Row:
        """The reviewer row, created on first sight (with ``identity_kind``); last_seen is updated to now."""
        self._conn.write(lambda db: db.execute(q.UPSERT_REVIEWER, {"id": reviewer_id, "now": self._clock(),
                                                                   "kind": identity_kind}))
        return self._get("reviewers", "id = ?", [reviewer_id])  # type: ignore[return-value]

    def get_reviewer(self, reviewer_id: str) -> Row | None:
        return self._get("reviewers", "id = ?", [reviewer_id])

    def create_trial(self, *, reviewer_id: str, session: str, pair_id: int,
                     mode: Literal["preference", "abx"], left_arm: Literal["full", "selective"],
                     left_image: str, right_image: str, x_arm: Literal["full", "selective"] | None = None,
                     x_image: str | None = None, is_gold: bool = False, trial_id: str | None = None,
                     gold_kind: Literal["identical", "degraded"] | None = None, expected: str | None = None,
                     identity_kind: IdentityKind = "legacy", reveal: str | None = None) -> Row:
        """Record a served trial (the answer key stays server-side). Image names are the per-trial copies.
        Gold trials made since v3 carry ``gold_kind`` and the ``expected`` choice (their votes are then
        'correct'/'wrong'); ``identity_kind`` and ``reveal`` record how the reviewer was identified and which reveal
        setting the trial was served under."""
        row = {"id": trial_id or uuid.uuid4().hex, "reviewer_id": reviewer_id, "session": session,
               "pair_id": pair_id, "mode": mode, "left_arm": left_arm, "x_arm": x_arm,
               "left_image": left_image, "right_image": right_image, "x_image": x_image,
               "is_gold": int(bool(is_gold)), "created_at": self._clock(), "gold_kind": gold_kind,
               "expected": expected, "identity_kind": identity_kind, "reveal": reveal}
        self._conn.write(lambda db: db["trials"].insert(row))
        return self.get_trial(row["id"])  # type: ignore[return-value]

    def get_trial(self, trial_id: str) -> Row | None:
        return self._get("trials", "id = ?", [trial_id])

    def record_vote(self, *, trial_id: str, reviewer_id: str, choice: str, outcome: str,
                    correct: bool | None = None, latency_ms: int | None = None,
                    client: str | None = None) -> Row:
        """Store the one vote of a trial and touch the reviewer's last_seen, atomically.

        Raises DuplicateVote when the trial already has a vote, StoreIntegrityError when the vote does not fit
        the trial (unknown trial, other reviewer, choice/outcome not matching the trial's mode and arms)."""
        now = self._clock()
        row = {"trial_id": trial_id, "reviewer_id": reviewer_id, "choice": choice, "outcome": outcome,
               "correct": None if correct is None else int(bool(correct)),
               "latency_ms": None if latency_ms is None else int(latency_ms), "client": client,
               "created_at": now}

        def write(db: Database) -> Row:
            stored = db["votes"].get(db["votes"].insert(row).last_pk)
            db.execute(q.TOUCH_REVIEWER, {"id": reviewer_id, "now": now})
            return stored

        return self._conn.write(write)

    def get_vote(self, trial_id: str) -> Row | None:
        return self._get("votes", "trial_id = ?", [trial_id])

    # -- reads for the picker, statistics and exports ---------------------------------------------------------
    def vote_counts(self, by: CountBy = "pair", *, mode: str | None = None,
                    include_gold: bool = False) -> list[Row]:
        """Per pair / preset / condition: pairs, trials served and votes stored (zero rows included)."""
        if by not in q.COUNTS:
            raise ValueError(f"by must be one of {sorted(q.COUNTS)}, not {by!r}")
        return self._conn.rows(q.COUNTS[by], {"mode": mode, "gold": int(include_gold)})

    def pairs_seen_by(self, reviewer_id: str, *, mode: str | None = None) -> dict[int, int]:
        """pair_id -> number of trials of that pair already served to this reviewer."""
        rows = self._conn.rows(q.PAIRS_SEEN, {"reviewer": reviewer_id, "mode": mode})
        return {r["pair_id"]: r["trials"] for r in rows}

    def get_face(self, face_id: int) -> Row | None:
        return self._get("faces", "id = ?", [face_id])

    def get_image(self, image_id: int) -> Row | None:
        return self._get("images", "id = ?", [image_id])

    def pairs_version(self) -> tuple[int, int]:
        """(pairs stored, highest pair id): changes whenever a pair is added or removed (cheap: no joins)."""
        row = self._conn.rows(q.PAIRS_VERSION)[0]
        return row["pairs"], row["last"]

    def study_version(self) -> tuple[int, int]:
        """(pairs, votes) stored: changes whenever the leaderboard's inputs change."""
        row = self._conn.rows(q.STUDY_VERSION)[0]
        return row["pairs"], row["votes"]

    def vote_rows(self) -> list[Row]:
        """One flat dict per vote: vote, trial (mode, arms, gold), pair metrics and condition columns."""
        return self._conn.rows(q.VOTE_ROWS)

    def trial_rows(self) -> list[Row]:
        """One flat dict per served trial with its vote columns (None when unanswered)."""
        return self._conn.rows(q.TRIAL_ROWS)

    # -- study settings, the install secret, invites ----------------------------------------------------------
    def get_settings(self) -> dict[str, str]:
        """The stored study settings (key -> value); secrets are left out."""
        rows = self._conn.rows("SELECT key, value FROM settings ORDER BY key")
        return {r["key"]: r["value"] for r in rows if not r["key"].startswith(SECRET_PREFIX)}

    def put_setting(self, key: str, value: str) -> None:
        """Store one study setting (checking values is the caller's job: ``review.study.settings``)."""
        if not isinstance(key, str) or not key or key.startswith(SECRET_PREFIX) or not isinstance(value, str):
            raise ValueError(f"not a setting: {key!r} = {value!r}")
        self._conn.write(lambda db: db.execute(q.PUT_SETTING, {"key": key, "value": value}))

    def install_secret(self) -> str:
        """This database's secret (64 hex), generated from ``secrets`` on first use and kept in ``settings``."""
        key, fresh = f"{SECRET_PREFIX}install", secrets.token_hex(32)
        self._conn.write(lambda db: db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", [key, fresh]))
        return self._conn.scalar("SELECT value FROM settings WHERE key = ?", [key])

    def add_invites(self, ids: Sequence[str], *, expires_at: str | None = None) -> None:
        """Record new invite ids (unused)."""
        now = self._clock()
        rows = [{"id": i, "created_at": now, "expires_at": expires_at, "reviewer_id": None, "used_at": None}
                for i in ids]
        self._conn.write(lambda db: db["invites"].insert_all(rows))

    def get_invite(self, invite_id: str) -> Row | None:
        return self._get("invites", "id = ?", [invite_id])

    def claim_invite(self, invite_id: str, reviewer_id: str) -> bool:
        """Bind an unused, unexpired invite to a new invite reviewer, atomically; False when it cannot be."""
        now = self._clock()

        def claim(db: Database) -> bool:
            db.execute(q.UPSERT_REVIEWER, {"id": reviewer_id, "now": now, "kind": "invite"})
            changed = db.execute(q.CLAIM_INVITE, {"id": invite_id, "reviewer": reviewer_id, "now": now}).rowcount
            if changed != 1:
                raise _NotClaimed()
            return True

        try:
            return self._conn.write(claim)
        except _NotClaimed:
            return False


class _NotClaimed(Exception):
    """Rolls back a claim that found no unused, unexpired invite (the reviewer row goes with it)."""

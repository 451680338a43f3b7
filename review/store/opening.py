"""Checks before a study database is used, and its health: a damaged, foreign or missing file is refused in one
sentence (which file, what is wrong, what to do), never with a traceback, and never gets tables added.

Order (cheap first): the path (a file, not a directory), the 16-byte SQLite header, then, once connected,
``PRAGMA quick_check`` (or ``integrity_check`` on demand), then the schema: a file with tables but no bookkeeping
of this study's migrations (``_sqlite_migrations`` rows of the set ``instantid-review``, or the older
``schema_migrations`` table) is another application's database; bookkeeping of another shape, or one that claims
migrations whose tables are missing, is refused too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .connection import Connection
from .errors import StoreError, StoreUnavailable
from .migrations import BOOKKEEPING_TABLE, LEGACY_TABLE, MIGRATION_SET, NAMES

logger = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every non-empty SQLite database file
V1_TABLES = frozenset({"faces", "conditions", "images", "generations", "pairs", "reviewers", "trials", "votes"})
MIN_FREE_BYTES = 2**20  # below this much free space (the WAL's size bound) the health check reports a full disk
_FIX = {
    "damaged": "restore it from a backup, or move it aside to start a new study",
    "foreign": "point --db / REVIEW_DB at a study database or at a new file",
    "missing": "check the path (--db / REVIEW_DB)",
}


class StoreOpenError(StoreError):
    """The file cannot be opened as a study database; ``str()`` is one sentence for the user."""

    def __init__(self, path: str, problem: str, fix: str = "check the file and the path (--db / REVIEW_DB)") -> None:
        self.path, self.problem = path, problem
        super().__init__(f"cannot open the study database {path}: {problem}; {fix}")


def open_error(path: str, exc: StoreUnavailable) -> StoreOpenError:
    """A storage fault met while opening, as one sentence with what to do."""
    if exc.kind == "damaged":
        return StoreOpenError(path, "it is damaged (the file is not a readable SQLite database)", _FIX["damaged"])
    return StoreOpenError(path, exc.reason, "check the file and its storage")


def check_path(path: Path, *, must_exist: bool, writable: bool = False) -> None:
    """Refuse a directory, a missing file (when it must exist), a non-empty file that is not SQLite, and (for
    writing) a file on read-only storage."""
    if path.is_dir():
        raise StoreOpenError(str(path), "it is a directory", _FIX["missing"])
    if writable:
        try:
            read_only = bool(os.statvfs(path.parent if path.parent.exists() else ".").f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            raise StoreOpenError(str(path), "its storage is read-only",
                                 "make it writable (read-only commands such as `review leaderboard` still work)")
    if not path.exists():
        if must_exist:
            raise StoreOpenError(str(path), "no such file", _FIX["missing"])
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreOpenError(str(path), f"it cannot be read ({exc.strerror or exc})") from exc
    if header == b"" and must_exist:
        raise StoreOpenError(str(path), "the file is empty, not a study database", _FIX["foreign"])
    if header and header != SQLITE_MAGIC:
        kind = "truncated or damaged" if SQLITE_MAGIC.startswith(header) else "not an SQLite database"
        raise StoreOpenError(str(path), f"it is {kind}", _FIX["damaged" if "damaged" in kind else "foreign"])


def _check_legacy_bookkeeping(conn: Connection) -> int:
    """The version the old ``schema_migrations`` table claims, once its shape is a study's."""
    path = conn.path
    columns = [r["name"] for r in conn.writer_rows(f"PRAGMA table_info({LEGACY_TABLE})")]
    if columns[:2] != ["version", "applied_at"]:
        raise StoreOpenError(path, f"its {LEGACY_TABLE} table is not a study's (columns {columns})", _FIX["foreign"])
    version = conn.writer_rows(f"SELECT coalesce(max(version), 0) AS v FROM {LEGACY_TABLE}")[0]["v"]
    if not isinstance(version, int):
        raise StoreOpenError(path, f"its {LEGACY_TABLE} table holds {version!r}, not a version number",
                             _FIX["foreign"])
    return version


def _check_bookkeeping(conn: Connection) -> list[str]:
    """The names of this study's applied migrations in ``_sqlite_migrations``, once its shape is sqlite-utils'."""
    columns = {r["name"] for r in conn.writer_rows(f"PRAGMA table_info({BOOKKEEPING_TABLE})")}
    if not {"migration_set", "name", "applied_at"} <= columns:
        raise StoreOpenError(conn.path, f"its {BOOKKEEPING_TABLE} table is not sqlite-utils' (columns "
                             f"{sorted(columns)})", _FIX["foreign"])
    rows = conn.writer_rows(f"SELECT name FROM {BOOKKEEPING_TABLE} WHERE migration_set = ?", [MIGRATION_SET])
    return [r["name"] for r in rows]


def _check_schema(conn: Connection, tables: set[str]) -> None:
    """A study's bookkeeping whose claims the tables back; StoreOpenError otherwise."""
    path = conn.path
    names = _check_bookkeeping(conn) if BOOKKEEPING_TABLE in tables else []
    if not names and LEGACY_TABLE not in tables:
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreOpenError(path, f"it is another application's database (tables {listed}; no record of the "
                             f"study's migrations in {BOOKKEEPING_TABLE} or {LEGACY_TABLE})", _FIX["foreign"])
    if names:
        claim = f"{BOOKKEEPING_TABLE} says {NAMES[0]} was applied" if NAMES[0] in names else ""
    else:
        version = _check_legacy_bookkeeping(conn)
        claim = f"{LEGACY_TABLE} says v{version}" if version >= 1 else ""
    missing = sorted(V1_TABLES - tables) if claim else []
    if missing:
        raise StoreOpenError(path, f"{claim} but tables {', '.join(missing)} are missing", _FIX["damaged"])


def check_database(conn: Connection, check: str | None) -> None:
    """quick_check / integrity_check, then the schema; StoreOpenError with one sentence otherwise."""
    path = conn.path
    try:
        if check is not None:
            pragma = "integrity_check" if check == "full" else "quick_check"
            problems = [r[pragma] for r in conn.writer_rows(f"PRAGMA {pragma}")]
            if problems != ["ok"]:
                shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
                raise StoreOpenError(path, f"it is damaged ({pragma}: {shown})", _FIX["damaged"])
        tables = {r["name"] for r in conn.writer_rows("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                      "AND name NOT LIKE 'sqlite_%'")}
        if tables:
            _check_schema(conn, tables)
    except StoreUnavailable as exc:
        raise open_error(path, exc) from exc


def _state(kind: str, reason: str, writable: bool = False) -> dict[str, Any]:
    return {"writable": writable, "state": kind, "reason": reason}


def _storage_state(conn: Connection) -> dict[str, Any]:
    """What is wrong with the file or its storage (a health dict), else ``{"free_bytes": ...}``."""
    try:
        conn.check_file()
    except StoreUnavailable as exc:
        return _state(exc.kind, exc.reason)
    if conn.read_only:
        return _state("read-only", "opened read-only")
    folder = os.path.dirname(os.path.abspath(conn.path))
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return _state("read-only", "its storage is read-only")
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return _state("io", f"its storage cannot be inspected ({exc})")
    if free < MIN_FREE_BYTES:
        return _state("full", f"the disk is (nearly) full: {free // 1024} KiB free")
    return {"free_bytes": free}


def health(conn: Connection) -> dict[str, Any]:
    """See ``Store.health``."""
    if conn.memory:
        return _state("ok", "", True)
    storage = _storage_state(conn)
    if "state" in storage:
        return storage
    busy = conn.busy_since
    if busy is not None:
        return _state("busy", f"busy, retrying: another writer holds the lock ({time.monotonic() - busy:.1f} s)",
                      True)
    if not conn.lock.acquire(timeout=0.5):
        return _state("busy", "busy: a write is in progress", True)
    try:
        conn.write(lambda db: None)  # an empty transaction: takes and releases the write lock, writes nothing
    except StoreUnavailable as exc:
        return _state(exc.kind, exc.reason)
    finally:
        conn.lock.release()
    return {**_state("ok", "", True), **storage}

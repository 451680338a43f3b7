"""Checks before a study database is used, and its health: a damaged, foreign or missing file is refused in one
sentence (which file, what is wrong, what to do), never with a traceback, and never gets tables added.

Order (cheap first): the path (a file, not a directory), the 16-byte SQLite header, then, once connected,
``PRAGMA quick_check`` (or ``integrity_check`` on demand), then the schema: a file with tables but no
``schema_migrations`` is another application's database; a ``schema_migrations`` table of another shape, or one
that claims versions whose tables are missing, is refused too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .connection import Connection, StoreError, StoreUnavailable

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
        if not tables:
            return
        if "schema_migrations" not in tables:
            listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreOpenError(path, f"it is another application's database (tables {listed}; no "
                                 "schema_migrations)", _FIX["foreign"])
        columns = [r["name"] for r in conn.writer_rows("PRAGMA table_info(schema_migrations)")]
        if columns[:2] != ["version", "applied_at"]:
            raise StoreOpenError(path, f"its schema_migrations table is not a study's (columns {columns})",
                                 _FIX["foreign"])
        version = conn.writer_rows("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[0]["v"]
        if not isinstance(version, int):
            raise StoreOpenError(path, f"its schema_migrations table holds {version!r}, not a version number",
                                 _FIX["foreign"])
        missing = sorted(V1_TABLES - tables) if version >= 1 else []
        if missing:
            raise StoreOpenError(path, f"schema_migrations says v{version} but tables {', '.join(missing)} are "
                                 "missing", _FIX["damaged"])
    except StoreUnavailable as exc:
        raise open_error(path, exc) from exc


def health(conn: Connection) -> dict[str, Any]:
    """See ``Store.health``."""
    def state(kind: str, reason: str, writable: bool = False) -> dict[str, Any]:
        return {"writable": writable, "state": kind, "reason": reason}

    if conn.memory:
        return state("ok", "", True)
    try:
        conn.check_file()
    except StoreUnavailable as exc:
        return state(exc.kind, exc.reason)
    if conn.read_only:
        return state("read-only", "opened read-only")
    folder = os.path.dirname(os.path.abspath(conn.path))
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return state("read-only", "its storage is read-only")
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return state("io", f"its storage cannot be inspected ({exc})")
    if free < MIN_FREE_BYTES:
        return state("full", f"the disk is (nearly) full: {free // 1024} KiB free")
    busy = conn.busy_since
    if busy is not None:
        return state("busy", f"busy, retrying: another writer holds the lock ({time.monotonic() - busy:.1f} s)",
                     True)
    if not conn.lock.acquire(timeout=0.5):
        return state("busy", "busy: a write is in progress", True)
    try:
        conn.write(lambda db: None)  # an empty transaction: takes and releases the write lock, writes nothing
    except StoreUnavailable as exc:
        return state(exc.kind, exc.reason)
    finally:
        conn.lock.release()
    return {**state("ok", "", True), "free_bytes": free}

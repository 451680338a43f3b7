"""The SQLite connections a Store owns: one writer (serialized, bounded wait, retried) and per-thread readers.

Design:
- **one writer**: a ``sqlite3`` connection (``check_same_thread=False``, autocommit driver) wrapped by sqlite-utils;
  every write is an explicit ``BEGIN IMMEDIATE`` transaction under one in-process lock, so the write lock is taken
  up front (no read-to-write upgrade that could fail half-way). Another process holding the lock is waited for at
  most ``busy_timeout_ms`` per attempt and ``retries`` attempts (``review.store.config``: tenacity; the bound is
  ``ConnectionConfig.max_write_wait_s``); while it waits ``busy_since`` is set (the health route says "busy,
  retrying") and then ``StoreBusy`` is raised;
- **per-thread readers** (files only): each thread reads through its own connection, so a read never waits for
  the writer's lock, in this process or another (WAL: readers see the last commit while a write is under way);
- **never acknowledge what cannot be kept**: the file's (device, inode) is recorded at open and compared with the
  file at the configured path before every commit and every read (one ``stat``, ~2 us); a removed or replaced file
  raises ``StoreUnavailable`` (kind ``replaced``) and the transaction is rolled back, so nothing is written into
  an unlinked file and acknowledged;
- **errors a person can read**: SQLite's full / read-only / damaged / I/O errors become ``StoreUnavailable`` with a
  ``kind`` and a ``reason`` in plain words (``review.store.errors``);
- **bounded WAL**: ``wal_autocheckpoint`` = 256 pages and ``journal_size_limit`` = 1 MiB, so after each automatic
  checkpoint the WAL file is truncated back to at most 1 MiB (a reader holding an old snapshot can delay it);
- ``read_only=True`` opens ``file:...?mode=ro`` (no WAL switch, no pragma that writes, ``query_only``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlite_utils import Database

from .config import ConnectionConfig, busy_retrying
from .errors import StoreUnavailable, integrity_error, storage_error

logger = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]
Row = dict[str, Any]
WAL_AUTOCHECKPOINT_PAGES = 256  # checkpoint once the WAL holds this many pages (SQLite's default is 1000)
JOURNAL_SIZE_LIMIT = 2**20  # the WAL is truncated back to this many bytes after a checkpoint


def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _on_read_only_storage(path: str) -> bool:
    try:
        return bool(os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class Connection:
    """One serialized writer and per-thread readers on one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, config: ConnectionConfig | None = None, *, read_only: bool = False) -> None:
        self.config = config or ConnectionConfig()
        self.path = str(path)
        self.read_only = read_only
        self.memory = self.path == ":memory:"
        self.lock = threading.RLock()  # the writer (and, for :memory:, every use)
        self.busy_since: float | None = None  # monotonic time a write started waiting for another writer
        self.last_failure: StoreUnavailable | None = None  # the last storage fault a write met (cleared on success)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._retrying = busy_retrying(self.config, self.path, self._on_first_wait)
        self.db = Database(self._call(lambda: self._connect(create=not read_only)), execute_plugins=False)
        self.file_id = None if self.memory else file_id(self.path)
        with self.lock:
            self._call(lambda: self._retry(self._pragmas))
        # the WAL and shared-memory files of *this* file: set aside if the database file is replaced under us
        self._side_ids = {} if self.memory or read_only else {s: file_id(self.path + s) for s in ("-wal", "-shm")}

    # -- opening --------------------------------------------------------------------------------------------------
    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        """A connection to the file: ``mode=ro`` when read-only, ``mode=rw`` (never creates it) unless ``create``."""
        timeout = self.config.busy_timeout_ms / 1000
        if self.memory or create:
            conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        else:
            uri = f"file:{quote(os.path.abspath(self.path))}?mode={'ro' if self.read_only else 'rw'}"
            if self.read_only and _on_read_only_storage(self.path):
                uri += "&immutable=1"  # no -shm can be made there, and nothing can change the file either
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False, isolation_level=None)
        if self.read_only:
            conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _pragmas(self) -> None:
        if self.read_only or self.memory:
            return
        self.db.execute(f"PRAGMA synchronous = {self.config.synchronous}")
        mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreUnavailable(self.path, "io", f"it could not be switched to WAL (journal_mode={mode})")
        self.db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        self.db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")

    def close(self) -> None:
        """Close the writer and every thread's reader."""
        with self.lock, self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self.db.close()

    # -- checks ---------------------------------------------------------------------------------------------------
    def check_file(self) -> None:
        """Raise StoreUnavailable (kind ``replaced``) when the file at the path is not the one opened."""
        if self.memory:
            return
        now = file_id(self.path)
        if now != self.file_id:
            self._set_aside_side_files()
            what = "was removed" if now is None else "was replaced by another file"
            raise StoreUnavailable(self.path, "replaced", f"the database file {what} while the app was running; "
                                   "nothing more can be saved until the app is restarted on the right file")

    def _set_aside_side_files(self) -> None:
        """Rename this connection's own -wal/-shm (same inode as at open) to ``*.replaced``: left at the path
        they would be read with the new file at the next start (SQLite cannot tell whose WAL it is), which
        corrupts it ("database disk image is malformed")."""
        for suffix, known in self._side_ids.items():
            side = self.path + suffix
            if known is not None and file_id(side) == known:
                try:
                    os.replace(side, f"{side}.replaced")
                    logger.error("%s was removed or replaced: its old %s set aside as %s.replaced", self.path,
                                 suffix, side)
                except OSError as exc:
                    logger.error("cannot set aside %s: %s", side, exc)
        self._side_ids = {}

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; SQLite/OS storage faults become StoreUnavailable, constraint failures StoreIntegrityError."""
        try:
            return fn()
        except sqlite3.IntegrityError as exc:
            raise integrity_error(exc) from exc
        except (sqlite3.DatabaseError, OSError) as exc:
            readable = storage_error(self.path, exc)
            if readable is None:
                raise
            raise readable from exc

    # -- writing --------------------------------------------------------------------------------------------------
    def _on_first_wait(self) -> None:
        if self.busy_since is None:
            self.busy_since = time.monotonic()
            logger.warning("%s is busy (another writer holds the lock): retrying", self.path)

    def _retry(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried while another writer holds the lock (``review.store.config.busy_retrying``)."""
        try:
            return self._retrying(fn)
        finally:
            self.busy_since = None

    def _transaction(self, fn: Callable[[Database], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db)
            self.check_file()  # never commit (and so acknowledge) into a removed or replaced file
            self.db.execute("COMMIT")
            return result
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.rollback()
            raise

    def write(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` in one serialized write transaction; commit, or roll back and re-raise.

        Constraint failures become StoreIntegrityError (DuplicateVote for a second vote on a trial); storage
        faults StoreUnavailable (StoreBusy after the bounded wait)."""
        if self.read_only:
            raise StoreUnavailable(self.path, "read-only", "it was opened read-only")
        with self.lock:
            try:
                result = self._call(lambda: self._retry(lambda: self._transaction(fn)))
            except StoreUnavailable as exc:
                self.last_failure = exc
                raise
            self.last_failure = None
            return result

    # -- reading --------------------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        reader = getattr(self._local, "conn", None)
        if reader is None:
            reader = self._connect()
            self._local.conn = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        if self.memory:  # one in-memory database: only the writer connection sees it
            with self.lock:
                return self._call(lambda: self._retry(lambda: run(self.db.conn)))
        self.check_file()
        return self._call(lambda: self._retry(lambda: run(self._reader())))

    def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Run a SELECT on this thread's reader and return every row as a dict (never waits for a writer)."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(sql, params or [])
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self._read(run)

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        """The first column of the first row of a SELECT on this thread's reader (None when no row)."""
        row = self._read(lambda conn: conn.execute(sql, params or []).fetchone())
        return None if row is None else row[0]

    def writer_rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """A SELECT on the writer connection (under the lock): for checks that must see the writer's own file."""
        with self.lock:
            return self._call(lambda: list(self.db.query(sql, params)))

    def first(self, sql: str, params: Params | None = None) -> Row | None:
        """The first row of a SELECT on this thread's reader, or None."""
        rows = self.rows(sql, params)
        return rows[0] if rows else None

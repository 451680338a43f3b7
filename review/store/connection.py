"""The one SQLite connection a Store owns: pragmas, a lock, serialized write transactions with retries.

Design:
- one ``sqlite3`` connection opened with ``check_same_thread=False`` and wrapped by sqlite-utils; every use of it
  (reads included) happens under one re-entrant lock, so a single Store can be shared by a web server's threads;
- the driver runs in autocommit mode (``isolation_level=None``); every write is an explicit ``BEGIN IMMEDIATE``
  transaction, so the write lock is taken up front (no read-to-write upgrade that could fail half-way);
- several processes may write to the same file: WAL lets readers proceed during a write, ``busy_timeout`` makes a
  writer wait for the lock, and a write that still meets "database is locked" is rolled back and retried with
  jittered backoff (the whole transaction function is re-run, so it must only touch the database).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class StoreError(Exception):
    """Base class of the store's own errors."""


class StoreIntegrityError(StoreError):
    """A write broke a constraint (UNIQUE, FOREIGN KEY, CHECK, NOT NULL or an integrity trigger)."""


class DuplicateVote(StoreIntegrityError):
    """A vote for this trial is already stored (one vote per trial)."""


class StoreBusy(StoreError):
    """The database stayed locked by other writers through every retry."""


@dataclass(frozen=True)
class ConnectionConfig:
    busy_timeout_ms: int = 30_000  # how long SQLite itself waits for another writer's lock
    retries: int = 8  # whole-transaction attempts when SQLite still reports 'database is locked'
    backoff_s: float = 0.02  # first retry delay; doubles per attempt (with jitter), capped by backoff_max_s
    backoff_max_s: float = 1.0  # longest single wait between attempts
    synchronous: str = "FULL"  # FULL: a committed vote survives power loss; NORMAL: faster, WAL stays consistent

    def __post_init__(self) -> None:
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {self.synchronous!r}")


def utc_now() -> str:
    """The default clock: an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _integrity_error(exc: sqlite3.IntegrityError) -> StoreIntegrityError:
    text = str(exc)
    if "UNIQUE constraint failed: votes.trial_id" in text:
        return DuplicateVote("this trial already has a vote (one vote per trial)")
    return StoreIntegrityError(text)


class Connection:
    """A lock-guarded sqlite-utils Database with serialized, retried write transactions."""

    def __init__(self, path: str | Path, config: ConnectionConfig | None = None) -> None:
        self.config = config or ConnectionConfig()
        self.path = str(path)
        self.lock = threading.RLock()
        conn = sqlite3.connect(
            self.path,
            timeout=self.config.busy_timeout_ms / 1000,
            check_same_thread=False,
            isolation_level=None,
        )
        self.db = Database(conn, execute_plugins=False)
        with self.lock:
            self._retry(lambda: self._pragmas())

    def _pragmas(self) -> None:
        self.db.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute(f"PRAGMA synchronous = {self.config.synchronous}")
        if self.path != ":memory:":
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"could not switch {self.path} to WAL (journal_mode={mode})")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _sleep(self, attempt: int) -> None:
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempt - 1))
        time.sleep(delay * (0.5 + random.random()))

    def _retry(self, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.config.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if attempt == self.config.retries:
                    raise StoreBusy(f"{self.path}: still locked after {attempt} attempts ({exc})") from exc
                logger.debug("%s busy (%s), retry %d", self.path, exc, attempt)
                self._sleep(attempt)
        raise AssertionError("unreachable")

    def _transaction(self, fn: Callable[[Database], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db)
            self.db.execute("COMMIT")
            return result
        except BaseException:
            self.db.rollback()
            raise

    def write(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` in one serialized write transaction; commit, or roll back and re-raise.

        Constraint failures become StoreIntegrityError (DuplicateVote for a second vote on a trial)."""
        with self.lock:
            try:
                return self._retry(lambda: self._transaction(fn))
            except sqlite3.IntegrityError as exc:
                raise _integrity_error(exc) from exc

    def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return every row as a dict (fetched under the lock)."""
        with self.lock:
            return self._retry(lambda: list(self.db.query(sql, params)))

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        with self.lock:
            row = self._retry(lambda: self.db.execute(sql, params).fetchone())
        return None if row is None else row[0]

"""The store's errors, and SQLite's errors translated into them (words a person can read, a ``kind`` for code)."""

from __future__ import annotations

import sqlite3

# SQLite primary result codes (sqlite3.h)
_FULL, _READONLY, _CORRUPT, _NOTADB, _IOERR, _CANTOPEN, _BUSY, _LOCKED = 13, 8, 11, 26, 10, 14, 5, 6


class StoreError(Exception):
    """Base class of the store's own errors."""


class StoreIntegrityError(StoreError):
    """A write broke a constraint (UNIQUE, FOREIGN KEY, CHECK, NOT NULL or an integrity trigger)."""


class DuplicateVote(StoreIntegrityError):
    """A vote for this trial is already stored (one vote per trial)."""


class StoreUnavailable(StoreError):
    """The database cannot be used now. ``kind``: full, read-only, damaged, replaced, busy or io; ``reason``: why,
    in words for a person (no path); ``str()``: the path and the reason, for the admin and the log."""

    def __init__(self, path: str, kind: str, reason: str) -> None:
        self.path, self.kind, self.reason = path, kind, reason
        super().__init__(f"the study database {path} cannot be used: {reason}")


class StoreBusy(StoreUnavailable):
    """The database stayed locked by another writer through every retry."""

    def __init__(self, path: str, reason: str = "busy: another program holds its write lock") -> None:
        super().__init__(path, "busy", reason)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's 'database is locked/busy' (worth retrying), not a real failure."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_BUSY, _LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def integrity_error(exc: sqlite3.IntegrityError) -> StoreIntegrityError:
    """The store's error for a constraint failure (DuplicateVote for a second vote on one trial)."""
    text = str(exc)
    if "UNIQUE constraint failed: votes.trial_id" in text:
        return DuplicateVote("this trial already has a vote (one vote per trial)")
    return StoreIntegrityError(text)


def storage_error(path: str, exc: BaseException) -> StoreUnavailable | None:
    """The readable StoreUnavailable for an SQLite or OS error, or None when it is not a storage fault."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc).lower()
    if code == _FULL or "disk is full" in text or getattr(exc, "errno", None) == 28:
        return StoreUnavailable(path, "full", "the disk is full")
    if code == _READONLY or "readonly" in text or "read-only" in text or getattr(exc, "errno", None) == 30:
        return StoreUnavailable(path, "read-only", "its storage is read-only")
    if code in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return StoreUnavailable(path, "damaged", "the database file is damaged")
    if code in (_IOERR, _CANTOPEN) or isinstance(exc, OSError):
        return StoreUnavailable(path, "io", f"the storage reported an I/O error ({exc})")
    return None

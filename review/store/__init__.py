"""The study's SQLite store: the only place in the project that runs SQL (sqlite-utils).

``Store(path)`` opens (WAL, foreign keys, busy timeout), checks the file (``review.store.opening``: an SQLite file,
``PRAGMA quick_check``, a study's schema, never a foreign database), migrates (``review.store.migrations``:
``sqlite_utils.Migrations``), and offers small typed methods. One Store may be shared by threads (one writer under a
lock, one reader connection per thread); several processes may write to one file (bounded busy wait + retries).
``Store(path, read_only=True)`` opens ``mode=ro`` and never writes. Rows come back as plain dicts (JSON columns of
``generations`` decoded); timestamps come from the injected clock. The store records what it is told and enforces
integrity; it never randomizes or picks (study logic lives elsewhere).

Modules: ``store`` (the Store), ``generation_rows`` / ``study_rows`` / ``settings_rows`` (its methods by table),
``connection`` (writer and readers), ``config`` (busy wait and retries), ``errors``, ``schema`` (the frozen
migrations), ``migrations`` (applying them), ``opening`` (checks and health), ``queries`` (the read-side SQL).
"""

from __future__ import annotations

from .config import ConnectionConfig, utc_now
from .errors import DuplicateVote, StoreBusy, StoreError, StoreIntegrityError, StoreUnavailable
from .generation_rows import condition_inputs, condition_key
from .opening import StoreOpenError
from .schema import LATEST, MIGRATIONS
from .store import Store

__all__ = [
    "LATEST", "MIGRATIONS", "ConnectionConfig", "DuplicateVote", "Store", "StoreBusy", "StoreError",
    "StoreIntegrityError", "StoreOpenError", "StoreUnavailable", "condition_inputs", "condition_key",
    "utc_now",
]

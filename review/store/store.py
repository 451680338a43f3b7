"""``Store``: the study database opened, checked and migrated, with typed methods for every table.

``Store(path)`` opens (WAL, foreign keys, busy timeout), checks the file (``review.store.opening``: an SQLite file,
``PRAGMA quick_check``, a study's schema, never a foreign database), migrates (``review.store.migrations``), and
offers the methods of its row mixins (``generation_rows``, ``study_rows``, ``settings_rows``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from .config import ConnectionConfig, utc_now
from .connection import Connection
from .errors import StoreUnavailable
from .generation_rows import GenerationRows
from .migrations import migrate as _migrate
from .migrations import schema_version as _schema_version
from .opening import check_database, check_path, health, open_error
from .settings_rows import SettingsRows
from .study_rows import StudyRows

logger = logging.getLogger(__name__)


class Store(GenerationRows, StudyRows, SettingsRows):
    """Typed access to the study database; see ``review.store``'s docstring."""

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
        """Close every connection of this store."""
        self._conn.close()

    def __enter__(self) -> Store:
        """The store itself (closed on leaving the block)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the store."""
        self.close()

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: latest); returns the versions applied now."""
        return _migrate(self._conn, self._clock, target)

    def schema_version(self) -> int:
        """How many of the study's migrations the file has (``LATEST`` when up to date)."""
        return _schema_version(self._conn)

    def health(self) -> dict[str, Any]:
        """Can the study be written now? ``{"writable", "state", "reason"}`` (state: ok, busy, full, read-only,
        damaged, replaced, io); cheap: a file identity check, the file system's flags and free space, the last
        write's outcome and an empty write transaction when no writer is waiting."""
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(str(path))
        try:
            with self._conn.lock:
                self._conn.db.conn.backup(target)
        finally:
            target.close()
        return path

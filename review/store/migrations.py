"""Applying the schema: the frozen migrations of ``review.store.schema`` as one ``sqlite_utils.Migrations`` set.

Bookkeeping: sqlite-utils' ``_sqlite_migrations`` table, one row per applied migration (set ``MIGRATION_SET``,
the function's name, ``applied_at`` from the store's clock). Schema version N means "the first N migrations are
applied" (``LATEST`` = all of them).

Several processes may open one file at once: ``migrate()`` runs the whole check-and-apply inside one
``BEGIN IMMEDIATE`` write transaction of the store's connection (sqlite-utils' ``Migrations.apply`` then nests each
migration in a savepoint), so the pending list is read under SQLite's write lock and each migration is applied
exactly once; a failure rolls back everything of that call, bookkeeping included. ``sqlite_utils.Migrations.apply``
alone reads the pending list before taking the lock, which is why it is wrapped and not called bare.

Study files made before this bookkeeping (``schema_migrations(version, applied_at)``, versions 1..4) are adopted
in that same transaction: each version becomes the row of the migration with that number (its ``applied_at``
kept) and the old table is dropped, so one bookkeeping remains. Code older than this change cannot open an adopted
file (it finds no ``schema_migrations``); read-only opening of a not yet adopted file still reads its version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlite_utils import Database, Migrations

from .connection import Connection
from .errors import StoreError
from .schema import LATEST, MIGRATIONS

logger = logging.getLogger(__name__)

MIGRATION_SET = "instantid-review"  # this study's migration set in _sqlite_migrations (never renamed)
BOOKKEEPING_TABLE = Migrations.migrations_table  # "_sqlite_migrations"
LEGACY_TABLE = "schema_migrations"  # the bookkeeping before sqlite-utils' Migrations (adopted, then dropped)
NAMES = tuple(migration.__name__ for migration in MIGRATIONS)  # version N is NAMES[N - 1]

STUDY_MIGRATIONS = Migrations(MIGRATION_SET)
for _migration in MIGRATIONS:
    STUDY_MIGRATIONS()(_migration)


def applied_names(db: Database) -> list[str]:
    """The names of this set's applied migrations, in the order applied (read-only)."""
    return [applied.name for applied in STUDY_MIGRATIONS.applied(db)]


def legacy_versions(db: Database) -> list[int]:
    """The versions recorded by the old ``schema_migrations`` table (empty when there is none)."""
    if not db[LEGACY_TABLE].exists():
        return []
    return [int(row[0]) for row in db.execute(f"SELECT version FROM {LEGACY_TABLE} ORDER BY version")]


def version_of(db: Database) -> int:
    """The schema version: applied migrations of this set, or the old bookkeeping's highest version."""
    names = applied_names(db)
    if names:
        return len(names)
    return max(legacy_versions(db), default=0)


def schema_version(conn: Connection) -> int:
    """The schema version of the store's file (0 for a new file; above LATEST for a newer one)."""
    with conn.lock:
        return version_of(conn.db)


def _newer_error(path: str, version: int, unknown: list[str]) -> StoreError:
    what = f" (migrations unknown here: {', '.join(unknown)})" if unknown else ""
    return StoreError(f"{path} has schema v{version}{what}, newer than this code (v{LATEST}); update the code")


def _refuse_newer(db: Database, path: str) -> None:
    unknown = [name for name in applied_names(db) if name not in NAMES]
    if unknown or version_of(db) > LATEST:
        raise _newer_error(path, version_of(db), unknown)


def adopt_legacy_bookkeeping(db: Database, path: str) -> list[str]:
    """Move the old ``schema_migrations`` rows into ``_sqlite_migrations`` and drop the old table (inside the
    caller's write transaction); returns the names adopted."""
    if not db[LEGACY_TABLE].exists():
        return []
    rows = db.execute(f"SELECT version, applied_at FROM {LEGACY_TABLE} ORDER BY version").fetchall()
    if any(version > LATEST for version, _ in rows):
        raise _newer_error(path, max(version for version, _ in rows), [])
    STUDY_MIGRATIONS.ensure_migrations_table(db)
    known = set(applied_names(db))
    adopted = [{"migration_set": MIGRATION_SET, "name": NAMES[version - 1], "applied_at": applied_at}
               for version, applied_at in rows if NAMES[version - 1] not in known]
    db[BOOKKEEPING_TABLE].insert_all(adopted)
    db[LEGACY_TABLE].drop()
    logger.info("%s: schema_migrations (v%s) adopted into %s", path, max((v for v, _ in rows), default=0),
                BOOKKEEPING_TABLE)
    return [row["name"] for row in adopted]


def _apply(db: Database, path: str, clock: Callable[[], str], target: int) -> list[int]:
    """Adopt old bookkeeping, refuse a newer file, apply what is pending up to ``target`` (in one transaction)."""
    adopt_legacy_bookkeeping(db, path)
    _refuse_newer(db, path)
    done = set(applied_names(db))
    wanted = [name for name in NAMES[:target] if name not in done]
    if not wanted:
        return []
    STUDY_MIGRATIONS.apply(db, stop_before=NAMES[target] if target < LATEST else None)
    # sqlite-utils stamps applied_at with its own clock; the store's rows take the injected one (tests, replays)
    marks = ", ".join("?" for _ in wanted)
    db.execute(f"UPDATE {BOOKKEEPING_TABLE} SET applied_at = ? WHERE migration_set = ? AND name IN ({marks})",
               [clock(), MIGRATION_SET, *wanted])
    return [NAMES.index(name) + 1 for name in wanted]


def _needs_write(db: Database, target: int) -> bool:
    if db[LEGACY_TABLE].exists():
        return True
    done = set(applied_names(db))
    return any(name not in done for name in NAMES[:target])


def migrate(conn: Connection, clock: Callable[[], str], target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: all); return the versions applied now (idempotent)."""
    target = LATEST if target is None else target
    if not 0 <= target <= LATEST:
        raise ValueError(f"target {target} outside 0..{LATEST}")
    with conn.lock:  # the common case, an up-to-date file, takes no write lock
        if not _needs_write(conn.db, target):
            _refuse_newer(conn.db, conn.path)
            return []
    applied = conn.write(lambda db: _apply(db, conn.path, clock, target))
    for version in applied:
        logger.info("%s: applied migration v%d (%s)", conn.path, version, NAMES[version - 1])
    return applied

"""What the store's row mixins share: the connection, the clock, one-row lookups and the row type."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .connection import Connection

Row = dict[str, Any]


def opt_float(value: float | None) -> float | None:
    """``float(value)``, keeping None (numpy scalars become plain floats before they are stored)."""
    return None if value is None else float(value)


class RowsBase:
    """The base of the Store's row mixins: ``_conn`` (the connections) and ``_clock`` are set by ``Store``."""

    _conn: Connection
    _clock: Callable[[], str]

    def _get(self, table: str, where: str, args: Sequence[Any]) -> Row | None:
        return self._conn.first(f"SELECT * FROM {table} WHERE {where}", list(args))

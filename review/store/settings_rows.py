"""Study settings, the install secret and invites in the store."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlite_utils import Database

from . import queries as q
from .rows import Row, RowsBase

SECRET_PREFIX = "secret:"  # settings keys never returned by get_settings nor written by put_setting


class SettingsRows(RowsBase):
    """Study settings, the install secret and invites (a mixin of ``Store``)."""

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
        """The invite row, or None."""
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

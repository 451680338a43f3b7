"""Small files kept beside the study database: the export salt and the study settings the app last served.

- ``<db>.salt``: 32 random bytes (hex), made with ``secrets`` on the first export, mode 0600. Exports replace every
  reviewer id by ``HMAC-SHA256(salt, id)``: stable within a study (a reviewer's votes stay linked), unlinkable
  across studies, and not reversible without the file. Kept out of the database so a shared database copy does
  not carry the key to its own pseudonyms; lose it and later exports get new pseudonyms.
- ``<db>.study.json``: the app's study settings (gold rate, modes, trials per session, ...), written when the app
  starts, read by every export (UI and CLI alike) for the dataset card.
An in-memory database has no folder: its salt lives in memory for the process and it has no settings file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PSEUDONYM_CHARS = 16  # hex characters of the HMAC kept: 64 bits, no collision in any realistic study
_MEMORY_SALT = secrets.token_bytes(32)


def _beside(db_path: Any, suffix: str) -> Path | None:
    if not isinstance(db_path, Path):
        return None
    return db_path.with_name(db_path.name + suffix)


def study_salt(db_path: Any) -> bytes:
    """The study's export salt, created (0600) on first use."""
    path = _beside(db_path, ".salt")
    if path is None:
        return _MEMORY_SALT
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    logger.info("created the export salt %s", path)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def pseudonym(salt: bytes, reviewer_id: str) -> str:
    """``HMAC-SHA256(salt, reviewer_id)``, first PSEUDONYM_CHARS hex characters."""
    return hmac.new(salt, reviewer_id.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def save_study_settings(db_path: Any, settings: dict[str, Any]) -> None:
    """Write the study settings beside the database (the app does, at start)."""
    path = _beside(db_path, ".study.json")
    if path is not None:
        path.write_text(json.dumps(settings, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")


def load_study_settings(db_path: Any) -> dict[str, Any] | None:
    """The settings saved by :func:`save_study_settings`, or None when there are none (or unreadable)."""
    path = _beside(db_path, ".study.json")
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("cannot read %s; the dataset card leaves the study settings out", path)
        return None
    return data if isinstance(data, dict) else None

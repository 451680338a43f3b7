"""One app process per study database: an exclusive ``flock`` on ``<db>.app-lock``, held for the process's life.

Why: review sessions, served image names and the rate limits (votes per reviewer, requests per address, password
attempts) live in the process's memory; two processes on one database would each allow the full rate and could
serve one reviewer the same pair twice. The kernel drops the lock when the process dies (also on kill -9), so a
restart is never blocked by a stale file.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


class AppLockError(RuntimeError):
    """Another app process already serves this database."""


def hold_app_lock(db: str | Path) -> IO[bytes]:
    """Take the database's app lock (keep the returned handle open); AppLockError when another process has it."""
    path = Path(f"{os.path.abspath(db)}.app-lock")
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AppLockError(f"another app process already serves {db}; run one app process per database (the "
                           "rate limits and review sessions live in its memory), or stop the other one") from None
    return handle

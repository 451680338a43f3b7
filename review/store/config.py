"""How the store's connections behave: SQLite's busy wait, the retry policy for a locked file, durability.

Retries use tenacity: whole-transaction attempts while SQLite still reports 'database is locked' after its own busy
wait, exponential backoff with jitter between attempts, then ``StoreBusy``. The first wait of a write is logged
once (a warning) and exposed as ``busy_since`` so the health route can say "busy, retrying".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NoReturn

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .errors import StoreBusy, is_busy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionConfig:
    """SQLite's busy wait, the retry policy for a locked file, and the durability setting."""

    busy_timeout_ms: int = 2_000  # how long SQLite itself waits for another writer's lock, per attempt
    retries: int = 4  # whole-transaction attempts while SQLite still reports 'database is locked'
    backoff_s: float = 0.05  # first retry delay; doubles per attempt, plus up to this much jitter
    backoff_max_s: float = 1.0  # longest single wait between attempts
    synchronous: str = "FULL"  # FULL: a committed vote survives power loss; NORMAL: faster, WAL stays consistent

    def __post_init__(self) -> None:
        """Refuse a synchronous mode SQLite would not honour as meant."""
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {self.synchronous!r}")

    @property
    def max_write_wait_s(self) -> float:
        """The longest a write waits for another writer before StoreBusy (busy timeouts plus backoff)."""
        waits = sum(min(self.backoff_max_s, self.backoff_s * 2 ** (a - 1) + self.backoff_s)
                    for a in range(1, self.retries))
        return self.retries * self.busy_timeout_ms / 1000 + waits


def utc_now() -> str:
    """The default clock: an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def busy_retrying(config: ConnectionConfig, path: str, on_first_wait: Callable[[], None]) -> Retrying:
    """The tenacity policy for one connection: retry while the file is locked, then raise StoreBusy.

    ``on_first_wait`` runs before the first sleep of a call (the connection records ``busy_since`` and logs);
    the policy object is shared by threads (tenacity keeps each call's state per thread)."""

    def before_sleep(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            on_first_wait()

    def give_up(state: RetryCallState) -> NoReturn:
        assert state.outcome is not None
        raise StoreBusy(path, f"busy: another program held its write lock for more than "
                        f"{config.max_write_wait_s:.1f} s") from state.outcome.exception()

    return Retrying(
        retry=retry_if_exception(is_busy),
        stop=stop_after_attempt(config.retries),
        wait=wait_exponential_jitter(multiplier=config.backoff_s, max=config.backoff_max_s, jitter=config.backoff_s),
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )

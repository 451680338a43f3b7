"""A token bucket: ``burst`` requests at once, then ``per_s`` per second (the rate limits' unit, per key)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``burst`` tokens, refilled at ``per_s`` per second; ``take()`` spends one or says no.

    Written here rather than taken from ``limits``: its fixed, moving and sliding windows (5.8, in-memory storage)
    refill a whole window at once, not continuously (3 per 6 s, all spent at t=0, still refuses at t=2 s where
    this bucket has a token again: checked in tests/test_trials.py), cannot say "never refill" (``per_s=0``, a
    fixed budget a study's settings may ask for), and read the wall clock (``time.time``, with an expiry timer
    thread) where this takes an injected monotonic clock.
    """

    def __init__(self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or per_s < 0:
            raise ValueError("burst must be >= 1 and per_s >= 0")
        self.burst, self.per_s, self._clock = burst, per_s, clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        now = self._clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

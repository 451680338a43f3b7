"""The study design behind each trial, drawn on the server from a cryptographic RNG: sides, ABX's X, gold slots
and kinds, and the conditions reserved for gold checks.

Nothing here depends on anything a reviewer can observe:
- **Sides** come from a hidden permuted block schedule per (mode, preset) shared by every reviewer
  (``SideSchedule``): each block of ``block`` trials holds each arm on the left equally often, shuffled by
  ``random.SystemRandom``; who gets which slot depends on how every reviewer's trials interleave. Balance is a
  property of the study, not of a reviewer's history. With per-trial reveals (``reveal=each``, training) the
  schedule is a plain coin flip, so a reviewer alone in a study cannot count down a block.
- **Gold checks** sit on ``gold_count`` random slots of a session (fixed when the session gets its first pair),
  and show images of **reserved conditions**: conditions used only for gold, never for a real trial
  (``reserved_conditions``), chosen by an HMAC of the condition id with the install secret. Their share is the
  gold share of a session, so a reserved and a real condition are shown equally often across sessions and "seen
  before" says nothing. A reviewer never sees a condition twice, gold or not.
- **Gold kinds**: ``identical`` (one image on both sides; expected 'same') and ``degraded`` (catch trials: the
  image beside a visibly degraded copy of itself; expected: the intact side; ABX: A and B are the image and its
  degraded copy, X one of them). A third of a preference session's gold is identical, the rest degraded, so an
  "always same" clicker fails; ABX gold is all catch trials.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import threading
from collections.abc import Hashable, Iterable

ARMS = ("full", "selective")
GOLD_PER_SESSION = 4  # gold checks in a full session (docs/hardening.md, "Gold checks")
GOLD_SESSION_SHARE = 4  # ... at most one in this many of a session's trials


def gold_count(session_trials: int, per_session: int = GOLD_PER_SESSION) -> int:
    """Gold checks in a session of ``session_trials`` trials: ``per_session``, at most one in four."""
    return max(0, min(per_session, session_trials // GOLD_SESSION_SHARE))


class SideSchedule:
    """Which arm goes left (and ABX's X): hidden permuted blocks per key, shared by all reviewers; thread-safe.
    ``block`` <= 1: an independent fair coin per trial."""

    def __init__(self, block: int = 8, rng: random.Random | None = None) -> None:
        if block > 1 and block % 2:
            raise ValueError(f"block must be even, not {block}")
        self.block, self.rng = block, rng or random.SystemRandom()
        self._queues: dict[Hashable, list[str]] = {}
        self._lock = threading.Lock()

    def draw(self, key: Hashable) -> str:
        """The next arm of ``key``'s schedule."""
        with self._lock:
            if self.block <= 1:
                return self.rng.choice(ARMS)
            queue = self._queues.get(key)
            if not queue:
                queue = [arm for arm in ARMS for _ in range(self.block // 2)]
                self.rng.shuffle(queue)
                self._queues[key] = queue
            return queue.pop()


def gold_plan(rng: random.Random, total: int, first: int, count: int) -> dict[int, str]:
    """Trial number -> gold kind for ``count`` random slots among ``first`` .. ``total`` (1-based)."""
    slots = list(range(first, total + 1))
    count = min(count, len(slots))
    identical = count // 3 if count >= 3 else (1 if count == 2 else 0)
    kinds = ["identical"] * identical + ["degraded"] * (count - identical)
    rng.shuffle(kinds)
    return dict(zip(sorted(rng.sample(slots, count)), kinds, strict=True))


def _rank(secret: str, condition_id: int) -> float:
    digest = hmac.new(bytes.fromhex(secret), f"gold:{condition_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reserved_conditions(condition_ids: Iterable[int], secret: str, share: float) -> set[int]:
    """The conditions kept for gold checks: each one whose keyed hash falls below ``share`` (stable as conditions
    are added); in a study where none does, the lowest one; never every condition."""
    ids = sorted(set(condition_ids))
    if share <= 0 or len(ids) < 2:
        return set()
    ranks = {c: _rank(secret, c) for c in ids}
    chosen = {c for c in ids if ranks[c] < share}
    if not chosen:
        chosen = {min(ids, key=ranks.__getitem__)}
    if len(chosen) >= len(ids):  # keep real conditions: drop the highest ranked
        chosen = set(sorted(chosen, key=ranks.__getitem__)[:max(1, math.floor(share * len(ids)))][:len(ids) - 1])
    return chosen

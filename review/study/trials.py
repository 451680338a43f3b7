"""Study logic of the review tab, without Gradio: which pair comes next, which side shows which arm, gold and
ABX trials, what a choice means, which votes are refused, per-trial image copies and rate limits.

Blinding: everything here runs on the server. A trial's answer key (arms, preset, condition) is written to the
store and never handed to the page; the page only gets an opaque trial id and per-trial image URLs whose names
and bytes differ from every other trial's (``review.study.served``).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from review.images import image_path
from review.study.served import ServedImages
from review.study.token_bucket import TokenBucket

logger = logging.getLogger(__name__)

ARMS = ("full", "selective")
MODES = ("preference", "abx")
CHOICES: dict[str, tuple[str, ...]] = {"preference": ("left", "right", "same"), "abx": ("a", "b")}
TRIAL_ID_RE = re.compile(r"^[0-9a-f]{32}$")

Row = dict[str, Any]


class VoteRefused(ValueError):
    """A vote (or a request for a trial) the server does not accept; the message is safe to show the page."""


@dataclass(frozen=True)
class StudyConfig:
    """The running study's knobs: gold share, session length, reveals, identity, modes and rate limits."""

    gold_rate: float = 0.2  # share of conditions reserved for gold checks (0: no gold); review.study.design
    trials_per_session: int = 20  # the progress target shown as "7 of 20" (capped by the unseen pairs)
    reveal: str = "none"  # none | end | each: what a reviewer is told after votes (review.study.settings)
    modes: tuple[str, ...] = ("preference", "abx")  # tasks a reviewer may pick; the first is the default
    gold_per_session: int = 4  # gold checks per session, at most one in four trials (review.study.design.gold_count)
    side_block: int = 8  # trials per hidden side block of a (mode, preset) (review.study.design.SideSchedule)
    identity: str = "open"  # open | invite | hf: how reviewers are identified (review.study.identity)
    leaderboard_public: bool = False  # False: the leaderboard answers the admin only
    serve_max_age_s: float = 7200.0  # a trial's image URLs answer this long (an older open page: reload)
    vote_burst: int = 10  # per reviewer: votes allowed at once ...
    vote_per_s: float = 1.0  # ... and refilled per second
    address_burst: int = 120  # per client address, all review calls together (a lab behind one NAT shares it)
    address_per_s: float = 10.0
    trial_burst: int = 40  # per client address: new trials (each writes image copies) ...
    trial_per_s: float = 2.0  # ... refilled per second
    admin_burst: int = 5  # per client address: admin password attempts
    admin_per_s: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.reveal, bool):  # the former switch: True meant a reveal after every vote
            object.__setattr__(self, "reveal", "each" if self.reveal else "none")
        if self.reveal not in ("none", "end", "each") or self.identity not in ("open", "invite", "hf"):
            raise ValueError(f"reveal must be none/end/each and identity open/invite/hf, not "
                             f"{self.reveal!r}/{self.identity!r}")
        if self.gold_per_session < 0:
            raise ValueError("gold_per_session must be >= 0")
        if not 0.0 <= self.gold_rate < 1.0:
            raise ValueError(f"gold_rate must be in [0, 1), not {self.gold_rate}")
        if self.trials_per_session < 1:
            raise ValueError("trials_per_session must be at least 1")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be a non-empty subset of {MODES}, not {self.modes}")


# -- picking the next pair ------------------------------------------------------------------------------------
def load_by(rows: Iterable[Row], key: str) -> dict[Any, int]:
    """``store.vote_counts(by)`` rows -> key -> served trials (votes given plus votes pending)."""
    return {r[key]: int(r["trials"]) for r in rows}


def pick_pair(pairs: Sequence[Row], seen: Mapping[int, int], preset_load: Mapping[str, int],
              condition_load: Mapping[int, int], pair_load: Mapping[int, int],
              rng: random.Random, preset_weights: Mapping[str, float] | None = None,
              max_per_preset: int | None = None) -> Row | None:
    """The next pair for a reviewer: one of a condition they have not seen, from the preset this reviewer has seen
    least (spreads each reviewer over the presets: the verdicts count reviewers, not votes), then the preset with
    the fewest trials per unit of weight, then the condition with the fewest, then the pair with the fewest; ties
    broken at random. None when every condition is seen (or no preset with weight is left).

    ``preset_weights`` (``review.stats.allocation``): a preset with weight 0 is not served (its verdict is reached);
    missing presets weigh 1. ``max_per_preset``: at most this many trials of one preset per reviewer (with adaptive
    allocation a session then ends early instead of piling one reviewer's votes on the last undecided preset).
    One pair per condition per reviewer: the pairs of a condition share its full image, so
    a second pair of the same condition would show the reviewer the same picture again (the full arm)."""
    conditions_seen = {p["condition_id"] for p in pairs if p["pair_id"] in seen}
    unseen = [p for p in pairs if p["pair_id"] not in seen and p["condition_id"] not in conditions_seen]
    weights = preset_weights or {}
    own: dict[str, int] = {}
    for p in pairs:
        if p["pair_id"] in seen:
            own[p["preset"]] = own.get(p["preset"], 0) + 1
    cap = max_per_preset if max_per_preset is not None else len(pairs) + 1
    unseen = [p for p in unseen if weights.get(p["preset"], 1.0) > 0 and own.get(p["preset"], 0) < cap]
    if not unseen:
        return None

    def key(p: Row) -> tuple[int, float, int, int, float]:
        return (own.get(p["preset"], 0), preset_load.get(p["preset"], 0) / weights.get(p["preset"], 1.0),
                condition_load.get(p["condition_id"], 0), pair_load.get(p["pair_id"], 0), rng.random())

    return min(unseen, key=key)


class TrialLoad:
    """Trials served per (mode, pair), gold left out, for ``pick_pair``: read from the store once per mode, then
    counted here as trials are served, and read again every ``refresh_s`` to take in trials other processes
    served into the same file (balancing only needs to be about right). Thread-safe."""

    def __init__(self, read: Callable[[str], Iterable[Row]], *, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self.refresh_s, self._clock = read, refresh_s, clock  # read(mode) -> vote_counts rows
        self._counts: dict[str, tuple[float, dict[int, int]]] = {}
        self._lock = threading.Lock()

    def _pairs(self, mode: str) -> dict[int, int]:
        now = self._clock()
        cached = self._counts.get(mode)
        if cached is None or now - cached[0] > self.refresh_s:
            cached = (now, load_by(self._read(mode), "pair_id"))
            self._counts[mode] = cached
        return cached[1]

    def loads(self, mode: str, pairs: Sequence[Row]) -> tuple[dict[str, int], dict[int, int], dict[int, int]]:
        """(per preset, per condition, per pair) trials served in ``mode``, for ``pick_pair``."""
        with self._lock:
            per_pair = dict(self._pairs(mode))
        per_preset: dict[str, int] = {}
        per_condition: dict[int, int] = {}
        for p in pairs:
            n = per_pair.get(p["pair_id"], 0)
            per_preset[p["preset"]] = per_preset.get(p["preset"], 0) + n
            per_condition[p["condition_id"]] = per_condition.get(p["condition_id"], 0) + n
        return per_preset, per_condition, per_pair

    def served(self, mode: str, pair_id: int) -> None:
        """Count a trial of ``pair_id`` just served in ``mode`` (until the next refresh from the store)."""
        with self._lock:
            counts = self._pairs(mode)
            counts[pair_id] = counts.get(pair_id, 0) + 1


@dataclass(frozen=True)
class TrialPlan:
    """What one trial shows: its mode, which arm goes where, gold or not (the answer key stays server-side)."""

    mode: str
    left_arm: str  # the arm recorded as shown left (ABX: side A); gold: the arm whose image is shown
    is_gold: bool
    left_source: str  # which arm's image each served copy is made from
    right_source: str
    x_source: str | None  # ABX: the arm shown as X (drawn at random)
    gold_kind: str | None = None  # identical | degraded (catch trial) | None (a real trial)
    expected: str | None = None  # gold: the right choice
    degraded: tuple[bool, bool, bool] = (False, False, False)  # left, right, X shown degraded (catch trials)

    @property
    def x_arm(self) -> str | None:
        """ABX: the arm shown as X (None for a preference trial)."""
        return self.x_source


def other(arm: str) -> str:
    """The arm that is not ``arm``."""
    return "selective" if arm == "full" else "full"


def plan_trial(mode: str, left_arm: str, *, x_arm: str | None = None, gold: str | None = None,
               degraded_side: str = "right", x_degraded: bool = False) -> TrialPlan:
    """Which arm's image goes where. Preference: left/right; ABX: A=left, B=right, X is ``x_arm`` (default: the
    full arm). Gold ``identical``: ``left_arm``'s image on both sides (preference only); gold ``degraded`` (a
    catch trial): ``left_arm``'s image beside its degraded copy on ``degraded_side``; in ABX, A or B degraded and X
    the degraded copy when ``x_degraded``. The caller draws every choice at random."""
    if mode not in MODES or left_arm not in ARMS or gold not in (None, "identical", "degraded") \
            or degraded_side not in ("left", "right") or (x_arm is not None and x_arm not in ARMS):
        raise ValueError(f"bad trial: mode {mode!r}, left arm {left_arm!r}, gold {gold!r}")
    abx = mode == "abx"
    if gold == "identical":
        if abx:
            raise ValueError("identical gold trials are preference trials")
        return TrialPlan(mode, left_arm, True, left_arm, left_arm, None, gold, "same")
    if gold == "degraded":
        sides = (degraded_side == "left", degraded_side == "right")
        if abx:
            x_is_a = sides[0] == x_degraded
            return TrialPlan(mode, left_arm, True, left_arm, left_arm, left_arm, gold, "a" if x_is_a else "b",
                             (*sides, x_degraded))
        return TrialPlan(mode, left_arm, True, left_arm, left_arm, None, gold,
                         "right" if degraded_side == "left" else "left", (*sides, False))
    x_source = (x_arm or "full") if abx else None
    return TrialPlan(mode, left_arm, False, left_arm, other(left_arm), x_source)


def serve_trial_images(plan: TrialPlan, pair: Row, image_dir: str | Path, served: ServedImages) -> dict[str, str]:
    """Per-trial names (dithered copies, one byte length for the whole trial) of the pair's images, as the trial
    columns."""
    source = {"full": pair["full_file"], "selective": pair["sel_file"]}
    arms = [plan.left_source, plan.right_source] + ([plan.x_source] if plan.x_source is not None else [])
    names = served.add_group([image_path(image_dir, source[arm]) for arm in arms],
                             list(plan.degraded[:len(arms)]))
    return {"left_image": names[0], "right_image": names[1], "x_image": names[2] if len(names) > 2 else None}


# -- votes ----------------------------------------------------------------------------------------------------
def outcome_for(trial: Row, choice: str) -> tuple[str, bool | None]:
    """(outcome, correct) of a choice. A gold trial with an expected answer: 'correct'/'wrong' against it.
    Preference: the arm shown on the chosen side or 'same' (correct only for older gold trials: 'same' is right);
    ABX: 'correct' when the chosen side shows the X arm."""
    if trial.get("expected"):
        correct = choice == trial["expected"]
        return ("correct" if correct else "wrong"), correct
    if trial["mode"] == "abx":
        picked = trial["left_arm"] if choice == "a" else other(trial["left_arm"])
        correct = picked == trial["x_arm"]
        return ("correct" if correct else "wrong"), correct
    gold = bool(trial["is_gold"])
    if choice == "same":
        return "same", (True if gold else None)
    arm = trial["left_arm"] if choice == "left" else other(trial["left_arm"])
    return arm, (False if gold else None)


def validate_vote(trial: Row | None, *, session: str, reviewer_id: str, choice: object, voted: bool) -> str:
    """Refuse a vote that does not fit: unknown trial, another session's or reviewer's trial, a second vote, a
    choice outside the trial's mode. Returns the choice when it is acceptable."""
    if trial is None:
        raise VoteRefused("Unknown trial: this pair was not given to you.")
    if trial["session"] != session or trial["reviewer_id"] != reviewer_id:
        raise VoteRefused("This pair was not given to this session.")
    if voted:
        raise VoteRefused("This pair already has your vote.")
    allowed = CHOICES[trial["mode"]]
    if not isinstance(choice, str) or choice not in allowed:
        raise VoteRefused(f"Choice must be one of {', '.join(allowed)}.")
    return choice


def valid_trial_id(value: object) -> str:
    """``value`` when it is a trial id (32 hex); VoteRefused otherwise."""
    if not isinstance(value, str) or not TRIAL_ID_RE.fullmatch(value):
        raise VoteRefused("Unknown trial: this pair was not given to you.")
    return value


# -- rate limits ----------------------------------------------------------------------------------------------
class RateLimiter:
    """One token bucket per key (reviewer id, client address), the least recently used dropped past
    ``max_keys`` (a cachetools LRUCache, used under a lock: cachetools is not thread-safe); thread-safe."""

    def __init__(self, burst: int, per_s: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self.max_keys, self._clock = burst, per_s, max_keys, clock
        self._buckets: LRUCache[str, TokenBucket] = LRUCache(max_keys)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Spend one of ``key``'s tokens; False when it has none left."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.burst, self.per_s, self._clock)
            return bucket.take()

    def has_token(self, key: str) -> bool:
        """Whether ``allow(key)`` would say yes now (nothing is spent)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return True
            now = self._clock()
            return min(float(bucket.burst), bucket.tokens + (now - bucket.stamp) * bucket.per_s) >= 1.0

    def check(self, key: str, what: str = "requests") -> None:
        """Raise VoteRefused when ``key`` is over its limit."""
        if not self.allow(key):
            raise VoteRefused(f"Too many {what}; please slow down and try again in a moment.")

"""Adaptive allocation: which presets still need votes, as weights for the desk's ``pick_pair``.

A preset whose verdict is reached (ABX: 'distinguishable' or 'indistinguishable'; preference: a preference shown)
gets weight 0 and is no longer served; the others weigh 1. The verdicts are anytime-valid, so stopping a preset at
its verdict keeps its error rate (docs/statistics.md; ``python -m review simulate --allocation-study``). When every
preset is decided all weigh 1 again (reviewers keep getting pairs, spread evenly).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

DECIDED_ABX = ("distinguishable", "indistinguishable")


def decided(row: Mapping[str, Any], mode: str) -> bool:
    """Whether a leaderboard row's verdict for ``mode`` is reached."""
    if mode == "abx":
        return (row.get("equivalence") or {}).get("verdict") in DECIDED_ABX
    return str((row.get("preference_reviewer") or {}).get("verdict", "")).startswith("prefers")


def preset_weights(result: Mapping[str, Any], mode: str) -> dict[str, float]:
    """Weight per preset of a leaderboard result (screened rows): 0 decided, 1 undecided; all 1 when all decided."""
    rows = result.get("rows") or []
    weights = {str(r["preset"]): 0.0 if decided(r, mode) else 1.0 for r in rows}
    if weights and not any(weights.values()):
        return dict.fromkeys(weights, 1.0)
    return weights


def allocation_from_board(board: Callable[[bool], Any], *, refresh_s: float = 30.0,
                          clock: Callable[[], float] = time.monotonic) -> Callable[[str], dict[str, float]]:
    """``allocation(mode)`` for ``ReviewDesk``: weights from the app's cached leaderboard (``board(False).result``),
    taken again at most every ``refresh_s`` (stale weights only serve a decided preset a little longer); a failing
    leaderboard serves every preset."""
    lock = threading.Lock()
    state: dict[str, Any] = {"at": None, "result": {}}

    def allocation(mode: str) -> dict[str, float]:
        with lock:
            now = clock()
            if state["at"] is None or now - state["at"] > refresh_s:
                state["at"] = now
                try:
                    state["result"] = board(False).result
                except Exception:  # allocation is an optimisation: never stop serving for it
                    logger.exception("allocation: leaderboard failed; serving every preset")
                    state["result"] = {}
            return preset_weights(state["result"], mode)

    return allocation

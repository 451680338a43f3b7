"""Gold screening: a reviewer (or one session of a reviewer) passes when their gold and catch answers beat chance.

Rule: with ``n`` gold trials of which ``k`` were answered right, the unit **passes** when the exact one-sided
binomial p-value ``P(X >= k | n, chance)`` is at most ``gold_alpha`` (a random clicker passes at most that often),
otherwise it **fails**. The rule is monotone: one more right answer never turns a pass into a fail, one more wrong
answer never turns a fail into a pass (``passes(k, n)`` implies ``passes(k + 1, n)``, ``passes(k, n + 1)`` implies
``passes(k, n)``). A unit without gold trials is 'unscreened' and kept (reported as such).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from review.stats.basics import wilson_ci

logger = logging.getLogger(__name__)


def gold_p_value(k: np.ndarray, n: np.ndarray, chance: float = 0.5) -> np.ndarray:
    """``P(X >= k)`` for ``X ~ Binomial(n, chance)``: how often guessing does at least this well (1 when n == 0)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    return np.where(n > 0, sps.binom.sf(k - 1, n, chance), 1.0)


def passes(k: np.ndarray, n: np.ndarray, *, gold_alpha: float = 0.35, chance: float = 0.5) -> np.ndarray:
    """True where ``k`` right of ``n`` gold answers beat chance at ``gold_alpha`` (or there is no gold)."""
    n = np.asarray(n)
    return (n == 0) | (gold_p_value(k, n, chance) <= gold_alpha)


def min_correct(n: int, *, gold_alpha: float = 0.35, chance: float = 0.5) -> int | None:
    """Fewest right answers of ``n`` gold trials that pass (None: none can, e.g. a single trial)."""
    ks = np.arange(n + 1)
    ok = np.flatnonzero(passes(ks, np.full_like(ks, n), gold_alpha=gold_alpha, chance=chance))
    return int(ks[ok[0]]) if n > 0 and ok.size else None


def screen(units: np.ndarray, correct: np.ndarray, *, gold_alpha: float = 0.35, chance: float = 0.5
           ) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Per screening unit (a string label per gold vote): gold count, right answers, p against chance and the
    outcome. Returns (table, sorted failing units)."""
    ids, inv = np.unique(np.asarray(units, dtype=object).astype(str), return_inverse=True)
    ks = np.bincount(inv, weights=np.asarray(correct, dtype=float), minlength=ids.size)
    ns = np.bincount(inv, minlength=ids.size)
    ps = gold_p_value(ks, ns, chance)
    ok = passes(ks, ns, gold_alpha=gold_alpha, chance=chance)
    table: dict[str, dict[str, object]] = {}
    for unit, k, n, p, good in zip(ids, ks, ns, ps, ok, strict=True):
        table[str(unit)] = {"n_gold": int(n), "correct": int(k), "accuracy": float(k / n) if n else float("nan"),
                            "ci": wilson_ci(int(k), int(n)), "p_chance": float(p), "failing": not bool(good)}
    return table, sorted(u for u, row in table.items() if row["failing"])


def screening_units(reviewers: np.ndarray, reviewer_names: Sequence[object], sessions: np.ndarray,
                    session_names: Sequence[object], by: str = "session") -> tuple[np.ndarray, list[str]]:
    """(unit code per vote, unit labels): ``reviewer|session`` (just the reviewer when a vote has no session) or
    the reviewer (``by='reviewer'``), from integer reviewer and session codes."""
    if by == "reviewer":
        return np.asarray(reviewers), [str(r) for r in reviewer_names]
    n_sessions = int(sessions.max()) + 1 if sessions.size else 1
    combined, codes = np.unique(np.asarray(reviewers) * n_sessions + np.asarray(sessions), return_inverse=True)
    labels = []
    for c in combined.tolist():
        reviewer, session = reviewer_names[c // n_sessions], session_names[c % n_sessions]
        labels.append(str(reviewer) if session is None else f"{reviewer}|{session}")
    return codes, labels

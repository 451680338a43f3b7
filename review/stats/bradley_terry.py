"""Bradley-Terry strengths over arms (pure numpy/scipy), after FastChat's ``compute_bt`` / ``preprocess_for_bt``.

A comparison is (item_a, item_b, score_a) with score_a 1 (a won), 0 (b won) or 0.5 (tie: half a win each,
as FastChat counts a draw). Comparisons collapse to unique rows with counts; strengths ``beta`` (natural
log-odds units) minimise the logistic loss ``-sum w * [s log sigma(d) + (1 - s) log sigma(-d)]`` with
``d = beta_a - beta_b`` by L-BFGS-B, anchored so that ``beta[anchor] == 0``. ``P(a beats b) = sigma(d)``.
Elo-like scale as FastChat: ``1000 + 400 * beta / ln 10``.

Bootstrap: like FastChat, multinomial resampling of the unique-row counts (iid votes, seeded); all replicates
are fitted jointly in one L-BFGS-B call (the loss is separable across replicates), which keeps it fast.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

logger = logging.getLogger(__name__)

ELO_SCALE = 400 / math.log(10)  # Elo points per natural log-odds unit
ELO_BASE = 1000.0  # rating of the anchor
_BOUND = 12.0  # |beta| cap: keeps the MLE finite when an item never (or always) wins


def _collapse(item_a: Sequence[str], item_b: Sequence[str], score_a: Sequence[float], items: list[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique (a, b, score) rows and their counts."""
    index = {name: i for i, name in enumerate(items)}
    a = np.fromiter(map(index.__getitem__, item_a), dtype=np.int64, count=len(item_a))
    b = np.fromiter(map(index.__getitem__, item_b), dtype=np.int64, count=len(item_b))
    s = np.asarray(score_a, dtype=float)
    code = (a * len(items) + b) * 3 + np.rint(s * 2).astype(np.int64)
    uniq, counts = np.unique(code, return_counts=True)
    s_u = (uniq % 3) / 2.0
    ab = uniq // 3
    return ab // len(items), ab % len(items), s_u, counts.astype(float)


def _fit(a: np.ndarray, b: np.ndarray, s: np.ndarray, weights: np.ndarray, n_items: int, anchor: int,
         start: np.ndarray | None = None) -> np.ndarray:
    """Joint fit: ``weights`` is (R, n_rows); returns (R, n_items) strengths with the anchor at 0.
    ``start`` (n_items,) is the initial point of every replicate (the point estimate for bootstraps)."""
    n_rep = weights.shape[0]
    free = np.array([i for i in range(n_items) if i != anchor])
    total = max(float(weights.sum()), 1.0)
    incidence = np.zeros((a.size, n_items))  # d = incidence @ beta
    incidence[np.arange(a.size), a] += 1.0
    incidence[np.arange(b.size), b] -= 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        beta = np.zeros((n_rep, n_items))
        beta[:, free] = theta.reshape(n_rep, free.size)
        d = beta[:, a] - beta[:, b]
        val = -(weights * (s * log_expit(d) + (1 - s) * log_expit(-d))).sum() / total
        grad = np.einsum("rk,ki->ri", weights * (expit(d) - s) / total, incidence)  # no BLAS threads
        return float(val), grad[:, free].ravel()

    x0 = np.tile(start[free], n_rep) if start is not None else np.zeros(n_rep * free.size)
    res = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=[(-_BOUND, _BOUND)] * x0.size,
                   options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9})
    if not res.success:
        logger.warning("Bradley-Terry fit did not converge: %s", res.message)
    beta = np.zeros((n_rep, n_items))
    beta[:, free] = res.x.reshape(n_rep, free.size)
    return beta


def fit_bradley_terry(
    item_a: Sequence[str], item_b: Sequence[str], score_a: Sequence[float], *, anchor: str = "full",
    items: Sequence[str] | None = None,
) -> dict[str, float]:
    """MLE strengths (natural log-odds units, ``anchor`` = 0) for the items in the comparisons."""
    names = list(items) if items is not None else sorted(set(item_a) | set(item_b) | {anchor})
    if not len(item_a):
        return {name: 0.0 if name == anchor else float("nan") for name in names}
    a, b, s, w = _collapse(item_a, item_b, score_a, names)
    beta = _fit(a, b, s, w[None, :], len(names), names.index(anchor))[0]
    seen = set(a.tolist()) | set(b.tolist()) | {names.index(anchor)}
    return {name: float(v) if i in seen else float("nan") for i, (name, v) in enumerate(zip(names, beta, strict=True))}


def bradley_terry(
    item_a: Sequence[str], item_b: Sequence[str], score_a: Sequence[float], *, anchor: str = "full",
    items: Sequence[str] | None = None, n_boot: int = 100, seed: int = 0, level: float = 0.95,
) -> dict[str, object]:
    """Strengths with percentile bootstrap intervals and Elo-like ratings.

    Returns ``{"anchor", "tie_rule", "n_comparisons", "n_boot", "items": [{"item", "strength", "ci",
    "elo", "elo_ci", "n"}...]}`` sorted by strength, descending; an item without comparisons has ``nan``
    strength (listed last).
    """
    names = list(items) if items is not None else sorted(set(item_a) | set(item_b) | {anchor})
    n_total = len(item_a)
    out: dict[str, object] = {"anchor": anchor, "tie_rule": "a tie counts as half a win for each side",
                              "n_comparisons": n_total, "n_boot": n_boot, "items": []}
    if n_total == 0:
        return out
    a, b, s, w = _collapse(item_a, item_b, score_a, names)
    k = names.index(anchor)
    point = _fit(a, b, s, w[None, :], len(names), k)[0]
    rng = np.random.default_rng(seed)
    boots = _fit(a, b, s, rng.multinomial(n_total, w / w.sum(), size=n_boot).astype(float), len(names), k,
                 start=point)
    q = (1 - level) / 2
    lo, hi = np.quantile(boots, q, axis=0), np.quantile(boots, 1 - q, axis=0)
    appear = np.bincount(a, weights=w, minlength=len(names)) + np.bincount(b, weights=w, minlength=len(names))
    unseen = (appear == 0) & (np.arange(len(names)) != k)  # no comparisons: strength not identified
    point, lo, hi = (np.where(unseen, np.nan, x) for x in (point, lo, hi))
    rows = []
    for i, name in enumerate(names):
        rows.append({"item": name, "strength": float(point[i]), "ci": (float(lo[i]), float(hi[i])),
                     "elo": ELO_BASE + ELO_SCALE * float(point[i]),
                     "elo_ci": (ELO_BASE + ELO_SCALE * float(lo[i]), ELO_BASE + ELO_SCALE * float(hi[i])),
                     "n": int(appear[i])})
    out["items"] = sorted(rows, key=lambda r: -r["strength"] if not math.isnan(r["strength"]) else math.inf)
    return out

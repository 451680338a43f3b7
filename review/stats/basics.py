"""Pure statistics for the blind review study (numpy/scipy only; no DB, torch or gradio).

Conventions
- Proportions: ``k`` successes out of ``n`` trials. With ``n == 0`` every estimate and bound is ``nan``.
- Wilson score interval (no continuity correction), identical to
  ``scipy.stats.binomtest(k, n).proportion_ci(level, method="wilson")``.
- Preference test: exact two-sided binomial test against 0.5 on the non-tie votes (ties are excluded from
  the test and reported separately).
- ABX test: exact one-sided binomial test, ``alternative="greater"`` against chance 0.5.
- Everything here treats votes as independent: these are **descriptive** figures. The verdicts come from
  reviewer-level, anytime-valid statistics (``review.stats.sequential``, ``review.stats.verdicts``); gold screening is
  ``review.stats.screening``.
- ``equivalence_n``: the fixed-n exact plan for a one-sided Clopper-Pearson bound below a margin (reference only).
- Identification rate (share of people who can tell the images apart, corrected for guessing in ABX):
  ``max(0, 2 * accuracy - 1)``; its interval is the accuracy's Wilson 95 % interval mapped the same way.
- Power: exact binomial, smallest ``n`` whose power reaches the target (the exact power curve is saw-toothed,
  so a few larger ``n`` can dip below; this is the convention behind the published 158/69/37/23 figures).
- Bootstraps take a ``seed`` and are reproducible; percentile intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy import stats as sps

logger = logging.getLogger(__name__)

Z95 = float(sps.norm.ppf(0.975))  # two-sided 95 % normal quantile
_MAX_N = 200_000  # search limit for sample-size calculations
_NAN = float("nan")


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (``(nan, nan)`` when ``n == 0``)."""
    if n <= 0:
        return (_NAN, _NAN)
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clopper_pearson_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a proportion."""
    if n <= 0:
        return _NAN
    return 1.0 if k >= n else float(sps.beta.ppf(1 - alpha, k + 1, n - k))


def binom_p_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value, as scipy's ``binomtest``; ``nan`` when ``n == 0``.
    For p = 0.5 the null is symmetric, so it is ``min(1, 2 * smaller tail)`` (closed form, fast)."""
    if n <= 0:
        return _NAN
    if p == 0.5:
        return float(binom_p_two_sided_half(np.asarray([k]), np.asarray([n]))[0])
    return float(sps.binomtest(int(k), int(n), p).pvalue)


def binom_p_two_sided_half(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Vectorized exact two-sided binomial p-values against 0.5 (``nan`` where ``n == 0``)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    tails = np.minimum(sps.binom.cdf(k, n, 0.5), sps.binom.sf(k - 1, n, 0.5))
    p = np.where(2 * k == n, 1.0, np.minimum(1.0, 2 * tails))
    return np.where(n > 0, p, _NAN)


def binom_p_greater(k: int, n: int, p: float = 0.5) -> float:
    """Exact one-sided binomial test p-value, alternative 'greater' (P[X >= k])."""
    return float(sps.binom.sf(int(k) - 1, int(n), p)) if n > 0 else _NAN


def identification_rate(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Guessing-corrected identification rate ``2 * acc - 1`` (clipped at 0) and its Wilson-based interval."""
    if n <= 0:
        return (_NAN, _NAN, _NAN)
    lo, hi = wilson_ci(k, n, level)
    return (max(0.0, 2 * k / n - 1), max(0.0, 2 * lo - 1), max(0.0, 2 * hi - 1))


# ---------------------------------------------------------------- power and sample size


def _chunks(max_n: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering 1..max_n in growing chunks (most answers are small)."""
    out, lo, size = [], 1, 256
    while lo <= max_n:
        out.append((lo, min(lo + size, max_n + 1)))
        lo, size = lo + size, min(size * 4, 16384)
    return out


def _critical_k_greater(ns: np.ndarray, p0: float, alpha: float) -> np.ndarray:
    """Smallest k with P(X >= k | n, p0) <= alpha, for each n (vectorized, float-safe)."""
    k = sps.binom.isf(alpha, ns, p0) + 1  # isf: smallest k with P(X > k) <= alpha
    k = np.where(sps.binom.sf(k - 1, ns, p0) > alpha, k + 1, k)
    k = np.where(sps.binom.sf(k - 2, ns, p0) <= alpha, k - 1, k)
    return k


def binomial_power(n: int, p1: float, p0: float = 0.5, alpha: float = 0.05) -> float:
    """Power of the exact one-sided ('greater') binomial test of ``p0`` with ``n`` trials when the truth is ``p1``."""
    ns = np.asarray([n])
    return float(sps.binom.sf(_critical_k_greater(ns, p0, alpha) - 1, ns, p1)[0])


def binomial_power_n(
    p1: float, p0: float = 0.5, alpha: float = 0.05, power: float = 0.8, *, max_n: int = _MAX_N
) -> int | None:
    """Smallest n for which the exact one-sided binomial test (alpha) rejects ``p0`` with ``power`` when the
    true proportion is ``p1 > p0``. 0.60 -> 158, 0.65 -> 69, 0.70 -> 37, 0.75 -> 23. ``None`` if not reached
    by ``max_n``."""
    if not p1 > p0:
        return None
    for lo, hi in _chunks(max_n):
        ns = np.arange(lo, hi)
        pw = sps.binom.sf(_critical_k_greater(ns, p0, alpha) - 1, ns, p1)
        hit = np.flatnonzero(pw >= power)
        if hit.size:
            return int(ns[hit[0]])
    return None


def equivalence_n(
    p_true: float = 0.5, margin: float = 0.60, alpha: float = 0.05, power: float = 0.8, *, max_n: int = _MAX_N
) -> int | None:
    """Smallest n such that, with true accuracy ``p_true``, the one-sided (1 - alpha) Clopper-Pearson upper
    bound falls below ``margin`` with probability >= ``power`` (exact binomial). 0.5 vs 0.60 -> 158.
    ``None`` if not reached by ``max_n``."""
    if not p_true < margin:
        return None
    for lo, hi in _chunks(max_n):
        ns = np.arange(lo, hi)
        # CP upper(k, n) < margin  <=>  P(X <= k | n, margin) < alpha; kmax = largest such k
        kmax = sps.binom.ppf(alpha, ns, margin) - 1
        kmax = np.where(sps.binom.cdf(kmax, ns, margin) >= alpha, kmax - 1, kmax)
        kmax = np.where(sps.binom.cdf(kmax + 1, ns, margin) < alpha, kmax + 1, kmax)
        pw = np.where(kmax >= 0, sps.binom.cdf(kmax, ns, p_true), 0.0)
        hit = np.flatnonzero(pw >= power)
        if hit.size:
            return int(ns[hit[0]])
    return None


# ---------------------------------------------------------------- bootstraps

Statistic = Callable[[np.ndarray], np.ndarray]  # (B, n) -> (B,)
_STATS: dict[str, Statistic] = {
    "mean": lambda a: a.mean(axis=1),
    "median": lambda a: np.median(a, axis=1),
    "geomean": lambda a: np.exp(np.log(a).mean(axis=1)),
}


def bootstrap_ci(
    x: np.ndarray, statistic: str | Statistic = "mean", *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the rows of ``x`` (iid resampling, seeded)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return (_NAN, _NAN)
    fn = _STATS[statistic] if isinstance(statistic, str) else statistic
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    reps = fn(x[idx])
    q = (1 - level) / 2
    lo, hi = np.nanquantile(reps, [q, 1 - q])
    return (float(lo), float(hi))


def _draw_counts(rng: np.random.Generator, n_boot: int, n_clusters: int) -> np.ndarray:
    """(n_boot, n_clusters) multiplicities of ``n_clusters`` ids drawn with replacement per replicate."""
    draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    flat = draws + np.arange(n_boot)[:, None] * n_clusters
    return np.bincount(flat.ravel(), minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)


def cluster_bootstrap_means(
    y: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray, *, n_boot: int = 200, seed: int = 0
) -> np.ndarray:
    """Two-way cluster bootstrap replicates of ``mean(y)``.

    Each replicate draws the reviewer ids and the condition ids with replacement (reviewers first, then
    conditions, from ``default_rng(seed)``); a vote by reviewer r on condition c enters with multiplicity
    ``count_r * count_c``. Computed with a sparse reviewer x condition table of sums and counts, so the cost
    grows with the number of occupied cells, not votes. Replicates with no votes in the intersection are ``nan``.
    """
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        return np.full(n_boot, _NAN)
    r_ids, r = np.unique(np.asarray(reviewers), return_inverse=True)
    c_ids, c = np.unique(np.asarray(conditions), return_inverse=True)
    n_r = r_ids.size
    # sparse (2 n_r, n_c) table: rows 0..n_r-1 hold sums of y per reviewer x condition, rows n_r.. vote counts
    table = sparse.csr_matrix((np.concatenate([y, np.ones_like(y)]), (np.concatenate([r, r + n_r]),
                                                                       np.concatenate([c, c]))),
                              shape=(2 * n_r, c_ids.size))
    rng = np.random.default_rng(seed)
    wr = _draw_counts(rng, n_boot, n_r).astype(float)
    wc = _draw_counts(rng, n_boot, c_ids.size).astype(float)
    inner = table @ wc.T  # (2 n_r, n_boot): per reviewer, condition-weighted sums and counts (no BLAS)
    num = np.einsum("rb,br->b", inner[:n_r], wr)
    den = np.einsum("rb,br->b", inner[n_r:], wr)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, _NAN)


def cluster_bootstrap_ci(
    y: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray, *, n_boot: int = 200, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval from ``cluster_bootstrap_means``."""
    reps = cluster_bootstrap_means(y, reviewers, conditions, n_boot=n_boot, seed=seed)
    if np.all(np.isnan(reps)):
        return (_NAN, _NAN)
    q = (1 - level) / 2
    lo, hi = np.nanquantile(reps, [q, 1 - q])
    return (float(lo), float(hi))


# ---------------------------------------------------------------- side bias


def side_bias(chose_left: np.ndarray, reviewers: np.ndarray | None = None) -> dict[str, object]:
    """Share of non-tie choices that went to the left image, with Wilson CI and two-sided binomial p
    (0.5 = no bias); per reviewer too when ``reviewers`` is given. ``chose_left`` holds booleans."""
    left = np.asarray(chose_left, dtype=bool)
    k, n = int(left.sum()), int(left.size)
    out: dict[str, object] = {"n": n, "left": k, "left_share": k / n if n else _NAN,
                              "ci": wilson_ci(k, n), "p_value": binom_p_two_sided(k, n)}
    if reviewers is not None:
        ids, inv = np.unique(np.asarray(reviewers), return_inverse=True)
        ks, ns = np.bincount(inv, weights=left, minlength=ids.size), np.bincount(inv, minlength=ids.size)
        ps = binom_p_two_sided_half(ks, ns)
        out["per_reviewer"] = {str(r): {"n": int(m), "left": int(j), "left_share": j / m, "p_value": float(q)}
                               for r, j, m, q in zip(ids, ks, ns, ps, strict=True)}
    return out

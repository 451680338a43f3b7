"""Anytime-valid, reviewer-level inference for a share of votes (ABX accuracy, preference share): numpy/scipy only.

Why hand-written: scipy/statsmodels have fixed-n tests and cluster-robust variances but no confidence sequences.

Model-free recipe (docs/statistics.md explains each step for a reader of a perception paper):

1. Estimate the share ``m = k / n`` (votes pooled) and its variance with a **two-way cluster-robust** (reviewer and
   condition; Cameron, Gelbach & Miller 2011) sandwich, CR1 small-sample factor ``G / (G - 1)`` per dimension,
   never below the binomial variance. Every vote of one reviewer is one cluster, so a reviewer who answers many
   trials counts as one noisy unit, not as many independent votes.
2. Studentize: the z statistic is mapped through Student's t with ``min(reviewers, conditions) - 1`` degrees of
   freedom to the normal quantile of the same tail (few reviewers: much weaker evidence).
3. Turn it into a **one-sided normal-mixture e-value** (Robbins 1970; Howard et al. 2021, "Time-uniform,
   nonparametric, nonasymptotic confidence sequences"): ``E = 2 / sqrt(1 + u) * Phi(z sqrt(u / (1 + u))) *
   exp(z^2 u / (2 (1 + u)))`` with ``u = rho^2 * t``, ``t`` the effective number of votes ``m(1-m) / V``.
   ``1 / E`` is an anytime-valid p-value: looking after every vote does not inflate the error rate.
   ``rho`` is tuned so the bound is tightest at ``design_votes`` effective votes.
4. Several presets: Holm on the anytime p-values of each family (distinguishable, indistinguishable).

Everything takes arrays of **sufficient sums** (``ClusterSums``), so the simulator (``review.stats.simulate``) evaluates
the very same functions after every vote of thousands of studies at once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.special import log_ndtr, ndtr, ndtri_exp

logger = logging.getLogger(__name__)

_MIX = 7.93  # u = rho^2 * t at the tuning point: -2 log(alpha) + log(1 - 2 log(alpha)) at alpha 0.05 (Howard et al.)


@dataclass(frozen=True)
class ClusterSums:
    """Sufficient sums of binary votes ``y`` for the two-way cluster-robust variance (scalars or arrays).

    ``r_*``: sums over reviewers of ``k_r^2``, ``k_r n_r``, ``n_r^2`` (``k_r`` successes, ``n_r`` votes of reviewer
    r); ``c_*`` the same over conditions; ``x_*`` over reviewer x condition cells (one vote per cell when a
    reviewer sees a condition once)."""

    n: np.ndarray
    k: np.ndarray
    n_reviewers: np.ndarray
    n_conditions: np.ndarray
    r_kk: np.ndarray
    r_kn: np.ndarray
    r_nn: np.ndarray
    c_kk: np.ndarray
    c_kn: np.ndarray
    c_nn: np.ndarray
    x_kk: np.ndarray
    x_kn: np.ndarray
    x_nn: np.ndarray


def _group_sums(y: np.ndarray, codes: np.ndarray) -> tuple[int, float, float, float]:
    """(groups, sum k_g^2, sum k_g n_g, sum n_g^2) of ``y`` grouped by integer ``codes``."""
    if y.size == 0:
        return 0, 0.0, 0.0, 0.0
    if codes.min() >= 0 and codes.max() < 8 * codes.size + 4096:  # dense codes: count directly (no sort)
        inv = codes
    else:
        inv = np.unique(codes, return_inverse=True)[1]
    n = np.bincount(inv).astype(float)
    occupied = n > 0
    k, n = np.bincount(inv, weights=y)[occupied], n[occupied]
    # sums of products without BLAS (a threaded dot product is slow on a busy machine)
    return int(n.size), float((k * k).sum()), float((k * n).sum()), float((n * n).sum())


def cluster_sums(y: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray) -> ClusterSums:
    """``ClusterSums`` of binary votes ``y`` with integer reviewer and condition codes."""
    y = np.asarray(y, dtype=float)
    reviewers, conditions = np.asarray(reviewers, dtype=np.int64), np.asarray(conditions, dtype=np.int64)
    gr, rkk, rkn, rnn = _group_sums(y, reviewers)
    gc, ckk, ckn, cnn = _group_sums(y, conditions)
    cells = reviewers * (int(conditions.max()) + 1 if conditions.size else 1) + conditions
    _, xkk, xkn, xnn = _group_sums(y, cells)
    a = np.asarray
    return ClusterSums(a(float(y.size)), a(float(y.sum())), a(float(gr)), a(float(gc)), a(rkk), a(rkn), a(rnn),
                       a(ckk), a(ckn), a(cnn), a(xkk), a(xkn), a(xnn))


def share_and_variance(s: ClusterSums) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share m, two-way cluster-robust variance of m, degrees of freedom); nan where there are no votes."""
    n = np.asarray(s.n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s.k / n

        def part(kk: np.ndarray, kn: np.ndarray, nn: np.ndarray, groups: np.ndarray) -> np.ndarray:
            resid = np.maximum(kk - 2 * m * kn + m * m * nn, 0.0)  # sum_g (k_g - m n_g)^2
            return np.where(groups > 1, groups / (groups - 1.0), np.inf) * resid / (n * n)

        v_r = part(s.r_kk, s.r_kn, s.r_nn, s.n_reviewers)
        v_c = part(s.c_kk, s.c_kn, s.c_nn, s.n_conditions)
        cells = np.maximum(s.n_reviewers, s.n_conditions)  # an upper bound of the occupied cells, for CR1 only
        v_x = part(s.x_kk, s.x_kn, s.x_nn, np.maximum(cells, 2.0))
        v = np.maximum(np.nan_to_num(v_r + v_c - v_x, nan=np.inf), np.maximum(v_r, v_c))
        m_tilde = (s.k + 0.5) / (n + 1.0)  # keeps the binomial floor above 0 when every vote agrees
        v = np.maximum(v, m_tilde * (1 - m_tilde) / n)
        df = np.minimum(s.n_reviewers, s.n_conditions) - 1.0
    return np.where(n > 0, m, np.nan), np.where(n > 0, v, np.nan), df


def _studentize(z: np.ndarray, df: np.ndarray) -> np.ndarray:
    """The normal quantile with the same one-sided tail as ``z`` under Student's t with ``df`` (df < 1: 0)."""
    z = np.asarray(z, dtype=float)
    df = np.asarray(df, dtype=float)
    ok = df >= 1
    safe_df = np.where(ok, df, 1.0)
    zn = -ndtri_exp(sps.t.logsf(np.abs(z), safe_df))  # log scale: no underflow in the far tail
    return np.where(ok, np.sign(z) * zn, 0.0)


def mixture_scale(design_votes: float) -> float:
    """``rho^2`` of the normal mixture, tuned to be tightest at ``design_votes`` effective votes."""
    return _MIX / float(design_votes)


def log_e_value(z: np.ndarray, info: np.ndarray, rho2: float) -> np.ndarray:
    """Log of the one-sided normal-mixture e-value for a standardized statistic ``z`` after ``info`` votes."""
    u = np.asarray(info, dtype=float) * rho2
    z = np.asarray(z, dtype=float)
    frac = u / (1 + u)
    return math.log(2) - 0.5 * np.log1p(u) + log_ndtr(z * np.sqrt(frac)) + 0.5 * z * z * frac


def anytime_p(share: np.ndarray, variance: np.ndarray, df: np.ndarray, null: float | np.ndarray, *,
              greater: bool, rho2: float) -> np.ndarray:
    """Anytime-valid p-value of H0: share <= null (``greater``) or share >= null (not ``greater``); 1 without
    data or evidence."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(variance)
        z = (share - null) / sd if greater else (null - share) / sd
        zs = _studentize(np.nan_to_num(z, nan=0.0), df)
        info = np.maximum(np.nan_to_num(share * (1 - share) / variance, nan=1.0), 1.0)
        p = np.minimum(1.0, np.exp(-log_e_value(zs, info, rho2)))
    return np.where(np.isfinite(z) & (zs > 0), p, 1.0)


def threshold(info: np.ndarray, level: float, rho2: float) -> np.ndarray:
    """The normal-scale z at which the e-value reaches ``1 / level`` (bisection, vectorized)."""
    lo, hi = np.zeros_like(info, dtype=float), np.full_like(info, 40.0, dtype=float)
    target = -math.log(level)
    for _ in range(60):
        mid = (lo + hi) / 2
        above = log_e_value(mid, info, rho2) >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return hi


def confidence_bounds(share: np.ndarray, variance: np.ndarray, df: np.ndarray, *, level: float, rho2: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid lower and upper bounds, each with error ``level`` (two-sided: pass alpha / 2)."""
    share, variance, df = (np.asarray(x, dtype=float) for x in (share, variance, df))
    with np.errstate(invalid="ignore", divide="ignore"):
        info = np.maximum(np.nan_to_num(share * (1 - share) / variance, nan=1.0), 1.0)
        zn = threshold(info, level, rho2)
        zt = np.where(df >= 1, sps.t.isf(ndtr(-zn), np.where(df >= 1, df, 1.0)), np.inf)
        half = zt * np.sqrt(variance)
    return np.clip(share - half, 0.0, 1.0), np.clip(share + half, 0.0, 1.0)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis (valid under any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.shape[-1]
    if m == 0:
        return p
    order = np.argsort(p, axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    adj = np.minimum(1.0, np.maximum.accumulate(sorted_p * (m - np.arange(m)), axis=-1))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


# -------------------------------------------------------------------------------- ABX sensitivity


def abx_accuracy(dprime: np.ndarray) -> np.ndarray:
    """Unbiased proportion correct of the ABX differencing model (Macmillan & Creelman 2005) for ``d'``."""
    d = np.asarray(dprime, dtype=float)
    a, b = ndtr(d / math.sqrt(2)), ndtr(d / 2)
    return a * b + (1 - a) * (1 - b)


_D_GRID = np.linspace(0.0, 8.0, 4001)
_P_GRID = abx_accuracy(_D_GRID)


def abx_dprime(accuracy: np.ndarray) -> np.ndarray:
    """``d'`` whose unbiased ABX accuracy is ``accuracy`` (0 at or below chance; nan for nan)."""
    p = np.asarray(accuracy, dtype=float)
    return np.where(np.isnan(p), np.nan, np.interp(np.clip(p, 0.5, _P_GRID[-1]), _P_GRID, _D_GRID))

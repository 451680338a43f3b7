"""``python -m review simulate``: play ABX studies with known truth through the desk's pair choice and the verdict
statistics, and report each verdict's false-call rate and the confidence sequences' coverage (with Monte Carlo error).

Examples::

    python -m review simulate --reviewers 15 --truth 0.6 --studies 500 --json
    python -m review simulate --reviewers 5 --truth 0.5 --presets 4 --peek-every 1
    python -m review simulate --allocation-study --studies 100      # adaptive vs fixed allocation

What runs: the trial order comes from ``review.study.trials.pick_pair`` (the desk's own pair choice: one pair per
condition per reviewer, least-served preset first), reviewers served in an interleaved random order; votes are
drawn from a logistic model with reviewer and condition random effects; the verdicts are those of
``review.stats.verdicts`` / ``review.stats.sequential`` evaluated on the same sufficient sums the leaderboard uses. SQLite and
the image pipeline are left out (far too slow for thousands of studies): ``tests/test_simulate_desk.py`` plays one small
study through the real ReviewDesk + Store and checks the leaderboard reaches the same numbers. For speed the desk's
trial order is drawn for ``--schedules`` studies and reused (outcomes are drawn afresh for every study).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from review.stats import sequential as sq
from review.stats.verdict_config import VerdictConfig
from review.study.trials import pick_pair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Design:
    """One simulated study design."""

    reviewers: int = 15  # reviewers in the study, each serves one session
    truths: tuple[float, ...] = (0.6,)  # true ABX accuracy per preset (population mean over reviewers, conditions)
    conditions: int = 40  # conditions (one pair per condition and preset)
    session: int = 40  # ABX trials per reviewer (at most one per condition: capped at ``conditions``)
    reviewer_sd: float = 0.5  # reviewer heterogeneity, logit SD
    condition_sd: float = 0.3  # condition x preset heterogeneity, logit SD
    peek_every: int = 0  # look at the verdicts after every this many votes (0: only at the end)


def intercept(truth: float, sd: float) -> float:
    """Logit intercept whose population mean accuracy, over N(0, sd^2) random effects, is ``truth``."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    return float(brentq(lambda b: float(w @ expit(b + sd * x)) - truth, -20, 20))


def schedule(design: Design, rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reviewer, preset, condition) per vote, in serving order, from the desk's ``pick_pair``."""
    n_presets = len(design.truths)
    pairs = [{"pair_id": p * design.conditions + c, "preset": str(p), "condition_id": c}
             for p in range(n_presets) for c in range(design.conditions)]
    session = min(design.session, design.conditions)
    left = {r: session for r in range(design.reviewers)}
    seen: dict[int, dict[int, int]] = {r: {} for r in left}
    preset_load: dict[str, int] = {}
    condition_load: dict[int, int] = {}
    pair_load: dict[int, int] = {}
    out: list[tuple[int, int, int]] = []
    while left:
        r = rng.choice(list(left))
        pair = pick_pair(pairs, seen[r], preset_load, condition_load, pair_load, rng)
        left[r] -= 1
        if left[r] == 0 or pair is None:
            del left[r]
        if pair is None:
            continue
        seen[r][pair["pair_id"]] = 1
        for load, key in ((preset_load, pair["preset"]), (condition_load, pair["condition_id"]),
                          (pair_load, pair["pair_id"])):
            load[key] = load.get(key, 0) + 1
        out.append((r, int(pair["preset"]), pair["condition_id"]))
    arr = np.array(out, dtype=np.int64).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def _running(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per vote: successes and votes of its group before it (exclusive running counts), y: (B, N)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    start = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    seg = np.repeat(start, np.diff(np.r_[start, g.size]))
    cum = np.cumsum(y[:, order], axis=1)
    before = np.hstack([np.zeros((y.shape[0], 1)), cum])
    k_prev = cum - y[:, order] - before[:, seg]
    n_prev = (np.arange(g.size) - seg).astype(float)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    return k_prev[:, inv], n_prev[inv]


def running_sums(y: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray) -> sq.ClusterSums:
    """``ClusterSums`` after each vote (arrays (B, N)) of the votes ``y`` (B, N) of one preset."""
    n_votes = y.shape[1]
    ones = np.ones(n_votes)
    parts = []
    for groups in (reviewers, conditions):
        k_prev, n_prev = _running(y, groups)
        parts.append((np.cumsum(2 * k_prev * y + y, axis=1), np.cumsum(k_prev + y * n_prev + y, axis=1),
                      np.broadcast_to(np.cumsum(2 * n_prev + 1), y.shape)))
    first_r = np.cumsum(_first(reviewers) * ones)
    first_c = np.cumsum(_first(conditions) * ones)
    cum_y, cum_n = np.cumsum(y, axis=1), np.broadcast_to(np.cumsum(ones), y.shape)
    b = y.shape
    return sq.ClusterSums(cum_n, cum_y, np.broadcast_to(first_r, b), np.broadcast_to(first_c, b), *parts[0],
                          *parts[1], cum_y, cum_y, cum_n)


def _first(groups: np.ndarray) -> np.ndarray:
    """1 where a vote is its group's first."""
    _, idx = np.unique(groups, return_index=True)
    out = np.zeros(groups.size)
    out[idx] = 1.0
    return out


def _take(s: sq.ClusterSums, at: np.ndarray) -> sq.ClusterSums:
    """Sums at vote index ``at`` (-1: no votes yet) for every study: arrays (B, L)."""
    safe = np.maximum(at, 0)
    fields = {}
    for name, arr in asdict_shallow(s).items():
        got = np.asarray(arr)[:, safe]
        fields[name] = np.where(at >= 0, got, 0.0)
    return sq.ClusterSums(**fields)


def asdict_shallow(s: sq.ClusterSums) -> dict[str, np.ndarray]:
    """The fields of a ClusterSums as a dict of arrays (no deep copy, unlike dataclasses.asdict)."""
    return {name: getattr(s, name) for name in s.__dataclass_fields__}


def simulate_design(design: Design, config: VerdictConfig, studies: int, *, seed: int = 0,
                    schedules: int = 20) -> dict[str, object]:
    """Play ``studies`` studies of ``design``; verdict error rates, power and coverage with Monte Carlo errors."""
    rng = np.random.default_rng(seed)
    rho2 = sq.mixture_scale(config.design_votes)
    n_presets = len(design.truths)
    sd_total = math.hypot(design.reviewer_sd, design.condition_sd)
    beta0 = np.array([intercept(t, sd_total) for t in design.truths])
    truths = np.array(design.truths)
    per_schedule = [studies // schedules + (i < studies % schedules) for i in range(min(schedules, studies))]
    # verdict flags per study and preset: final look, any look
    final_ind, final_dist, ever_ind, ever_dist = (np.zeros((studies, n_presets), bool) for _ in range(4))
    cover_final, cover_all = np.zeros((studies, n_presets), bool), np.zeros((studies, n_presets), bool)
    n_votes = np.zeros(studies)
    row = 0
    for s_idx, count in enumerate(per_schedule):
        if count == 0:
            continue
        rev, pre, con = schedule(design, random.Random(seed * 1000 + s_idx))
        total = rev.size
        looks = (np.arange(design.peek_every, total + 1, design.peek_every) if design.peek_every
                 else np.array([total]))
        if looks[-1] != total:
            looks = np.r_[looks, total]
        b_r = rng.normal(0, design.reviewer_sd, (count, design.reviewers))
        c_pc = rng.normal(0, design.condition_sd, (count, n_presets, design.conditions))
        logit = beta0[pre][None, :] + b_r[:, rev] + c_pc[:, pre, con]
        y = (rng.random(logit.shape) < expit(logit)).astype(float)
        p_dist = np.ones((count, looks.size, n_presets))
        p_eq = np.ones_like(p_dist)
        p_lo, p_hi = np.ones_like(p_dist), np.ones_like(p_dist)
        vote_p = np.ones_like(p_dist)
        for p in range(n_presets):
            idx = np.flatnonzero(pre == p)
            if idx.size == 0:
                continue
            sums = running_sums(y[:, idx], rev[idx], con[idx])
            at = np.searchsorted(idx, looks, side="right") - 1  # last vote of this preset at each look
            m, v, df = sq.share_and_variance(_take(sums, at))
            p_dist[:, :, p] = sq.anytime_p(m, v, df, 0.5, greater=True, rho2=rho2)
            p_eq[:, :, p] = sq.anytime_p(m, v, df, config.margin, greater=False, rho2=rho2)
            p_lo[:, :, p] = sq.anytime_p(m, v, df, truths[p], greater=True, rho2=rho2)
            p_hi[:, :, p] = sq.anytime_p(m, v, df, truths[p], greater=False, rho2=rho2)
            k, n = np.nan_to_num(m * _take(sums, at).n), _take(sums, at).n
            vote_p[:, :, p] = np.where(n > 0, _binom_sf(k, n), 1.0)
        dist = sq.holm(p_dist) < config.alpha
        ind = (sq.holm(p_eq) < config.alpha) & (p_dist >= config.alpha) & (vote_p >= config.alpha)
        covered = (p_lo >= config.alpha / 2) & (p_hi >= config.alpha / 2)
        sl = slice(row, row + count)
        final_ind[sl], final_dist[sl] = ind[:, -1], dist[:, -1]
        ever_ind[sl], ever_dist[sl] = ind.any(axis=1), dist.any(axis=1)
        cover_final[sl], cover_all[sl] = covered[:, -1], covered.all(axis=1)
        n_votes[sl] = total
        row += count
    return _report(design, config, studies, truths, final_ind, final_dist, ever_ind, ever_dist, cover_final,
                   cover_all, n_votes)


def _binom_sf(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    from scipy import stats as sps
    return sps.binom.sf(k - 1, n, 0.5)


def _rate(flags: np.ndarray) -> dict[str, float]:
    """Share of studies and its Monte Carlo standard error."""
    p = float(flags.mean()) if flags.size else math.nan
    return {"rate": p, "mc_se": math.sqrt(p * (1 - p) / flags.size) if flags.size else math.nan}


def _report(design: Design, config: VerdictConfig, studies: int, truths: np.ndarray, final_ind: np.ndarray,
            final_dist: np.ndarray, ever_ind: np.ndarray, ever_dist: np.ndarray, cover_final: np.ndarray,
            cover_all: np.ndarray, n_votes: np.ndarray) -> dict[str, object]:
    """Rates per verdict: 'indistinguishable' calls where truth >= margin are false, 'distinguishable' calls where
    truth <= 0.5 are false; with several presets also the family-wise rate (at least one false call)."""
    ind, dist = (ever_ind, ever_dist) if design.peek_every else (final_ind, final_dist)
    false_ind_cols, false_dist_cols = truths >= config.margin, truths <= 0.5
    out: dict[str, object] = {"design": asdict(design), "config": asdict(config), "studies": studies,
                              "mean_votes": float(n_votes.mean()),
                              "looks": f"every {design.peek_every} votes" if design.peek_every else "final only"}
    out["indistinguishable"] = _rate(ind.any(axis=1) if ind.size else ind)
    out["distinguishable"] = _rate(dist.any(axis=1) if dist.size else dist)
    out["false_indistinguishable"] = (_rate(ind[:, false_ind_cols].any(axis=1)) if false_ind_cols.any()
                                      else None)
    out["false_distinguishable"] = (_rate(dist[:, false_dist_cols].any(axis=1)) if false_dist_cols.any()
                                    else None)
    out["indistinguishable_per_preset"] = _rate(ind.ravel())
    out["distinguishable_per_preset"] = _rate(dist.ravel())
    out["coverage_final"] = _rate(cover_final.ravel())
    out["coverage_all_looks"] = _rate(cover_all.ravel())
    return out


def with_peeking(design: Design, every: int) -> Design:
    """The same design, looked at after every ``every`` votes."""
    return replace(design, peek_every=every)


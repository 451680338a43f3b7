"""Adaptive versus fixed allocation in simulation: votes until every preset has a verdict, and the error rates.

A stream of reviewers (``design.reviewers`` at most, five working at once in random interleaving) each get up to
``design.session`` ABX trials from the desk's ``pick_pair``; every ``design.peek_every`` votes the verdicts of
``review.stats.verdicts`` are taken (``review.stats.sequential`` on the same sums the leaderboard uses). A preset's first
verdict is final. **Fixed** allocation keeps serving every preset until all have a verdict; **adaptive** allocation
passes ``review.stats.allocation`` weights (0 for a decided preset) to ``pick_pair``. The study stops when every preset
is decided or the reviewers run out.
"""

from __future__ import annotations

import logging
import math
import random

import numpy as np
from scipy import stats as sps
from scipy.special import expit

from review.stats import sequential as sq
from review.stats.simulate import Design, intercept
from review.stats.verdict_config import VerdictConfig
from review.study.trials import pick_pair

logger = logging.getLogger(__name__)

ACTIVE = 5  # reviewers working at the same time


def _verdicts(k_r: np.ndarray, n_r: np.ndarray, k_c: np.ndarray, n_c: np.ndarray, config: VerdictConfig,
              rho2: float) -> np.ndarray:
    """Per preset: +1 distinguishable, -1 indistinguishable, 0 undecided (Holm over presets)."""
    n, k = n_r.sum(axis=1), k_r.sum(axis=1)
    sums = sq.ClusterSums(n, k, (n_r > 0).sum(axis=1).astype(float), (n_c > 0).sum(axis=1).astype(float),
                          (k_r * k_r).sum(axis=1), (k_r * n_r).sum(axis=1), (n_r * n_r).sum(axis=1),
                          (k_c * k_c).sum(axis=1), (k_c * n_c).sum(axis=1), (n_c * n_c).sum(axis=1), k, k, n)
    m, v, df = sq.share_and_variance(sums)
    p_dist = sq.anytime_p(m, v, df, 0.5, greater=True, rho2=rho2)
    p_eq = sq.anytime_p(m, v, df, config.margin, greater=False, rho2=rho2)
    vote_p = np.where(n > 0, sps.binom.sf(k - 1, np.maximum(n, 1), 0.5), 1.0)
    dist = sq.holm(p_dist) < config.alpha
    ind = (sq.holm(p_eq) < config.alpha) & (p_dist >= config.alpha) & (vote_p >= config.alpha)
    return np.where(dist, 1, np.where(ind, -1, 0))


def play(design: Design, config: VerdictConfig, *, adaptive: bool, seed: int) -> tuple[int, np.ndarray, int]:
    """One study: (votes used, first verdict per preset, reviewers used)."""
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    n_p, n_c, n_rev = len(design.truths), design.conditions, design.reviewers
    beta0 = np.array([intercept(t, math.hypot(design.reviewer_sd, design.condition_sd)) for t in design.truths])
    b_r = rng.normal(0, design.reviewer_sd, n_rev)
    c_pc = rng.normal(0, design.condition_sd, (n_p, n_c))
    pairs = [{"pair_id": p * n_c + c, "preset": str(p), "condition_id": c} for p in range(n_p) for c in range(n_c)]
    k_r, n_r = np.zeros((n_p, n_rev)), np.zeros((n_p, n_rev))
    k_c, n_c_ = np.zeros((n_p, n_c)), np.zeros((n_p, n_c))
    loads: tuple[dict, dict, dict] = ({}, {}, {})
    verdict = np.zeros(n_p, dtype=int)
    rho2 = sq.mixture_scale(config.design_votes)
    arrived, active, left, seen = 0, [], {}, {}
    votes = 0
    while True:
        while len(active) < ACTIVE and arrived < n_rev:
            active.append(arrived)
            left[arrived], seen[arrived] = min(design.session, n_c), {}
            arrived += 1
        if not active:
            break
        r = prng.choice(active)
        weights = {str(p): float(verdict[p] == 0) for p in range(n_p)} if adaptive else None
        pair = pick_pair(pairs, seen[r], *loads, prng, preset_weights=weights,
                         max_per_preset=-(-design.session // n_p) if adaptive else None)
        left[r] -= 1
        if pair is None or left[r] <= 0:
            active.remove(r)
        if pair is None:
            continue
        p, c = int(pair["preset"]), pair["condition_id"]
        seen[r][pair["pair_id"]] = 1
        for load, key in zip(loads, (pair["preset"], c, pair["pair_id"]), strict=True):
            load[key] = load.get(key, 0) + 1
        y = float(rng.random() < expit(beta0[p] + b_r[r] + c_pc[p, c]))
        k_r[p, r] += y
        n_r[p, r] += 1
        k_c[p, c] += y
        n_c_[p, c] += 1
        votes += 1
        if votes % design.peek_every == 0:
            now = _verdicts(k_r, n_r, k_c, n_c_, config, rho2)
            verdict = np.where(verdict == 0, now, verdict)  # the first verdict is final
            if (verdict != 0).all():
                break
    return votes, verdict, arrived


def compare_allocation(design: Design, config: VerdictConfig, studies: int, *, seed: int = 0) -> dict[str, object]:
    """Mean votes until every preset has a verdict (or the reviewers run out), fixed vs adaptive, with error rates."""
    truths = np.array(design.truths)
    out: dict[str, object] = {"design": design.__dict__, "studies": studies, "truths": list(design.truths),
                              "margin": config.margin}
    for name, adaptive in (("fixed", False), ("adaptive", True)):
        votes, verdicts, reviewers = [], [], []
        for i in range(studies):
            n, v, used = play(design, config, adaptive=adaptive, seed=seed * 100_000 + i)
            votes.append(n)
            verdicts.append(v)
            reviewers.append(used)
        votes_a, ver = np.array(votes, float), np.array(verdicts)
        false_ind = (ver[:, truths >= config.margin] == -1).any(axis=1)
        false_dist = (ver[:, truths <= 0.5] == 1).any(axis=1)
        out[name] = {"mean_votes": float(votes_a.mean()), "votes_mc_se": float(votes_a.std(ddof=1) / math.sqrt(studies)),
                     "mean_reviewers": float(np.mean(reviewers)), "all_decided": float((ver != 0).all(axis=1).mean()),
                     "false_indistinguishable": float(false_ind.mean()), "false_distinguishable": float(false_dist.mean()),
                     "decided_per_preset": (ver != 0).mean(axis=0).tolist(),
                     "votes_per_study": votes, "all_decided_per_study": (ver != 0).all(axis=1).tolist()}
    out["vote_saving"] = 1 - out["adaptive"]["mean_votes"] / out["fixed"]["mean_votes"]
    both = np.array(out["fixed"]["all_decided_per_study"]) & np.array(out["adaptive"]["all_decided_per_study"])
    if both.any():  # the same studies (same seeds) where both allocations reached every verdict
        fixed_v, adaptive_v = (np.array(out[k]["votes_per_study"], float)[both] for k in ("fixed", "adaptive"))
        out["both_decided"] = {"studies": int(both.sum()), "fixed_mean_votes": float(fixed_v.mean()),
                               "adaptive_mean_votes": float(adaptive_v.mean()),
                               "vote_saving": float(1 - adaptive_v.mean() / fixed_v.mean()),
                               "saving_mc_se": float((1 - adaptive_v / fixed_v).std(ddof=1) / math.sqrt(both.sum()))
                               if both.sum() > 1 else None}
    return out

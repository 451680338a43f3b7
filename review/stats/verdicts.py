"""Per-preset verdicts from reviewer-level, anytime-valid statistics (``review.stats.sequential``), with Holm across presets.

``abx_block`` / ``preference_block`` summarise one preset's votes; ``decide`` applies the family-wise error control
(Holm over the presets, or a declared primary preset) and writes the verdicts. ``planned_votes`` is the prospective
plan (fixed design, declared alternative), never re-planned from the observed accuracy.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
from scipy import stats as sps

from review.stats import sequential as sq
from review.stats.verdict_config import VerdictConfig

logger = logging.getLogger(__name__)

INDISTINGUISHABLE, DISTINGUISHABLE, UNDECIDED = "indistinguishable", "distinguishable", "not enough votes"
METHOD = ("reviewer-level: two-way cluster-robust (reviewer, condition) share, Student-t corrected, "
          "anytime-valid normal-mixture confidence sequence")


def _stats(y: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray) -> tuple[float, float, float]:
    m, v, df = sq.share_and_variance(sq.cluster_sums(y, reviewers, conditions))
    return float(m), float(v), float(df)


def abx_block(correct: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray, response_a: np.ndarray,
              x_is_a: np.ndarray, config: VerdictConfig) -> dict[str, object]:
    """Reviewer-level ABX statistics of one preset (``correct``, ``response_a``, ``x_is_a``: booleans per vote)."""
    rho2 = sq.mixture_scale(config.design_votes)
    m, v, df = _stats(correct, reviewers, conditions)
    lo, hi = sq.confidence_bounds(m, v, df, level=config.alpha / 2, rho2=rho2)
    _, upper = sq.confidence_bounds(m, v, df, level=config.alpha, rho2=rho2)  # one-sided, for the equivalence
    lo, hi, upper = float(lo), float(hi), float(upper)
    out: dict[str, object] = {
        "accuracy": m, "se": math.sqrt(v) if v == v else math.nan, "df": df, "ci": (lo, hi), "upper_bound": upper,
        "p_above_chance": float(sq.anytime_p(m, v, df, 0.5, greater=True, rho2=rho2)),
        "p_below_margin": float(sq.anytime_p(m, v, df, config.margin, greater=False, rho2=rho2)),
        "dprime": float(sq.abx_dprime(m)), "dprime_ci": (float(sq.abx_dprime(lo)), float(sq.abx_dprime(hi))),
        "identification_rate": _identification(m), "identification_ci": (_identification(lo), _identification(hi)),
        "method": METHOD,
    }
    out["bias"] = _response_bias(np.asarray(response_a, bool), np.asarray(x_is_a, bool))
    return out


def _identification(accuracy: float) -> float:
    """Guessing-corrected share of people who identify the image: ``max(0, 2 * accuracy - 1)`` (nan stays nan)."""
    return max(0.0, 2 * accuracy - 1) if accuracy == accuracy else math.nan


def _response_bias(response_a: np.ndarray, x_is_a: np.ndarray) -> dict[str, object]:
    """Hit rate H = P('A' | X = A), false-alarm rate F = P('A' | X = B) (log-linear corrected), bias
    c = -(z(H) + z(F)) / 2 and the bias-free d' from p_max = Phi((z(H) - z(F)) / 2); needs X on both sides."""
    n_a, n_b = int(x_is_a.sum()), int((~x_is_a).sum())
    if not n_a or not n_b:
        return {"n_x_a": n_a, "n_x_b": n_b, "hit_rate": None, "false_alarm_rate": None, "c": None,
                "dprime_unbiased": None}
    h = (float(response_a[x_is_a].sum()) + 0.5) / (n_a + 1)
    f = (float(response_a[~x_is_a].sum()) + 0.5) / (n_b + 1)
    zh, zf = sps.norm.ppf(h), sps.norm.ppf(f)
    p_max = float(sps.norm.cdf((zh - zf) / 2))
    return {"n_x_a": n_a, "n_x_b": n_b, "hit_rate": h, "false_alarm_rate": f, "c": float(-(zh + zf) / 2),
            "dprime_unbiased": float(sq.abx_dprime(p_max))}


def preference_block(chose_selective: np.ndarray, reviewers: np.ndarray, conditions: np.ndarray,
                     config: VerdictConfig) -> dict[str, object]:
    """Reviewer-level share of non-tie preference votes for the selective image, two-sided anytime test of 0.5."""
    rho2 = sq.mixture_scale(config.design_votes)
    m, v, df = _stats(chose_selective, reviewers, conditions)
    lo, hi = sq.confidence_bounds(m, v, df, level=config.alpha / 2, rho2=rho2)
    p_up = float(sq.anytime_p(m, v, df, 0.5, greater=True, rho2=rho2))
    p_down = float(sq.anytime_p(m, v, df, 0.5, greater=False, rho2=rho2))
    return {"share_non_tie": m, "ci": (float(lo), float(hi)), "p_value": min(1.0, 2 * min(p_up, p_down)),
            "direction": "selective" if p_up < p_down else "full", "method": METHOD}


def _family(names: list[str], config: VerdictConfig) -> tuple[list[bool], str]:
    """Which presets share the alpha (Holm) and how the leaderboard states it."""
    if config.primary_preset and config.primary_preset in names:
        return ([n == config.primary_preset for n in names],
                f"primary preset '{config.primary_preset}' tested at alpha {config.alpha}; the others are "
                f"secondary (Holm among themselves)")
    return [True] * len(names), f"Holm over {len(names)} presets at family-wise alpha {config.alpha}"


def decide(rows: list[dict], config: VerdictConfig) -> str:
    """Write ``equivalence`` (verdict) and ``preference_verdict`` into each row that has an ``abx_reviewer`` /
    ``preference_reviewer`` block; returns the error-control statement."""
    names = [str(r["preset"]) for r in rows]
    primary, statement = _family(names, config)
    for group in (True, False):
        idx = [i for i, p in enumerate(primary) if p == group]
        if not idx:
            continue
        abx = [rows[i]["abx_reviewer"] for i in idx]
        p_dist = sq.holm(np.array([b["p_above_chance"] for b in abx]))
        p_eq = sq.holm(np.array([b["p_below_margin"] for b in abx]))
        p_pref = sq.holm(np.array([rows[i]["preference_reviewer"]["p_value"] for i in idx]))
        for j, i in enumerate(idx):
            rows[i]["equivalence"] = _verdict(rows[i], float(p_dist[j]), float(p_eq[j]), config,
                                              "primary" if group and config.primary_preset else
                                              "secondary" if not group else "family")
            pref = rows[i]["preference_reviewer"]
            pref["p_holm"] = float(p_pref[j])
            pref["verdict"] = (f"prefers {pref['direction']}" if p_pref[j] < config.alpha
                               else "no preference shown")
    return statement


def _verdict(row: dict, p_dist: float, p_eq: float, config: VerdictConfig, role: str) -> dict[str, object]:
    abx = row["abx_reviewer"]
    vote_p = row.get("abx_p_greater")
    above_chance_votes = vote_p is not None and vote_p == vote_p and vote_p < config.alpha
    if p_dist < config.alpha:
        verdict = DISTINGUISHABLE
    elif p_eq < config.alpha and abx["p_above_chance"] >= config.alpha and not above_chance_votes:
        verdict = INDISTINGUISHABLE  # never while a test against chance (reviewer- or vote-level) rejects
    else:
        verdict = UNDECIDED
    plan = planned_votes(config.margin, config.alpha, config.power, config.design_votes)
    n = int(row.get("n_abx") or 0)
    note = ""
    if verdict == UNDECIDED and above_chance_votes:
        note = "votes pooled are above chance, reviewers are not yet: more reviewers needed"
    elif verdict == UNDECIDED and n >= plan:
        note = "past the planned votes: more votes keep the verdict valid (anytime), or stop here undecided"
    elif verdict == DISTINGUISHABLE and abx["upper_bound"] < config.margin:
        note = f"above chance but below the margin {config.margin}: a small, detectable difference"
    return {"verdict": verdict, "margin": config.margin, "identification_margin": config.identification_margin,
            "upper_bound": abx["upper_bound"], "lower_bound": abx["ci"][0],
            "bound_method": f"anytime-valid one-sided {1 - config.alpha:.0%}, reviewer-level",
            "p_above_chance": p_dist, "p_below_margin": p_eq, "p_greater": vote_p, "role": role,
            "planned_votes": plan, "votes_needed": 0 if verdict != UNDECIDED else (plan - n if plan > n else None),
            "note": note}


@functools.lru_cache(maxsize=64)
def planned_votes(margin: float, alpha: float = 0.05, power: float = 0.8, design_votes: int = 800) -> int:
    """Prospective plan: ABX votes per preset for which, at true accuracy 0.5 and independent votes, the anytime
    upper bound falls below ``margin`` with probability ``power`` (the design's declared alternative). Reviewer
    heterogeneity needs more (docs/statistics.md has the simulated figures)."""
    rho2 = sq.mixture_scale(design_votes)
    z_power = float(sps.norm.ppf(power))

    def first(ns: np.ndarray) -> int | None:
        ok = np.flatnonzero((sq.threshold(ns, alpha, rho2) + z_power) * 0.5 / np.sqrt(ns) <= margin - 0.5)
        return int(ok[0]) if ok.size else None

    coarse = np.unique(np.geomspace(2, 1e6, 400).astype(int)).astype(float)  # then every n in the last step
    i = first(coarse)
    if i is None:
        return 1_000_000
    lo = int(coarse[i - 1]) + 1 if i else 1
    fine = np.arange(lo, int(coarse[i]) + 1, dtype=float)
    return int(fine[first(fine)])


def identify_target(row: dict, config: VerdictConfig, target: float) -> str:
    """'identified < target': met when the images are called indistinguishable at a margin of at most ``target``
    identification; not met when the reviewer-level lower bound already shows ``target`` or more."""
    eq, lo = row.get("equivalence") or {}, (row.get("identification_ci") or (None, None))[0]
    if eq.get("verdict") == INDISTINGUISHABLE and config.identification_margin <= target + 1e-12:
        return "met"
    if lo is not None and not math.isnan(lo) and lo >= target:
        return "not met"
    return "not enough data"

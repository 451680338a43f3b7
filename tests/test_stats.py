"""review.stats.basics and review.stats.bradley_terry against scipy and hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from review.stats import basics as st
from review.stats.bradley_terry import ELO_BASE, ELO_SCALE, bradley_terry, fit_bradley_terry

GRID = [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (7, 23), (50, 100), (61, 100), (140, 300), (999, 1000)]


@pytest.mark.parametrize("level", [0.95, 0.90])
@pytest.mark.parametrize(("k", "n"), GRID)
def test_wilson_matches_scipy(k: int, n: int, level: float) -> None:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert st.wilson_ci(k, n, level) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_and_tests_are_nan_without_trials() -> None:
    assert all(math.isnan(x) for x in st.wilson_ci(0, 0))
    assert math.isnan(st.binom_p_two_sided(0, 0)) and math.isnan(st.binom_p_greater(0, 0))
    assert math.isnan(st.clopper_pearson_upper(0, 0))


@pytest.mark.parametrize(("k", "n"), GRID)
def test_clopper_pearson_upper_is_scipy_one_sided_exact_bound(k: int, n: int) -> None:
    one_sided = sps.binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
    two_sided_90 = sps.binomtest(k, n).proportion_ci(0.90, method="exact").high
    assert st.clopper_pearson_upper(k, n) == pytest.approx(one_sided, abs=1e-9)
    assert st.clopper_pearson_upper(k, n) == pytest.approx(two_sided_90, abs=1e-9)


@pytest.mark.parametrize(("k", "n"), GRID)
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_binomial_p_values_match_scipy(k: int, n: int, p: float) -> None:
    assert st.binom_p_two_sided(k, n, p) == pytest.approx(sps.binomtest(k, n, p).pvalue, rel=1e-9)
    assert st.binom_p_greater(k, n, p) == pytest.approx(
        sps.binomtest(k, n, p, alternative="greater").pvalue, rel=1e-9)


def test_vectorized_two_sided_p_matches_scipy_everywhere_small() -> None:
    ks, ns = zip(*[(k, n) for n in range(1, 41) for k in range(n + 1)], strict=True)
    expected = [sps.binomtest(k, n).pvalue for k, n in zip(ks, ns, strict=True)]
    assert st.binom_p_two_sided_half(np.array(ks), np.array(ns)) == pytest.approx(expected, rel=1e-9)


def test_identification_rate_is_twice_accuracy_minus_one_clipped() -> None:
    lo, hi = st.wilson_ci(60, 100)
    assert st.identification_rate(60, 100) == pytest.approx((0.2, 2 * lo - 1, 2 * hi - 1))
    rate, lo2, hi2 = st.identification_rate(45, 100)
    assert rate == 0.0 and lo2 == 0.0 and hi2 == pytest.approx(2 * st.wilson_ci(45, 100)[1] - 1)


@pytest.mark.parametrize(("p1", "published"), [(0.60, 158), (0.65, 69), (0.70, 37), (0.75, 23)])
def test_binomial_power_n_reproduces_published_figures(p1: float, published: int) -> None:
    n = st.binomial_power_n(p1)
    assert n is not None and abs(n - published) <= 2
    assert st.binomial_power(n, p1) >= 0.8 > st.binomial_power(n - 1, p1)


def test_binomial_power_matches_brute_force() -> None:
    n, p1 = 37, 0.7
    k_crit = next(k for k in range(n + 2) if sps.binom.sf(k - 1, n, 0.5) <= 0.05)
    assert st.binomial_power(n, p1) == pytest.approx(sps.binom.sf(k_crit - 1, n, p1))
    assert st.binomial_power_n(0.5) is None


@pytest.mark.parametrize("margin", [0.60, 0.65])
def test_equivalence_n_is_smallest_n_with_enough_power(margin: float) -> None:
    def power(n: int) -> float:  # brute force over k with the Clopper-Pearson bound itself
        return sum(sps.binom.pmf(k, n, 0.5) for k in range(n + 1) if st.clopper_pearson_upper(k, n) < margin)

    n = st.equivalence_n(0.5, margin)
    assert n is not None and power(n) >= 0.8 > power(n - 1)
    assert st.equivalence_n(0.5, 0.60) == 158
    assert st.equivalence_n(0.6, 0.60) is None


def test_bootstrap_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    x = np.random.default_rng(3).normal(size=200)
    a, b = st.bootstrap_ci(x, seed=1), st.bootstrap_ci(x, seed=1)
    assert a == b and a != st.bootstrap_ci(x, seed=2)
    assert a[0] < x.mean() < a[1]
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert st.bootstrap_ci(x, n_boot=4000) == pytest.approx((ref.low, ref.high), abs=0.02)
    ratios = np.array([0.5, 0.8, 2.0])
    lo, hi = st.bootstrap_ci(ratios, "geomean", n_boot=500)
    assert 0.5 <= lo <= hi <= 2.0
    assert all(math.isnan(v) for v in st.bootstrap_ci(np.array([])))


def test_cluster_bootstrap_matches_explicit_resampling() -> None:
    rng = np.random.default_rng(0)
    reviewers = rng.choice(["r1", "r2", "r3", "r4"], size=60)
    conditions = rng.choice(["c1", "c2", "c3", "c4", "c5"], size=60)
    y = rng.random(60) < 0.6
    reps = st.cluster_bootstrap_means(y, reviewers, conditions, n_boot=25, seed=11)
    r_ids, c_ids = np.unique(reviewers), np.unique(conditions)
    draw = np.random.default_rng(11)
    r_draw = draw.integers(0, r_ids.size, size=(25, r_ids.size))
    c_draw = draw.integers(0, c_ids.size, size=(25, c_ids.size))
    for b in range(25):
        picked = [y[(reviewers == r_ids[i]) & (conditions == c_ids[j])] for i in r_draw[b] for j in c_draw[b]]
        votes = np.concatenate(picked)
        expected = votes.mean() if votes.size else np.nan
        assert reps[b] == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_cluster_bootstrap_widens_interval_when_reviewers_disagree() -> None:
    rng = np.random.default_rng(1)
    reviewers = np.repeat(np.arange(10), 200)
    conditions = np.tile(np.arange(50), 40)
    y = rng.random(2000) < np.where(reviewers < 5, 0.3, 0.8)  # strong reviewer effect
    lo, hi = st.cluster_bootstrap_ci(y, reviewers, conditions, n_boot=300, seed=0)
    w_lo, w_hi = st.wilson_ci(int(y.sum()), y.size)
    assert lo <= y.mean() <= hi and (hi - lo) > 2 * (w_hi - w_lo)
    assert st.cluster_bootstrap_ci(y, reviewers, conditions, seed=0) == st.cluster_bootstrap_ci(
        y, reviewers, conditions, seed=0)


def test_side_bias() -> None:
    left = np.array([True] * 30 + [True, False] * 10)
    who = np.array(["biased"] * 30 + ["fair"] * 20)
    out = st.side_bias(left, who)
    assert out["left"] == 40 and out["n"] == 50
    assert out["p_value"] == pytest.approx(sps.binomtest(40, 50).pvalue)
    assert out["per_reviewer"]["biased"]["p_value"] < 1e-6 and out["per_reviewer"]["fair"]["p_value"] == 1.0


def _simulate_bt(strengths: dict[str, float], n: int, seed: int) -> tuple[list[str], list[str], list[float]]:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    a, b, s = [], [], []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        p = 1 / (1 + math.exp(-(strengths[names[i]] - strengths[names[j]])))
        a.append(names[i])
        b.append(names[j])
        s.append(1.0 if rng.random() < p else 0.0)
    return a, b, s


def test_bradley_terry_recovers_known_strengths() -> None:
    true = {"full": 0.0, "balanced": 0.4, "fast": -0.5, "output_only": 1.0, "none": -1.2}
    a, b, s = _simulate_bt(true, 20_000, seed=5)
    fit = fit_bradley_terry(a, b, s, anchor="full")
    for name, value in true.items():
        assert fit[name] == pytest.approx(value, abs=0.1)
    out = bradley_terry(a, b, s, n_boot=100, seed=0)
    rows = {r["item"]: r for r in out["items"]}
    assert rows["full"]["strength"] == 0.0 and rows["full"]["elo"] == ELO_BASE
    for name, value in true.items():
        lo, hi = rows[name]["ci"]
        assert lo - 0.05 <= value <= hi + 0.05
        assert rows[name]["elo"] == pytest.approx(ELO_BASE + ELO_SCALE * rows[name]["strength"])
    assert [r["item"] for r in out["items"]][0] == "output_only"
    assert bradley_terry(a, b, s, n_boot=20, seed=3) == bradley_terry(a, b, s, n_boot=20, seed=3)


def test_bradley_terry_star_design_is_logit_of_win_share_with_ties_as_half() -> None:
    # 'full' vs 'fast': fast wins 30, full wins 10, 20 ties -> fast share (30 + 10) / 60
    a = ["full"] * 60
    b = ["fast"] * 60
    s = [0.0] * 30 + [1.0] * 10 + [0.5] * 20
    fit = fit_bradley_terry(a, b, s)
    assert fit["fast"] == pytest.approx(math.log((40 / 60) / (20 / 60)), abs=1e-5)
    assert fit_bradley_terry(["full"], ["x"], [1.0])["x"] < -5  # never won: finite, strongly negative
    unseen = bradley_terry(a, b, s, items=["full", "fast", "idle"], n_boot=10)["items"]
    assert unseen[-1]["item"] == "idle" and math.isnan(unseen[-1]["strength"])
    assert math.isnan(fit_bradley_terry(a, b, s, items=["full", "fast", "idle"])["idle"])

"""review.stats.sequential, review.stats.screening, review.stats.allocation and the simulator's bookkeeping: unit checks and one
small simulation through the real ReviewDesk + Store."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from review.cli.simulate import main_simulate
from review.stats import sequential as sq
from review.stats.allocation import allocation_from_board, preset_weights
from review.stats.screening import min_correct, passes, screen
from review.stats.simulate import Design, running_sums, schedule, simulate_design
from review.stats.verdict_config import VerdictConfig, from_env
from review.stats.verdicts import planned_votes
from review.study.trials import pick_pair

PAIRS = [{"pair_id": p * 10 + c, "preset": name, "condition_id": c}
         for p, name in enumerate(("a", "b", "c")) for c in range(10)]


def test_cluster_variance_counts_reviewers_not_votes():
    """Five reviewers, each always right or always wrong: the vote-level variance would be 0.25 / n; the
    reviewer-level one sees five units."""
    reviewers = np.repeat(np.arange(5), 40)
    y = np.repeat([1.0, 1.0, 1.0, 0.0, 0.0], 40)
    m, v, df = sq.share_and_variance(sq.cluster_sums(y, reviewers, np.tile(np.arange(40), 5)))
    assert m == pytest.approx(0.6) and df == 4
    assert v == pytest.approx(5 / 4 * (3 * 0.4**2 + 2 * 0.6**2) * 40**2 / 200**2)
    assert v > 10 * 0.24 / 200


def test_anytime_p_is_conservative_and_holm_matches_definition():
    assert sq.anytime_p(np.array(0.5), np.array(0.001), np.array(30.0), 0.5, greater=True, rho2=0.01) == 1.0
    p_fixed = sps.norm.sf(3.0)
    p_any = float(sq.anytime_p(np.array(0.53), np.array(1e-4), np.array(1e6), 0.5, greater=True, rho2=0.01))
    assert p_fixed < p_any < 1
    assert sq.holm(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.06, 0.06])
    lo, hi = sq.confidence_bounds(np.array(0.53), np.array(1e-4), np.array(1e6), level=p_any, rho2=0.01)
    assert float(lo) == pytest.approx(0.5, abs=1e-6) and float(hi) > 0.53


def test_abx_dprime_inverts_the_differencing_model():
    d = np.array([0.0, 0.5, 1.0, 2.0])
    assert sq.abx_dprime(sq.abx_accuracy(d)) == pytest.approx(d, abs=1e-3)
    assert sq.abx_dprime(np.array(0.4)) == 0.0


def test_gold_rule_table_and_units():
    assert [min_correct(n) for n in range(1, 7)] == [None, 2, 3, 3, 4, 4]
    assert passes(0, 0) and not passes(2, 4) and passes(3, 4)
    table, failing = screen(np.array(["x|s1"] * 4 + ["x|s2"] * 4), np.array([1, 1, 1, 0, 1, 0, 0, 0]))
    assert failing == ["x|s2"] and table["x|s1"]["p_chance"] == pytest.approx(5 / 16)


def test_prospective_plan_ignores_the_observed_accuracy():
    assert planned_votes(0.55) == 1323 and planned_votes(0.60) == 335
    assert planned_votes(0.55, power=0.9) > planned_votes(0.55)


def test_config_from_environment_and_bad_values():
    config = from_env({"REVIEW_MARGIN": "0.6", "REVIEW_PRIMARY_PRESET": "fast", "REVIEW_DESIGN_VOTES": "500"})
    assert (config.margin, config.primary_preset, config.design_votes) == (0.6, "fast", 500)
    assert VerdictConfig().identification_margin == pytest.approx(0.10)
    with pytest.raises(ValueError, match="REVIEW_ALPHA"):
        from_env({"REVIEW_ALPHA": "often"})
    with pytest.raises(ValueError, match="margin"):
        from_env({"REVIEW_MARGIN": "0.4"})


def test_pick_pair_weights_and_per_reviewer_cap():
    rng = random.Random(0)
    for _ in range(20):
        assert pick_pair(PAIRS, {}, {}, {}, {}, rng, preset_weights={"a": 0.0, "b": 0.0})["preset"] == "c"
    seen = {20: 1, 21: 1}  # two of preset c seen
    assert pick_pair(PAIRS, seen, {}, {}, {}, rng, preset_weights={"a": 0, "b": 0}, max_per_preset=2) is None
    picks = []
    seen = {}
    while (pair := pick_pair(PAIRS, seen, {}, {}, {}, rng)) is not None:  # one reviewer: spread over presets
        seen[pair["pair_id"]] = 1
        picks.append(pair["preset"])
    assert sorted(picks[:3]) == ["a", "b", "c"] and len(picks) == 10


def test_preset_weights_from_a_result():
    result = {"rows": [{"preset": "a", "equivalence": {"verdict": "distinguishable"}},
                       {"preset": "b", "equivalence": {"verdict": "not enough votes"}}]}
    assert preset_weights(result, "abx") == {"a": 0.0, "b": 1.0}
    assert preset_weights({"rows": result["rows"][:1]}, "abx") == {"a": 1.0}  # all decided: serve evenly
    calls = []

    def board(include_failing: bool) -> SimpleNamespace:
        calls.append(include_failing)
        return SimpleNamespace(result=result)

    clock = iter([0.0, 1.0, 100.0]).__next__
    alloc = allocation_from_board(board, refresh_s=30, clock=clock)
    assert alloc("abx") == {"a": 0.0, "b": 1.0} and alloc("preference") == {"a": 1.0, "b": 1.0}
    alloc("abx")
    assert calls == [False, False]  # re-read once after refresh_s, never with failing reviewers


def test_running_sums_equal_the_leaderboards_sums():
    rev, pre, con = schedule(Design(reviewers=6, truths=(0.6, 0.5), conditions=12, session=12), random.Random(1))
    assert np.bincount(rev).tolist() == [12] * 6 and np.bincount(pre).tolist() == [36, 36]
    idx = np.flatnonzero(pre == 1)
    y = (np.random.default_rng(0).random((2, idx.size)) < 0.6).astype(float)
    sums = running_sums(y, rev[idx], con[idx])
    for t in (0, 9, idx.size - 1):
        direct = sq.cluster_sums(y[1, : t + 1], rev[idx[: t + 1]], con[idx[: t + 1]])
        for name in direct.__dataclass_fields__:
            assert float(np.asarray(getattr(sums, name))[1, t]) == pytest.approx(float(getattr(direct, name)))


def test_small_simulation_reports_rates_with_mc_error(capsys):
    out = simulate_design(Design(reviewers=8, truths=(0.5, 0.5), peek_every=5), VerdictConfig(), 40, schedules=4)
    assert out["false_distinguishable"]["rate"] <= 0.1 and out["coverage_all_looks"]["rate"] >= 0.9
    assert out["false_indistinguishable"] is None and out["mean_votes"] == 8 * 40
    assert main_simulate(["--reviewers", "5", "--truth", "0.6", "--studies", "20", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["studies"] == 20 and "mc_se" in printed["false_indistinguishable"]

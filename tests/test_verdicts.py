"""Verdict error rates through the public ``review.stats.leaderboard.leaderboard`` (small Monte Carlo, seeded), the gold
rule's monotonicity and the default exclusion of failing reviewers. These hold on the reviewer-level, anytime-valid
verdicts; the vote-level verdicts they replace failed each of them (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit

from review.stats.leaderboard import leaderboard
from review.stats.leaderboard_view import table

FAST = {"n_boot": 10, "n_boot_cluster": 10, "n_boot_bt": 10}
N_COND = 40


def _abx_votes(rng: np.random.Generator, reviewers: int, n_votes: int, truth_logit: float, reviewer_sd: float,
               preset: str = "balanced", start: int = 0) -> list[dict]:
    """ABX votes in serving order: reviewers interleaved, one condition each at most once per reviewer."""
    skill = rng.normal(0, reviewer_sd, reviewers)
    order = rng.permutation(np.repeat(np.arange(reviewers), -(-n_votes // reviewers)))[:n_votes]
    seen: dict[int, int] = {}
    votes = []
    for i, r in enumerate(order):
        cond = seen.get(r, int(rng.integers(N_COND)))
        seen[r] = (cond + 1) % N_COND
        right = rng.random() < expit(truth_logit + skill[r])
        left_arm = "full" if rng.random() < 0.5 else "selective"
        votes.append({"trial_id": f"t{start + i}", "pair_id": f"{preset}-{cond}", "preset": preset,
                      "condition_id": f"c{cond}", "reviewer_id": f"r{r}", "session": f"s{r}", "mode": "abx",
                      "is_gold": False, "left_arm": left_arm, "x_arm": "full",
                      "choice": "a" if (left_arm == "full") == right else "b",
                      "outcome": "correct" if right else "wrong", "correct": int(right)})
    return votes


def _verdict(votes: list[dict], margin: float) -> str:
    return leaderboard([], votes, margin=margin, **FAST)["rows"][0]["equivalence"]["verdict"]


def test_peeking_after_every_20_votes_does_not_inflate_false_distinguishable():
    """True accuracy 0.5, independent reviewers, 200 votes watched every 20: a watcher acting on the first
    'distinguishable' is wrong in at most alpha of the studies (the fixed-n binomial test: ~0.15)."""
    rng = np.random.default_rng(11)
    studies, false_calls = 40, 0
    for _ in range(studies):
        votes = _abx_votes(rng, 20, 200, 0.0, 0.0)
        false_calls += any(_verdict(votes[:n], 0.6) == "distinguishable" for n in range(20, 201, 20))
    assert false_calls <= 2, f"{false_calls} of {studies} studies called 'distinguishable' at true accuracy 0.5"


def test_five_heterogeneous_reviewers_at_the_margin_are_not_called_indistinguishable():
    """True accuracy at the margin 0.60 (population mean), 5 reviewers with logit SD 0.8, 160 votes: the verdict
    must count reviewers, not votes (the vote-level bound calls 'indistinguishable' in ~20 % of such studies)."""
    rng = np.random.default_rng(5)
    x, w = np.polynomial.hermite_e.hermegauss(60)  # logit intercept whose population mean accuracy is 0.60
    beta0 = brentq(lambda b: float(w @ expit(b + 0.8 * x)) / w.sum() - 0.60, -5, 5)
    studies = 40
    calls = sum(_verdict(_abx_votes(rng, 5, 160, beta0, 0.8), 0.6) == "indistinguishable" for _ in range(studies))
    assert calls <= 2, f"{calls} of {studies} studies at the margin called 'indistinguishable'"


def _gold_study(k: int, n: int) -> dict:
    """One reviewer with ``k`` of ``n`` gold trials right (preference gold: 'same' is right) and a few votes."""
    votes = []
    for i in range(n):
        right = i < k
        votes.append({"trial_id": f"g{i}", "pair_id": "balanced-0", "preset": "balanced", "condition_id": "c0",
                      "reviewer_id": "rev", "session": "s1", "mode": "preference", "is_gold": True,
                      "left_arm": "full", "x_arm": None, "choice": "same" if right else "left",
                      "outcome": "same" if right else "full", "correct": int(right)})
    votes += _abx_votes(np.random.default_rng(0), 1, 5, 0.0, 0.0)
    for v in votes[n:]:
        v.update(reviewer_id="rev", session="s1")
    return leaderboard([], votes, **FAST)


@pytest.mark.parametrize("n", range(1, 7))
def test_gold_rule_is_monotone_in_the_count(n: int):
    """One more right answer never turns a pass into a fail; one more wrong answer never turns a fail into a
    pass (the accuracy-threshold rule passed 0 of 2 and failed 1 of 3)."""
    fails = {(k, m): bool(_gold_study(k, m)["failing_reviewers"]) for m in (n, n + 1) for k in range(m + 1)}
    for k in range(n + 1):
        if not fails[k, n]:
            assert not fails[k + 1, n + 1], f"{k}/{n} passes but {k + 1}/{n + 1} fails"
        if fails[k, n]:
            assert fails[k, n + 1], f"{k}/{n} fails but {k}/{n + 1} passes"


def test_failing_reviewers_are_left_out_by_default():
    """A reviewer who fails the gold screening does not enter the default rows, table or side bias."""
    rng = np.random.default_rng(3)
    votes = _abx_votes(rng, 10, 200, 0.0, 0.0)
    for i in range(5):  # r0 answers every gold trial wrong
        votes.append({"trial_id": f"g{i}", "pair_id": "balanced-0", "preset": "balanced", "condition_id": "c0",
                      "reviewer_id": "r0", "session": "s0", "mode": "preference", "is_gold": True,
                      "left_arm": "full", "x_arm": None, "choice": "left", "outcome": "full", "correct": 0})
    out = leaderboard([], votes, **FAST)
    assert out["failing_reviewers"] == ["r0"]
    r0 = sum(v["reviewer_id"] == "r0" and not v["is_gold"] for v in votes)
    assert out["rows"][0]["n_abx"] == 200 - r0 and out["rows"][0]["n_reviewers"] == 9
    headers, rows = table(out)
    assert rows[0][headers.index("Reviewers")] == 9
    unscreened = leaderboard([], votes, **FAST)["rows_including_failing"][0]
    assert unscreened["n_abx"] == 200 and unscreened["n_reviewers"] == 10


def test_indistinguishable_is_never_printed_while_the_test_against_chance_rejects():
    """600 of 1100 right (p = 0.0014 against chance) with the upper bound below a 0.60 margin: not
    'indistinguishable' (the vote-level verdict printed it)."""
    votes = []
    for i in range(1100):
        right = (i * 600) % 1100 < 600  # 600 right, spread evenly over 110 reviewers and 40 conditions
        votes.append({"trial_id": f"t{i}", "pair_id": f"p{i % N_COND}", "preset": "balanced",
                      "condition_id": f"c{i % N_COND}", "reviewer_id": f"r{i % 110}", "session": f"s{i % 110}",
                      "mode": "abx", "is_gold": False, "left_arm": "full", "x_arm": "full",
                      "choice": "a" if right else "b", "outcome": "correct" if right else "wrong",
                      "correct": int(right)})
    row = leaderboard([], votes, margin=0.6, **FAST)["rows"][0]
    assert row["abx_correct"] == 600 and row["abx_p_greater"] < 0.002
    assert row["equivalence"]["verdict"] != "indistinguishable"

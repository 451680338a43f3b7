"""review.stats.leaderboard on simulated studies with known preference / discrimination rates and known reviewers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from review.stats import basics as st
from review.stats.leaderboard import TIE_RULE, leaderboard
from review.stats.pair_targets import MIN_PAIRS

HONEST = [f"h{i}" for i in range(40)]
N_COND = 40


def _pairs(preset: str, layers: int, *, ssim: float, ratio: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    for c in range(N_COND):
        full_t = float(rng.uniform(0.20, 0.30))
        rows.append({
            "pair_id": f"{preset}-{c}", "preset": preset, "layer_count": layers, "condition_id": f"c{c}",
            "ssim": float(np.clip(rng.normal(ssim, 0.005), 0, 1)),
            "id_cos_sel_full": float(rng.uniform(0.985, 0.995)), "id_cos_sel_ref": 0.7, "id_cos_full_ref": 0.71,
            "identity_failure": None, "full_step_median_s": full_t,
            "sel_step_median_s": full_t * ratio * float(rng.normal(1, 0.01)),
            "full_run_id": "run1", "sel_run_id": "run1", "full_device": "cuda:0", "sel_device": "cuda:0"})
    rows[0].update(identity_failure="no face in selective image", id_cos_sel_full=0.1)  # never used
    rows[1].update(sel_run_id="run2")  # timing from another run: excluded
    rows[2].update(sel_device="cuda:1")  # timing from another device: excluded
    return rows


def _vote(rng: np.random.Generator, i: int, preset: str, reviewer: str, mode: str, *, p_sel: float = 0.4,
          p_tie: float = 0.2, acc: float = 0.5, gold: bool = False) -> dict:
    left_arm = "full" if rng.random() < 0.5 else "selective"
    u = rng.random()
    if mode == "abx":
        correct = (left_arm == "full") if reviewer == "biased" else u < acc  # biased: always 'a' (left)
        choice = "a" if (left_arm == "full") == correct else "b"
        outcome = "correct" if correct else "wrong"
    elif reviewer in ("biased", "goldfail") and (gold or reviewer == "biased"):
        choice, outcome = "left", "full" if gold else left_arm
    elif gold:
        choice, outcome = "same", "same"
    else:
        outcome = "selective" if u < p_sel else "same" if u < p_sel + p_tie else "full"
        choice = "same" if outcome == "same" else "left" if outcome == left_arm else "right"
    return {"trial_id": f"t{i}", "pair_id": f"{preset}-{i % N_COND}", "preset": preset,
            "condition_id": f"c{int(rng.integers(N_COND))}", "reviewer_id": reviewer, "mode": mode,
            "is_gold": gold, "left_arm": "full" if gold else left_arm, "choice": choice, "outcome": outcome}


def _study(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """balanced: ABX accuracy 0.5, 4000 votes; fast: accuracy 0.8; few: 10 ABX votes. Reviewers: 40 honest,
    'biased' (always the left image, 2 gold trials answered wrong) and 'goldfail' (answers gold trials wrong)."""
    rng = np.random.default_rng(seed)
    pairs = (_pairs("balanced", 35, ssim=0.97, ratio=0.8, rng=rng) + _pairs("fast", 20, ssim=0.90, ratio=1.1, rng=rng)
             + _pairs("few", 10, ssim=0.97, ratio=0.8, rng=rng)[:3])
    votes: list[dict] = []
    everyone = [*HONEST, "biased", "goldfail"]
    plan = [("balanced", "abx", 4000, {"acc": 0.5}), ("balanced", "preference", 600, {"p_sel": 0.4}),
            ("fast", "abx", 400, {"acc": 0.8}), ("fast", "preference", 300, {"p_sel": 0.15}),
            ("few", "abx", 10, {"acc": 0.5})]
    for preset, mode, n, kw in plan:
        for _ in range(n):
            votes.append(_vote(rng, len(votes), preset, everyone[int(rng.integers(len(everyone)))], mode, **kw))
    for reviewer in everyone:
        for _ in range(2 if reviewer == "biased" else 5):
            votes.append(_vote(rng, len(votes), "balanced", reviewer, "preference", gold=True))
    return pairs, votes


@pytest.fixture(scope="module")
def study() -> tuple[list[dict], list[dict], dict]:
    pairs, votes = _study()
    return pairs, votes, leaderboard(pairs, votes)


def test_rows_carry_expected_equivalence_verdicts(study) -> None:
    _, _, out = study
    rows = {r["preset"]: r for r in out["rows"]}
    assert [r["preset"] for r in out["rows"]] == ["balanced", "fast", "few"]  # by layer count, descending
    assert rows["balanced"]["equivalence"]["verdict"] == "indistinguishable"
    assert rows["balanced"]["targets"]["identify_under_10pct"] == "met"
    assert rows["fast"]["equivalence"]["verdict"] == "distinguishable"
    assert rows["fast"]["targets"]["identify_under_10pct"] == "not met"
    few = rows["few"]["equivalence"]
    planned = out["settings"]["planned_votes"]
    assert few["verdict"] == "not enough votes" and few["votes_needed"] == planned - rows["few"]["n_abx"] > 0
    assert rows["balanced"]["equivalence"]["margin"] == 0.55 and "Holm over 3" in out["settings"]["error_control"]
    assert rows["few"]["targets"]["identify_under_10pct"] == "not enough data"


def test_vote_statistics_match_scipy_and_exclude_gold(study) -> None:
    _, votes, out = study
    row = next(r for r in out["rows"] if r["preset"] == "balanced")
    live = [v for v in votes if v["preset"] == "balanced" and not v["is_gold"]
            and v["reviewer_id"] not in out["failing_reviewers"]]
    pref = [v["outcome"] for v in live if v["mode"] == "preference"]
    sel, tie, full = pref.count("selective"), pref.count("same"), pref.count("full")
    assert (row["pref_selective"], row["pref_same"], row["pref_full"]) == (sel, tie, full)
    assert row["n_preference"] == len(pref) and row["n_votes"] == len(live)
    assert row["pref_p_value"] == pytest.approx(sps.binomtest(sel, sel + full).pvalue)
    assert row["pref_same_ci"] == pytest.approx(list(st.wilson_ci(tie, len(pref))))
    assert row["tie_rule"] == TIE_RULE
    k = sum(v["outcome"] == "correct" for v in live if v["mode"] == "abx")
    n = sum(v["mode"] == "abx" for v in live)
    assert row["abx_p_greater"] == pytest.approx(sps.binomtest(k, n, alternative="greater").pvalue)
    assert row["abx_ci"] == pytest.approx(list(st.wilson_ci(k, n)))  # descriptive, vote-level
    lo, hi = row["abx_reviewer"]["ci"]  # the verdict's reviewer-level anytime interval is wider
    assert row["identification_ci"] == pytest.approx([max(0, 2 * lo - 1), 2 * hi - 1])
    assert lo < row["abx_ci"][0] and hi > row["abx_ci"][1]
    assert row["n_reviewers"] == 40 and row["n_conditions"] == N_COND  # screened: biased and goldfail left out
    lo, hi = row["abx_cluster_ci"]
    assert lo < row["abx_accuracy"] < hi


def test_pair_statistics_exclude_mismatched_timings_and_count_identity_failures(study) -> None:
    pairs, _, out = study
    rows = {r["preset"]: r for r in out["rows"]}
    bal, fast = rows["balanced"], rows["fast"]
    assert bal["n_pairs"] == N_COND and bal["n_timing_excluded"] == 2 and bal["n_timing_pairs"] == N_COND - 2
    assert bal["step_ratio"] == pytest.approx(0.8, abs=0.01) and bal["step_ratio_ci"][1] < 1
    assert bal["targets"]["faster_than_full"] == "met" and fast["targets"]["faster_than_full"] == "not met"
    assert bal["targets"]["ssim_above_0.95"] == "met" and fast["targets"]["ssim_above_0.95"] == "not met"
    assert bal["identity_failures"] == 1 and bal["n_id_cos_sel_full"] == N_COND - 1
    measured = [p["id_cos_sel_full"] for p in pairs if p["preset"] == "balanced" and not p["identity_failure"]]
    assert bal["id_cos_sel_full_mean"] == pytest.approx(np.mean(measured))
    assert bal["id_cos_sel_full_share_above"] == pytest.approx(sum(c > 0.98 for c in measured) / N_COND)
    assert bal["targets"]["identity_above_0.98"] == "not met"  # a lost face fails the identity target
    assert rows["few"]["n_pairs"] < MIN_PAIRS and rows["few"]["targets"]["ssim_above_0.95"] == "not enough data"


def test_gold_screening_lists_failing_reviewer_and_recomputes_rows(study) -> None:
    _, _, out = study
    assert out["failing_reviewers"] == ["biased", "goldfail"]
    assert out["gold"]["goldfail"]["accuracy"] == 0.0 and out["gold"]["h0"]["accuracy"] == 1.0
    assert out["gold"]["biased"]["n_gold"] == 2 and out["gold"]["biased"]["failing"]  # 0 of 2: no better than chance
    with_all = {r["preset"]: r for r in out["rows_including_failing"]}
    without = {r["preset"]: r for r in out["rows"]}  # the default view leaves failing reviewers out
    assert out["rows_without_failing"] == out["rows"]
    assert without["balanced"]["n_reviewers"] == with_all["balanced"]["n_reviewers"] - 2
    assert without["balanced"]["n_votes"] < with_all["balanced"]["n_votes"]
    assert without["balanced"]["ssim_mean"] == with_all["balanced"]["ssim_mean"]


def test_side_bias_flags_the_always_left_reviewer(study) -> None:
    _, _, out = study
    everyone = out["side_bias_including_failing"]["per_reviewer"]
    assert everyone["biased"]["left_share"] == 1.0 and everyone["biased"]["p_value"] < 1e-5
    assert everyone["h0"]["p_value"] > 0.001
    assert "biased" not in out["side_bias"]["per_reviewer"]  # recomputed without the failing reviewers
    rng = np.random.default_rng(9)  # the biased reviewer casts most preference votes: overall bias shows
    pairs, _ = _study()
    votes = [_vote(rng, i, "balanced", "biased" if i % 4 else "h1", "preference") for i in range(400)]
    side = leaderboard(pairs, votes)["side_bias"]
    assert side["left_share"] > 0.7 and side["p_value"] < 1e-6 and side["ci"][0] > 0.5
    assert side["n"] == side["left"] + sum(v["choice"] == "right" for v in votes)


def test_bradley_terry_anchors_full_and_orders_presets(study) -> None:
    _, _, out = study
    items = {r["item"]: r for r in out["bradley_terry"]["items"]}
    assert items["full"]["strength"] == 0.0
    assert items["fast"]["strength"] < items["balanced"]["strength"]
    assert items["fast"]["ci"][1] < 0  # selective preferred 15 % vs full ~65 %: clearly weaker
    assert out["bradley_terry"]["n_comparisons"] < out["bradley_terry_including_failing"]["n_comparisons"]
    assert out["bradley_terry"]["all_against_anchor"]  # every comparison is full vs one preset: not extra evidence


def test_leaderboard_is_reproducible_json_and_respects_exclusions(study) -> None:
    pairs, votes, out = study
    assert leaderboard(pairs, votes) == out
    other = leaderboard(pairs, votes, seed=1)
    assert other["rows"][0]["abx_cluster_ci"] != out["rows"][0]["abx_cluster_ci"]
    json.dumps(out, allow_nan=False)
    excl = leaderboard(pairs, votes, exclude_reviewers={"h3"})
    assert "h3" not in excl["gold"] and "h3" not in excl["side_bias"]["per_reviewer"]
    assert excl["rows"][0]["n_reviewers"] == out["rows"][0]["n_reviewers"] - 1
    assert excl["excluded_reviewers"] == ["h3"]


def test_empty_and_vote_less_presets() -> None:
    empty = leaderboard([], [])
    assert empty["rows"] == [] and empty["failing_reviewers"] == [] and empty["bradley_terry"]["items"] == []
    pairs, _ = _study()
    out = leaderboard(pairs, [])
    row = out["rows"][0]
    assert row["n_abx"] == 0 and row["abx_accuracy"] is None
    eq = row["equivalence"]
    assert eq["verdict"] == "not enough votes" and eq["votes_needed"] == eq["planned_votes"] == 1323
    assert row["targets"]["identify_under_10pct"] == "not enough data"
    assert row["targets"]["ssim_above_0.95"] == "met"


def test_presets_ordered_by_layer_count_and_gold_only_presets_get_no_row() -> None:
    rng = np.random.default_rng(2)
    pairs = _pairs("none", 0, ssim=0.8, ratio=0.6, rng=rng) + _pairs("balanced", 35, ssim=0.97, ratio=0.8, rng=rng)
    votes = [_vote(rng, i, "none", "h1", "abx") for i in range(5)]
    gold = _vote(rng, 99, "balanced", "h2", "preference", gold=True)
    votes.append({**gold, "preset": None, "is_gold": 1})  # store rows: SQLite ints, gold pairs without a preset
    out = leaderboard(pairs, votes)
    assert [r["preset"] for r in out["rows"]] == ["balanced", "none"]
    assert out["gold"]["h2"]["correct"] == 1
    missing_key = [{k: val for k, val in v.items() if k != "is_gold" or val} for v in votes]  # absent = False
    assert leaderboard(pairs, missing_key)["rows"] == out["rows"]


def test_bench_script_runs_on_a_small_simulation(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_leaderboard.py"
    spec = importlib.util.spec_from_file_location("bench_leaderboard", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--votes", "3000", "--conditions", "20", "--reviewers", "12", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "3000 votes" in printed and "cpu_count=" in printed


def test_step_ratio_never_pools_devices() -> None:
    def pair(i: int, device: str, sel: float) -> dict:
        return dict(pair_id=i, preset="fast", layer_count=20, condition_id=i, ssim=0.99, id_cos_sel_full=0.99,
                    id_cos_sel_ref=0.5, id_cos_full_ref=0.5, identity_failure=None, full_step_median_s=1.0,
                    sel_step_median_s=sel, full_run_id=f"run-{device}", sel_run_id=f"run-{device}",
                    full_device=device, sel_device=device)

    pairs = [pair(i, "cuda (H100)", 0.9) for i in range(6)] + [pair(10 + i, "cpu", 0.5) for i in range(3)]
    row = leaderboard(pairs, [], n_boot=200)["rows"][0]
    assert row["timing_device"] == "cuda (H100)"
    assert (row["n_timing_pairs"], row["n_timing_excluded"]) == (6, 3)
    assert row["step_ratio"] == pytest.approx(0.9)

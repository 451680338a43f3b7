"""One small study through the real ReviewDesk + Store with known truth: the leaderboard from the database reaches
the same reviewer-level numbers as ``review.stats.sequential`` on the votes the simulation logged, and the allocation hook
keeps a decided preset off the desk."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from fixtures_review import make_services

from review.stats import sequential as sq
from review.stats.board import compute_leaderboard
from review.study.review_desk import ReviewDesk
from review.study.trials import StudyConfig

# no gold checks here: these tests compare the measured trials' statistics (gold is tested in test_trials.py)
STUDY = StudyConfig(vote_burst=1000, vote_per_s=1000.0, trial_burst=1000, trial_per_s=1000.0, modes=("abx",),
                    trials_per_session=8, gold_per_session=0)


def test_desk_study_matches_the_simulator_statistics(tmp_path: Path):
    services = make_services(tmp_path, seeds=tuple(range(8)), presets=("balanced", "fast"), study=STUDY,
                             shared_full=True)
    desk = ReviewDesk(services, rng=random.Random(0))
    rng = np.random.default_rng(1)
    truth = {"balanced": 0.55, "fast": 0.9}
    logged: dict[str, list[tuple[str, int, float]]] = {"balanced": [], "fast": []}
    for r in range(6):
        session = f"sess-{r}"
        view = desk.open(session, None, "abx", "10.0.0.1")
        while view.trial_id:
            trial = desk.store.get_trial(view.trial_id)
            pair = desk.store.get_pair(trial["pair_id"])
            right = bool(rng.random() < truth[pair["preset"]])
            x_is_a = trial["left_arm"] == trial["x_arm"]
            desk.vote(session, view.trial_id, "a" if x_is_a == right else "b", "10.0.0.1")
            logged[pair["preset"]].append((trial["reviewer_id"], pair["condition_id"], float(right)))
            view = desk.next(session, "abx", "10.0.0.1")
    result = compute_leaderboard(desk.store, n_boot=20, n_boot_cluster=10, n_boot_bt=10)
    rows = {r["preset"]: r for r in result["rows"]}
    for preset, votes in logged.items():
        reviewers = np.unique([v[0] for v in votes], return_inverse=True)[1]
        y = np.array([v[2] for v in votes])
        m, v, df = sq.share_and_variance(sq.cluster_sums(y, reviewers, np.array([v[1] for v in votes])))
        row = rows[preset]["abx_reviewer"]
        assert rows[preset]["n_abx"] == len(votes) and row["accuracy"] == pytest.approx(float(m))
        assert row["se"] == pytest.approx(float(np.sqrt(v))) and row["df"] == df
    assert len(logged["balanced"]) + len(logged["fast"]) == 6 * 8


def test_allocation_hook_serves_only_undecided_presets(tmp_path: Path):
    services = make_services(tmp_path, seeds=tuple(range(6)), presets=("balanced", "fast"), study=STUDY,
                             shared_full=True)
    asked: list[str] = []

    def allocation(mode: str) -> dict[str, float]:
        asked.append(mode)
        return {"balanced": 1.0, "fast": 0.0}  # fast has its verdict

    desk = ReviewDesk(services, rng=random.Random(2), allocation=allocation)
    served = []
    view = desk.open("s", None, "abx", "10.0.0.2")
    while view.trial_id:
        served.append(desk.store.get_pair(desk.store.get_trial(view.trial_id)["pair_id"])["preset"])
        desk.vote("s", view.trial_id, "a", "10.0.0.2")
        view = desk.next("s", "abx", "10.0.0.2")
    assert served and set(served) == {"balanced"} and set(asked) == {"abx"}
    assert len(served) <= 6  # at most one pair per condition, and only balanced is served

"""Leaderboard inputs from the store, the readable table/plot/verdict views and the leaderboard CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from review.images import write_image
from review.stats.board import (
    StudyDatabaseError,
    StudyInputError,
    compute_leaderboard,
    leaderboard_inputs,
    open_study,
)
from review.stats.leaderboard_view import (
    HEADERS,
    short_id,
    speed_quality_plot,
    table,
    text_table,
    verdicts_markdown,
)
from review.store import Store

REPO = Path(__file__).resolve().parents[1]
CLOCK = "2024-05-01T12:00:00.000+00:00"
R1, R2, R3 = "a1" * 16, "b2" * 16, "c3" * 16  # R3 fails the gold screening
FAST_BOOT = {"n_boot": 200, "n_boot_cluster": 50, "n_boot_bt": 20}
FULL_STEP, FULL_LAYERS = 0.2, 70
# (seed, preset, layer_count, selective step time, selective run, ssim, id_cos_sel_full, identity_failure)
PAIRS = (
    (0, "balanced", 20, 0.16, "r1", 0.96, 0.99, None),
    (0, "fast", 8, 0.10, "r1", 0.90, 0.95, None),
    (1, "balanced", 20, 0.16, "r1", 0.97, 0.985, None),
    (1, "fast", 8, 0.10, "r1", 0.92, None, "no face in the selective image"),
    (2, "balanced", 20, 0.16, "r1", 0.98, 0.99, None),
    (2, "fast", 8, 0.10, "r2", 0.94, 0.97, None),  # other run than its full arm: timing excluded
)
# (reviewer, preset, seed, mode, left arm, choice, gold)
VOTES = (
    (R1, "balanced", 0, "preference", "full", "left", False),  # -> full
    (R1, "balanced", 1, "preference", "selective", "left", False),  # -> selective
    (R2, "balanced", 0, "preference", "full", "same", False),  # -> same
    (R2, "balanced", 2, "preference", "selective", "right", False),  # -> full
    (R3, "balanced", 1, "preference", "full", "right", False),  # -> selective
    (R1, "fast", 0, "preference", "full", "left", False),  # -> full
    (R2, "fast", 1, "preference", "selective", "right", False),  # -> full
    (R3, "fast", 2, "preference", "full", "left", False),  # -> full
    (R1, "fast", 2, "preference", "selective", "left", False),  # -> selective
    (R1, "balanced", 0, "abx", "full", "a", False),  # correct
    (R1, "balanced", 1, "abx", "selective", "a", False),  # wrong
    (R2, "balanced", 2, "abx", "full", "b", False),  # wrong
    (R2, "balanced", 0, "abx", "selective", "b", False),  # correct
    (R1, "fast", 0, "abx", "full", "a", False),  # correct
    (R2, "fast", 1, "abx", "selective", "b", False),  # correct
    (R3, "fast", 2, "abx", "full", "a", False),  # correct
    (R3, "fast", 0, "abx", "selective", "a", False),  # wrong
    *((R3, "balanced", s, "preference", "full", "left", True) for s in range(3)),  # gold, all wrong
    *((R1, "fast", s, "preference", "full", "same", True) for s in range(3)),  # gold, all right
)


def png(i: int) -> str:
    return f"{i:032x}.png"


def outcome_of(mode: str, left_arm: str, choice: str) -> str:
    """What the store's vote trigger accepts for this trial (x arm is always 'full')."""
    if mode == "abx":
        return "correct" if (choice == "a") == (left_arm == "full") else "wrong"
    if choice == "same":
        return "same"
    other = "selective" if left_arm == "full" else "full"
    return left_arm if choice == "left" else other


def add_vote(store: Store, n: int, pair_id: int, reviewer: str, mode: str, left_arm: str, choice: str,
             gold: bool = False, *, answer: bool = True) -> str:
    store.get_or_create_reviewer(reviewer)
    abx = mode == "abx"
    trial = store.create_trial(reviewer_id=reviewer, session=f"s-{reviewer[:2]}", pair_id=pair_id, mode=mode,
                               left_arm=left_arm, left_image=png(1000 + 3 * n), right_image=png(1001 + 3 * n),
                               x_arm="full" if abx else None, x_image=png(1002 + 3 * n) if abx else None,
                               is_gold=gold, trial_id=f"{n + 1:032x}")
    if answer:
        store.record_vote(trial_id=trial["id"], reviewer_id=reviewer, choice=choice,
                          outcome=outcome_of(mode, left_arm, choice), latency_ms=1000 + n, client="c0ffee")
    return trial["id"]


def build_study(root: Path, pairs: Sequence[tuple] = PAIRS, votes: Sequence[tuple] = VOTES) -> tuple[Store, dict]:
    """A study written through the Store API: tiny PNG arms, the pairs and votes above; returns the store and
    (preset, seed) -> pair id."""
    store = Store(root / "study.db", clock=lambda: CLOCK)
    face = store.add_face(sha256="f" * 64, file=png(0), width=8, height=8, label="face")
    rng = np.random.default_rng(0)
    conditions, fulls, ids = {}, {}, {}

    def generation(seed: int, preset: str, layers: int, step: float, run: str) -> dict:
        image = write_image(root / "images", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        row = store.add_image(file=image.file, sha256=image.sha256, width=8, height=8)
        return store.add_generation(condition_id=conditions[seed], preset=preset, layers=[f"l{i}" for i in range(layers)],
                                    layer_count=layers, image_id=row["id"], total_s=4 * step, step_times=[step] * 4,
                                    device="cpu", dtype="float32", versions={"torch": "x"}, run_id=run)

    for seed, preset, layers, step, run, ssim, cos, failure in pairs:
        if seed not in conditions:
            conditions[seed] = store.upsert_condition(
                face_id=face["id"], prompt="a portrait", negative_prompt="", seed=seed, steps=4, width=8, height=8,
                ip_weight=0.8, cn_scale=0.8, guidance_scale=5.0, stack="tiny")["id"]
            fulls[seed] = generation(seed, "full", FULL_LAYERS, FULL_STEP, "r1")
        sel = generation(seed, preset, layers, step, run)
        ids[preset, seed] = store.add_pair(full_generation_id=fulls[seed]["id"], selective_generation_id=sel["id"],
                                           ssim=ssim, id_cos_sel_full=cos, identity_failure=failure)["id"]
    for n, (reviewer, preset, seed, mode, left_arm, choice, gold) in enumerate(votes):
        add_vote(store, n, ids[preset, seed], reviewer, mode, left_arm, choice, gold)
    return store, ids


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Store, dict]:
    store, ids = build_study(tmp_path_factory.mktemp("study"))
    yield store, ids
    store.close()


@pytest.fixture(scope="module")
def result(study) -> dict:
    return compute_leaderboard(study[0], **FAST_BOOT)


def test_leaderboard_inputs_map_store_rows_to_the_documented_keys(study):
    store, ids = study
    pairs, votes = leaderboard_inputs(store)
    assert len(pairs) == len(PAIRS) and len(votes) == len(VOTES)
    assert pairs[0] == {
        "pair_id": ids["balanced", 0], "preset": "balanced", "layer_count": 20, "condition_id": 1, "ssim": 0.96,
        "id_cos_sel_full": 0.99, "id_cos_sel_ref": None, "id_cos_full_ref": None, "identity_failure": None,
        "full_step_median_s": 0.2, "sel_step_median_s": 0.16, "full_run_id": "r1", "sel_run_id": "r1",
        "full_device": "cpu", "sel_device": "cpu"}
    assert pairs[5]["sel_run_id"] == "r2" and pairs[3]["identity_failure"] == "no face in the selective image"
    assert votes[1] == {"trial_id": f"{2:032x}", "pair_id": ids["balanced", 1], "preset": "balanced",
                        "condition_id": 2, "reviewer_id": R1, "session": "s-a1", "mode": "preference",
                        "is_gold": False, "left_arm": "selective", "x_arm": None, "choice": "left",
                        "outcome": "selective", "correct": None}
    assert votes[-1]["is_gold"] is True and votes[-1]["outcome"] == "same" and votes[-1]["correct"] in (1, None)
    assert [v["outcome"] for v in votes[9:13]] == ["correct", "wrong", "wrong", "correct"]


def test_leaderboard_inputs_name_missing_store_columns():
    from review.stats.board import pair_inputs, vote_inputs

    with pytest.raises(StudyInputError, match="sel_run_id"):
        pair_inputs([{k: None for k in ("pair_id", "preset", "layer_count", "condition_id", "ssim")}])
    assert vote_inputs([]) == []


def test_table_has_a_row_per_preset_with_the_expected_counts(result):
    headers, rows = table(result, include_failing=True)  # everyone: the counts below include R3
    assert headers == list(HEADERS)
    col = {h: i for i, h in enumerate(headers)}
    by_preset = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == ["balanced", "fast"]  # most layers first
    bal, fast = by_preset["balanced"], by_preset["fast"]
    assert (bal[col["Layers"]], bal[col["Pairs"]], bal[col["Identity failures"]]) == (20, 3, 0)
    assert (fast[col["Layers"]], fast[col["Pairs"]], fast[col["Identity failures"]]) == (8, 3, 1)
    assert [bal[col[k]] for k in ("Votes", "Reviewers", "Conditions")] == [9, 3, 3]
    assert [fast[col[k]] for k in ("Votes", "Reviewers", "Conditions")] == [8, 3, 3]
    assert bal[col["Preference selective / same / full · p"]].startswith("2 (40%) / 1 (20%) / 2 (40%) · p=")
    assert fast[col["Preference selective / same / full · p"]].startswith("1 (25%) / 0 (0%) / 3 (75%) · p=")
    assert bal[col["ABX accuracy [95% CI] · p"]].startswith("0.50 [") and "(n=4)" in bal[col["ABX accuracy [95% CI] · p"]]
    assert bal[col["Step time vs full [95% CI]"]].startswith("0.80× [0.80, 0.80] (n=3)")
    assert "(1 excluded: other run/device)" in fast[col["Step time vs full [95% CI]"]]
    assert fast[col["Step time vs full [95% CI]"]].startswith("0.50×")
    assert bal[col["SSIM mean [95% CI] · share > 0.95"]].startswith("0.970 [") and "100% > 0.95" in bal[4]
    assert "0% > 0.95" in fast[col["SSIM mean [95% CI] · share > 0.95"]]
    assert "not enough votes (upper" in bal[col["Equivalence (ABX)"]] and "margin 0.55" in bal[col["Equivalence (ABX)"]]
    assert "SSIM > 0.95: not enough data" in bal[col["Targets"]]  # 3 pairs < MIN_PAIRS


def test_table_leaves_out_failing_reviewers_by_default(result):
    assert result["failing_reviewers"] == [R3] and result["failing_units"] == [f"{R3}|s-c3"]
    assert result["gold"][f"{R1}|s-a1"]["failing"] is False  # 3 of 3 right: beats chance
    _, rows = table(result)
    col = {h: i for i, h in enumerate(HEADERS)}
    counts = {r[0]: [r[col[k]] for k in ("Votes", "Reviewers", "Conditions")] for r in rows}
    assert counts == {"balanced": [8, 2, 3], "fast": [5, 2, 3]}


def test_plot_has_one_labelled_point_per_preset_with_data(result):
    fig = speed_quality_plot(result, "ssim")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["balanced", "fast"]
    assert "no data" not in ax.get_title()
    fig.canvas.draw()  # renders with Agg
    ident = speed_quality_plot(result, "identity")
    assert [c.get_label() for c in ident.axes[0].containers] == ["balanced", "fast"]
    assert 0.98 in ident.axes[0].lines[-1].get_ydata()


def test_plot_names_presets_without_data_instead_of_plotting_them(result):
    broken = copy.deepcopy(result)
    broken["rows"][1]["step_ratio"] = None
    fig = speed_quality_plot(broken, "ssim")
    assert [c.get_label() for c in fig.axes[0].containers] == ["balanced"]
    assert "no data: fast" in fig.axes[0].get_title()
    empty = speed_quality_plot({"rows": []}, "identity")
    assert not empty.axes[0].containers and "no data" in empty.axes[0].get_title()
    with pytest.raises(ValueError, match="metric"):
        speed_quality_plot(result, "lpips")


def test_verdicts_markdown_states_verdicts_bias_reviewers_scores_and_rules(result):
    text = verdicts_markdown(result)
    assert "- **balanced** (20 layers): ABX not enough votes" in text
    assert "- **fast** (8 layers): ABX not enough votes" in text
    assert f"failing: {short_id(R3)} (left out of every figure above" in text
    assert "Margin: ABX accuracy 0.55 (= 10% of people identifying the image)" in text
    assert "Holm over 2 presets" in text
    assert R3 not in text  # reviewer ids are claim tokens: only their first 8 characters are shown
    assert "Preference (left image chosen):" in text and "ABX (A chosen):" in text
    assert "| full | +0.00 [0.00, 0.00] |" in text
    assert "Tie rule: ties ('same') are excluded from the binomial test" in text
    assert "below the margin 0.55" in text and "anytime-valid" in text
    assert "not evidence beyond the preference verdict" in text  # Bradley-Terry is not extra evidence here


def test_text_table_is_transposed_with_one_column_per_preset(result):
    lines = text_table(result).splitlines()
    assert lines[0].split() == ["Preset", "balanced", "fast"]
    assert len(lines) == len(HEADERS) - 1 + 4 + 1  # Targets split into 4 lines, plus the rule under the header
    assert [line.split("  ")[0] for line in lines if line.startswith("Target:")] == [
        "Target: SSIM > 0.95", "Target: identity > 0.98", "Target: faster than full", "Target: identified < 10%"]
    assert text_table({"rows": []}) == "No pairs or votes in the database yet."


def test_board_view_renders_table_plots_and_verdicts_from_one_computation(study):
    from review.stats.board import board, board_view

    view = board_view(study[0], include_failing=True, **FAST_BOOT)
    assert view.table["headers"] == list(HEADERS) and [r[0] for r in view.table["data"]] == ["balanced", "fast"]
    assert view.table["data"] == table(view.result, include_failing=True)[1]
    assert isinstance(view.ssim_plot, Figure) and isinstance(view.identity_plot, Figure)
    assert view.markdown.startswith("### Verdicts (including reviewers who fail the gold screening)")
    assert board_view(study[0], **FAST_BOOT).markdown.startswith("### Verdicts (reviewers who fail the gold")
    rows, fig = board(study[0], **FAST_BOOT)
    assert len(rows["data"]) == 2 and len(fig.axes[0].containers) == 2


def test_open_study_never_creates_a_database(tmp_path):
    with pytest.raises(StudyDatabaseError, match="no study database"):
        open_study(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all, just some bytes" * 10)
    with pytest.raises(StudyDatabaseError, match="not an SQLite database"):
        open_study(tmp_path / "junk.db")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StudyDatabaseError, match="not an SQLite database"):
        open_study(tmp_path / "empty.db")
    Store(tmp_path / "bare.db", migrate=False).close()  # SQLite, but no study schema
    with pytest.raises(StudyDatabaseError, match="not a study database"):
        open_study(tmp_path / "bare.db")
    with pytest.raises(StudyDatabaseError, match="a directory"):
        open_study(tmp_path)


def test_main_leaderboard_prints_json_and_table(study, capsys):
    from review.cli.leaderboard import main_leaderboard

    db = str(study[0].path)
    assert main_leaderboard(["--db", db, "--json", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in out["rows"]] == ["balanced", "fast"]
    assert out["settings"]["margin"] == 0.55 and out["failing_reviewers"] == [R3]
    assert main_leaderboard(["--db", db, "--margin", "0.6", "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["Preset", "balanced", "fast"]
    assert "(reviewers who fail the gold screening left out)" in text and "below the margin 0.6" in text
    assert main_leaderboard(["--db", db, "--include-failing", "--primary-preset", "fast", "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "(including reviewers who fail the gold screening)" in text and "primary preset 'fast'" in text


def test_main_leaderboard_refuses_a_missing_database(tmp_path, capsys):
    from review.cli.leaderboard import main_leaderboard

    assert main_leaderboard(["--db", str(tmp_path / "nope.db")]) == 2
    assert "error: no study database at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(SystemExit):
        main_leaderboard(["--db", str(tmp_path / "nope.db"), "--margin", "0.4"])
    with pytest.raises(SystemExit):
        main_leaderboard(["--db", str(tmp_path / "nope.db"), "--n-boot", "0"])


def _dispatcher_has(command: str) -> bool:
    try:
        from review.__main__ import available
    except ImportError:
        return False
    return command in available()


def test_python_m_review_leaderboard_json(study, tmp_path):
    if not _dispatcher_has("leaderboard"):
        pytest.skip("review/__main__.py does not dispatch 'leaderboard' yet")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "review", "leaderboard", "--db", str(study[0].path), "--json", "--n-boot", "50"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["preset"] for r in json.loads(done.stdout)["rows"]] == ["balanced", "fast"]
    missing = subprocess.run([*cmd[:5], str(tmp_path / "absent.db")], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "no study database" in missing.stderr
    assert not (tmp_path / "absent.db").exists()

"""Exports of votes, pairs, trials and the leaderboard: literal CSV, JSON with provenance, fixed names, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_study_view import CLOCK, R1, REPO, _dispatcher_has, add_vote, png

from review.export import ExportError, export_all, export_file
from review.leaderboard_view import HEADERS
from review.store import LATEST, Store

BOOT = {"n_boot": 50, "n_boot_cluster": 20, "n_boot_bt": 10}
CONDITION = ",1,a portrait,7,4,8,8,tiny"  # face_id, prompt, seed, steps, width, height, stack
PAIR_METRICS = "1,balanced,20,1,0.96,0.99,0.7,0.71,"  # pair_id, preset, layer_count, condition_id, ssim, cosines, failure
VOTES_CSV = (
    "vote_id,choice,outcome,correct,latency_ms,client,voted_at,trial_id,reviewer_id,session,mode,left_arm,x_arm,"
    "is_gold,served_at,pair_id,preset,layer_count,condition_id,ssim,id_cos_sel_full,id_cos_sel_ref,id_cos_full_ref,"
    "identity_failure,face_id,prompt,seed,steps,width,height,stack\r\n"
    f"1,right,selective,,1000,c0ffee,{CLOCK},{1:032x},{R1},s-a1,preference,full,,0,{CLOCK},{PAIR_METRICS}{CONDITION}\r\n"
    f"2,b,correct,,1001,c0ffee,{CLOCK},{2:032x},{R1},s-a1,abx,selective,full,0,{CLOCK},{PAIR_METRICS}{CONDITION}\r\n"
)
PAIRS_CSV = (
    "pair_id,condition_id,preset,layer_count,ssim,id_cos_sel_full,id_cos_sel_ref,id_cos_full_ref,identity_failure,"
    "created_at,face_id,face_label,prompt,negative_prompt,seed,steps,width,height,ip_weight,cn_scale,guidance_scale,"
    "stack,full_generation_id,selective_generation_id,full_step_median_s,sel_step_median_s,full_total_s,sel_total_s,"
    "full_device,sel_device,full_dtype,sel_dtype,full_run_id,sel_run_id,full_timing_mode,sel_timing_mode,"
    "full_id_cos_ref,sel_id_cos_ref,full_file,sel_file\r\n"
    f"1,1,balanced,20,0.96,0.99,0.7,0.71,,{CLOCK},1,face,a portrait,,7,4,8,8,0.8,0.8,5.0,tiny,1,2,0.2,0.1,0.8,0.4,"
    f"cpu,cpu,float32,float32,r1,r1,eager,eager,,,{png(10)},{png(11)}\r\n"
)
TRIALS_HEADER = [
    "trial_id", "reviewer_id", "session", "mode", "left_arm", "x_arm", "is_gold", "served_at", "pair_id", "preset",
    "layer_count", "condition_id", "ssim", "id_cos_sel_full", "id_cos_sel_ref", "id_cos_full_ref", "identity_failure",
    "face_id", "prompt", "seed", "steps", "width", "height", "stack", "left_image", "right_image", "x_image",
    "vote_id", "choice", "outcome", "correct", "latency_ms", "client", "voted_at",
]


def build_small(root: Path) -> Store:
    """One condition, one balanced pair, a preference and an ABX vote, and one unanswered trial."""
    store = Store(root / "small.db", clock=lambda: CLOCK)
    face = store.add_face(sha256="f" * 64, file=png(0), width=8, height=8, label="face")
    cond = store.upsert_condition(face_id=face["id"], prompt="a portrait", negative_prompt="", seed=7, steps=4,
                                  width=8, height=8, ip_weight=0.8, cn_scale=0.8, guidance_scale=5.0, stack="tiny")
    gens = []
    for i, (preset, layers, step) in enumerate((("full", 70, 0.2), ("balanced", 20, 0.1))):
        image = store.add_image(file=png(10 + i), sha256=f"{i}" * 64, width=8, height=8)
        gens.append(store.add_generation(condition_id=cond["id"], preset=preset, layers=["l"] * layers,
                                         layer_count=layers, image_id=image["id"], total_s=4 * step,
                                         step_times=[step] * 4, device="cpu", dtype="float32",
                                         versions={"torch": "x"}, run_id="r1"))
    pair = store.add_pair(full_generation_id=gens[0]["id"], selective_generation_id=gens[1]["id"], ssim=0.96,
                          id_cos_sel_full=0.99, id_cos_sel_ref=0.7, id_cos_full_ref=0.71)
    add_vote(store, 0, pair["id"], R1, "preference", "full", "right")  # chose the selective image
    add_vote(store, 1, pair["id"], R1, "abx", "selective", "b")  # B showed full = X: correct
    add_vote(store, 2, pair["id"], R1, "preference", "selective", "left", answer=False)  # still on a page
    return store


@pytest.fixture
def small(tmp_path) -> Store:
    store = build_small(tmp_path)
    yield store
    store.close()


def test_export_all_csv_writes_literal_tables_and_the_leaderboard(small, tmp_path):
    paths = export_all(small, tmp_path / "out", "csv", **BOOT)
    assert [p.name for p in paths] == ["votes.csv", "pairs.csv", "trials.csv", "leaderboard.json", "leaderboard.csv"]
    assert all(p.parent == (tmp_path / "out").resolve() for p in paths)
    assert (tmp_path / "out" / "votes.csv").read_bytes().decode() == VOTES_CSV
    assert (tmp_path / "out" / "pairs.csv").read_bytes().decode() == PAIRS_CSV
    with (tmp_path / "out" / "trials.csv").open(newline="", encoding="utf-8") as handle:
        trials = list(csv.reader(handle))
    assert trials[0] == TRIALS_HEADER and len(trials) == 4
    assert trials[3][:5] == [f"{3:032x}", R1, "s-a1", "preference", "selective"] and trials[3][-7:] == [""] * 7
    with (tmp_path / "out" / "leaderboard.csv").open(newline="", encoding="utf-8") as handle:
        board = list(csv.reader(handle))
    assert board[0] == list(HEADERS)
    assert board[1][:3] == ["balanced", "20", "1"] and board[1][-3:] == ["2", "1", "1"]
    assert board[1][HEADERS.index("Preference selective / same / full · p")] == "1 (100%) / 0 (0%) / 0 (0%) · p=1"
    assert sorted(os.listdir(tmp_path / "out")) == sorted(p.name for p in paths)  # no temporary files left


def test_export_all_json_is_valid_json_with_provenance(small, tmp_path):
    paths = export_all(small, tmp_path / "json", "json", **BOOT)
    assert [p.name for p in paths] == ["votes.json", "pairs.json", "trials.json", "leaderboard.json"]
    data = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in paths}
    for name in ("votes", "pairs", "trials", "leaderboard"):
        prov = data[name]["provenance"]
        assert prov["kind"] == name and prov["schema_version"] == LATEST and prov["exported_at"]
        assert prov["app_sha"] is None or len(prov["app_sha"]) == 40
    assert data["votes"]["rows"] == small.vote_rows() and data["votes"]["provenance"]["n_rows"] == 2
    assert data["pairs"]["rows"] == small.list_pairs()
    assert len(data["trials"]["rows"]) == 3
    board = data["leaderboard"]
    assert [r["preset"] for r in board["rows"]] == ["balanced"]
    assert (board["rows"][0]["n_preference"], board["rows"][0]["abx_correct"]) == (1, 1)
    assert board["settings"]["n_boot"] == 50


def test_export_file_uses_fixed_names_and_rejects_bad_kinds_and_formats(small, tmp_path):
    folder = tmp_path / "exports"
    assert export_file(small, "votes", "csv", folder).read_bytes().decode() == VOTES_CSV
    assert export_file(small, "votes", "csv", folder) == folder / "votes.csv"  # overwritten in place
    lb = export_file(small, "leaderboard", "json", folder, margin=0.55, **BOOT)
    assert lb == folder / "leaderboard.json"
    assert json.loads(lb.read_text())["settings"]["margin"] == 0.55
    assert export_file(small, "leaderboard", "csv", folder, **BOOT).read_text(encoding="utf-8").startswith("Preset,")
    for kind, fmt in (("../votes", "csv"), ("images", "csv"), ("votes", "xml"), ("votes", "../x"),
                      ("", "json"), (None, "csv"), ("votes", None), ("VOTES", "csv")):
        with pytest.raises(ExportError):
            export_file(small, kind, fmt, folder)  # type: ignore[arg-type]
    assert sorted(os.listdir(folder)) == ["leaderboard.csv", "leaderboard.json", "votes.csv"]
    with pytest.raises(ExportError, match="format"):
        export_all(small, tmp_path / "x", "xlsx")


def test_public_export_drops_unanswered_trials_and_private_columns(small, tmp_path):
    path = export_file(small, "trials", "json", tmp_path, full=False)
    rows = json.loads(path.read_text())["rows"]
    assert [r["trial_id"] for r in rows] == [f"{1:032x}", f"{2:032x}"]
    assert not {"session", "client"} & set(rows[0])
    votes = export_file(small, "votes", "csv", tmp_path, full=False).read_text().splitlines()
    assert "client" not in votes[0].split(",") and "session" not in votes[0].split(",")


def test_export_all_refuses_a_file_as_output_directory(small, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_all(small, tmp_path / "taken", "csv")


def test_export_of_an_empty_study_writes_empty_tables(tmp_path):
    with Store(tmp_path / "empty.db") as store:
        paths = export_all(store, tmp_path / "out", "csv", **BOOT)
    assert [p.read_text() for p in paths[:3]] == ["", "", ""]  # no rows: columns unknown, no header
    assert json.loads(paths[3].read_text())["rows"] == []
    assert paths[4].read_text(encoding="utf-8").splitlines() == [",".join(HEADERS)]


def test_main_export_writes_files_and_prints_paths(small, tmp_path, capsys):
    from review.cli_export import main_export

    out = tmp_path / "cli"
    assert main_export(["--db", str(small.path), "--format", "json", "--out", str(out), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["votes.json", "pairs.json", "trials.json", "leaderboard.json"]
    assert all(Path(p).is_file() for p in printed)
    assert main_export(["--db", str(tmp_path / "none.db"), "--format", "csv", "--out", str(out)]) == 2
    assert "no study database" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    (tmp_path / "file").write_text("x")
    assert main_export(["--db", str(small.path), "--format", "csv", "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_export(["--db", str(small.path), "--format", "xml", "--out", str(out)])


def test_python_m_review_export_writes_files(small, tmp_path):
    if not _dispatcher_has("export"):
        pytest.skip("review/__main__.py does not dispatch 'export' yet")
    out = tmp_path / "sub"
    done = subprocess.run(
        [sys.executable, "-m", "review", "export", "--db", str(small.path), "--format", "csv", "--out", str(out),
         "--n-boot", "50"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = [Path(line).name for line in done.stdout.split()]
    assert names == ["votes.csv", "pairs.csv", "trials.csv", "leaderboard.json", "leaderboard.csv"]
    assert (out / "votes.csv").read_bytes().decode() == VOTES_CSV

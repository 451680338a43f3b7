"""The one export path: a dataset folder (Parquet + card, CSV, JSON, leaderboard) with pseudonymised reviewers;
literal CSV, JSON with provenance, pandas and datasets read it, the CLI, the Hub push (mocked)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_study_view import CLOCK, R1, REPO, _dispatcher_has, add_vote, png

from review.export.dataset import ExportError, export_dataset
from review.export.sidecar import pseudonym, study_salt
from review.stats.leaderboard_view import HEADERS
from review.store import LATEST, Store

BOOT = {"n_boot": 50, "n_boot_cluster": 20, "n_boot_bt": 10}
CONDITION = ",1,a portrait,7,4,8,8,tiny"  # face_id, prompt, seed, steps, width, height, stack
PAIR_METRICS = "1,balanced,20,1,0.96,0.99,0.7,0.71,"  # pair_id, preset, layer_count, condition_id, ssim, cosines, failure
P1 = "{P1}"  # R1's pseudonym: filled in per study (its salt is random)
VOTES_CSV = (
    "vote_id,choice,outcome,correct,latency_ms,client,voted_at,trial_id,reviewer_id,session,mode,left_arm,x_arm,"
    "is_gold,served_at,gold_kind,expected,identity_kind,reveal,pair_id,preset,layer_count,condition_id,ssim,id_cos_sel_full,id_cos_sel_ref,id_cos_full_ref,"
    "identity_failure,face_id,prompt,seed,steps,width,height,stack\r\n"
    f"1,right,selective,,1000,c0ffee,{CLOCK},{1:032x},{P1},s-a1,preference,full,,0,{CLOCK},,,legacy,,{PAIR_METRICS}{CONDITION}\r\n"
    f"2,b,correct,,1001,c0ffee,{CLOCK},{2:032x},{P1},s-a1,abx,selective,full,0,{CLOCK},,,legacy,,{PAIR_METRICS}{CONDITION}\r\n"
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
    "trial_id", "reviewer_id", "session", "mode", "left_arm", "x_arm", "is_gold", "served_at", "gold_kind", "expected",
    "identity_kind", "reveal", "pair_id", "preset",
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


def p1(store: Store) -> str:
    return pseudonym(study_salt(store.path), R1)


@pytest.fixture
def small(tmp_path) -> Store:
    store = build_small(tmp_path)
    yield store
    store.close()


TABLE_FILES = [f"{k}/{k}.parquet" for k in ("votes", "pairs", "trials")]
DATASET_FILES = sorted([*TABLE_FILES, "csv/votes.csv", "csv/pairs.csv", "csv/trials.csv", "json/votes.json",
                        "json/pairs.json", "json/trials.json", "leaderboard.json", "leaderboard.csv", "README.md"])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_export_dataset_writes_literal_tables_with_pseudonyms(small, tmp_path):
    paths = export_dataset(small, tmp_path / "out", **BOOT)
    out = (tmp_path / "out").resolve()
    assert sorted(str(p.relative_to(out)) for p in paths) == DATASET_FILES == _files(out)  # no temporary files
    assert paths[-1].name == "README.md"
    assert (out / "csv" / "votes.csv").read_bytes().decode() == VOTES_CSV.replace(P1, p1(small))
    assert (out / "csv" / "pairs.csv").read_bytes().decode() == PAIRS_CSV
    with (out / "csv" / "trials.csv").open(newline="", encoding="utf-8") as handle:
        trials = list(csv.reader(handle))
    assert trials[0] == TRIALS_HEADER and len(trials) == 4
    assert trials[3][:5] == [f"{3:032x}", p1(small), "s-a1", "preference", "selective"] and trials[3][-7:] == [""] * 7
    assert R1 not in "".join(p.read_bytes().decode("utf-8", "replace") for p in paths)  # nowhere in clear
    with (out / "leaderboard.csv").open(newline="", encoding="utf-8") as handle:
        board = list(csv.reader(handle))
    assert board[0] == list(HEADERS)
    assert board[1][:3] == ["balanced", "20", "1"]
    assert board[1][HEADERS.index("Preference selective / same / full · p")] == "1 (100%) / 0 (0%) / 0 (0%) · p=1"


def test_pseudonyms_are_stable_per_study_and_differ_between_studies(small, tmp_path):
    salt_file = Path(str(small.path) + ".salt")
    first = export_dataset(small, tmp_path / "a", formats=["csv"], **BOOT)
    assert salt_file.is_file() and (salt_file.stat().st_mode & 0o777) == 0o600
    again = export_dataset(small, tmp_path / "b", formats=["csv"], **BOOT)
    assert first[0].read_bytes() == again[0].read_bytes()  # same salt, same pseudonyms
    other_root = tmp_path / "other"
    other_root.mkdir()
    with build_small(other_root) as other:  # same reviewer id, another study: another pseudonym
        assert p1(other) != p1(small) and len(p1(other)) == 16


def test_json_files_carry_provenance_and_rows(small, tmp_path):
    out = tmp_path / "json"
    export_dataset(small, out, formats=["json"], **BOOT)
    data = {name: json.loads((out / "json" / f"{name}.json").read_text(encoding="utf-8"))
            for name in ("votes", "pairs", "trials")}
    data["leaderboard"] = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    for name in ("votes", "pairs", "trials", "leaderboard"):
        prov = data[name]["provenance"]
        assert prov["kind"] == name and prov["schema_version"] == LATEST and prov["exported_at"]
        assert prov["app_sha"] is None or len(prov["app_sha"]) == 40
        assert prov["database"] == "small.db"  # the file name, not the server's path
    expected = [{**r, "reviewer_id": p1(small)} for r in small.vote_rows()]
    assert data["votes"]["rows"] == expected and data["votes"]["provenance"]["n_rows"] == 2
    assert data["pairs"]["rows"] == small.list_pairs()
    assert len(data["trials"]["rows"]) == 3
    board = data["leaderboard"]
    assert [r["preset"] for r in board["rows"]] == ["balanced"]
    assert board["settings"]["n_boot"] == 50
    assert not (out / "votes").exists()  # parquet not asked for


def test_dataset_folder_loads_with_pandas_and_datasets(small, tmp_path):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "ds"
    export_dataset(small, out, **BOOT)
    votes = pd.read_parquet(out / "votes" / "votes.parquet")
    assert list(votes["vote_id"]) == [1, 2] and list(votes["reviewer_id"]) == [p1(small)] * 2
    assert str(votes["latency_ms"].dtype) == "int64" and votes["ssim"].tolist() == [0.96, 0.96]
    cache = str(tmp_path / "hf-cache")
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "votes"), cache_dir=cache)["train"]
    assert loaded.num_rows == 2 and loaded[0]["choice"] == "right" and loaded[1]["outcome"] == "correct"
    trials = datasets.load_dataset(str(out), "trials", cache_dir=cache)["train"]  # the card's configs
    assert trials.num_rows == 3 and trials.column_names == TRIALS_HEADER


def test_dataset_card_has_configs_provenance_settings_verdicts_and_columns(small, tmp_path):
    from review.export.sidecar import save_study_settings

    save_study_settings(small.path, {"gold_rate": 0.15, "modes": ["preference", "abx"]})
    out = tmp_path / "card"
    export_dataset(small, out, full=False, exported_at="2026-12-04T00:00:00Z", **BOOT)
    card = (out / "README.md").read_text(encoding="utf-8")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert ("configs:\n- config_name: votes\n  data_files: votes/*.parquet\n  default: true\n"
            "- config_name: pairs\n  data_files: pairs/*.parquet\n"
            "- config_name: trials\n  data_files: trials/*.parquet\n") in front
    assert "| exported_at | 2026-12-04T00:00:00Z |" in body and "| full | False |" in body
    assert '"gold_rate": 0.15' in body and "#### Verdicts" in body and "**balanced** (20 layers)" in body
    assert "| `reviewer_id` | string | reviewer pseudonym" in body and "### `trials` (2 rows)" in body
    assert "| `session` |" not in body  # a public export has no such column


def test_public_export_drops_unanswered_trials_and_private_columns(small, tmp_path):
    export_dataset(small, tmp_path, full=False, formats=["json", "csv"], **BOOT)
    rows = json.loads((tmp_path / "json" / "trials.json").read_text())["rows"]
    assert [r["trial_id"] for r in rows] == [f"{1:032x}", f"{2:032x}"]
    assert not {"session", "client"} & set(rows[0])
    votes = (tmp_path / "csv" / "votes.csv").read_text().splitlines()
    assert "client" not in votes[0].split(",") and "session" not in votes[0].split(",")


def test_export_refuses_a_file_as_output_directory_and_bad_formats(small, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_dataset(small, tmp_path / "taken")
    with pytest.raises(ExportError, match="format"):
        export_dataset(small, tmp_path / "x", formats=["xlsx"])
    assert not (tmp_path / "x").exists()


def test_export_of_an_empty_study_writes_empty_tables_and_a_card(tmp_path):
    with Store(tmp_path / "empty.db") as store:
        export_dataset(store, tmp_path / "out", **BOOT)
    out = tmp_path / "out"
    assert [(out / "csv" / f"{k}.csv").read_text() for k in ("votes", "pairs", "trials")] == ["", "", ""]
    assert not (out / "votes").exists()  # no columns, no parquet
    assert json.loads((out / "leaderboard.json").read_text())["rows"] == []
    assert (out / "leaderboard.csv").read_text(encoding="utf-8").splitlines() == [",".join(HEADERS)]
    assert "configs: []" in (out / "README.md").read_text()


def test_main_export_writes_files_and_prints_paths(small, tmp_path, capsys):
    from review.cli.export import main_export

    out = tmp_path / "cli"
    assert main_export(["--db", str(small.path), "--out", str(out), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(str(Path(p).relative_to(out.resolve())) for p in printed) == DATASET_FILES
    assert main_export(["--db", str(tmp_path / "none.db"), "--out", str(out)]) == 2
    assert "no study database" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    (tmp_path / "file").write_text("x")
    assert main_export(["--db", str(small.path), "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_export(["--db", str(small.path), "--format", "xml", "--out", str(out)])


def test_push_to_hub_without_a_token_is_a_clear_error_before_any_work(small, tmp_path, capsys, monkeypatch):
    from review.cli.export import main_export
    from review.export import hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "hub_token", lambda: None)
    code = main_export(["--db", str(small.path), "--out", str(tmp_path / "o"), "--push-to-hub", "me/study"])
    assert code == 2 and "needs a Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_push_to_hub_uploads_the_folder_with_the_token(small, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    from review.cli.export import main_export

    calls: list[tuple[str, tuple, dict]] = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", (), {"token": token}))

        def create_repo(self, *args, **kwargs):
            calls.append(("create_repo", args, kwargs))
            return "https://huggingface.co/datasets/me/study"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", (), kwargs))

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "o"
    assert main_export(["--db", str(small.path), "--out", str(out), "--n-boot", "50", "--push-to-hub", "me/study"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "https://huggingface.co/datasets/me/study"
    assert calls[0] == ("init", (), {"token": "hf_test"})
    assert calls[1] == ("create_repo", ("me/study",), {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls[2][0] == "upload_folder"
    assert calls[2][2]["folder_path"] == str(out.resolve()) and calls[2][2]["repo_type"] == "dataset"


def test_python_m_review_export_writes_files(small, tmp_path):
    if not _dispatcher_has("export"):
        pytest.skip("review/__main__.py does not dispatch 'export' yet")
    out = tmp_path / "sub"
    done = subprocess.run(
        [sys.executable, "-m", "review", "export", "--db", str(small.path), "--format", "csv", "--out", str(out),
         "--n-boot", "50"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    names = sorted(str(Path(line).relative_to(out.resolve())) for line in done.stdout.split())
    assert names == ["README.md", "csv/pairs.csv", "csv/trials.csv", "csv/votes.csv", "leaderboard.csv",
                     "leaderboard.json"]
    with Store(small.path) as store:
        assert (out / "csv" / "votes.csv").read_bytes().decode() == VOTES_CSV.replace(P1, p1(store))


def test_export_tab_and_cli_write_the_same_bytes(tmp_path, monkeypatch):
    """The Export tab (with an admin password: a full export) and `python -m review export` give the same folder."""
    from types import SimpleNamespace

    from fixtures_review import make_services

    import review.export.dataset
    from review.cli.export import main_export
    from review.ui import export_tab

    monkeypatch.setattr(review.export.dataset, "utc_now", lambda: "2026-12-04T12:00:00Z")
    services = make_services(tmp_path / "app", seeds=(0, 1), presets=("fast",))
    request = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"), headers={}, session_hash="page-1")
    note, _ = export_tab.handlers(services)["prepare"]("s3cret-admin", request)
    (ui_root,) = services.dirs.exports.glob("*/study-dataset")
    assert "All rows" in note and (ui_root.parent / "study-dataset.zip").is_file()
    cli_out = tmp_path / "cli"
    assert main_export(["--db", str(services.store.path), "--out", str(cli_out)]) == 0
    names = _files(ui_root)
    assert names == _files(cli_out) and "pairs/pairs.parquet" in names and len(names) >= 10
    for name in names:
        assert (ui_root / name).read_bytes() == (cli_out / name).read_bytes(), name

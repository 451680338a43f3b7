"""Paired generation: conditions -> full + selective arms -> pairs with SSIM, identity and timing; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import PIL.Image
import pytest

import instantid
from instantid import GenerationSettings
from review.cli.generate import main_generate
from review.generation import jobs
from review.generation.conditions import (
    DATA_DIR,
    Condition,
    InputError,
    expand_conditions,
    load_matrix,
    read_prompts,
)
from review.generation.inputs import parse_seeds
from review.generation.jobs import NO_FACE, PairRunner, summarize
from review.generation.metrics import ssim
from review.images import NAME_RE, png_has_metadata, read_image
from review.store import Store

ROOT = Path(__file__).resolve().parent.parent
FACE = DATA_DIR / "faces" / "astronaut.jpg"
PRESETS = ["balanced", "fast"]
SIZE = dict(steps=2, width=64, height=64)


def conditions(seeds=(1, 2), **overrides) -> list[Condition]:
    settings = GenerationSettings(**{**SIZE, **overrides})
    return [Condition(face=FACE, prompt="a portrait photo", seed=s, settings=settings) for s in seeds]


def generations(store: Store) -> list[dict]:
    return list(store.db["generations"].rows)


def jsonish(value):
    return json.loads(value) if isinstance(value, str) else value


def image_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "images").glob("*"))


@pytest.fixture(scope="module")
def run(tiny_engine, tmp_path_factory):
    """2 seeds x 2 presets through PairRunner (warm-up forced and spied), then a second runner over the same DB."""
    data_dir = tmp_path_factory.mktemp("jobs-data")
    calls: list[tuple[str, int]] = []
    generate = tiny_engine.generate

    def spy(request, preset="full", progress=None):
        calls.append((str(preset), request.settings.steps))
        return generate(request, preset, progress)

    jobs._warmed.pop(tiny_engine, None)
    with pytest.MonkeyPatch.context() as mp, Store(data_dir / "study.db") as store:
        mp.setattr(tiny_engine, "generate", spy)
        first = PairRunner(tiny_engine, store, data_dir)
        labels: list[str] = []
        added = [p for c in conditions() for p in first.run_condition(c, PRESETS, progress=labels.append)]
        after_first = (len(generations(store)), len(image_files(data_dir)), len(calls))
        second = PairRunner(tiny_engine, store, data_dir, run_id="second-run")
        added_again = [p for c in conditions() for p in second.run_condition(c, PRESETS)]
        yield dict(store=store, data_dir=data_dir, first=first, second=second, added=added,
                   added_again=added_again, calls=list(calls), labels=labels, after_first=after_first)


def test_two_presets_two_seeds_give_two_full_four_selective_four_pairs(run):
    store = run["store"]
    by_preset = Counter(g["preset"] for g in generations(store))
    assert by_preset == {"full": 2, "balanced": 2, "fast": 2}
    assert len(run["added"]) == 4
    assert len(store.list_pairs()) == 4
    assert Counter(p["preset"] for p in store.list_pairs()) == {"balanced": 2, "fast": 2}
    assert store.db["images"].count == 6
    assert len(image_files(run["data_dir"])) == 6
    assert store.db["faces"].count == 1 and store.db["conditions"].count == 2
    assert run["first"].generated == 6
    assert len(run["labels"]) == 6  # progress: one tick per arm


def test_one_untimed_warm_up_of_one_step_precedes_the_timed_arms(run):
    assert run["calls"][0] == ("full", 1)  # tiny warm-up: 1 step
    assert run["calls"][1:] == [("full", 2), ("balanced", 2), ("fast", 2)] * 2
    assert run["first"].generated == 6  # the warm-up is not stored


def test_ssim_is_in_unit_range_and_equals_ssim_of_the_stored_files(run):
    images = run["data_dir"] / "images"
    for pair in run["store"].list_pairs():
        assert 0.0 <= pair["ssim"] <= 1.0
        expected = ssim(read_image(images, pair["full_file"]), read_image(images, pair["sel_file"]))
        assert pair["ssim"] == pytest.approx(expected, abs=1e-12)


def test_timings_are_positive_and_record_device_dtype_versions_and_run(run):
    for gen in generations(run["store"]):
        assert gen["total_s"] > 0 and gen["step_median_s"] > 0
        assert gen["device"] == "cpu" and gen["dtype"] == "float32"
        assert gen["run_id"] == run["first"].run_id == jobs.RUN_ID
        assert {"torch", "diffusers", "python"} <= set(jsonish(gen["versions"]))
    for pair in run["store"].list_pairs():
        assert pair["full_step_median_s"] > 0 and pair["sel_step_median_s"] > 0
        assert pair["full_run_id"] == pair["sel_run_id"] and pair["full_device"] == pair["sel_device"]
    stored = run["store"].get_generation(1, "full")
    assert len(stored["step_times"]) == 2 and all(t > 0 for t in stored["step_times"])


def test_a_second_run_adds_nothing(run):
    store, data_dir = run["store"], run["data_dir"]
    assert run["added_again"] == []
    assert run["second"].generated == 0
    assert run["after_first"] == (6, 6, 7)  # generations, image files, engine calls (incl. warm-up)
    assert len(generations(store)) == 6 and len(image_files(data_dir)) == 6
    assert len(run["calls"]) == 7  # the second runner generated nothing
    assert store.db["faces"].count == 1 and len(list((data_dir / "faces").iterdir())) == 1


def test_identity_is_computed_by_the_configured_face_model(run):
    for pair in run["store"].list_pairs():
        if pair["identity_failure"] is None:
            for column in ("id_cos_sel_full", "id_cos_sel_ref", "id_cos_full_ref"):
                assert -1.0 <= pair[column] <= 1.0
        else:
            assert "no face detected" in pair["identity_failure"]


def test_image_files_have_no_metadata_and_opaque_names(run):
    data_dir = run["data_dir"]
    files = image_files(data_dir) + sorted((data_dir / "faces").iterdir())
    assert len(files) == 7
    for path in files:
        assert NAME_RE.fullmatch(path.name), path.name
        assert png_has_metadata(path) == []
        assert not any(word in path.name for word in ("full", "balanced", "fast", "sel", "astronaut"))
        with PIL.Image.open(path) as image:
            assert image.info == {} and image.mode == "RGB"


def test_no_face_in_generated_images_stores_null_identity_with_reason(tiny_engine, tmp_path, monkeypatch):
    detect = tiny_engine.face_analyzer.detect

    def no_face_in_outputs(image):  # the reference is 512x512; generated images are 64x64
        size = image.size if isinstance(image, PIL.Image.Image) else image.shape[1::-1]
        return [] if tuple(size) == (64, 64) else detect(image)

    monkeypatch.setattr(tiny_engine.face_analyzer, "detect", no_face_in_outputs)
    with Store(tmp_path / "study.db") as store:
        runner = PairRunner(tiny_engine, store, tmp_path, warmup=False)
        [pair] = runner.run_condition(conditions(seeds=(3,), steps=1)[0], ["fast"])
        assert (pair["id_cos_sel_full"], pair["id_cos_sel_ref"], pair["id_cos_full_ref"]) == (None, None, None)
        assert pair["identity_failure"] == f"full: {NO_FACE}; selective: {NO_FACE}"
        assert 0.0 <= pair["ssim"] <= 1.0  # SSIM does not need a face
        for gen in generations(store):
            assert gen["id_cos_ref"] is None and gen["id_failure"] == "no face detected in the generated image"
        assert summarize(store.list_pairs())["identity_failures"] == 1


def test_resume_reuses_the_stored_full_arm_and_flags_pairs_from_two_runs(tiny_engine, tmp_path):
    condition = conditions(seeds=(4,), steps=1)[0]
    with Store(tmp_path / "study.db") as store:
        PairRunner(tiny_engine, store, tmp_path, run_id="run-a", warmup=False).run_condition(condition, ["fast"])
        later = PairRunner(tiny_engine, store, tmp_path, run_id="run-b", warmup=False)
        [pair] = later.run_condition(condition, ["fast", "output_only"])
        assert later.generated == 1  # only the new selective arm; the full arm is reused
        assert (pair["preset"], pair["full_run_id"], pair["sel_run_id"]) == ("output_only", "run-a", "run-b")
        assert summarize(store.list_pairs())["mixed_runs"] == 1
        assert Counter(g["preset"] for g in generations(store)) == {"full": 1, "fast": 1, "output_only": 1}


def test_full_is_refused_as_a_selective_preset(tiny_engine, tmp_path):
    with Store(tmp_path / "study.db") as store, pytest.raises(InputError, match="reference arm"):
        PairRunner(tiny_engine, store, tmp_path).run_condition(conditions(seeds=(1,))[0], ["full"])


def test_shipped_faces_are_small_licensed_and_have_faces(tiny_engine):
    licence = (DATA_DIR / "faces" / "LICENSE.md").read_text()
    faces = sorted((DATA_DIR / "faces").glob("*.jpg"))
    assert [f.name for f in faces] == ["astronaut.jpg", "astronauts.jpg"]
    for face in faces:
        assert face.stat().st_size < 200_000 and f"`{face.name}`" in licence
        assert len(tiny_engine.face_analyzer.detect(PIL.Image.open(face).convert("RGB"))) >= 1
    assert len(read_prompts(str(DATA_DIR / "prompts.txt"))) == 4


# -- condition expansion ------------------------------------------------------------------------------------
def test_expand_conditions_is_faces_x_prompts_x_seeds():
    settings = GenerationSettings(steps=2, width=64, height=64)
    got = expand_conditions(["a.png", "b.png"], ["p1", "p2", "p3"], [1, 2], settings)
    assert len(got) == 12 and len(set(got)) == 12
    assert [(c.face.name, c.prompt, c.seed) for c in got[:3]] == [("a.png", "p1", 1), ("a.png", "p1", 2),
                                                                   ("a.png", "p2", 1)]
    assert {c.settings for c in got} == {settings} and {c.size for c in got} == {"64x64"}


def test_usecase_matrix_expands_to_twenty_unique_conditions():
    got = load_matrix("usecases")
    assert len(got) == 20 and len(set(got)) == 20
    assert Counter(c.group for c in got) == {"portrait": 4, "full_body": 2, "several_faces": 2,
                                             "controlnet_strength": 4, "ip_weight": 4, "aspect_ratio": 4}
    assert {c.settings.cn_scale for c in got} == {0.4, 0.8, 1.0}
    assert {c.settings.ip_weight for c in got} == {0.2, 0.5, 0.8}
    assert {c.size for c in got} == {"1024x1024", "832x1216", "1216x832"}
    assert {c.face.name for c in got} == {"astronaut.jpg", "astronauts.jpg"}
    assert {c.seed for c in got} == {1, 2} and {c.settings.steps for c in got} == {30}
    assert {c.settings.negative_prompt for c in got} == {"lowres, low quality, worst quality, deformed, blurry"}


def test_usecase_matrix_scales_sizes_and_overrides_seeds_and_steps():
    got = load_matrix("usecases", seeds=[7], steps=2, size_scale=0.125)
    assert len(got) == 10
    assert {c.size for c in got} == {"128x128", "104x152", "152x104"}
    assert {(c.seed, c.settings.steps) for c in got} == {(7, 2)}


def test_seed_lists_accept_ranges():
    assert parse_seeds("1,2,5-7,2") == [1, 2, 5, 6, 7]
    with pytest.raises(InputError):
        parse_seeds("1,x")


# -- command line ---------------------------------------------------------------------------------------------
BASE_ARGS = ["--stack", "tiny", "--faces", str(FACE), "--prompts", "a portrait photo"]


@pytest.mark.parametrize("extra, message", [
    (["--size", "100x100"], "multiples of 8"),
    (["--presets", "balanced,bogus"], "bad preset 'bogus'"),
    (["--presets", "full,fast"], "reference arm"),
    (["--seeds", "one"], "seed 'one' is not a whole number"),
    (["--matrix", "usecases"], "--matrix defines"),
])
def test_generate_cli_refuses_bad_input_with_exit_code_2(tmp_path, capsys, extra, message):
    assert main_generate([*BASE_ARGS, "--db", str(tmp_path / "s.db"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_generate_cli_refuses_missing_face_and_prompts_file(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    assert main_generate(["--faces", str(tmp_path / "nope.jpg"), "--prompts", "x", "--db", db]) == 2
    assert "not found" in capsys.readouterr().err
    assert main_generate(["--faces", str(FACE), "--prompts", "prompts.txt", "--db", db]) == 2
    assert "prompts file not found" in capsys.readouterr().err


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSTANTID_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "review", "generate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def cli_engine(tiny_engine, monkeypatch):
    """``review generate`` in this process on the session's tiny engine: the command's own load_engine call is
    answered with it (its arguments checked), so the run costs generations, not a torch import and a load."""
    asked = []

    def load_engine(stack, **options):
        asked.append((stack, options))
        return tiny_engine

    monkeypatch.setattr(instantid, "load_engine", load_engine)
    return asked


def test_generate_cli_acceptance_on_tiny_stack_and_resume(tmp_path, capsys, cli_engine):
    db = tmp_path / "out" / "study.db"
    args = [*BASE_ARGS, "--db", str(db), "--presets", "fast", "--seeds", "1,2", "--steps", "1", "--size", "64x64",
            "--ip-weight", "0.5", "--negative-prompt", "blurry", "--no-warmup", "--quiet"]  # 4 images: the
    # runner's own behaviour (warm-up, several presets) is the `run` fixture's; this checks the command's wiring
    assert main_generate(args) == 0, capsys.readouterr().err[-3000:]
    assert cli_engine == [("tiny", dict(base=None, device=None, dtype=None, face_model_root=None,
                                        cuda_graphs="auto"))]
    assert "generated 4 images, added 2 pairs" in capsys.readouterr().out
    with Store(db) as store:
        assert Counter(g["preset"] for g in generations(store)) == {"full": 2, "fast": 2}
        pairs = store.list_pairs()
        assert len(pairs) == 2 and all(0.0 <= p["ssim"] <= 1.0 for p in pairs)
        assert all(p["full_step_median_s"] > 0 and p["sel_total_s"] > 0 for p in pairs)
        settings = {(p["seed"], p["steps"], p["width"], p["height"], p["ip_weight"], p["cn_scale"],
                     p["guidance_scale"], p["negative_prompt"]) for p in pairs}  # every flag reached the rows
        assert settings == {(seed, 1, 64, 64, 0.5, 0.8, 5.0, "blurry") for seed in (1, 2)}
        assert "ssim" in [c.name for c in store.db["pairs"].columns]
    assert len(image_files(db.parent)) == 4
    assert main_generate(args) == 0, capsys.readouterr().err[-3000:]
    assert "generated 0 images, added 0 pairs; 2 pairs in" in capsys.readouterr().out
    with Store(db) as store:
        assert len(generations(store)) == 4 and len(store.list_pairs()) == 2
    assert len(image_files(db.parent)) == 4


def test_generate_cli_exit_code_2_in_a_subprocess(tmp_path):
    proc = cli(tmp_path, *BASE_ARGS, "--db", str(tmp_path / "s.db"), "--size", "127x128")
    assert proc.returncode == 2 and "multiples of 8" in proc.stderr

"""Batch runs with bad faces, and generations that fail: the good faces are processed, each bad one is reported
by file name with its reason, the run exits non-zero with a summary; a failed generation leaves no face,
condition or image behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

import instantid
from instantid import GenerationError, GenerationSettings
from review.generation.conditions import DATA_DIR, Condition
from review.generation.jobs import PairRunner
from review.store import Store

FACE = DATA_DIR / "faces" / "astronaut.jpg"


def test_a_failed_generation_writes_no_face_condition_or_image(tiny_engine, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise GenerationError("out of memory (simulated)")

    monkeypatch.setattr(tiny_engine, "generate", fail)
    with Store(tmp_path / "study.db") as store:
        runner = PairRunner(tiny_engine, store, tmp_path, warmup=False)
        condition = Condition(face=FACE, prompt="a portrait", seed=1,
                              settings=GenerationSettings(steps=1, width=64, height=64))
        with pytest.raises(GenerationError):
            runner.run_condition(condition, ["fast"])
        assert [store.db[t].count for t in ("faces", "conditions", "images", "generations")] == [0, 0, 0, 0]
    assert not any((tmp_path / "images").glob("*")) if (tmp_path / "images").exists() else True


def test_a_folder_run_processes_the_good_faces_and_names_each_bad_one(tiny_engine, tmp_path, capsys, monkeypatch):
    from review.cli.generate import main_generate

    monkeypatch.setattr(instantid, "load_engine", lambda stack, **options: tiny_engine)  # the session's, not a new one

    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(FACE, faces / "good.jpg")
    (faces / "notes.png").write_bytes(b"not an image at all")
    Image.new("RGB", (1, 1)).save(faces / "one_pixel.png")
    Image.new("RGB", (24, 24), (120, 120, 120)).save(faces / "blank.png")
    code = main_generate(["--db", str(tmp_path / "out" / "study.db"), "--faces", str(faces), "--prompts", "a portrait",
                          "--presets", "fast", "--seeds", "1", "--steps", "1", "--size", "64x64", "--no-warmup",
                          "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "3 face file(s) skipped, the others were processed" in err
    for name in ("notes.png", "one_pixel.png", "blank.png"):
        assert name in err
    assert "Traceback" not in err
    with Store(tmp_path / "out" / "study.db", read_only=True) as store:
        assert [p["preset"] for p in store.list_pairs()] == ["fast"]  # the good face was processed
        assert store.db["faces"].count == 1 and store.db["conditions"].count == 1


def test_a_duplicate_upload_reuses_the_stored_face_and_says_so(tmp_path):
    import hashlib

    from fixtures_review import make_services

    from review.ui.generate_tab import make_job

    services = make_services(tmp_path / "app", seeds=(0,), presets=("fast",))
    photo = tmp_path / "me.jpg"
    shutil.copy(FACE, photo)
    form = dict(prompt="a portrait", negative="", presets=["fast"], custom="", seeds="0", steps=4, width=128,
                height=128, ip_weight=0.8, cn_scale=0.8, guidance=5.0)
    first = make_job(services, str(photo), **form)
    assert not any("already in the study" in n for n in first.notes)
    sha = hashlib.sha256(Path(first.face_path).read_bytes()).hexdigest()  # what PairRunner registers it under
    face = services.store.add_face(sha256=sha, file="f" * 32 + ".png", width=64, height=64)
    again = make_job(services, str(photo), **form)  # the same photo uploaded again
    assert f"this face is already in the study (face #{face['id']}); its stored copy is reused" in again.notes


def test_the_form_becomes_one_job_with_one_normal_form_of_its_presets(tmp_path):
    from fixtures_review import make_services

    from review.study.trials import VoteRefused
    from review.ui.generate_tab import make_job

    services = make_services(tmp_path / "app", seeds=(0,), presets=("fast",))
    photo = tmp_path / "me.jpg"
    shutil.copy(FACE, photo)
    form = dict(prompt=" a portrait ", negative=" blurry ", presets=["fast", " Balanced"], custom="output:0-2, FAST",
                seeds="0, 2-3", steps=4.0, width=128, height=96, ip_weight=0.5, cn_scale=0.6, guidance=7.5)
    job = make_job(services, str(photo), **form)
    plan = job.submission  # the dropdown and the text box, normalised once (instantid.split_presets), distinct
    assert (plan.prompt, plan.presets, plan.seeds) == ("a portrait", ("fast", "balanced", "output:0-2"), (0, 2, 3))
    assert plan.settings == GenerationSettings(negative_prompt="blurry", steps=4, width=128, height=96,
                                               ip_weight=0.5, cn_scale=0.6, guidance_scale=7.5)
    for custom, message in (("full", "'full' is the reference arm"), ("a" * 201, "at most 200")):
        with pytest.raises(VoteRefused, match=message):
            make_job(services, str(photo), **{**form, "custom": custom})
    with pytest.raises(VoteRefused, match="choose at least one preset"):
        make_job(services, str(photo), **{**form, "presets": [], "custom": " , "})
    with pytest.raises(VoteRefused, match="guidance scale must be between 0 and 30, got 31"):
        make_job(services, str(photo), **{**form, "guidance": 31})

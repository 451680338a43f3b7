"""One generation-settings type: defined once in instantid (torch-free), checked when made, composed by the request,
the condition and the job, stored from its own field list; one size parser."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instantid import (
    LIMITS,
    GenerationRequest,
    GenerationSettings,
    RequestError,
    parse_size,
    settings_problems,
    size_argument,
)
from review.generation.conditions import DATA_DIR, Condition
from review.store import Store, condition_inputs, condition_key

ROOT = Path(__file__).resolve().parent.parent


def test_settings_are_checked_when_made_and_list_every_problem():
    with pytest.raises(RequestError) as info:
        GenerationSettings(steps=0, width=1004, height=4096, ip_weight=float("nan"), cn_scale="x",
                           guidance_scale=31, negative_prompt="a\x00b")
    assert info.value.problems == [
        "the negative prompt contains a NUL character", "steps must be between 1 and 100, got 0",
        "width 1004 is not a multiple of 8 (try 1008)", "height must be between 64 and 2048, got 4096",
        "ip_weight must be a finite number, got nan", "cn_scale must be a number",
        "guidance scale must be between 0 and 30, got 31"]
    assert settings_problems(GenerationSettings().as_dict()) == []
    tight = dataclasses.replace(LIMITS, max_size=1024)  # the same check at a form's tighter limits
    assert settings_problems({**GenerationSettings().as_dict(), "width": 2048}, tight) == [
        "width must be between 64 and 1024, got 2048"]


def test_settings_hold_plain_types_whatever_they_were_given():
    settings = GenerationSettings(steps=30.0, width=np.int64(128), height=128, ip_weight=np.float32(0.5), cn_scale=1)
    assert settings == GenerationSettings(steps=30, width=128, height=128, ip_weight=0.5, cn_scale=1.0)
    assert [type(v) for v in settings.as_dict().values()] == [str, int, int, int, float, float, float]
    assert settings.size == "128x128" and hash(settings) == hash(GenerationSettings(width=128, height=128,
                                                                                    ip_weight=0.5, cn_scale=1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 0  # type: ignore[misc]


def test_the_request_composes_the_settings_and_checks_prompt_and_seed():
    request = GenerationRequest(face_image=None, prompt="a portrait", seed=7.0)
    assert request.settings == GenerationSettings() and request.seed == 7 and isinstance(request.seed, int)
    with pytest.raises(RequestError, match="the prompt is empty.*; seed must be between 0 and 4294967295"):
        GenerationRequest(face_image=None, prompt=" ", seed=-1)
    with pytest.raises(TypeError, match="settings must be GenerationSettings"):
        GenerationRequest(face_image=None, prompt="x", settings={"steps": 4})  # type: ignore[arg-type]
    assert [f.name for f in dataclasses.fields(GenerationRequest)] == ["face_image", "prompt", "seed", "settings",
                                                                        "face"]  # composed, not re-listed


def test_a_condition_is_face_prompt_seed_and_settings():
    settings = GenerationSettings(steps=2, width=64, height=64)
    condition = Condition(face=DATA_DIR / "faces" / "astronaut.jpg", prompt="p", seed=3, settings=settings)
    assert condition.inputs() == {"prompt": "p", "seed": 3, **settings.as_dict()}
    request = condition.request(None, steps=1)  # the warm-up's request: fewer steps, everything else the same
    assert (request.prompt, request.seed, request.settings) == ("p", 3, dataclasses.replace(settings, steps=1))
    assert [f.name for f in dataclasses.fields(Condition)] == ["face", "prompt", "seed", "settings", "group"]


def test_the_store_takes_its_condition_columns_from_the_type(tmp_path):
    with Store(tmp_path / "study.db") as store:
        columns = [c.name for c in store.db["conditions"].columns]
        assert set(GenerationSettings.names()) <= set(columns)  # a new field needs a migration: this fails first
        face = store.add_face(sha256="a" * 64, file="f.jpg", width=8, height=8)
        settings = GenerationSettings(negative_prompt="n", steps=4, width=64, height=64)
        row = store.upsert_condition(face_id=face["id"], prompt="p", seed=1, stack="tiny", **settings.as_dict())
        assert {name: row[name] for name in GenerationSettings.names()} == settings.as_dict()
        assert row["key"] == condition_key("a" * 64, prompt="p", seed=1, stack="tiny", **settings.as_dict())
    with pytest.raises(TypeError, match=r"unknown \['sampler'\], missing \['guidance_scale'\]"):
        inputs = {**settings.as_dict(), "sampler": "euler"}
        del inputs["guidance_scale"]
        condition_inputs(prompt="p", seed=1, stack="tiny", **inputs)


def test_pair_rows_carry_every_setting(tmp_path):
    from fixtures_review import make_study

    store, _ = make_study(tmp_path, seeds=(0,), presets=("fast",))
    with store:
        [pair] = store.list_pairs()
        assert set(GenerationSettings.names()) <= set(pair)


@pytest.mark.parametrize(("text", "size"), [("1024x1024", (1024, 1024)), (" 832X1216 ", (832, 1216)),
                                            ("8x8", (8, 8))])
def test_sizes_parse(text: str, size: tuple[int, int]):
    assert parse_size(text) == size == size_argument(text)


@pytest.mark.parametrize(("text", "message"), [("1024", "size must look like 1024x1024, got '1024'"),
                                               ("axb", "size must look like"), ("100x100", "multiples of 8, got 100x100"),
                                               ("0x64", "positive multiples of 8"), ("1x2x3", "must look like")])
def test_bad_sizes_are_refused_with_the_same_message_everywhere(text: str, message: str):
    with pytest.raises(RequestError, match=message):
        parse_size(text)
    with pytest.raises(argparse.ArgumentTypeError, match=message):  # the CLIs' --size: argparse shows this text
        size_argument(text)


def test_the_settings_module_loads_without_torch():
    code = ("import sys; from instantid import GenerationSettings, GenerationRequest, parse_size, split_presets; "
            "import review.store, review.generation.conditions; "
            "GenerationRequest(face_image=None, prompt='p', settings=GenerationSettings()); "
            "print(sorted(m for m in ('torch', 'diffusers', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"

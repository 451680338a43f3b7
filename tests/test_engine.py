"""The offline engine end to end, as the app and the CLI use it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from instantid import GenerationRequest, GenerationSettings, PresetError


@pytest.fixture(scope="module")
def face_photo():
    from skimage.data import astronaut

    return Image.fromarray(astronaut())


def request(photo, **kw):
    return GenerationRequest(face_image=photo, prompt="a portrait of an astronaut",
                             settings=GenerationSettings(steps=2, width=64, height=64), **kw)


def test_tiny_engine_generates_deterministically(tiny_engine, face_photo):
    a = tiny_engine.generate(request(face_photo, seed=4), "full")
    b = tiny_engine.generate(request(face_photo, seed=4), "full")
    assert a.layer_count == 70 and a.image.size == (64, 64) and a.image.mode == "RGB"
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert len(a.step_times_s) == 2 and a.total_s >= sum(a.step_times_s)
    assert a.face.embedding.shape == (512,)


def test_presets_change_the_image_and_report_their_layers(tiny_engine, face_photo):
    full = tiny_engine.generate(request(face_photo, seed=2), "full")
    fast = tiny_engine.generate(request(face_photo, seed=2), "fast")
    none = tiny_engine.generate(request(face_photo, seed=2), "none")
    assert (fast.layer_count, none.layer_count) == (20, 0)
    assert all(name.startswith("up_blocks.0.attentions.") for name in fast.layers)
    assert not np.array_equal(np.asarray(full.image), np.asarray(fast.image))


def test_unknown_preset_is_a_clear_error(tiny_engine, face_photo):
    with pytest.raises(PresetError, match="accepted"):
        tiny_engine.generate(request(face_photo), "fastest")


def test_describe_names_device_and_versions(tiny_engine):
    info = tiny_engine.describe()
    assert info["stack"] == "tiny" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["torch"] and info["diffusers"] and info["layers"] == 70


def test_cli_generate_writes_the_image_and_prints_step_times(tmp_path, face_photo, monkeypatch, capsys):
    """``python -m instantid generate`` through its dispatcher, in-process (the real process, its stdout and its
    stderr: tests/test_cli_quiet.py)."""
    from instantid.__main__ import main

    face_photo.save(tmp_path / "face.png")
    monkeypatch.setenv("INSTANTID_CACHE", str(tmp_path / "cache"))
    try:
        code = main(["generate", "--stack", "tiny", "--face", str(tmp_path / "face.png"), "--prompt", "a portrait",
                     "--preset", "fast", "--seed", "3", "--steps", "2", "--size", "64x64", "--out",
                     str(tmp_path / "out.png"), "--json"])
    finally:
        logging.captureWarnings(False)  # the dispatcher routes warnings to logging for its process
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["preset"] == "fast" and report["layer_count"] == 20 and len(report["step_times_s"]) == 2
    assert Image.open(tmp_path / "out.png").size == (64, 64)


def test_cli_generate_reports_an_unreadable_face(tmp_path, capsys):
    from instantid.__main__ import main

    (tmp_path / "face.png").write_bytes(b"not an image")
    try:
        code = main(["generate", "--face", str(tmp_path / "face.png"), "--prompt", "x", "--out",
                     str(tmp_path / "o.png")])
    finally:
        logging.captureWarnings(False)
    assert code == 2 and "face.png" in capsys.readouterr().err


def test_over_long_prompt_is_reported_as_truncated(tiny_engine, face_photo):
    long = "a very detailed portrait " * 30
    assert tiny_engine.prompt_tokens(long) > 77
    result = tiny_engine.generate(GenerationRequest(face_image=face_photo, prompt=long, settings=GenerationSettings(
        steps=1, width=64, height=64)), "none")
    assert any("truncated" in w for w in result.warnings)


def test_unknown_topology_refuses_selective_presets_and_runs_full(tmp_path):
    """A UNet whose cross-attention layers match no layer map: the adapter still loads (keys from the UNet's
    own attn2 order), and a selective preset runs as full with a warning."""
    import numpy as np_
    from diffusers import UNet2DConditionModel

    from instantid import Face
    from instantid.adapter import attach_face_adapter, plain_layers
    from instantid.engine import Engine
    from instantid.layers import attn2_layer_names, layer_map_for
    from instantid.loading import layer_widths
    from instantid.pipeline import InstantIDPipeline
    from instantid.tiny import TinyConfig, random_adapter_state, tiny_components

    parts = tiny_components(TinyConfig(seed=1))
    unet = UNet2DConditionModel(**{**parts["unet"].config, "transformer_layers_per_block": (1, 1, 3)})
    assert layer_map_for(unet) is None
    pipe = InstantIDPipeline(**{**parts, "unet": unet})
    layers = plain_layers(tuple(attn2_layer_names(unet)))
    state = random_adapter_state(layers, layer_widths(unet, layers), resampler_width=128)
    patcher = attach_face_adapter(pipe, state, "odd.bin")
    engine = Engine("odd", pipe, patcher, face_analyzer=None)
    face = Face(bbox=np_.array([0, 0, 64, 64.0]), kps=np_.full((5, 2), 32.0),
                embedding=np_.ones(512, dtype=np_.float32), det_score=0.9)
    result = engine.generate(GenerationRequest(face_image=None, face=face, prompt="x", settings=GenerationSettings(
        steps=1, width=64, height=64)), "fast")
    assert result.layer_count == len(layers) == 23  # down 2+6, mid 3, up 9+3
    assert any("matches no known layer map" in w for w in result.warnings)


def test_non_square_output_gets_an_undistorted_keypoint_hint(tiny_engine, face_photo, monkeypatch):
    seen = {}
    original = tiny_engine.pipe.__class__.__call__

    def spy(pipe, prompt, **kw):
        seen["hint"] = kw["image"]
        return original(pipe, prompt, **kw)

    monkeypatch.setattr(tiny_engine.pipe.__class__, "__call__", spy)
    result = tiny_engine.generate(GenerationRequest(face_image=face_photo, prompt="x", settings=GenerationSettings(
        steps=1, width=160, height=128)), "none")
    assert result.image.size == (160, 128) and seen["hint"].size == (160, 128)
    # the 512x512 photo covers 160x128 at scale 160/512, centred (y offset (128 - 160) / 2 = -16): the hint the
    # engine drew must be exactly that one, not one from raw or stretched keypoints (fails if fit_kps breaks)
    from instantid.face import draw_kps

    kps = np.asarray(result.face.kps, dtype=np.float64)
    expected = np.stack([kps[:, 0] * 160 / 512, kps[:, 1] * 160 / 512 - 16], axis=1)
    hint = np.asarray(seen["hint"])
    assert np.array_equal(hint, np.asarray(draw_kps((160, 128), expected)))
    stretched = np.stack([kps[:, 0] * 160 / 512, kps[:, 1] * 128 / 512], axis=1)
    assert not np.array_equal(hint, np.asarray(draw_kps((160, 128), stretched)))
    assert not np.array_equal(hint, np.asarray(draw_kps((160, 128), kps)))

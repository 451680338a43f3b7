"""The step benchmark, the step helper it times, telemetry and the auto-K preset (tiny stack, CPU; no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from instantid.bench_report import bootstrap_ci, summarize
from instantid.engine import Engine
from instantid.presets import PresetError, resolve_preset
from instantid.telemetry import auto_preset, load_telemetry, record_telemetry, save_telemetry
from instantid.work_model import preset_work

ROOT = Path(__file__).resolve().parents[1]
PRESET_FIELDS = {"median_ms", "ratio_to_full", "ratio_ci", "ratio_to_none", "flops_share", "bytes_share",
                 "switch_ms", "peak_mem_mb", "layers"}
META_FIELDS = {"device", "dtype", "torch", "diffusers", "gpu_name", "date", "stack", "width", "height", "steps",
               "reps", "timer", "mem_kind"}


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny stack is dispatch-bound; 2 threads on a shared 2-core CPU crawl (seconds per step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def engine(tiny_pipe):
    """An engine over the session's tiny pipeline (no face analyser); leaves every layer patched."""
    pipe, patcher, _ = tiny_pipe
    eng = Engine("tiny", pipe, patcher, face_analyzer=None)
    yield eng
    patcher.apply(frozenset(patcher.face))
    patcher.state.cache_kv, patcher.state.telemetry = True, None


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # 1 thread: steady on a shared CPU
    cmd = [sys.executable, "-m", "instantid.bench", "--stack", "tiny", "--presets", "full,fast,none",
           "--steps", "1", "--reps", "5", "--size", "64x64", "--threads", "1", "--json", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    return printed


def test_benchmark_json_has_every_field(bench_json):
    assert set(bench_json["presets"]) == {"full", "fast", "none", "full#2"}
    assert META_FIELDS <= set(bench_json["meta"])
    assert bench_json["meta"]["device"] == "cpu" and bench_json["meta"]["timer"] == "perf_counter"
    assert isinstance(bench_json["aa_ratio"], float) and len(bench_json["aa_ci"]) == 2
    for name, row in bench_json["presets"].items():
        assert PRESET_FIELDS <= set(row), name
        assert len(row["rep_ms"]) == 5 and row["median_ms"] > 0
        low, high = row["ratio_ci"]
        assert low <= row["ratio_to_full"] <= high
    assert bench_json["presets"]["full"]["ratio_to_full"] == 1.0
    assert bench_json["presets"]["none"]["ratio_to_none"] == 1.0
    assert {"aa_contains_1", "resolved", "none_ratio", "proportionality_r2"} <= set(bench_json["acceptance"])


def test_benchmark_layers_and_work_shares_match_the_work_model(bench_json, tiny_pipe):
    from instantid.layers import layer_map_for

    layers = layer_map_for(tiny_pipe[0].unet)
    for name, row in bench_json["presets"].items():
        preset = resolve_preset("full" if name == "full#2" else name, layers)
        assert row["layers"] == len(preset.layers) and set(row["layer_names"]) == preset.layers
        work = preset_work(preset.layers, layers, 64, 64, batch=2, dtype_bytes=4, kv_cache=True)
        assert row["flops_share"] == pytest.approx(work["flops_share"])
        assert row["bytes_share"] == pytest.approx(work["bytes_share"])


def test_nocache_arm_recomputes_face_kv_and_restores_state(engine):
    from instantid.bench import benchmark

    calls = {"n": 0}
    proc = next(iter(engine.patcher.face.values()))
    hook = proc.to_k_ip[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        result = benchmark(engine, ["full-nocache"], width=64, height=64, steps=2, reps=2, warmup=0)
    finally:
        hook.remove()
    # full and full#2 project once per arm-repetition (cache), full-nocache once per step: 2 * (1 + 1 + 2)
    assert calls["n"] == 8
    assert result["presets"]["full-nocache"]["cache_kv"] is False
    assert engine.patcher.state.cache_kv is True and engine.patcher.patched == frozenset(engine.patcher.face)


def test_denoise_helper_reproduces_the_pipeline(tiny_pipe):
    from instantid.step import build_step_inputs, denoise

    pipe, patcher, _ = tiny_pipe
    emb = np.random.RandomState(0).randn(512).astype(np.float32) * 20
    hint = PIL.Image.new("RGB", (64, 64))
    patcher.clear_cache()
    want = pipe("a portrait", emb, hint, width=64, height=64, num_inference_steps=2,
                generator=torch.Generator().manual_seed(3)).latents
    inputs = build_step_inputs(pipe, 64, 64, 2, prompt="a portrait", face_embedding=emb, keypoint_image=hint, seed=3)
    patcher.clear_cache()
    got = denoise(pipe, inputs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_auto_preset_picks_the_top_k_layers():
    contributions = {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.5, "e": 0.0}
    assert auto_preset(contributions, 2).layers == {"b", "d"}
    assert auto_preset(contributions, 3).layers == {"b", "c", "d"}
    assert auto_preset(contributions, 0).layers == frozenset()
    assert auto_preset(contributions, 3).name == "auto-3"
    with pytest.raises(PresetError):
        auto_preset(contributions, 6)
    with pytest.raises(PresetError, match="telemetry"):
        auto_preset({}, 1)


def test_telemetry_records_only_patched_layers_with_positive_ratios(engine, tmp_path):
    fast = resolve_preset("fast", engine.known_map).layers
    raw = record_telemetry(engine, steps=2, width=64, height=64, layers=fast)
    assert {layer for layer, _ in raw} == fast
    assert {step for _, step in raw} == {0, 1}
    assert all(ratio > 0 for ratio in raw.values())
    assert engine.patcher.patched == frozenset(engine.patcher.face)  # previous set restored
    path = save_telemetry(tmp_path / "t.json", raw, {"stack": "tiny"})
    contributions = load_telemetry(path)
    assert set(contributions) == fast
    assert json.loads(path.read_text())["per_step"].keys() == fast


def test_engine_resolves_auto_k_only_with_telemetry(engine, tmp_path):
    with pytest.raises(PresetError, match="telemetry"):
        engine.resolve("auto-3")
    names = sorted(engine.patcher.face)
    raw = {(name, 0): float(i) for i, name in enumerate(names)}
    engine.load_telemetry(save_telemetry(tmp_path / "t.json", raw))
    try:
        preset, layers, warnings = engine.resolve("auto-3")
        assert layers == set(names[-3:]) and preset.name == "auto-3" and not warnings
    finally:
        engine.telemetry = None


def test_shape_stack_builds_with_a_scaled_down_config_on_cpu():
    from instantid.bench_stack import TINY_UNET_CONFIG, build_shape_stack
    from instantid.step import build_step_inputs, denoise_step

    eng = build_shape_stack(TINY_UNET_CONFIG, "cpu", torch.float32, resampler_width=128)
    assert len(eng.known_map) == 70 and len(eng.patcher.face) == 70
    assert eng.pipe.vae is None and eng.pipe.text_encoder is None
    inputs = build_step_inputs(eng.pipe, 64, 64, 1)
    assert inputs.context[0].shape == (2, 77, 2048) and inputs.added_cond["text_embeds"].shape == (2, 1280)
    noise = denoise_step(eng.pipe, inputs, inputs.timesteps[0])
    assert noise.shape == (1, 4, 8, 8) and torch.isfinite(noise).all()


def test_sdxl_shape_config_is_the_sdxl_unet():
    from diffusers import UNet2DConditionModel

    from instantid.bench_stack import SDXL_UNET_CONFIG
    from instantid.layers import SDXL_LAYERS, layer_map_for
    from instantid.loading import layer_widths

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base 1.0 UNet
    layers = layer_map_for(unet)
    assert layers == SDXL_LAYERS
    assert layer_widths(unet, layers) == {layer.name: layer.width for layer in SDXL_LAYERS}


def test_sdxl_shape_refuses_cpu():
    from instantid.bench_stack import load_bench_stack

    with pytest.raises(SystemExit, match="CUDA"):
        load_bench_stack("sdxl-shape", device="cpu")


def test_bootstrap_ci_is_seeded_and_brackets_the_median():
    ratios = [1.01, 0.99, 1.02, 1.00, 1.03, 0.98]
    assert bootstrap_ci(ratios, seed=1) == bootstrap_ci(ratios, seed=1)
    low, high = bootstrap_ci(ratios, seed=1)
    assert low <= float(np.median(ratios)) <= high
    summary = summarize({"full": [10.0, 10.0, 10.0, 10.0, 10.0], "none": [8.0, 8.0, 8.0, 8.0, 8.0]})
    assert summary["none"]["ratio_to_full"] == 1.25 and summary["none"]["ratio_ci"] == [1.25, 1.25]
    assert summary["full"]["ratio_to_none"] == 1.25 and summary["full"]["time_share"] == 1.0


def test_gpu_check_script_parses():
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "--stack sdxl-shape" in text and "full,balanced,fast,output_only,none,full-nocache" in text

"""The step benchmark, the step helper it times, telemetry and the auto-K preset (tiny stack, CPU; no timing asserts)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from instantid.bench import runner as bench_runner
from instantid.bench.report import bootstrap_ci, format_table, summarize
from instantid.bench.work_model import preset_work
from instantid.engine import Engine
from instantid.presets import PresetError, resolve_preset
from instantid.telemetry import auto_preset, load_telemetry, record_telemetry, save_telemetry

ROOT = Path(__file__).resolve().parents[1]
PRESET_FIELDS = {"median_ms", "ratio_to_full", "ratio_ci", "ratio_to_none", "flops_share", "bytes_share",
                 "switch_ms", "switch_mem_mb", "peak_mem_mb", "layers", "window"}
META_FIELDS = {"device", "dtype", "torch", "diffusers", "gpu_name", "date", "stack", "width", "height", "steps",
               "reps", "timer", "mem_kind", "reps_done", "stopped_early", "work_share", "model_mb"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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
    """``python -m instantid.bench`` on the tiny stack, run in-process through its command line (``cli.main``):
    the printed JSON and the ``--out`` file. Threads and the "instantid" log level it sets are put back."""
    import contextlib
    import io
    import logging

    from instantid.bench.cli import main

    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--stack", "tiny", "--presets", "full,fast,none", "--steps", "1", "--reps", "5", "--warmup", "0",
            "--size", "64x64", "--threads", "1", "--json", "--out", str(out)]
    threads, level = torch.get_num_threads(), logging.getLogger("instantid").level
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
        logging.getLogger("instantid").setLevel(level)
    result = json.loads(printed.getvalue())
    assert result == json.loads(out.read_text())
    return result


def test_benchmark_json_has_every_field(bench_json):
    assert set(bench_json["presets"]) == {"full", "fast", "none", "full#2"}
    assert META_FIELDS <= set(bench_json["meta"])
    assert bench_json["meta"]["device"] == "cpu" and bench_json["meta"]["timer"] == "perf_counter"
    assert bench_json["meta"]["reps_done"] == 5 and bench_json["meta"]["stopped_early"] is False
    assert isinstance(bench_json["aa_ratio"], float) and len(bench_json["aa_ci"]) == 2
    for name, row in bench_json["presets"].items():
        assert PRESET_FIELDS <= set(row), name
        assert len(row["rep_ms"]) == 5 and row["median_ms"] > 0
        low, high = row["ratio_ci"]
        assert low <= row["ratio_to_full"] <= high
    assert bench_json["presets"]["full"]["ratio_to_full"] == 1.0
    assert bench_json["presets"]["none"]["ratio_to_none"] == 1.0
    assert {"aa_contains_1", "resolved", "none_ratio", "proportionality_r2"} <= set(bench_json["acceptance"])
    # goal 4 is computed from the work-model shares (full, fast, none: three points), never left empty
    r2 = bench_json["acceptance"]["proportionality_r2"]
    assert r2 is not None and 0.0 <= r2 <= 1.0


def test_switching_presets_holds_no_extra_memory(bench_json):
    """Switching swaps processors on the one UNet: the memory held after a switch is unchanged (resident set on
    CPU), while one copy of the models would add model_mb."""
    model = bench_json["meta"]["model_mb"]
    assert model > 1.0  # the tiny stack's UNet + IdentityNet + face modules
    for name, row in bench_json["presets"].items():
        assert abs(row["switch_mem_mb"]) < 0.05 * model, (name, row["switch_mem_mb"], model)
        assert row["switch_ms"] < 1000.0  # milliseconds, not a reload


def test_benchmark_layers_and_work_shares_match_the_work_model(bench_json, tiny_pipe):
    from instantid.layers import layer_map_for

    layers = layer_map_for(tiny_pipe[0].unet)
    for name, row in bench_json["presets"].items():
        preset = resolve_preset("full" if name == "full#2" else name, layers)
        assert row["layers"] == len(preset.layers) and set(row["layer_names"]) == preset.layers
        # as the benchmark counts it: against full, whose K/V projection is spread over the arm's 1 step
        work = preset_work(preset.layers, layers, 64, 64, batch=2, dtype_bytes=4, kv_cache=True,
                           reference_kv_cache=True, steps=1)
        assert row["flops_share"] == pytest.approx(work["flops_share"])
        assert row["bytes_share"] == pytest.approx(work["bytes_share"])


def test_nocache_arm_recomputes_face_kv_and_restores_state(engine):
    from instantid.bench.runner import benchmark

    calls = {"n": 0}
    proc = next(iter(engine.patcher.face.values()))
    hook = proc.to_k_ip[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        result = benchmark(engine, ["full-nocache"], width=64, height=64, steps=2, reps=1, warmup=0)
    finally:
        hook.remove()
    # full and full#2 project once per arm-repetition (cache), full-nocache once per step: 1 + 1 + 2
    assert calls["n"] == 4
    rows = result["presets"]
    assert rows["full-nocache"]["cache_kv"] is False
    # face-branch work against full as it runs (K/V once per 2-step repetition): full-nocache does more
    names = frozenset(engine.patcher.face)
    want = preset_work(names, engine.known_map, 64, 64, batch=2, dtype_bytes=4, kv_cache=False,
                       reference_kv_cache=True, steps=2)
    for key in ("flops_share", "bytes_share"):
        assert rows["full"][key] == rows["full#2"][key] == pytest.approx(1.0)
        assert rows["full-nocache"][key] == pytest.approx(want[key]) and want[key] > 1.0
    table = format_table(result)
    nocache_line = next(line for line in table.splitlines() if line.startswith("full-nocache"))
    assert f"{rows['full-nocache']['flops_share']:.3f}" in nocache_line
    assert "flops/full" in table and "full-nocache every step" in table
    assert engine.patcher.state.cache_kv is True and engine.patcher.patched == frozenset(engine.patcher.face)


def test_time_budget_reports_fewer_repetitions_instead_of_none(engine):
    import time

    from instantid.bench.runner import benchmark

    result = benchmark(engine, ["none"], width=64, height=64, steps=1, reps=5, warmup=0,
                       deadline=time.monotonic())  # already past: stop after the first measured repetition
    assert result["meta"]["reps_done"] == 1 and result["meta"]["stopped_early"] is True
    assert all(len(row["rep_ms"]) == 1 for row in result["presets"].values())
    assert "time budget stopped it before 5" in format_table(result)
    assert engine.patcher.patched == frozenset(engine.patcher.face)


def test_denoise_helper_reproduces_the_pipeline(tiny_pipe):
    from instantid.step import build_step_inputs, denoise

    pipe, patcher, _ = tiny_pipe
    emb = np.random.RandomState(0).randn(512).astype(np.float32) * 20
    hint = PIL.Image.new("RGB", (64, 64))
    patcher.clear_cache()
    want = pipe("a portrait", image=hint, face_embedding=emb, width=64, height=64, num_inference_steps=2,
                generator=torch.Generator().manual_seed(3), output_type="latent").images
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
    from instantid.bench.stack import TINY_UNET_CONFIG, build_shape_stack
    from instantid.step import build_step_inputs, denoise_step

    eng = build_shape_stack(TINY_UNET_CONFIG, "cpu", torch.float32, resampler_width=128)
    assert len(eng.known_map) == 70 and len(eng.patcher.face) == 70
    assert eng.pipe.vae is None and eng.pipe.text_encoder is None
    inputs = build_step_inputs(eng.pipe, 64, 64, 1)
    assert inputs.context[0].shape == (2, 77, 2048) and inputs.added_cond["text_embeds"].shape == (2, 1280)
    noise = denoise_step(eng.pipe, inputs, inputs.timesteps[0])
    assert noise.shape == (1, 4, 8, 8) and torch.isfinite(noise).all()


def test_sdxl_shape_refuses_cpu():
    from instantid.bench.stack import load_bench_stack

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
    assert "--stack sdxl-shape" in text and ",".join(GPU_CHECK_PRESETS) in text and "--mode both" in text
    assert 'BUDGET="${BUDGET:-400}"' in text and "--time-budget" in text and "timeout -k 5" in text
    assert "--runs" in text and "--warmup-s" in text and "--check-graphs 3" in text and "--cuda-graphs" in text
    assert "bench-graphs.json" in text


GPU_CHECK_PRESETS = ["full", "balanced", "fast", "none", "full-stock", "balanced-stock", "fast-stock",
                     "none-stock"]  # gpu_check.sh


def checked_steps(monkeypatch, engine: Engine, inputs_check=None) -> list[tuple]:
    """Wraps the benchmark's eager step: per call (patched layers, cache_kv, face-branch calls, noise, stock
    processors with a non-zero scale); ``inputs_check(inputs)`` first when given."""
    import instantid.bench.arms as bench_arms
    from instantid import step

    steps: list[tuple] = []

    def checked_step(pipe_, inputs, t, latents=None):
        if inputs_check is not None:
            inputs_check(inputs)
        state = engine.patcher.state
        before = state.face_calls
        noise = step.denoise_step(pipe_, inputs, t, latents)
        stock = sum(type(p) is IPAdapterAttnProcessor2_0 and p.scale[0] != 0
                    for p in pipe_.unet.attn_processors.values())
        steps.append((engine.patcher.patched, state.cache_kv, state.face_calls - before, noise, stock))
        return noise

    monkeypatch.setattr(bench_arms, "denoise_step", checked_step)
    return steps


def test_gpu_check_arms_all_run_through_the_benchmark(engine, monkeypatch):
    """Every arm of the GPU run (scripts/gpu_check.sh: eager, graph-runner with the CPU stand-in for capture,
    diffusers stock with per-layer zero scales) through ``benchmark()`` on the tiny stack (same 70-layer map and
    presets as SDXL): their order, layers, face-branch calls, graphs and goals. The same arms at SDXL's full size
    and dtype: the meta dry run below."""
    steps = checked_steps(monkeypatch, engine)
    result = bench_runner.benchmark(engine, GPU_CHECK_PRESETS, width=64, height=64, steps=1, reps=1, warmup=0,
                                    mode="both")
    base = ["full", "balanced", "fast", "none", "full#2"]
    stock_arms = [p for p in GPU_CHECK_PRESETS if p.endswith("-stock")]
    assert result["order"] == [*base, *(f"{a}[g]" for a in base), *stock_arms]
    assert len(steps) == 9  # the eager and stock arms; the [g] arms went through the graph runner
    want_layers = {"full": 70, "balanced": 55, "fast": 20, "none": 0, "full#2": 70}
    want = {**want_layers, **{f"{a}[g]": n for a, n in want_layers.items()},
            **{f"{a}-stock": n for a, n in want_layers.items() if a != "full#2"}}
    assert {arm: row["layers"] for arm, row in result["presets"].items()} == want
    # eager arms ran our face branch in their patched layers; stock arms ran diffusers' processors with a non-zero
    # scale in exactly the preset's layers (scale 0 elsewhere: skipped)
    ours = sorted(calls for patched, _, calls, _, stock in steps if not stock and calls)
    assert ours == [20, 55, 70, 70]
    assert sorted(stock for *_, stock in steps) == [0, 0, 0, 0, 0, 0, 20, 55, 70]
    runner = engine.graph_runner
    assert runner is not None and runner.graph_steps == 5 and runner.eager_steps == 0 and runner.fallback_reason is None
    assert len(runner.graphs) == 4  # full (shared by full#2), balanced, fast, none
    assert {len(e.kv) for e in runner.graphs.values()} == {0, 20, 55, 70}  # K/V buffers of the cached layers
    assert result["presets"]["none"]["flops_share"] == 0.0 and result["presets"]["full"]["flops_share"] == 1.0
    assert set(result["graphs_speedup"]) == set(base) and result["ours_vs_stock"]["ours"] == "full[g]"
    statuses = {g["goal"].split(" ")[0]: g["status"] for g in result["goals"]}
    assert len(statuses) == 6 and statuses["runs'"] == "N/A"  # one run: no spread
    assert engine.patcher.patched == frozenset(engine.patcher.face) and engine.patcher.state.cache_kv is True
    assert all(p.scale == [engine.patcher.scale] for p in engine.patcher.stock.values())  # stock zeros undone


def test_a_step_window_runs_the_face_branch_only_inside_it(engine):
    from instantid.bench.arms import arm_work_share, make_arms, time_arm
    from instantid.bench.runner import benchmark
    from instantid.step import build_step_inputs

    arms = {a.name: a for a in make_arms(engine, ["full@0-0.5", "fast@0.5-1"])}
    assert arms["full@0-0.5"].window == (0.0, 0.5) and arms["full"].window == (0.0, 1.0)
    inputs, state = build_step_inputs(engine.pipe, 64, 64, 2), engine.patcher.state
    calls = {}
    for name in ("full", "full@0-0.5"):
        before = state.face_calls
        time_arm(engine, inputs, arms[name], 2)
        calls[name] = state.face_calls - before
    assert calls["full@0-0.5"] * 2 == calls["full"] > 0  # step 0 of 2 only
    assert state.active is True  # restored for the pipeline
    full = arm_work_share(arms["full"], engine, 64, 64, 4, 4)
    half = arm_work_share(arms["full@0-0.5"], engine, 64, 64, 4, 4)
    assert full["flops_share"] == pytest.approx(1.0)
    # less than full; not half on this tiny stack, where the one K/V projection per run is most of the work
    assert 0.0 < half["flops_share"] < 1.0 and 0.0 < half["bytes_share"] < 1.0
    # at SDXL's size attention dominates: half the steps is about half the work (30 steps, 1024x1024)
    from types import SimpleNamespace

    from instantid.bench.arms import Arm
    from instantid.layers import SDXL_LAYERS

    names = frozenset(layer.name for layer in SDXL_LAYERS)
    sdxl = SimpleNamespace(known_map=SDXL_LAYERS, patcher=SimpleNamespace(face=dict.fromkeys(names)))
    shares = [arm_work_share(Arm("x", names, window=w), sdxl, 1024, 1024, 30, 2)["flops_share"]
              for w in ((0.0, 1.0), (0.0, 0.5), (0.5, 1.0))]
    assert shares[0] == pytest.approx(1.0) and 0.5 < shares[1] < 0.55 and shares[1] == pytest.approx(shares[2])
    result_rows = benchmark(engine, ["full@0-0.5"], width=64, height=64, steps=2, reps=1, warmup=0)["presets"]
    assert result_rows["full@0-0.5"]["window"] == [0.0, 0.5] and result_rows["full"]["window"] == [0.0, 1.0]


@pytest.mark.parametrize("n", range(1, 9))
def test_williams_orders_balance_positions_and_predecessors(n):
    from collections import Counter

    from instantid.bench.arms import williams_orders

    orders = williams_orders(n)
    assert len(orders) == (1 if n == 1 else n if n % 2 == 0 else 2 * n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    positions = Counter((arm, i) for order in orders for i, arm in enumerate(order))
    follows = Counter((order[i - 1], order[i]) for order in orders for i in range(1, n))
    assert len(set(positions.values())) == 1 and len(positions) == n * n
    if n > 1:  # every arm directly after every other arm, equally often (the A/A pair included)
        assert len(set(follows.values())) == 1 and len(follows) == n * (n - 1)


def test_the_stock_arm_runs_diffusers_processors_on_the_same_weights_and_matches_ours(engine):
    """full-stock: every layer on diffusers' own IPAdapterAttnProcessor2_0 (the processors load_ip_adapter built,
    sharing our weights): the same noise prediction as our full arm, the face K/V projected at every step, and
    the patch-overhead figures (goal 2) in the output."""
    from instantid.bench.runner import benchmark
    from instantid.step import build_step_inputs, denoise_step

    patcher = engine.patcher
    assert set(patcher.stock) == set(patcher.face)
    name = next(iter(patcher.face))
    assert patcher.stock[name].to_k_ip is patcher.face[name].to_k_ip  # shared, not copied
    inputs = build_step_inputs(engine.pipe, 64, 64, 2)
    t = inputs.timesteps[0]
    patcher.apply(frozenset(patcher.face))
    patcher.clear_cache()
    ours = denoise_step(engine.pipe, inputs, t)
    patcher.apply_stock()
    assert all(type(p) is IPAdapterAttnProcessor2_0 for n, p in engine.pipe.unet.attn_processors.items()
               if n.removesuffix(".processor") in patcher.stock)
    stock = denoise_step(engine.pipe, inputs, t)
    torch.testing.assert_close(stock, ours, rtol=1e-4, atol=1e-5)

    calls = {"n": 0}
    hook = patcher.stock[name].to_k_ip[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        result = benchmark(engine, ["full-stock", "full-nocache"], width=64, height=64, steps=2, reps=1, warmup=0)
    finally:
        hook.remove()
    # full, full#2: once per repetition (cache); full-nocache and full-stock: every step (2) -> 1 + 1 + 2 + 2
    assert calls["n"] == 6
    overhead = result["acceptance"]["patch_overhead"]
    assert overhead["judged"] == "full-nocache" and set(overhead) >= {"full-nocache", "full", "met"}
    assert result["presets"]["full-stock"]["flops_share"] == result["presets"]["full-nocache"]["flops_share"]
    assert "patch overhead (goal 2" in format_table(result)
    assert all(isinstance(p, type(patcher.face[name])) for n, p in engine.pipe.unet.attn_processors.items()
               if n.removesuffix(".processor") in patcher.face)  # ours again after the run

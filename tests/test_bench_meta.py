"""The benchmark's GPU acceptance path on the meta device at full SDXL size (its own module, so a parallel test
worker runs it beside tests/test_bench.py instead of after it)."""

from __future__ import annotations

import pytest
import torch
from test_bench import checked_steps

from instantid.bench import runner as bench_runner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.slow
def test_sdxl_shape_benchmark_dry_run_on_meta_tensors(monkeypatch):
    """The GPU acceptance path (scripts/gpu_check.sh) without a GPU: the full-size sdxl-shape stack built on the
    meta device (real shapes and dtype fp16, no storage) and ``benchmark()`` run at 1024x1024 with CFG batch 2 over
    the graph-runner arms (full[g], full#2[g]; the CPU stand-in captures by calling the eager step, our face
    processors, on the static buffers and replays by calling it again) and diffusers' stock processors with
    per-layer zero scales (fast-stock), one step each. Every arm of the GPU run, eager ones included, with the tiny
    stack: tests/test_bench.py::test_gpu_check_arms_all_run_through_the_benchmark (a meta step costs 1-3 s of CPU whatever its size, so the 14-arm matrix runs there). Meta kernels check shapes but not the dtypes of ``linear`` / ``conv``, so a
    hook checks that every Linear / Conv2d input has its weight's dtype (CUDA would raise). No values exist:
    nothing about speed or numerics is tested."""
    from instantid.bench.stack import SDXL_UNET_CONFIG, build_shape_stack
    from instantid.layers import SDXL_LAYERS
    from instantid.loading import layer_widths

    eng = build_shape_stack(SDXL_UNET_CONFIG, "meta", torch.float16)
    pipe = eng.pipe
    assert eng.device.type == "meta" and eng.dtype == torch.float16 and eng.known_map == SDXL_LAYERS
    assert len(eng.patcher.face) == 70 and eng.patcher.patched == frozenset(eng.patcher.face)
    assert layer_widths(pipe.unet, SDXL_LAYERS) == {layer.name: layer.width for layer in SDXL_LAYERS}
    parts = {"unet": pipe.unet, "controlnet": pipe.controlnet, "face K/V": eng.patcher.modules,
             "resampler": pipe.resampler}
    params = {name: list(module.parameters()) for name, module in parts.items()}
    face_ids = {id(p) for p in params["face K/V"]}  # the face processors hang in the UNet's attention modules
    params["unet"] = [p for p in params["unet"] if id(p) not in face_ids]
    assert all(p.device.type == "meta" and p.dtype == torch.float16 for ps in params.values() for p in ps)
    assert sum(p.numel() for p in params["unet"]) == 2_567_463_684  # SDXL base 1.0 UNet
    counts = {name: sum(p.numel() for p in ps) / 1e9 for name, ps in params.items()}
    assert counts["controlnet"] == pytest.approx(1.251, abs=0.001)  # IdentityNet (ControlNetModel.from_unet)
    assert counts["face K/V"] + counts["resampler"] == pytest.approx(0.423, abs=0.001)  # ip-adapter.bin
    for layer in SDXL_LAYERS:  # to_k_ip / to_v_ip at the layer's real width
        assert eng.patcher.face[layer.name].to_k_ip[0].weight.shape == (layer.width, 2048)

    def full_size_inputs(inputs):
        assert inputs.latents.shape == (1, 4, 128, 128) and inputs.hint.shape == (2, 3, 1024, 1024)
        assert inputs.context[0].shape == (2, 77, 2048) and inputs.face_tokens.shape == (2, 16, 2048)
        assert inputs.added_cond["text_embeds"].shape == (2, 1280) and inputs.added_cond["time_ids"].shape == (2, 6)
        tensors = [inputs.latents, inputs.hint, inputs.context[0], inputs.face_tokens, *inputs.added_cond.values()]
        assert all(x.dtype == torch.float16 and x.device.type == "meta" for x in tensors)

    mismatches: list[str] = []

    def dtype_guard(module, args):
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and args and args[0].dtype != module.weight.dtype:
            mismatches.append(f"{type(module).__name__} {tuple(module.weight.shape)}: input {args[0].dtype}")

    steps = checked_steps(monkeypatch, eng, full_size_inputs)
    state = eng.patcher.state
    face_calls = state.face_calls
    hook = torch.nn.modules.module.register_module_forward_pre_hook(dtype_guard)
    try:
        result = bench_runner.benchmark(eng, ["fast-stock"], width=1024, height=1024, steps=1, reps=1, warmup=0,
                                        mode="graphs")
    finally:
        hook.remove()

    assert not mismatches, mismatches[:5]
    assert result["order"] == ["full[g]", "full#2[g]", "fast-stock"]
    (stock_step,) = steps  # fast-stock (eager): diffusers' processors with a scale in fast's 20 layers only
    assert stock_step[4] == 20 and stock_step[2] == 0
    runner = eng.graph_runner
    assert runner is not None and runner.graph_steps == 2 and runner.eager_steps == 0 and runner.fallback_reason is None
    assert state.face_calls - face_calls == 3 * 70  # our processors in every layer: the capture and two replays
    (entry,) = runner.graphs.values()  # full, shared by full#2
    assert len(entry.kv) == 70 and entry.output.shape == (1, 4, 128, 128) and entry.output.dtype == torch.float16
    assert all(k.shape[1] * k.shape[3] in (640, 1280) for _, k, _ in entry.kv)  # heads x head_dim = layer width
    for _, _, _, noise, _ in steps:  # the CFG-combined noise prediction at 1024^2
        assert noise.shape == (1, 4, 128, 128) and noise.dtype == torch.float16 and noise.device.type == "meta"
    assert result["meta"]["stack"] == "sdxl-shape" and result["meta"]["dtype"] == "float16"
    assert (result["meta"]["width"], result["meta"]["height"]) == (1024, 1024) and result["meta"]["mode"] == "graphs"
    assert result["presets"]["full[g]"]["flops_share"] == 1.0 and result["presets"]["fast-stock"]["layers"] == 20
    assert eng.patcher.patched == frozenset(eng.patcher.face) and eng.patcher.state.cache_kv is True
    assert all(p.scale == [eng.patcher.scale] for p in eng.patcher.stock.values())  # stock zeros undone



"""Checks the benchmark runs besides timing: graphs-vs-eager equality and the FLOPs of one step.

* :func:`check_graphs` runs the same few denoising steps (scheduler included) eagerly and through the graph
  runner and reports the max abs difference of the final latents and of each step's noise prediction, the
  capture time and the memory each captured graph holds. A failed capture comes back as ``ok: False`` with the
  error and its traceback, so the benchmark can carry on eagerly.
* :func:`count_step_flops` counts one step's FLOPs with ``torch.utils.flop_counter`` (matmuls, convolutions,
  attention) for ``full`` and ``none``: the achieved TFLOP/s column divides them by the measured step time.
"""

from __future__ import annotations

import logging
import time
import traceback

import torch

from instantid.engine import Engine
from instantid.step import build_step_inputs, denoise_step, run_denoising

logger = logging.getLogger(__name__)


def check_graphs(engine: Engine, runner, width: int, height: int, steps: int = 3, seed: int = 0) -> dict:
    """Eager vs graph-replayed denoising of ``steps`` steps with every face layer (see the module doc)."""
    pipe, patcher = engine.pipe, engine.patcher
    patcher.apply(frozenset(patcher.face))
    noise: dict[str, list[torch.Tensor]] = {"eager": [], "graphs": []}

    class Recorder:
        """Wraps a runner to keep each step's noise prediction."""

        def __init__(self, inner, into: list[torch.Tensor]) -> None:
            self.inner, self.into, self.mode = inner, into, inner.mode

        def bind(self, inputs) -> None:
            self.inner.bind(inputs)

        def predict(self, *args, **kwargs) -> torch.Tensor:
            out = self.inner.predict(*args, **kwargs)
            self.into.append(out.float().clone())
            return out

    from instantid.runners import EagerStepRunner

    try:
        patcher.clear_cache()
        inputs = build_step_inputs(pipe, width, height, steps, seed=seed)
        eager, _ = run_denoising(pipe, inputs, Recorder(EagerStepRunner(pipe), noise["eager"]))
        patcher.clear_cache()
        inputs = build_step_inputs(pipe, width, height, steps, seed=seed)
        captures = runner.captures
        started = time.perf_counter()
        graphs, _ = run_denoising(pipe, inputs, Recorder(runner, noise["graphs"]))
        first_s = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on eagerly
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        patcher.clear_cache()
    if runner.fallback_reason is not None:
        return {"ok": False, "error": runner.fallback_reason, "traceback": runner.fallback_traceback}
    diff = (graphs.float() - eager.float()).abs().max().item()
    steps_diff = [(g - e).abs().max().item() for g, e in zip(noise["graphs"], noise["eager"], strict=True)]
    return {"ok": True, "steps": steps, "width": width, "height": height,
            "max_abs_latent_diff": diff, "bitwise_equal": bool(torch.equal(graphs, eager)),
            "max_abs_noise_diff_per_step": steps_diff, "graphs_captured": runner.captures - captures,
            "first_run_s_with_capture": round(first_s, 3), "graphs": runner.graph_memory()}


def count_step_flops(engine: Engine, width: int, height: int, seed: int = 0) -> dict[str, float]:
    """FLOPs of one denoising step (IdentityNet + UNet, CFG batch 2) with every face layer and with none, K/V
    cached (the projection is counted in neither; it is spread over a generation and is 0.1 % of a step).
    The counted steps run with the math attention backend, so on a GPU they are slower than timed ones (untimed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pipe, patcher = engine.pipe, engine.patcher
    inputs = build_step_inputs(pipe, width, height, 1, seed=seed)
    t = inputs.timesteps[0]
    out = {}
    try:
        for name, layers in (("full", frozenset(patcher.face)), ("none", frozenset())):
            patcher.apply(layers)
            patcher.clear_cache()
            denoise_step(pipe, inputs, t)  # fills the K/V cache
            # the math backend decomposes attention into counted matmuls (fused kernels are not counted everywhere)
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                denoise_step(pipe, inputs, t)
            out[name] = float(counter.get_total_flops())
    finally:
        patcher.apply(frozenset(patcher.face))
        patcher.clear_cache()
    return out


__all__ = ["check_graphs", "count_step_flops"]

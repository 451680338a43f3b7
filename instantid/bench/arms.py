"""The arms of the step benchmark and how one arm-repetition is timed (``instantid.bench.runner`` runs them).

An arm is a preset's patched layers, its step window and its K/V caching; ``run_arms`` runs every arm once per
repetition in the orders of a Williams design; ``time_arm`` applies the arm (timing the switch and the memory it
holds), clears the K/V cache and times each denoising step (CUDA events on GPU, ``perf_counter`` on CPU).
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from instantid.bench.work_model import preset_work
from instantid.engine import Engine
from instantid.presets import in_window
from instantid.step import StepInputs, denoise_step

logger = logging.getLogger(__name__)

AA_ARM = "full#2"  # the second full arm (A/A)
NOCACHE_ARM = "full-nocache"  # every layer, K/V cache off
STOCK_ARM = "full-stock"  # every layer on diffusers' own IPAdapterAttnProcessor2_0 (patch overhead, goal 2)
STOCK_SUFFIX = "-stock"  # PRESET-stock: diffusers' processors, scale 0 outside the preset's layers (eager)
GRAPHS_SUFFIX = "[g]"  # the arm's steps replayed as captured CUDA graphs (instantid/graphs.py)
MODES = ("eager", "graphs", "both")  # --mode


@dataclass(frozen=True)
class Arm:
    """One benchmark arm: which layers carry the face branch, when, and how the step runs."""

    name: str  # preset spec, "full#2" or "full-nocache"
    layers: frozenset[str]  # patched layer names
    cache_kv: bool = True  # FaceBranchState.cache_kv during the arm
    window: tuple[float, float] = (0.0, 1.0)  # the preset's step window [start, end): face branch on in it only
    stock: bool = False  # diffusers' stock processors instead of ours (FacePatcher.apply_stock)
    graphs: bool = False  # steps replayed as CUDA graphs (GraphStepRunner); eager otherwise

    def active(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` runs the face branch (the pipeline's rule)."""
        return in_window(self.window, step, steps)


@dataclass
class ArmRun:
    """What one arm-repetition measured."""

    step_ms: list[float]  # each step of one arm-repetition
    switch_ms: float  # patcher.apply time before it
    switch_mem_mb: float | None  # memory held after patcher.apply minus before (see held_mb)
    peak_mem_mb: float  # see memory_mb()


def make_arms(engine: Engine, specs: Sequence[str], mode: str = "eager") -> list[Arm]:
    """``full`` first, the requested presets, ``full#2``; duplicates dropped; presets resolve via the engine.

    ``mode``: eager arms, graphs arms (names end in ``[g]``) or both, every preset in each; ``PRESET-stock``
    arms (diffusers' own processors, scale 0 outside the preset: what users of ``set_ip_adapter_scale`` run)
    are always eager."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    full = frozenset(engine.patcher.face)
    base: dict[str, Arm] = {"full": Arm("full", full)}
    stock: dict[str, Arm] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec or spec in base or spec in stock:
            continue
        if spec == NOCACHE_ARM:
            base[spec] = Arm(spec, full, cache_kv=False)
        elif spec.endswith(STOCK_SUFFIX):  # K/V at every call, like full-nocache, through the library's processor
            preset = spec.removesuffix(STOCK_SUFFIX)
            layers, window = (full, (0.0, 1.0)) if preset == "full" else _resolve(engine, preset)
            stock[spec] = Arm(spec, layers, cache_kv=False, window=window, stock=True)
        elif spec == AA_ARM:
            base[spec] = Arm(spec, full)
        else:
            layers, window = _resolve(engine, spec)
            base[spec] = Arm(spec, layers, window=window)
    base.setdefault(AA_ARM, Arm(AA_ARM, full))
    arms = list(base.values()) if mode in ("eager", "both") else []
    if mode in ("graphs", "both"):
        arms += [replace(arm, name=arm.name + GRAPHS_SUFFIX, graphs=True) for arm in base.values()]
    return arms + list(stock.values())


def _resolve(engine: Engine, spec: str) -> tuple[frozenset[str], tuple[float, float]]:
    preset, layers, warnings = engine.resolve(spec)
    for warning in warnings:
        logger.warning("%s: %s", spec, warning)
    return layers, (preset.start, preset.end)


def arm_work_share(arm: Arm, engine: Engine, width: int, height: int, steps: int,
                   dtype_bytes: int) -> dict[str, float]:
    """The arm's face-branch work per step, averaged over the arm's ``steps``, as a share of ``full``'s (every
    layer, K/V projected once per arm-repetition): a step window counts only its active steps, and a cached
    projection is spread over those."""
    active = sum(arm.active(i, steps) for i in range(steps))
    if not active:
        return {"flops_share": 0.0, "bytes_share": 0.0}
    kwargs = {"batch": 2, "dtype_bytes": dtype_bytes}
    part = preset_work(arm.layers, engine.known_map, width, height, kv_cache=arm.cache_kv, steps=active, **kwargs)
    whole = preset_work(frozenset(engine.patcher.face), engine.known_map, width, height, kv_cache=True,
                        steps=steps, **kwargs)
    return {f"{kind}_share": part[kind] * active / steps / whole[kind] if whole[kind] else 0.0
            for kind in ("flops", "bytes")}


def memory_mb(device: torch.device) -> float:
    """CUDA: max_memory_allocated since the arm started. CPU: the process's peak RSS (process-wide, monotone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def model_mb(engine: Engine) -> float:
    """Parameters and buffers of the UNet, IdentityNet and face modules, in MiB (each tensor counted once)."""
    seen: dict[int, int] = {}
    modules = [engine.pipe.unet, getattr(engine.pipe, "controlnet", None), engine.patcher.modules]
    for module in (m for m in modules if isinstance(m, torch.nn.Module)):
        for tensor in (*module.parameters(), *module.buffers()):
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values()) / 2**20


def held_mb(device: torch.device) -> float | None:
    """Memory held now: CUDA ``memory_allocated``; CPU the resident set (Linux ``/proc/self/statm``, else None)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def graph_runner(engine: Engine):
    """The engine's graph runner (made on first use): real CUDA graphs on CUDA, the eager stand-in elsewhere
    (CPU and meta tests: same buffers and keys, no capture)."""
    from instantid.graph_capture import EagerStandInBackend
    from instantid.graphs import GraphStepRunner

    if engine.graph_runner is None:
        backend = None if engine.device.type == "cuda" else EagerStandInBackend(engine.pipe)
        engine.graph_runner = GraphStepRunner(engine.pipe, engine.patcher, backend)
    return engine.graph_runner


def time_arm(engine: Engine, inputs: StepInputs, arm: Arm, steps: int) -> ArmRun:
    """One arm-repetition: apply the preset, clear the K/V cache, time ``steps`` denoising steps (the face branch
    on only inside the arm's step window, as in the pipeline); a graphs arm binds the inputs to the static
    buffers first (outside the timing, like the pipeline's steps 2-5) and replays its graphs."""
    pipe, patcher, device = engine.pipe, engine.patcher, engine.device
    held = held_mb(device)
    switch_s = patcher.apply_stock(None if arm.layers == frozenset(patcher.face) else arm.layers) if arm.stock \
        else patcher.apply(arm.layers)
    after = held_mb(device)
    switch_mem = None if held is None or after is None else after - held
    patcher.clear_cache()
    state = patcher.state
    state.cache_kv, state.active = arm.cache_kv, True
    timesteps = inputs.timesteps
    runner = graph_runner(engine) if arm.graphs else None
    if runner is not None:
        runner.bind(inputs)
        runner.prepare({arm.active(i, steps) for i in range(steps)})  # captures stay out of the timing

    def step(i: int) -> None:
        t = timesteps[i % len(timesteps)]
        if runner is not None:
            runner.predict(inputs, inputs.latents, t, step=i, active=arm.active(i, steps))
        else:
            state.step, state.active = i, arm.active(i, steps)
            denoise_step(pipe, inputs, t)

    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(steps)]
            for i, (start, end) in enumerate(events):
                start.record()
                step(i)
                end.record()
            torch.cuda.synchronize(device)
            step_ms = [start.elapsed_time(end) for start, end in events]
        else:
            step_ms = []
            for i in range(steps):
                t0 = time.perf_counter()
                step(i)
                step_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        state.cache_kv, state.active = True, True
        if arm.stock:
            patcher.set_scale(patcher.scale)  # the stock processors' per-layer zeros undone
    return ArmRun(step_ms=step_ms, switch_ms=switch_s * 1e3, switch_mem_mb=switch_mem,
                  peak_mem_mb=memory_mb(device))


def williams_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` arms (a Williams design) in which every arm runs in every position equally often and
    directly after every other arm equally often: ``n`` orders for even ``n``, ``2n`` for odd ``n``. So whatever
    an arm leaves behind (caches, clocks, allocator state) weighs on every other arm alike, the A/A pair included."""
    if n < 2:
        return [list(range(n))]
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(a + r) % n for a in first] for r in range(n)]
    return orders if n % 2 == 0 else orders + [order[::-1] for order in orders]


def run_repetition(engine: Engine, inputs: StepInputs, arms: Sequence[Arm], steps: int,
                   order: Sequence[int]) -> dict[str, ArmRun]:
    """Every arm once, in ``order``."""
    return {arms[i].name: time_arm(engine, inputs, arms[i], steps) for i in order}


def run_arms(engine: Engine, inputs: StepInputs, arms: Sequence[Arm], steps: int, reps: int,
             warmup: int = 1, deadline: float | None = None, first_order: int = 0) -> dict[str, list[ArmRun]]:
    """``warmup + reps`` repetitions, each running every arm once, in the orders of a Williams design
    (:func:`williams_orders`; the warm-up takes the last order, the measured repetitions start at
    ``first_order``).

    With ``deadline`` (a ``time.monotonic()`` value) no repetition starts that would end after it, as judged by
    the last one's duration, once at least one repetition is measured: fewer repetitions, never a lost run."""
    runs: dict[str, list[ArmRun]] = {arm.name: [] for arm in arms}
    orders = williams_orders(len(arms))
    for rep in range(warmup + reps):
        started = time.monotonic()
        for name, run in run_repetition(engine, inputs, arms, steps,
                                        orders[(rep - warmup + first_order) % len(orders)]).items():
            if rep >= warmup:
                runs[name].append(run)
        now = time.monotonic()
        logger.info("repetition %d/%d done (%.1f s)", rep + 1, warmup + reps, now - started)
        measured = rep + 1 - warmup
        if deadline is not None and measured >= 1 and measured < reps and now + (now - started) > deadline:
            logger.warning("time budget: stopping after %d of %d measured repetitions", measured, reps)
            break
    engine.patcher.apply(frozenset(engine.patcher.face))
    engine.patcher.clear_cache()
    return runs

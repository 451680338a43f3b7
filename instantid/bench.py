"""``python -m instantid.bench``: time denoising steps (IdentityNet + UNet, CFG batch 2) per layer preset.

All presets run in one process on the same step inputs, interleaved: every repetition runs every arm once, in the
orders of a Williams design (every arm in every position and right after every other arm equally often, over
n orders for n arms, 2n when n is odd); the first ``--warmup`` repetitions are dropped. Arms are the presets
asked for plus ``full`` (the reference) and ``full#2`` (a second full arm: the A/A ratio, which must be 1.00 within
its CI), and ``full-nocache`` on request (every layer, face K/V recomputed each step). Before each arm the preset
is applied (timed: ``switch_ms``) and the K/V cache cleared, so each arm-repetition is a ``--steps``-step
generation. GPU step times come from CUDA events, CPU ones from ``perf_counter``.

``--telemetry`` instead records each layer's face/text output ratio over one ``--steps``-step run and saves it
(``--out``); ``--telemetry-file`` loads such a file so ``auto-K`` presets resolve. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench_report import acceptance, format_table, summarize
from .engine import Engine
from .step import StepInputs, build_step_inputs, denoise_step
from .work_model import preset_work

logger = logging.getLogger(__name__)

AA_ARM = "full#2"  # the second full arm (A/A)
NOCACHE_ARM = "full-nocache"  # every layer, K/V cache off


@dataclass(frozen=True)
class Arm:
    name: str  # preset spec, "full#2" or "full-nocache"
    layers: frozenset[str]  # patched layer names
    cache_kv: bool = True  # FaceBranchState.cache_kv during the arm
    window: tuple[float, float] = (0.0, 1.0)  # the preset's step window [start, end): face branch on in it only

    def active(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` runs the face branch (the pipeline's rule)."""
        start, end = self.window
        return start <= step / steps < end


@dataclass
class ArmRun:
    step_ms: list[float]  # each step of one arm-repetition
    switch_ms: float  # patcher.apply time before it
    switch_mem_mb: float | None  # memory held after patcher.apply minus before (see held_mb)
    peak_mem_mb: float  # see memory_mb()


def make_arms(engine: Engine, specs: Sequence[str]) -> list[Arm]:
    """``full`` first, the requested presets, ``full#2``; duplicates dropped; presets resolve via the engine."""
    full = frozenset(engine.patcher.face)
    arms: dict[str, Arm] = {"full": Arm("full", full)}
    for spec in specs:
        spec = spec.strip()
        if not spec or spec in arms:
            continue
        if spec == NOCACHE_ARM:
            arms[spec] = Arm(spec, full, cache_kv=False)
        elif spec == AA_ARM:
            arms[spec] = Arm(spec, full)
        else:
            preset, layers, warnings = engine.resolve(spec)
            for warning in warnings:
                logger.warning("%s: %s", spec, warning)
            arms[spec] = Arm(spec, layers, window=(preset.start, preset.end))
    arms.setdefault(AA_ARM, Arm(AA_ARM, full))
    return list(arms.values())


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


def time_arm(engine: Engine, inputs: StepInputs, arm: Arm, steps: int) -> ArmRun:
    """One arm-repetition: apply the preset, clear the K/V cache, time ``steps`` denoising steps (the face branch
    on only inside the arm's step window, as in the pipeline)."""
    pipe, patcher, device = engine.pipe, engine.patcher, engine.device
    held = held_mb(device)
    switch_s = patcher.apply(arm.layers)
    after = held_mb(device)
    switch_mem = None if held is None or after is None else after - held
    patcher.clear_cache()
    state = patcher.state
    state.cache_kv, state.active = arm.cache_kv, True
    timesteps = inputs.timesteps
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(steps)]
            for i, (start, end) in enumerate(events):
                state.step, state.active = i, arm.active(i, steps)
                start.record()
                denoise_step(pipe, inputs, timesteps[i % len(timesteps)])
                end.record()
            torch.cuda.synchronize(device)
            step_ms = [start.elapsed_time(end) for start, end in events]
        else:
            step_ms = []
            for i in range(steps):
                state.step, state.active = i, arm.active(i, steps)
                t0 = time.perf_counter()
                denoise_step(pipe, inputs, timesteps[i % len(timesteps)])
                step_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        state.cache_kv, state.active = True, True
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


def run_arms(engine: Engine, inputs: StepInputs, arms: Sequence[Arm], steps: int, reps: int,
             warmup: int = 1, deadline: float | None = None) -> dict[str, list[ArmRun]]:
    """``warmup + reps`` repetitions, each running every arm once, in the orders of a Williams design
    (:func:`williams_orders`; the warm-up takes the last order, the measured repetitions start at the first).

    With ``deadline`` (a ``time.monotonic()`` value) no repetition starts that would end after it, as judged by
    the last one's duration, once at least one repetition is measured: fewer repetitions, never a lost run."""
    runs: dict[str, list[ArmRun]] = {arm.name: [] for arm in arms}
    orders = williams_orders(len(arms))
    for rep in range(warmup + reps):
        started = time.monotonic()
        for arm in (arms[i] for i in orders[(rep - warmup) % len(orders)]):
            run = time_arm(engine, inputs, arm, steps)
            if rep >= warmup:
                runs[arm.name].append(run)
        now = time.monotonic()
        logger.info("repetition %d/%d done (%.1f s)", rep + 1, warmup + reps, now - started)
        measured = rep + 1 - warmup
        if deadline is not None and measured >= 1 and measured < reps and now + (now - started) > deadline:
            logger.warning("time budget: stopping after %d of %d measured repetitions", measured, reps)
            break
    engine.patcher.apply(frozenset(engine.patcher.face))
    engine.patcher.clear_cache()
    return runs


def run_meta(engine: Engine, args: argparse.Namespace, width: int, height: int) -> dict:
    meta = engine.describe()
    cuda = engine.device.type == "cuda"
    meta.update(width=width, height=height, steps=args.steps, reps=args.reps, warmup=args.warmup, seed=args.seed,
                date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), python=platform.python_version(),
                cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), platform=platform.platform(),
                timer="cuda-events" if cuda else "perf_counter",
                mem_kind=("torch.cuda.max_memory_allocated per arm-repetition (max over reps)" if cuda else
                          "process-wide peak RSS (ru_maxrss) after the arm; monotone, not per preset"))
    return meta


def benchmark(engine: Engine, specs: Sequence[str], *, width: int, height: int, steps: int, reps: int,
              warmup: int = 1, seed: int = 0, args: argparse.Namespace | None = None,
              deadline: float | None = None) -> dict:
    """Run the interleaved benchmark and return the JSON-ready result (``meta``, ``presets``, ``aa_*``).

    ``deadline`` (``time.monotonic()``): see :func:`run_arms`; ``meta.reps_done`` says how many ran."""
    arms = make_arms(engine, specs)
    inputs = build_step_inputs(engine.pipe, width, height, max(steps, 1), seed=seed)
    runs = run_arms(engine, inputs, arms, steps, reps, warmup, deadline)
    rep_ms = {name: [sum(r.step_ms) / len(r.step_ms) for r in arm_runs] for name, arm_runs in runs.items()}
    summary = summarize(rep_ms, seed=seed)
    dtype_bytes = torch.empty((), dtype=engine.dtype).element_size()
    for arm in arms:
        row = summary[arm.name]
        row["layers"] = len(arm.layers)
        row["layer_names"] = sorted(arm.layers)
        row["cache_kv"] = arm.cache_kv
        row["switch_ms"] = float(sorted(r.switch_ms for r in runs[arm.name])[len(runs[arm.name]) // 2])
        row["peak_mem_mb"] = max(r.peak_mem_mb for r in runs[arm.name])
        held = [r.switch_mem_mb for r in runs[arm.name] if r.switch_mem_mb is not None]
        row["switch_mem_mb"] = max(held, key=abs) if held else None  # the largest change any switch made
        # relative to full as it runs (K/V projected once per `steps`-step arm-repetition): none 0, full 1,
        # full-nocache > 1 (it projects K/V every step)
        row["window"] = list(arm.window)
        work = arm_work_share(arm, engine, width, height, steps, dtype_bytes) if engine.known_map else None
        row["flops_share"] = work["flops_share"] if work else None
        row["bytes_share"] = work["bytes_share"] if work else None
    aa_ratio, aa_ci = summary[AA_ARM]["ratio_to_full"], summary[AA_ARM]["ratio_ci"]  # t_full / t_full#2
    named = [a.name for a in arms if a.name not in (AA_ARM, NOCACHE_ARM)]
    ns = args or argparse.Namespace(steps=steps, reps=reps, warmup=warmup, seed=seed)
    meta = run_meta(engine, ns, width, height)
    meta["model_mb"] = model_mb(engine)  # what one copy of the models would add; compare switch_mem_mb
    meta["reps_done"] = len(runs["full"])
    meta["stopped_early"] = meta["reps_done"] < reps  # the time budget ran out
    meta["work_share"] = (f"flops_share / bytes_share: face-branch work per UNet call / full's (all layers, face K/V "
                          f"projected once per {steps}-step arm-repetition); full-nocache projects K/V every step")
    return {"meta": meta, "aa_ratio": aa_ratio, "aa_ci": aa_ci,
            "acceptance": acceptance(summary, aa_ratio, aa_ci, named),
            "order": [a.name for a in arms], "presets": summary}


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 8, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m instantid.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", default="tiny", help="tiny | sdxl-shape (CUDA) | InstantID weights folder or repo id")
    p.add_argument("--base", default=None, help="SDXL base for a weights stack (default $INSTANTID_BASE or the hub)")
    p.add_argument("--presets", default="full,balanced,fast,output_only,none",
                   help="comma-separated specs; also full-nocache and auto-K (with --telemetry-file)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed denoising steps per arm and repetition (default 10; tiny: 2)")
    p.add_argument("--size", type=parse_size, default=None, help="WxH (default 1024x1024; tiny: 128x128)")
    p.add_argument("--reps", type=int, default=5, help="measured repetitions (>= 5)")
    p.add_argument("--warmup", type=int, default=1, help="repetitions run first and dropped")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("fp16", "bf16", "fp32"),
                   help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--seed", type=int, default=0, help="weights, inputs and bootstrap seed")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; tiny on CPU: 1, steadier on a shared CPU)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result (or telemetry) here")
    p.add_argument("--telemetry", action="store_true", help="record per-layer face/text ratios instead of timing")
    p.add_argument("--telemetry-file", type=Path, default=None, help="telemetry JSON that auto-K presets use")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget from start (stack build included): start no repetition that would end "
                        "after it; fewer repetitions are reported (meta.reps_done) instead of none")
    return p


def main_telemetry(engine: Engine, args: argparse.Namespace, width: int, height: int) -> int:
    from .telemetry import contributions_from_telemetry, record_telemetry, save_telemetry

    raw = record_telemetry(engine, steps=args.steps, width=width, height=height, seed=args.seed)
    meta = run_meta(engine, args, width, height)
    out = args.out or Path("bench-results") / f"telemetry-{Path(engine.name).name}.json"
    save_telemetry(out, raw, meta)
    ranked = sorted(contributions_from_telemetry(raw).items(), key=lambda kv: -kv[1])
    print(f"telemetry: {len(ranked)} layers x {args.steps} steps -> {out}")
    for name, ratio in ranked[:10]:
        print(f"  {ratio:9.4f}  {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.reps < 5 and not args.telemetry:
        raise SystemExit("--reps must be at least 5 (the acceptance goals use the median of >= 5 pairs)")
    tiny = args.stack == "tiny"
    if args.steps is None:
        args.steps = 2 if tiny else 10  # tiny defaults keep a default run well under a minute on a 2-core CPU
    if args.threads is None and tiny and args.device in (None, "cpu") and not torch.cuda.is_available():
        args.threads = 1
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    from .bench_stack import load_bench_stack

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    width, height = args.size or ((128, 128) if args.stack == "tiny" else (1024, 1024))
    engine = load_bench_stack(args.stack, args.device, args.dtype, base=args.base, seed=args.seed)
    try:
        if args.telemetry_file is not None:
            engine.load_telemetry(args.telemetry_file)
        if args.telemetry:
            return main_telemetry(engine, args, width, height)
        deadline = None if args.time_budget is None else started + args.time_budget
        result = benchmark(engine, args.presets.split(","), width=width, height=height, steps=args.steps,
                           reps=args.reps, warmup=args.warmup, seed=args.seed, args=args, deadline=deadline)
    except ValueError as exc:  # PresetError, unreadable telemetry
        raise SystemExit(f"error: {exc}") from None
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m instantid.bench``: time denoising steps (IdentityNet + UNet, CFG batch 2) per layer preset.

All presets run in one process on the same step inputs, interleaved: every repetition runs every arm once, in the
orders of a Williams design (every arm in every position and right after every other arm equally often, over
n orders for n arms, 2n when n is odd); the first ``--warmup`` repetitions are dropped. Arms are the presets
asked for plus ``full`` (the reference) and ``full#2`` (a second full arm: the A/A ratio, which must be 1.00 within
its CI), and ``full-nocache`` on request (every layer, face K/V recomputed each step). Before each arm the preset
is applied (timed: ``switch_ms``) and the K/V cache cleared, so each arm-repetition is a ``--steps``-step
generation. GPU step times come from CUDA events, CPU ones from ``perf_counter``.

``--telemetry`` instead records each layer's face/text output ratio over one ``--steps``-step run and saves it
(``--out``); ``--telemetry-file`` loads such a file so ``auto-K`` presets resolve. The arms, their order and how one
is timed live in ``instantid/bench_arms.py``; statistics and the table in ``bench_report.py``. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .bench_arms import AA_ARM, NOCACHE_ARM, STOCK_ARM, arm_work_share, make_arms, model_mb, run_arms
from .bench_report import acceptance, format_table, patch_overhead, summarize
from .engine import Engine
from .step import build_step_inputs

logger = logging.getLogger(__name__)


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
    named = [a.name for a in arms if a.name not in (AA_ARM, NOCACHE_ARM, STOCK_ARM)]
    ns = args or argparse.Namespace(steps=steps, reps=reps, warmup=warmup, seed=seed)
    meta = run_meta(engine, ns, width, height)
    meta["model_mb"] = model_mb(engine)  # what one copy of the models would add; compare switch_mem_mb
    meta["reps_done"] = len(runs["full"])
    meta["stopped_early"] = meta["reps_done"] < reps  # the time budget ran out
    meta["work_share"] = (f"flops_share / bytes_share: face-branch work per UNet call / full's (all layers, face K/V "
                          f"projected once per {steps}-step arm-repetition); full-nocache projects K/V every step")
    checks = acceptance(summary, aa_ratio, aa_ci, named)
    overhead = patch_overhead(rep_ms, STOCK_ARM, (NOCACHE_ARM, "full"), seed=seed)
    if overhead is not None:
        checks["patch_overhead"] = overhead
    return {"meta": meta, "aa_ratio": aa_ratio, "aa_ci": aa_ci, "acceptance": checks,
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
                   help="comma-separated specs; also full-nocache, full-stock (diffusers' own processors on every "
                        "layer: the patch overhead) and auto-K (with --telemetry-file)")
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

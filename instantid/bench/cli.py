"""``python -m instantid.bench``: the benchmark's command line (arguments, stack, graphs check, table or JSON).

The benchmark itself is :func:`instantid.bench.runner.benchmark`; ``--telemetry`` records per-layer face/text
ratios instead (:mod:`instantid.telemetry`). See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from instantid.bench.arms import MODES, graph_runner
from instantid.bench.checks import check_graphs
from instantid.bench.report import format_table
from instantid.bench.runner import benchmark, run_meta
from instantid.bench.stats import STEADY_K, STEADY_TOL, WARMUP_MAX_S
from instantid.engine import Engine
from instantid.settings import size_argument

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's arguments (``python -m instantid.bench --help``)."""
    p = argparse.ArgumentParser(prog="python -m instantid.bench",
                                description="Time denoising steps (IdentityNet + UNet, CFG batch 2) per layer preset, "
                                            "all presets interleaved in one process (docs/benchmark.md).")
    p.add_argument("--stack", default="tiny", help="tiny | sdxl-shape (CUDA) | InstantID weights folder or repo id")
    p.add_argument("--base", default=None, help="SDXL base for a weights stack (default $INSTANTID_BASE or the hub)")
    p.add_argument("--presets", default="full,balanced,fast,output_only,none",
                   help="comma-separated specs; also full-nocache, full-stock (diffusers' own processors on every "
                        "layer: the patch overhead) and auto-K (with --telemetry-file)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed denoising steps per arm and repetition (default 10; tiny: 2)")
    p.add_argument("--size", type=size_argument, default=None, help="WxH (default 1024x1024; tiny: 128x128)")
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
    p.add_argument("--mode", default="eager", choices=MODES,
                   help="eager steps, captured CUDA-graph steps (arms named PRESET[g]), or both side by side")
    p.add_argument("--runs", type=int, default=1,
                   help="repeat the whole interleaved benchmark (one process) and report each run's ratios")
    p.add_argument("--warmup-s", type=float, default=None, metavar="SECONDS",
                   help="warm up until steady instead of --warmup repetitions: at least SECONDS of repetitions "
                        f"and the last {STEADY_K} within {STEADY_TOL * 100:g} %% (at most {WARMUP_MAX_S:g} s)")
    p.add_argument("--warmup-max-s", type=float, default=WARMUP_MAX_S, metavar="SECONDS",
                   help="with --warmup-s: stop warming up after SECONDS even if not steady (reported)")
    p.add_argument("--check-graphs", type=int, default=3, metavar="STEPS",
                   help="with graphs: first compare STEPS eager and graph-replayed steps (max abs latent "
                        "difference); a failed capture is printed and the benchmark runs eager only (0: skip)")
    p.add_argument("--flops", action=argparse.BooleanOptionalAction, default=None,
                   help="count one step's FLOPs for the achieved TFLOP/s column (default: on except tiny)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget from start (stack build included): start no repetition that would end "
                        "after it; fewer repetitions are reported (meta.reps_done) instead of none")
    return p


def main_telemetry(engine: Engine, args: argparse.Namespace, width: int, height: int) -> int:
    """``--telemetry``: record per-layer face/text ratios over one run, save them and print the top ten."""
    from instantid.telemetry import contributions_from_telemetry, record_telemetry, save_telemetry

    raw = record_telemetry(engine, steps=args.steps, width=width, height=height, seed=args.seed)
    meta = run_meta(engine, args, width, height)
    out = args.out or Path("bench-results") / f"telemetry-{Path(engine.name).name}.json"
    save_telemetry(out, raw, meta)
    ranked = sorted(contributions_from_telemetry(raw).items(), key=lambda kv: -kv[1])
    print(f"telemetry: {len(ranked)} layers x {args.steps} steps -> {out}")
    for name, ratio in ranked[:10]:
        print(f"  {ratio:9.4f}  {name}")
    return 0


def run_graphs_check(engine: Engine, args: argparse.Namespace, width: int, height: int) -> dict:
    """Graphs vs eager on a few steps before the benchmark; on failure print why and fall back to eager arms."""
    print(f"graphs check: {args.check_graphs} steps at {width}x{height}, eager vs graph replay ...", flush=True)
    check = check_graphs(engine, graph_runner(engine), width, height, args.check_graphs, args.seed)
    if check["ok"]:
        print(f"graphs check: max abs latent difference {check['max_abs_latent_diff']:.3g} "
              f"(bitwise equal: {check['bitwise_equal']}), per-step noise "
              f"{[f'{d:.3g}' for d in check['max_abs_noise_diff_per_step']]}, first run with capture "
              f"{check['first_run_s_with_capture']} s, graphs {check['graphs']}", flush=True)
    else:
        print(f"graphs check FAILED: {check['error']}\n{check.get('traceback') or ''}", file=sys.stderr, flush=True)
        print("graphs check: running the benchmark with eager arms only", flush=True)
        args.mode = "eager"
        engine.graph_runner = None
    return check


def apply_defaults(args: argparse.Namespace) -> None:
    """Check the numbers and fill the stack-dependent defaults (steps, threads) in place; SystemExit when bad."""
    if args.reps < 5 and not args.telemetry:
        raise SystemExit("--reps must be at least 5 (the acceptance goals use the median of >= 5 pairs)")
    tiny = args.stack == "tiny"
    if args.steps is None:
        args.steps = 2 if tiny else 10  # tiny defaults keep a default run well under a minute on a 2-core CPU
    if args.threads is None and tiny and args.device in (None, "cpu") and not torch.cuda.is_available():
        args.threads = 1
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    if args.flops is None:
        args.flops = not tiny


def run_benchmark(engine: Engine, args: argparse.Namespace, width: int, height: int, started: float) -> dict:
    """The graphs check (graph modes), then the benchmark with the arguments' settings."""
    deadline = None if args.time_budget is None else started + args.time_budget
    check = None
    if args.mode != "eager" and args.check_graphs > 0:
        check = run_graphs_check(engine, args, width, height)
    steady = None if args.warmup_s is None else {"min_s": args.warmup_s, "max_s": args.warmup_max_s}
    result = benchmark(engine, args.presets.split(","), width=width, height=height, steps=args.steps,
                       reps=args.reps, warmup=args.warmup, seed=args.seed, args=args, deadline=deadline,
                       mode=args.mode, runs=args.runs, steady=steady, flops=args.flops)
    result["graphs_check"] = check
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or ``--telemetry``) and print the table or the JSON; returns the exit status."""
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("instantid").setLevel(logging.INFO)  # progress: repetitions, captures, runs (stderr)
    apply_defaults(args)
    from instantid.bench.stack import load_bench_stack

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    width, height = args.size or ((128, 128) if args.stack == "tiny" else (1024, 1024))
    engine = load_bench_stack(args.stack, args.device, args.dtype, base=args.base, seed=args.seed)
    try:
        if args.telemetry_file is not None:
            engine.load_telemetry(args.telemetry_file)
        if args.telemetry:
            return main_telemetry(engine, args, width, height)
        result = run_benchmark(engine, args, width, height, started)
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

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
is timed live in ``instantid/bench/arms.py``; statistics and the table in ``instantid/bench/report.py``. See docs/benchmark.md.
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

from instantid.bench.arms import (
    AA_ARM,
    GRAPHS_SUFFIX,
    MODES,
    NOCACHE_ARM,
    STOCK_ARM,
    STOCK_SUFFIX,
    Arm,
    ArmRun,
    arm_work_share,
    graph_runner,
    make_arms,
    model_mb,
    run_arms,
    run_repetition,
    williams_orders,
)
from instantid.bench.checks import check_graphs, count_step_flops
from instantid.bench.report import _ratio, acceptance, format_table, patch_overhead, r_squared, summarize
from instantid.bench.stats import (
    FLOOR,
    K_MAD,
    MIN_KEPT,
    PEAK_TFLOPS,
    STEADY_K,
    STEADY_TOL,
    WARMUP_MAX_S,
    flag_outliers,
    goals,
    runs_agreement,
    warm_up,
)
from instantid.engine import Engine
from instantid.settings import size_argument
from instantid.step import build_step_inputs

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


def _rep_means(arm_runs: dict[str, list[ArmRun]]) -> dict[str, list[float]]:
    return {name: [sum(r.step_ms) / len(r.step_ms) for r in runs] for name, runs in arm_runs.items()}


def _groups(rep_ms: dict[str, list[float]], arms: Sequence[Arm]) -> dict[str, dict[str, list[float]]]:
    """Arms by mode, graphs names without their suffix: ``{"eager": {...}, "graphs": {...}}``. Stock arms join
    the eager group (or the graphs one when no eager arms ran), so each ratio compares arms of one mode."""
    groups: dict[str, dict[str, list[float]]] = {}
    for arm in arms:
        if arm.graphs:
            groups.setdefault("graphs", {})[arm.name.removesuffix(GRAPHS_SUFFIX)] = rep_ms[arm.name]
        elif not arm.stock:
            groups.setdefault("eager", {})[arm.name] = rep_ms[arm.name]
    home = "eager" if "eager" in groups else "graphs"
    for arm in arms:
        if arm.stock:
            groups.setdefault(home, {})[arm.name] = rep_ms[arm.name]
    return groups


def _summarize_modes(rep_ms: dict[str, list[float]], arms: Sequence[Arm], seed: int) -> tuple[dict, dict]:
    """Per-arm rows (ratios within the arm's mode) and each mode's acceptance checks."""
    rows: dict[str, dict] = {}
    checks: dict[str, object] = {}
    for mode, group in _groups(rep_ms, arms).items():
        summary = summarize(group, seed=seed)
        suffix = GRAPHS_SUFFIX if mode == "graphs" else ""
        for name, row in summary.items():
            rows[name if name.endswith(STOCK_SUFFIX) else name + suffix] = row
        named = [a.name.removesuffix(GRAPHS_SUFFIX) for a in arms if a.graphs == (mode == "graphs")
                 and a.name.removesuffix(GRAPHS_SUFFIX) not in (AA_ARM, NOCACHE_ARM) and not a.stock]
        for key, value in acceptance(summary, summary[AA_ARM]["ratio_to_full"], summary[AA_ARM]["ratio_ci"],
                                     named).items():
            checks[key if mode == "eager" else f"{key}_graphs"] = value
    return {a.name: rows[a.name] for a in arms}, checks


def _run_ratio(rep_ms: dict[str, list[float]], suffix: str, seed: int) -> dict | None:
    """One run's full/none and A/A in the primary mode."""
    full, none, aa = (rep_ms.get(n + suffix) for n in ("full", "none", AA_ARM))
    if full is None or none is None:
        return None
    ratio, ci = _ratio(full, none, seed)
    out = {"full_over_none": ratio, "ci": ci, "reps": len(full)}
    if aa is not None:
        out["aa"], out["aa_ci"] = _ratio(full, aa, seed + 1)
    return out


def benchmark(engine: Engine, specs: Sequence[str], *, width: int, height: int, steps: int, reps: int,
              warmup: int = 1, seed: int = 0, args: argparse.Namespace | None = None,
              deadline: float | None = None, mode: str = "eager", runs: int = 1,
              steady: dict | None = None, flops: bool = False) -> dict:
    """Run the interleaved benchmark and return the JSON-ready result (``meta``, ``presets``, ``aa_*``, ``runs``,
    ``goals``).

    ``mode``: eager, graphs or both (every preset in each). ``runs``: the whole interleaved benchmark repeated,
    each run's ratios reported and pooled. ``steady``: warm up until steady (``bench_stats.warm_up`` keywords)
    instead of ``warmup`` fixed repetitions. ``deadline`` (``time.monotonic()``): see :func:`run_arms`, shared
    out between the runs; ``meta.reps_done`` says how many ran. ``flops``: count one step's FLOPs (achieved
    TFLOP/s column)."""
    arms = make_arms(engine, specs, mode)
    inputs = build_step_inputs(engine.pipe, width, height, max(steps, 1), seed=seed)
    step_flops = count_step_flops(engine, width, height, seed) if flops else None
    warm = None
    if steady is not None:
        orders = williams_orders(len(arms))
        done = [0]

        def one_repetition() -> float:
            done[0] += 1
            reps_ = run_repetition(engine, inputs, arms, steps, orders[-done[0] % len(orders)])
            return sum(sum(r.step_ms) / len(r.step_ms) for r in reps_.values())

        limits = dict(steady)
        if deadline is not None:  # leave at least 70 % of what is left to the measured runs
            limits["max_s"] = min(limits.get("max_s", WARMUP_MAX_S), 0.3 * max(deadline - time.monotonic(), 0))
        warm = warm_up(one_repetition, min_reps=max(warmup, 1), **limits)
        logger.info("warm-up: %d repetitions in %.1f s, steady=%s", warm["reps"], warm["seconds"], warm["steady"])
    all_runs, per_run, outliers = [], [], []
    suffix = GRAPHS_SUFFIX if mode != "eager" else ""
    for r in range(runs):
        run_deadline = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / (runs - r)
        arm_runs = run_arms(engine, inputs, arms, steps, reps, 0 if steady is not None or r else warmup,
                            run_deadline)
        rep_ms = _rep_means(arm_runs)
        kept, flags = flag_outliers(rep_ms)
        outliers += [{**f, "run": r} for f in flags]
        kept_ms = {name: [values[i] for i in kept] for name, values in rep_ms.items()}
        all_runs.append((arm_runs, kept, kept_ms))
        per_run.append({"run": r, "reps_done": len(rep_ms["full" + suffix]), "kept": len(kept),
                        **(_run_ratio(kept_ms, suffix, seed + r) or {})})
        logger.info("run %d/%d: %s", r + 1, runs, per_run[-1])
    pooled = {a.name: [x for _, _, kept_ms in all_runs for x in kept_ms[a.name]] for a in arms}
    summary, checks = _summarize_modes(pooled, arms, seed)
    dtype_bytes = torch.empty((), dtype=engine.dtype).element_size()
    for arm in arms:
        row = summary[arm.name]
        arm_all = [run for arm_runs, _, _ in all_runs for run in arm_runs[arm.name]]
        row["layers"] = len(arm.layers)
        row["layer_names"] = sorted(arm.layers)
        row["cache_kv"], row["graphs"], row["stock"] = arm.cache_kv, arm.graphs, arm.stock
        row["switch_ms"] = float(sorted(r.switch_ms for r in arm_all)[len(arm_all) // 2])
        row["peak_mem_mb"] = max(r.peak_mem_mb for r in arm_all)
        held = [r.switch_mem_mb for r in arm_all if r.switch_mem_mb is not None]
        row["switch_mem_mb"] = max(held, key=abs) if held else None  # the largest change any switch made
        # relative to full as it runs (K/V projected once per `steps`-step arm-repetition): none 0, full 1,
        # full-nocache > 1 (it projects K/V every step)
        row["window"] = list(arm.window)
        work = arm_work_share(arm, engine, width, height, steps, dtype_bytes) if engine.known_map else None
        row["flops_share"] = work["flops_share"] if work else None
        row["bytes_share"] = work["bytes_share"] if work else None
        if step_flops is not None and row["flops_share"] is not None:
            arm_flops = step_flops["none"] + row["flops_share"] * (step_flops["full"] - step_flops["none"])
            row["step_tflop"] = arm_flops / 1e12
            row["tflops"] = arm_flops / (row["median_ms"] / 1e3) / 1e12
            row["pct_of_peak"] = row["tflops"] / PEAK_TFLOPS
    for graphs, key in ((False, "proportionality_r2"), (True, "proportionality_r2_graphs")):
        # goal 4 needs each arm's work-model share, attached just above (the per-mode acceptance ran before it)
        points = [(summary[a.name]["bytes_share"], summary[a.name].get("time_share")) for a in arms
                  if a.graphs == graphs and not a.stock and a.name.removesuffix(GRAPHS_SUFFIX) not in (AA_ARM, NOCACHE_ARM)
                  and summary[a.name]["bytes_share"] is not None and summary[a.name].get("time_share") is not None]
        if points:
            checks[key] = r_squared([x for x, _ in points], [y for _, y in points])
    primary = "full" + suffix
    aa_ratio, aa_ci = summary[AA_ARM + suffix]["ratio_to_full"], summary[AA_ARM + suffix]["ratio_ci"]
    ns = args or argparse.Namespace(steps=steps, reps=reps, warmup=warmup, seed=seed)
    meta = run_meta(engine, ns, width, height)
    meta.update(model_mb=model_mb(engine), mode=mode, runs=runs, reps_done=len(pooled[primary]))
    meta["stopped_early"] = any(p["reps_done"] < reps for p in per_run)  # the time budget ran out
    meta["graph_backend"] = None if mode == "eager" else type(graph_runner(engine).backend).__name__
    meta["work_share"] = (f"flops_share / bytes_share: face-branch work per UNet call / full's (all layers, face K/V "
                          f"projected once per {steps}-step arm-repetition); full-nocache projects K/V every step")
    eager_ms = {a.name: pooled[a.name] for a in arms if not a.graphs}
    overhead = patch_overhead(eager_ms, STOCK_ARM, (NOCACHE_ARM, "full"), seed=seed)
    if overhead is not None:
        checks["patch_overhead"] = overhead
    result = {"meta": meta, "aa_ratio": aa_ratio, "aa_ci": aa_ci, "acceptance": checks,
              "order": [a.name for a in arms], "presets": summary, "warmup": warm, "outliers": outliers,
              "outlier_rule": f"per arm, |rep - median| > max({K_MAD:g} x 1.4826 x MAD, {FLOOR:.0%} of the median): "
                              f"the repetition is left out of every arm's ratios (kept if < {MIN_KEPT} would remain)",
              "runs": per_run, "step_flops": step_flops, "peak_tflops": PEAK_TFLOPS}
    ratios = [p["full_over_none"] for p in per_run if "full_over_none" in p]
    result["runs_agreement"] = runs_agreement(ratios, [p["ci"] for p in per_run if "full_over_none" in p])
    if mode == "both":
        result["graphs_speedup"] = {}
        for arm in arms:
            if arm.graphs:
                base = arm.name.removesuffix(GRAPHS_SUFFIX)
                ratio, ci = _ratio(pooled[base], pooled[arm.name], seed + 300)
                result["graphs_speedup"][base] = {"ratio": ratio, "ci": ci}  # t_eager / t_graphs
    if STOCK_ARM in pooled:
        ratio, ci = _ratio(pooled[STOCK_ARM], pooled[primary], seed + 400)
        result["ours_vs_stock"] = {"ratio": ratio, "ci": ci, "ours": primary, "stock": STOCK_ARM}
    if mode != "eager":
        result["graphs"] = graph_runner(engine).graph_memory()
        result["graphs_fallback"] = graph_runner(engine).fallback_reason
    result["goals"] = goals(result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m instantid.bench", description=__doc__.split("\n\n")[0])
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


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("instantid").setLevel(logging.INFO)  # progress: repetitions, captures, runs (stderr)
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
        deadline = None if args.time_budget is None else started + args.time_budget
        check = None
        if args.mode != "eager" and args.check_graphs > 0:
            check = run_graphs_check(engine, args, width, height)
        steady = None if args.warmup_s is None else {"min_s": args.warmup_s, "max_s": args.warmup_max_s}
        result = benchmark(engine, args.presets.split(","), width=width, height=height, steps=args.steps,
                           reps=args.reps, warmup=args.warmup, seed=args.seed, args=args, deadline=deadline,
                           mode=args.mode, runs=args.runs, steady=steady,
                           flops=args.flops if args.flops is not None else not tiny)
        result["graphs_check"] = check
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

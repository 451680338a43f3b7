"""The step benchmark (``python -m instantid.bench``): time denoising steps (IdentityNet + UNet, CFG batch 2) per preset.

All presets run in one process on the same step inputs, interleaved: every repetition runs every arm once, in the
orders of a Williams design (every arm in every position and right after every other arm equally often, over
n orders for n arms, 2n when n is odd); the first ``--warmup`` repetitions are dropped. Arms are the presets
asked for plus ``full`` (the reference) and ``full#2`` (a second full arm: the A/A ratio, which must be 1.00 within
its CI), and ``full-nocache`` on request (every layer, face K/V recomputed each step). Before each arm the preset
is applied (timed: ``switch_ms``) and the K/V cache cleared, so each arm-repetition is a ``--steps``-step
generation. GPU step times come from CUDA events, CPU ones from ``perf_counter``.

``--telemetry`` instead records each layer's face/text output ratio over one ``--steps``-step run and saves it
(``--out``); ``--telemetry-file`` loads such a file so ``auto-K`` presets resolve. The arms, their order and how one
is timed live in ``instantid/bench/arms.py``; statistics and the table in ``instantid/bench/report.py``; the command
line in ``instantid/bench/cli.py``. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import time
from collections.abc import Sequence

import torch

from instantid.bench.arms import (
    AA_ARM,
    GRAPHS_SUFFIX,
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
from instantid.bench.checks import count_step_flops
from instantid.bench.report import _ratio, acceptance, patch_overhead, r_squared, summarize
from instantid.bench.stats import (
    FLOOR,
    K_MAD,
    MIN_KEPT,
    PEAK_TFLOPS,
    WARMUP_MAX_S,
    flag_outliers,
    goals,
    runs_agreement,
    warm_up,
)
from instantid.engine import Engine
from instantid.step import StepInputs, build_step_inputs

logger = logging.getLogger(__name__)


def run_meta(engine: Engine, args: argparse.Namespace, width: int, height: int) -> dict:
    """The run's description: the engine, the arguments, the machine, the timer and the memory measure."""
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
    """Each arm-repetition's mean step time."""
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
    warm = None if steady is None else _warm_up_until_steady(engine, inputs, arms, steps, warmup, steady, deadline)
    suffix = GRAPHS_SUFFIX if mode != "eager" else ""
    all_runs, per_run, outliers = _measured_runs(engine, inputs, arms, steps, reps,
                                                 0 if steady is not None else warmup, runs, deadline, suffix, seed)
    pooled = {a.name: [x for _, kept_ms in all_runs for x in kept_ms[a.name]] for a in arms}
    summary, checks = _summarize_modes(pooled, arms, seed)
    for arm in arms:
        _fill_arm_row(summary[arm.name], arm, [r for arm_runs, _ in all_runs for r in arm_runs[arm.name]], engine,
                      width, height, steps, step_flops)
    checks.update(_proportionality(summary, arms))
    primary = "full" + suffix
    meta = run_meta(engine, args or argparse.Namespace(steps=steps, reps=reps, warmup=warmup, seed=seed), width,
                    height)
    meta.update(model_mb=model_mb(engine), mode=mode, runs=runs, reps_done=len(pooled[primary]))
    meta["stopped_early"] = any(p["reps_done"] < reps for p in per_run)  # the time budget ran out
    meta["graph_backend"] = None if mode == "eager" else type(graph_runner(engine).backend).__name__
    meta["work_share"] = (f"flops_share / bytes_share: face-branch work per UNet call / full's (all layers, face K/V "
                          f"projected once per {steps}-step arm-repetition); full-nocache projects K/V every step")
    overhead = patch_overhead({a.name: pooled[a.name] for a in arms if not a.graphs}, STOCK_ARM,
                              (NOCACHE_ARM, "full"), seed=seed)
    if overhead is not None:
        checks["patch_overhead"] = overhead
    result = {"meta": meta, "aa_ratio": summary[AA_ARM + suffix]["ratio_to_full"],
              "aa_ci": summary[AA_ARM + suffix]["ratio_ci"], "acceptance": checks,
              "order": [a.name for a in arms], "presets": summary, "warmup": warm, "outliers": outliers,
              "outlier_rule": f"per arm, |rep - median| > max({K_MAD:g} x 1.4826 x MAD, {FLOOR:.0%} of the median): "
                              f"the repetition is left out of every arm's ratios (kept if < {MIN_KEPT} would remain)",
              "runs": per_run, "step_flops": step_flops, "peak_tflops": PEAK_TFLOPS}
    ratios = [p["full_over_none"] for p in per_run if "full_over_none" in p]
    result["runs_agreement"] = runs_agreement(ratios, [p["ci"] for p in per_run if "full_over_none" in p])
    result.update(_mode_comparisons(engine, arms, pooled, mode, primary, seed))
    result["goals"] = goals(result)
    return result


def _warm_up_until_steady(engine: Engine, inputs: StepInputs, arms: Sequence[Arm], steps: int, warmup: int,
                          steady: dict, deadline: float | None) -> dict:
    """Whole repetitions (Williams orders from the last) until the step time is steady (``warm_up``)."""
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
    return warm


def _measured_runs(engine: Engine, inputs: StepInputs, arms: Sequence[Arm], steps: int, reps: int, warmup: int,
                   runs: int, deadline: float | None, suffix: str,
                   seed: int) -> tuple[list[tuple[dict[str, list[ArmRun]], dict[str, list[float]]]], list, list]:
    """``runs`` interleaved runs (the first drops ``warmup`` repetitions): per run its arm-repetitions and kept
    repetition means, its ratios, and the outliers left out."""
    all_runs, per_run, outliers = [], [], []
    for r in range(runs):
        run_deadline = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / (runs - r)
        arm_runs = run_arms(engine, inputs, arms, steps, reps, 0 if r else warmup, run_deadline)
        rep_ms = _rep_means(arm_runs)
        kept, flags = flag_outliers(rep_ms)
        outliers += [{**f, "run": r} for f in flags]
        kept_ms = {name: [values[i] for i in kept] for name, values in rep_ms.items()}
        all_runs.append((arm_runs, kept_ms))
        per_run.append({"run": r, "reps_done": len(rep_ms["full" + suffix]), "kept": len(kept),
                        **(_run_ratio(kept_ms, suffix, seed + r) or {})})
        logger.info("run %d/%d: %s", r + 1, runs, per_run[-1])
    return all_runs, per_run, outliers


def _fill_arm_row(row: dict, arm: Arm, arm_all: list[ArmRun], engine: Engine, width: int, height: int, steps: int,
                  step_flops: dict[str, float] | None) -> None:
    """An arm's layers, switch and memory figures, work-model shares and (with FLOPs) achieved TFLOP/s."""
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
    dtype_bytes = torch.empty((), dtype=engine.dtype).element_size()
    work = arm_work_share(arm, engine, width, height, steps, dtype_bytes) if engine.known_map else None
    row["flops_share"] = work["flops_share"] if work else None
    row["bytes_share"] = work["bytes_share"] if work else None
    if step_flops is not None and row["flops_share"] is not None:
        arm_flops = step_flops["none"] + row["flops_share"] * (step_flops["full"] - step_flops["none"])
        row["step_tflop"] = arm_flops / 1e12
        row["tflops"] = arm_flops / (row["median_ms"] / 1e3) / 1e12
        row["pct_of_peak"] = row["tflops"] / PEAK_TFLOPS


def _proportionality(summary: dict, arms: Sequence[Arm]) -> dict[str, float]:
    """Goal 4 per mode: R^2 of each preset's time share against its work-model bytes share (attached by
    :func:`_fill_arm_row`, after the per-mode acceptance ran)."""
    checks = {}
    for graphs, key in ((False, "proportionality_r2"), (True, "proportionality_r2_graphs")):
        points = [(summary[a.name]["bytes_share"], summary[a.name].get("time_share")) for a in arms
                  if a.graphs == graphs and not a.stock
                  and a.name.removesuffix(GRAPHS_SUFFIX) not in (AA_ARM, NOCACHE_ARM)
                  and summary[a.name]["bytes_share"] is not None and summary[a.name].get("time_share") is not None]
        if points:
            checks[key] = r_squared([x for x, _ in points], [y for _, y in points])
    return checks


def _mode_comparisons(engine: Engine, arms: Sequence[Arm], pooled: dict[str, list[float]], mode: str,
                      primary: str, seed: int) -> dict:
    """Graphs vs eager per preset (``both``), ours vs diffusers' stock processors, and the captured graphs."""
    out: dict = {}
    if mode == "both":
        out["graphs_speedup"] = {}
        for arm in arms:
            if arm.graphs:
                base = arm.name.removesuffix(GRAPHS_SUFFIX)
                ratio, ci = _ratio(pooled[base], pooled[arm.name], seed + 300)
                out["graphs_speedup"][base] = {"ratio": ratio, "ci": ci}  # t_eager / t_graphs
    if STOCK_ARM in pooled:
        ratio, ci = _ratio(pooled[STOCK_ARM], pooled[primary], seed + 400)
        out["ours_vs_stock"] = {"ratio": ratio, "ci": ci, "ours": primary, "stock": STOCK_ARM}
    if mode != "eager":
        out["graphs"] = graph_runner(engine).graph_memory()
        out["graphs_fallback"] = graph_runner(engine).fallback_reason
    return out

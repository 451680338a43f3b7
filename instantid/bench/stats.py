"""The benchmark's stability rules and goals (pure: numbers in, dicts out; tested on synthetic timings).

* **Warm-up until steady** (:func:`warm_up`): whole interleaved repetitions run, unmeasured, until at least
  ``min_s`` seconds have passed **and** the last ``k`` repetitions' times lie within ``tol`` of each other
  (max/min - 1), or ``max_s`` is spent (then ``steady`` is False and the report says so). GPU clocks ramp over
  the first seconds (+30 % in the 2026-12-04 H200 runs), which a fixed count of warm-up repetitions missed.
* **Outlier repetitions** (:func:`flag_outliers`): per arm, a repetition whose mean step time is further from
  the arm's median than ``max(K_MAD x 1.4826 x MAD, FLOOR x median)`` is flagged; a repetition flagged in any arm
  is left out of that run's paired ratios (every arm of it, so pairs stay pairs), and every flag is reported with
  its arm, time and deviation. Nothing is left out when fewer than ``MIN_KEPT`` repetitions would remain.
* **Runs** (:func:`runs_agreement`): ``--runs N`` repeats the interleaved benchmark in one process; each run's
  full/none ratio and CI are reported, with whether every pair of runs' CIs overlap and the relative spread.
* **Goals** (:func:`goals`): issue 14's acceptance goals, each PASS or MISS with the measured value and by how
  much it misses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

WARMUP_MIN_S = 20.0  # at least this many seconds of unmeasured repetitions (clock ramp)
WARMUP_MAX_S = 90.0  # give up waiting for steadiness after this (reported as not steady)
STEADY_K = 3  # the last K warm-up repetitions ...
STEADY_TOL = 0.02  # ... within 2 % of each other (max/min - 1)
K_MAD = 5.0  # outlier: further than 5 robust sigmas (1.4826 x MAD) from the arm's median ...
FLOOR = 0.03  # ... and further than 3 % of it (a tiny MAD alone flags nothing)
MIN_KEPT = 5  # never leave out repetitions when fewer than this would remain
PEAK_TFLOPS = 790.0  # dense fp16 matmul peak measured on the H200 (device notes); the TFLOP/s column's reference

# issue 14's goals (1024^2, fp16, with graphs, one H100/H200)
GOAL_OVERHEAD = 0.01  # full/none - 1 <= 1 %
GOAL_AA = (0.995, 1.005)  # A/A: the CI inside this band
GOAL_RUNS = 0.005  # the runs' full/none within 0.5 % of each other (max/min - 1)
GOAL_GRAPHS = 0.8  # graphs full step time <= 0.8 x eager full
GOAL_STOCK = 1.25  # ours (graphs, full) >= 1.25x faster than diffusers stock (eager, full)
GOAL_R2 = 0.8  # preset savings track the work model


def warm_up(run_rep: Callable[[], float], *, min_reps: int = 1, min_s: float = WARMUP_MIN_S,
            max_s: float = WARMUP_MAX_S, k: int = STEADY_K, tol: float = STEADY_TOL,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Call ``run_rep`` (one unmeasured repetition; returns its time) until steady (see the module doc)."""
    started = clock()
    times: list[float] = []
    steady = False
    while True:
        times.append(float(run_rep()))
        elapsed = clock() - started
        last = times[-k:]
        steady = len(last) == k and max(last) / min(last) - 1 <= tol
        if len(times) >= min_reps and ((steady and elapsed >= min_s) or elapsed >= max_s):
            break
    return {"reps": len(times), "seconds": round(clock() - started, 2), "steady": steady, "rep_ms": times,
            "rule": f">= {min_s:g} s and the last {k} repetitions within {tol:.0%} (max {max_s:g} s)"}


def flag_outliers(rep_ms: dict[str, Sequence[float]], k_mad: float = K_MAD, floor: float = FLOOR,
                  min_kept: int = MIN_KEPT) -> tuple[list[int], list[dict]]:
    """(kept repetition indices, flags): the outlier rule of the module doc."""
    n = min((len(v) for v in rep_ms.values()), default=0)
    flags: list[dict] = []
    for arm, values in rep_ms.items():
        x = np.asarray(values[:n], dtype=float)
        if x.size == 0:
            continue
        median = float(np.median(x))
        mad = float(np.median(np.abs(x - median))) * 1.4826
        limit = max(k_mad * mad, floor * median)
        for i in np.flatnonzero(np.abs(x - median) > limit):
            flags.append({"rep": int(i), "arm": arm, "ms": round(float(x[i]), 4), "median_ms": round(median, 4),
                          "deviation": round(float(x[i] / median - 1), 4)})
    bad = {f["rep"] for f in flags}
    kept = [i for i in range(n) if i not in bad]
    if len(kept) < min_kept:
        for f in flags:
            f["kept_anyway"] = True
        kept = list(range(n))
    return kept, flags


def runs_agreement(ratios: Sequence[float], cis: Sequence[Sequence[float]]) -> dict:
    """Whether the runs' ratios agree: every pair of CIs overlaps, and the relative spread max/min - 1."""
    if len(ratios) < 2:
        return {"runs": len(ratios), "cis_overlap": None, "spread": None}
    overlap = all(max(a[0], b[0]) <= min(a[1], b[1]) for i, a in enumerate(cis) for b in cis[i + 1:])
    return {"runs": len(ratios), "cis_overlap": bool(overlap), "spread": float(max(ratios) / min(ratios) - 1)}


def _goal(name: str, value: float | None, target: str, passed: bool | None, miss: str) -> dict:
    return {"goal": name, "value": value, "target": target,
            "status": "N/A" if passed is None else "PASS" if passed else "MISS", "miss_by": None if passed else miss}


def goals(result: dict) -> list[dict]:
    """Issue 14's goals on a benchmark result (the primary mode: graphs when it ran)."""
    rows = result["presets"]
    g = "[g]" if "full[g]" in rows else ""
    out = []
    none = rows.get(f"none{g}")
    overhead = None if none is None else none["ratio_to_full"] - 1  # t_full / t_none - 1
    out.append(_goal(f"face-branch overhead full{g}/none{g} - 1", overhead, f"<= {GOAL_OVERHEAD:.1%}",
                     None if overhead is None else overhead <= GOAL_OVERHEAD,
                     "" if overhead is None else f"{overhead - GOAL_OVERHEAD:+.2%} points"))
    aa = rows.get(f"full#2{g}")
    if aa is None:
        out.append(_goal("A/A", None, str(GOAL_AA), None, ""))
    else:
        low, high = aa["ratio_ci"]
        ok = GOAL_AA[0] <= low and high <= GOAL_AA[1]
        out.append(_goal(f"A/A full{g}/full#2{g} (CI [{low:.4f}, {high:.4f}])", aa["ratio_to_full"],
                         f"CI inside [{GOAL_AA[0]}, {GOAL_AA[1]}]", ok,
                         f"CI exceeds the band by {max(GOAL_AA[0] - low, high - GOAL_AA[1], 0):.4f}"))
    spread = result.get("runs_agreement", {}).get("spread")
    out.append(_goal("runs' full/none spread (max/min - 1)", spread, f"<= {GOAL_RUNS:.1%}",
                     None if spread is None else spread <= GOAL_RUNS,
                     "" if spread is None else f"{spread - GOAL_RUNS:+.2%} points"))
    speed = result.get("graphs_speedup", {}).get("full")
    share = None if speed is None else 1 / speed["ratio"]  # t_graphs / t_eager
    out.append(_goal("graphs full / eager full step time", share, f"<= {GOAL_GRAPHS}",
                     None if share is None else share <= GOAL_GRAPHS,
                     "" if share is None else f"{share - GOAL_GRAPHS:+.3f}"))
    stock = result.get("ours_vs_stock")
    value = None if stock is None else stock["ratio"]
    out.append(_goal(f"ours ({stock['ours'] if stock else '-'}) vs diffusers stock (eager, full) speed", value,
                     f">= {GOAL_STOCK}x", None if value is None else value >= GOAL_STOCK,
                     "" if value is None else f"{value - GOAL_STOCK:+.3f}x"))
    r2 = result["acceptance"].get(f"proportionality_r2{g and '_graphs'}")
    out.append(_goal("preset savings vs work model R^2", r2, f">= {GOAL_R2}",
                     None if r2 is None else r2 >= GOAL_R2, "" if r2 is None else f"{r2 - GOAL_R2:+.3f}"))
    return out


def format_goals(rows: Sequence[dict]) -> list[str]:
    """One line per goal: PASS/MISS, the value, the target and by how much it misses."""
    lines = []
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        miss = f" (misses by {row['miss_by']})" if row["status"] == "MISS" else ""
        lines.append(f"GOAL {row['status']:<4} {row['goal']}: {value} (target {row['target']}){miss}")
    return lines


__all__ = ["flag_outliers", "format_goals", "goals", "runs_agreement", "warm_up"]

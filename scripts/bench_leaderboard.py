"""Time ``review.stats.leaderboard.leaderboard`` on a simulated study (default 100,000 votes, ~2,000 pairs, 5 presets).

Usage: .venv/bin/python scripts/bench_leaderboard.py [--votes 100000] [--conditions 400] [--reviewers 120]
Prints the median wall time of 3 runs (and the process CPU time, which is less sensitive to other load on a
shared machine) and the machine (platform, CPU count).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from review.stats.leaderboard import leaderboard  # noqa: E402

logger = logging.getLogger(__name__)

PRESETS = {"balanced": (35, 0.50, 0.55), "fast": (20, 0.45, 0.70), "output_only": (30, 0.48, 0.60),
           "adaptive": (40, 0.50, 0.52), "none": (0, 0.20, 0.95)}  # name: (layers, P(prefer sel), ABX accuracy)


def simulate(n_votes: int, n_conditions: int, n_reviewers: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Pairs (one per condition x preset) and vote rows in the leaderboard's input format."""
    rng = np.random.default_rng(seed)
    pairs = []
    for preset, (layers, _, _) in PRESETS.items():
        speed = 0.6 + 0.4 * layers / 52
        for c in range(n_conditions):
            full = float(rng.uniform(0.2, 0.3))
            pairs.append({
                "pair_id": f"{preset}-{c}", "preset": preset, "layer_count": layers, "condition_id": f"c{c}",
                "ssim": float(rng.beta(60, 2)), "id_cos_sel_full": float(rng.beta(200, 3)),
                "id_cos_sel_ref": float(rng.beta(30, 20)), "id_cos_full_ref": float(rng.beta(30, 20)),
                "identity_failure": "no face" if rng.random() < 0.01 else None,
                "full_step_median_s": full, "sel_step_median_s": full * speed * float(rng.normal(1, 0.02)),
                "full_run_id": f"run{c % 7}", "sel_run_id": f"run{c % 7}" if rng.random() > 0.02 else "other",
                "full_device": "cuda:0", "sel_device": "cuda:0"})
    names = list(PRESETS)
    p_idx = rng.integers(0, len(names), n_votes)
    cond = rng.integers(0, n_conditions, n_votes)
    rev = rng.integers(0, n_reviewers, n_votes)
    gold = rng.random(n_votes) < 0.05
    abx = ~gold & (rng.random(n_votes) < 0.5)
    u, left_full, x_full = rng.random(n_votes), rng.random(n_votes) < 0.5, rng.random(n_votes) < 0.5
    votes = []
    for i in range(n_votes):
        preset = names[p_idx[i]]
        _, p_sel, acc = PRESETS[preset]
        left_arm = "full" if left_full[i] else "selective"
        if abx[i]:
            ok = u[i] < acc
            x_is_a = left_arm == ("full" if x_full[i] else "selective")  # X drawn from either arm
            choice = "a" if x_is_a == ok else "b"
            mode, outcome = "abx", "correct" if ok else "wrong"
        else:
            mode = "preference"
            if gold[i]:
                outcome = "same" if u[i] < (0.3 if rev[i] < 5 else 0.9) else "full"  # r0-r4 fail gold
            else:
                outcome = "selective" if u[i] < p_sel else "same" if u[i] < p_sel + 0.2 else "full"
            choice = "same" if outcome == "same" else "left" if (outcome == left_arm) else "right"
        votes.append({"trial_id": f"t{i}", "pair_id": f"{preset}-{cond[i]}", "preset": preset,
                      "condition_id": f"c{cond[i]}", "reviewer_id": f"r{rev[i]}", "session": f"s{rev[i]}",
                      "mode": mode, "is_gold": bool(gold[i]), "left_arm": left_arm,
                      "x_arm": ("full" if x_full[i] else "selective") if mode == "abx" else None,
                      "choice": choice, "outcome": outcome,
                      "correct": int(outcome == "same") if gold[i] else None})
    return pairs, votes


def main(argv: list[str] | None = None) -> int:
    """Time the leaderboard statistics on simulated votes and print the result."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--votes", type=int, default=100_000)
    ap.add_argument("--conditions", type=int, default=400)
    ap.add_argument("--reviewers", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    pairs, votes = simulate(args.votes, args.conditions, args.reviewers)
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = leaderboard(pairs, votes)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"leaderboard: {len(votes)} votes, {len(pairs)} pairs, {len(result['rows'])} presets: "
          f"median {statistics.median(times):.3f} s wall of {args.repeats} runs "
          f"({', '.join(f'{t:.3f}' for t in times)}); median CPU time {statistics.median(cpu):.3f} s")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"cpu_count={os.cpu_count()}, python {platform.python_version()}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark table of docs/statistics.md: verdict error rates and coverage by simulation (``review.stats.simulate``).

Usage: .venv/bin/python scripts/verdict_table.py [--studies 1000] [--json out.json]
Cells: true ABX accuracy 0.50/0.55/0.60/0.70 x 5/15/40 reviewers x 1/4 presets x final look / a look after every
vote; reviewer logit SD 0.5, condition SD 0.3, 40 conditions, 40 ABX trials per reviewer, margin 0.55.
Prints a Markdown table; with several presets the rates are family-wise (at least one preset called wrongly).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from review.stats.simulate import Design, simulate_design  # noqa: E402
from review.stats.verdict_config import VerdictConfig  # noqa: E402

logger = logging.getLogger(__name__)


def _cell(r: dict | None) -> str:
    return "—" if r is None else f"{r['rate']:.3f} ± {r['mc_se']:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Simulate every cell of the verdict table and print it as markdown."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write every cell's full result here")
    ap.add_argument("--truths", default="0.5,0.55,0.6,0.7")
    ap.add_argument("--reviewers", default="5,15,40")
    ap.add_argument("--reviewer-sd", type=float, default=0.5, help="reviewer logit SD (default 0.5)")
    ap.add_argument("--condition-sd", type=float, default=0.3, help="condition logit SD (default 0.3)")
    args = ap.parse_args(argv)
    config = VerdictConfig()
    cells = []
    print("| truth | reviewers | presets | looks | votes | 'indistinguishable' | 'distinguishable' | "
          "coverage (final) | coverage (all looks) |")
    print("|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for truth in (float(t) for t in args.truths.split(",")):
        for reviewers in (int(r) for r in args.reviewers.split(",")):
            for presets in (1, 4):
                for peek in (0, 1):
                    design = Design(reviewers=reviewers, truths=(truth,) * presets, peek_every=peek,
                                    reviewer_sd=args.reviewer_sd, condition_sd=args.condition_sd)
                    r = simulate_design(design, config, args.studies, seed=int(truth * 100) + reviewers + presets)
                    cells.append(r)
                    print(f"| {truth:.2f} | {reviewers} | {presets} | {'every vote' if peek else 'final'} | "
                          f"{r['mean_votes']:.0f} | {_cell(r['indistinguishable'])} | {_cell(r['distinguishable'])} | "
                          f"{_cell(r['coverage_final'])} | {_cell(r['coverage_all_looks'])} |", flush=True)
    print(f"\n{args.studies} studies per cell; {time.perf_counter() - start:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

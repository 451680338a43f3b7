"""``python -m review simulate``: verdict error rates by simulation with known truth (``review.stats.simulate``).

Plays ABX studies through the desk's pair choice and the verdict statistics and prints each verdict's false-call
rate and the confidence sequences' coverage, with Monte Carlo errors (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from review.cli.verdict import add_verdict_options, verdict_config
from review.stats.simulate import Design, simulate_design


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the study design, the simulation size and the verdict options."""
    parser = argparse.ArgumentParser(prog="python -m review simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--reviewers", type=int, default=15, help="reviewers per study (default 15)")
    add("--truth", type=float, default=0.6, help="true ABX accuracy of every preset (default 0.6)")
    add("--truths", type=str, default=None, help="comma-separated true accuracy per preset (overrides --truth)")
    add("--presets", type=int, default=1, help="presets with --truth (default 1)")
    add("--conditions", type=int, default=40, help="conditions (default 40)")
    add("--session", type=int, default=40, help="ABX trials per reviewer (default 40)")
    add("--reviewer-sd", type=float, default=0.5, help="reviewer heterogeneity, logit SD (default 0.5)")
    add("--condition-sd", type=float, default=0.3, help="condition heterogeneity, logit SD (default 0.3)")
    add("--peek-every", type=int, default=0, help="look after every N votes (default 0: final look only)")
    add("--studies", type=int, default=500, help="simulated studies (default 500)")
    add("--schedules", type=int, default=20, help="desk trial orders drawn and reused (default 20)")
    add("--seed", type=int, default=0)
    add("--allocation-study", action="store_true",
        help="compare adaptive with fixed allocation (votes until every preset has a verdict)")
    add("--max-reviewers", type=int, default=400, help="allocation study: reviewer stream cap (default 400)")
    add("--json", action="store_true", help="print JSON")
    add_verdict_options(parser)
    return parser


def main_simulate(argv: Sequence[str]) -> int:
    """Entry point of ``python -m review simulate``."""
    args = build_parser().parse_args(list(argv))
    config = verdict_config(args)
    truths = (tuple(float(t) for t in args.truths.split(",")) if args.truths else (args.truth,) * args.presets)
    start = time.perf_counter()
    if args.allocation_study:
        from review.stats.allocation_sim import compare_allocation
        design = Design(reviewers=args.max_reviewers, truths=truths if args.truths else (0.5, 0.65, 0.8, 0.9),
                        conditions=args.conditions, session=args.session, reviewer_sd=args.reviewer_sd,
                        condition_sd=args.condition_sd, peek_every=max(args.peek_every, 1))
        result = compare_allocation(design, config, args.studies, seed=args.seed)
    else:
        design = Design(args.reviewers, truths, args.conditions, args.session, args.reviewer_sd, args.condition_sd,
                        args.peek_every)
        result = simulate_design(design, config, args.studies, seed=args.seed, schedules=args.schedules)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0



if __name__ == "__main__":
    sys.exit(main_simulate(sys.argv[1:]))

"""``python -m review leaderboard``: per-preset statistics of the study database.

Examples::

    python -m review leaderboard --db var/study.db
    python -m review leaderboard --db var/study.db --margin 0.55 --primary-preset balanced
    python -m review leaderboard --db var/study.db --include-failing   # with reviewers failing the gold
    python -m review leaderboard --db var/study.db --json > leaderboard.json

Reads only: a missing database is an error (exit 2), never created. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from review.cli.common import open_existing_study, setup_logging
from review.cli.verdict import add_verdict_options, verdict_config
from review.generation.inputs import Limits

logger = logging.getLogger(__name__)


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high:,}, not {value}")
    return value


def _n_boot(text: str) -> int:
    """Bootstrap replicates: 1..Limits.max_n_boot (a billion would try to allocate tens of GiB)."""
    return _whole(text, 1, Limits().max_n_boot)


def _seed(text: str) -> int:
    """A bootstrap seed: 0..2**32-1 (numpy's SeedSequence refuses negatives)."""
    return _whole(text, 0, Limits().max_seed)


def add_leaderboard_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``python -m review export``."""
    add = parser.add_argument
    add("--db", required=True, help="the study's SQLite database (must exist)")
    add("--seed", type=_seed, default=0, help="bootstrap seed, 0..2**32-1 (default 0)")
    add("--n-boot", type=_n_boot, default=1000,
        help=f"bootstrap replicates for pair statistics, 1..{Limits().max_n_boot:,} (default 1000)")
    add("--include-failing", action="store_true",
        help="include the reviewers (sessions) failing the gold screening (default: left out everywhere)")
    add("-v", "--verbose", action="store_true", help="log progress")
    add_verdict_options(parser)


def leaderboard_kw(args: argparse.Namespace) -> dict[str, Any]:
    """``review.stats.leaderboard.leaderboard`` options from the parsed flags (``config``: ``VerdictConfig``)."""
    return {"config": verdict_config(args), "seed": args.seed, "n_boot": args.n_boot}


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the leaderboard options and --json."""
    parser = argparse.ArgumentParser(prog="python -m review leaderboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_leaderboard_options(parser)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON instead of the table")
    parser.add_argument("--without-failing", action="store_true",
                        help="accepted for old scripts: leaving failing reviewers out is now the default")
    return parser


def main_leaderboard(argv: Sequence[str]) -> int:
    """Entry point of ``python -m review leaderboard``."""
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    from review.stats.board import compute_leaderboard
    from review.stats.leaderboard_view import text_table, verdicts_markdown

    store = open_existing_study(args.db)
    if store is None:
        return 2
    with store:
        result = compute_leaderboard(store, **leaderboard_kw(args))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(text_table(result, args.include_failing))
        print()
        print(verdicts_markdown(result, args.include_failing))
    return 0


if __name__ == "__main__":
    sys.exit(main_leaderboard(sys.argv[1:]))

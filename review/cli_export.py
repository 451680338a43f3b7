"""``python -m review export``: votes, pairs, trials and the leaderboard of the study database as files.

Examples::

    python -m review export --db var/study.db --format csv --out exports/
    python -m review export --db var/study.db --format json --out exports/ --margin 0.55

Writes votes, pairs and trials in the chosen format plus leaderboard.json (and leaderboard.csv, the readable
table, for --format csv) into --out (created when missing) and prints the paths. Exports hold the answer keys
(which side showed which arm) and the hashed client columns. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from review.cli_common import error, open_existing_study, setup_logging
from review.cli_leaderboard import add_leaderboard_options, leaderboard_kw

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m review export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_leaderboard_options(parser)
    parser.add_argument("--format", required=True, choices=["csv", "json"], help="file format of the tables")
    parser.add_argument("--out", required=True, help="output directory (created when missing)")
    return parser


def main_export(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    from review.export import ExportError, export_all

    if not args.out.strip():
        return error("--out is empty: name the output directory")
    store = open_existing_study(args.db)
    if store is None:
        return 2
    with store:
        try:
            paths = export_all(store, args.out, args.format, **leaderboard_kw(args))
        except (ExportError, OSError) as exc:
            return error(f"cannot export to {args.out}: {exc}")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main_export(sys.argv[1:]))

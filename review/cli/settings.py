"""``python -m review settings``: show or change the study settings kept in the database.

Examples::

    python -m review settings --db var/review.db
    python -m review settings --db var/review.db reveal=end identity=invite leaderboard_public=0

Settings (review/study/settings.py): reveal = none | end | each, identity = open | invite | hf, leaderboard_public = 0 | 1.
Every value is checked before any is written: one bad value changes nothing. The app reads them at start; its
flags and REVIEW_REVEAL / REVIEW_IDENTITY / REVIEW_LEADERBOARD_PUBLIC win over them. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from review.cli.common import error, open_existing_study, setup_logging
from review.study.settings import DEFAULTS, SettingError, check_setting

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the database and KEY=VALUE assignments."""
    parser = argparse.ArgumentParser(prog="python -m review settings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="var/review.db", help="the study database")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    parser.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="settings to store")
    return parser


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """['reveal=end'] -> {'reveal': 'end'}, every value checked; SettingError names the first bad one."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SettingError(f"expected KEY=VALUE, not {item!r}")
        values[key.strip()] = check_setting(key.strip(), value)
    return values


def main_settings(argv: Sequence[str]) -> int:
    """Entry point of ``python -m review settings``."""
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    try:
        changes = parse_assignments(args.assignments)
    except SettingError as exc:
        return error(str(exc))
    store = open_existing_study(args.db, writable=True)
    if store is None:
        return 2
    with store:
        for key, value in changes.items():
            store.put_setting(key, value)
        stored = store.get_settings()
    for key, default in DEFAULTS.items():
        print(f"{key}={stored.get(key, default)}" + ("" if key in stored else "  (default)"))
    return 0


if __name__ == "__main__":
    sys.exit(main_settings(sys.argv[1:]))

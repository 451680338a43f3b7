"""``python -m review export``: the study as a Hugging Face dataset folder, optionally pushed to the Hub.

Examples::

    python -m review export --db var/study.db --out exports/
    python -m review export --db var/study.db --out exports/ --public --margin 0.55
    HF_TOKEN=hf_... python -m review export --db var/study.db --out exports/ --push-to-hub me/my-study

Writes README.md (the dataset card), votes/ pairs/ trials/ (Parquet), csv/, json/ and leaderboard.json/.csv into
--out (created when missing; see review/export/dataset.py) and prints the paths. Reviewer ids are pseudonymised with the
study's salt (``<db>.salt``, made on the first export). Without --public the export holds the answer keys (which
side showed which arm) and the session and client-hash columns. --push-to-hub uploads the folder to a dataset
repo (private unless --hub-public) with the token from HF_TOKEN or ``hf auth login``.
Exit codes: 0 done, 2 bad input (no database, bad output folder, no token).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from review.cli.common import error, open_existing_study, setup_logging
from review.cli.leaderboard import add_leaderboard_options, leaderboard_kw

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the leaderboard options plus the output folder, formats and Hub push."""
    parser = argparse.ArgumentParser(prog="python -m review export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_leaderboard_options(parser)
    parser.add_argument("--out", required=True, help="output directory (created when missing)")
    parser.add_argument("--format", action="append", choices=["parquet", "csv", "json"], default=None,
                        help="table formats to write (repeatable; default all three)")
    parser.add_argument("--public", action="store_true",
                        help="answered trials only, no session or client columns (what the open Export tab gives)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                        help="upload the folder to this Hugging Face dataset repo (needs HF_TOKEN or a login)")
    parser.add_argument("--hub-public", action="store_true", help="create the dataset repo public (default private)")
    return parser


def main_export(argv: Sequence[str]) -> int:
    """Entry point of ``python -m review export``."""
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    from review.export.dataset import FORMATS, ExportError, export_dataset
    from review.export.hub import HubError, hub_token, push_folder

    if not args.out.strip():
        return error("--out is empty: name the output directory")
    token = None
    if args.push_to_hub:  # checked before any work
        token = hub_token()
        if token is None:
            return error("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    store = open_existing_study(args.db)
    if store is None:
        return 2
    with store:
        try:
            paths = export_dataset(store, args.out, full=not args.public, formats=args.format or FORMATS,
                                   include_failing=args.include_failing, **leaderboard_kw(args))
        except (ExportError, OSError) as exc:
            return error(f"cannot export to {args.out}: {exc}")
    for path in paths:
        print(path)
    if args.push_to_hub:
        try:
            url = push_folder(paths[-1].parent, args.push_to_hub, token=token, private=not args.hub_public)
        except HubError as exc:
            return error(str(exc))
        print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main_export(sys.argv[1:]))

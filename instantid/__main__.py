"""``python -m instantid <command>``: command-line entry points."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; each subcommand parses its own arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m instantid")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    sub.add_parser("presets", add_help=False, help="list layer presets, their layers and work shares")
    sub.add_parser("generate", add_help=False, help="generate one image with a preset and print per-step timing")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "presets":
        from instantid.cli_presets import main_presets

        return main_presets(rest)
    if args.command == "generate":
        from instantid.cli_generate import main_generate

        return main_generate(rest)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""``python -m review <command>`` (installed: ``instantid-review <command>``): the study's command line.

Each command lives in ``review/cli/<command>.py`` as ``main_<command>(argv) -> int`` with its own parser and
``--help``; it is imported only when run (so ``generate`` pulls in torch, ``leaderboard`` does not).
``python -m instantid`` dispatches the same way. Logging and warnings go to stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("review.cli.generate", "main_generate", "generate full/selective pairs into the study database"),
    "leaderboard": ("review.cli.leaderboard", "main_leaderboard", "per-preset statistics from the database"),
    "export": ("review.cli.export", "main_export",
               "export the study as a Hugging Face dataset folder (CSV/JSON/Parquet + README card)"),
    "simulate": ("review.cli.simulate", "main_simulate", "verdict error rates by simulation with known truth"),
    "settings": ("review.cli.settings", "main_settings", "show or change the study settings (reveal, identity, ...)"),
    "invites": ("review.cli.invites", "main_invites", "make invite links for an invite-only study"),
}
EXAMPLES = """examples:
  python -m review generate --stack tiny --db var/study.db --faces data/faces --prompts data/prompts.txt \\
      --presets balanced,fast --seeds 1,2 --steps 4
  python -m review leaderboard --db var/study.db --json
  python -m review export --db var/study.db --out exports/
  python -m review export --db var/study.db --out exports/ --push-to-hub me/my-study   # needs HF_TOKEN
  python -m review simulate --reviewers 15 --truth 0.6 --studies 500 --json

'python -m review <command> --help' shows a command's options."""


def available() -> dict[str, tuple[str, str, str]]:
    """The commands this dispatcher offers (name -> module, function, help)."""
    return dict(COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The dispatcher: one subparser per command; each command's own parser reads the rest (and its --help)."""
    parser = argparse.ArgumentParser(prog="python -m review",
                                     description="The review study: paired generation, leaderboard and dataset export.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, add_help=False, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit status."""
    args, rest = build_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    logging.captureWarnings(True)
    module, function, _ = COMMANDS[args.command]
    return int(getattr(importlib.import_module(module), function)(rest))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m review <command>``: the study's command line.

Each command lives in its own module ``review/cli_<command>.py`` exposing ``main_<command>(argv) -> int`` and
is imported only when run (so ``generate`` pulls in torch, ``leaderboard`` does not). Commands whose module is
not present in this checkout are simply not offered.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("review.cli_generate", "main_generate", "generate full/selective pairs into the study database"),
    "leaderboard": ("review.cli_leaderboard", "main_leaderboard", "per-preset statistics from the database"),
    "export": ("review.cli_export", "main_export", "export pairs, trials and votes (CSV/JSON)"),
    "settings": ("review.cli_settings", "main_settings", "show or change the study settings (reveal, identity, ...)"),
    "invites": ("review.cli_invites", "main_invites", "make invite links for an invite-only study"),
}


def available() -> dict[str, tuple[str, str, str]]:
    """The commands whose module exists here."""
    return {name: entry for name, entry in COMMANDS.items() if importlib.util.find_spec(entry[0]) is not None}


def usage() -> str:
    lines = ["usage: python -m review <command> [options]   (python -m review <command> --help)", "", "commands:"]
    lines += [f"  {name:<12} {entry[2]}" for name, entry in available().items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command; each command parses its own arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    commands = available()
    entry = commands.get(argv[0])
    if entry is None:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = entry
    return int(getattr(importlib.import_module(module), function)(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())

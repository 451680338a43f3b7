"""``python -m instantid <command>`` (installed: ``instantid <command>``): the engine's command line.

Each command lives in ``instantid/cli/<command>.py`` as ``main_<command>(argv) -> int`` with its own parser and
``--help``; it is imported only when run, so ``presets`` never loads torch. ``python -m review`` dispatches the
same way. Logging and warnings go to stderr; results go to stdout.
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
    "presets": ("instantid.cli.presets", "main_presets", "list layer presets, their layers and work shares"),
    "generate": ("instantid.cli.generate", "main_generate",
                 "generate one image with a preset and print per-step timing"),
}
EXAMPLES = """examples:
  python -m instantid presets --json
  python -m instantid generate --stack tiny --face data/faces/astronaut.jpg --prompt "a portrait" \\
      --preset fast --seed 1 --steps 4 --out out.png
  python -m instantid generate --stack ./checkpoints --base stabilityai/stable-diffusion-xl-base-1.0 \\
      --face me.jpg --prompt "a watercolor portrait" --preset balanced --steps 30 --out out.png

'python -m instantid <command> --help' shows a command's options."""


def build_parser() -> argparse.ArgumentParser:
    """The dispatcher: one subparser per command; each command's own parser reads the rest (and its --help)."""
    parser = argparse.ArgumentParser(prog="python -m instantid",
                                     description="InstantID with a per-layer choice of face-attention layers: presets and one-image generation.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, add_help=False, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit status."""
    args, rest = build_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.captureWarnings(True)
    module, function, _ = COMMANDS[args.command]
    return int(getattr(importlib.import_module(module), function)(rest))


if __name__ == "__main__":
    sys.exit(main())

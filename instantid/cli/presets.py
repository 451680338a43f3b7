"""``python -m instantid presets``: list the layer presets, their layers and their share of the face-branch work."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from instantid.bench.work_model import preset_work
from instantid.layers import LAYER_MAPS
from instantid.presets import PresetError, describe_presets, resolve_preset

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  python -m instantid presets
  python -m instantid presets --json --size 512
  python -m instantid presets --spec output:0-2@0-0.5 --spec adaptive:0.2"""


def build_parser(prog: str = "python -m instantid presets") -> argparse.ArgumentParser:
    """Arguments of the ``presets`` subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog, description="List layer presets with their layers and share of the face-branch work.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object {preset: {count, layers, ...}}"
    )
    parser.add_argument(
        "--ip-weight", type=float, default=0.8, help="face (IP) weight for 'adaptive' (default 0.8)"
    )
    parser.add_argument("--threshold", type=float, default=0.1, help="'adaptive' threshold (default 0.1)")
    parser.add_argument("--map", choices=sorted(LAYER_MAPS), default="sdxl", help="layer map (default sdxl)")
    parser.add_argument(
        "--size", type=int, default=1024, help="square output size for the work shares (default 1024)"
    )
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        help="also resolve this spec (repeatable), e.g. output:0-2@0-0.5",
    )
    return parser


def collect(
    map_key: str = "sdxl",
    ip_weight: float = 0.8,
    threshold: float = 0.1,
    size: int = 1024,
    specs: Sequence[str] = (),
) -> dict[str, dict[str, object]]:
    """``{name: {count, layers, description, start, end, flops_share, bytes_share}}`` for the named presets and
    any extra specs (work shares per UNet call at ``size`` x ``size``, CFG batch 2, 2-byte dtype, no K/V cache)."""
    layers = LAYER_MAPS[map_key]
    table = describe_presets(layers, ip_weight=ip_weight, threshold=threshold)
    for spec in specs:
        preset = resolve_preset(spec, layers, ip_weight=ip_weight, threshold=threshold)
        ordered = [layer.name for layer in layers if layer.name in preset.layers]
        table[preset.name] = {"count": len(ordered), "layers": ordered, "description": preset.description}
    for name, row in table.items():
        preset = resolve_preset(name, layers, ip_weight=ip_weight, threshold=threshold)
        work = preset_work(preset.layers, layers, size, size)
        row.update(
            start=preset.start,
            end=preset.end,
            flops_share=round(work["flops_share"], 6),
            bytes_share=round(work["bytes_share"], 6),
        )
    return table


def _table(rows: dict[str, dict[str, object]], total: int) -> str:
    width = max(len("preset"), *(len(name) for name in rows))
    lines = [f"{'preset':<{width}} {'layers':>7} {'FLOPs':>7} {'bytes':>7}  description"]
    for name, row in rows.items():
        lines.append(
            f"{name:<{width}} {row['count']:>3}/{total:<3} {row['flops_share']:>7.1%} {row['bytes_share']:>7.1%}  "
            f"{row['description']}"
        )
    lines.append(
        "FLOPs/bytes: share of the face-branch work of all layers per UNet call (CFG batch 2, 2-byte dtype)."
    )
    return "\n".join(lines)


def main_presets(argv: Sequence[str] | None = None) -> int:
    """Run the ``presets`` subcommand; returns the exit status (2 for a bad spec or argument)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        rows = collect(args.map, args.ip_weight, args.threshold, args.size, args.spec)
    except PresetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, len(LAYER_MAPS[args.map])))
    return 0

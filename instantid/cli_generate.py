"""``python -m instantid generate``: one image for a face, prompt, preset and seed, with per-step timing."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); both positive multiples of 8."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x1024, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 8, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m instantid generate", description=__doc__)
    parser.add_argument("--stack", default="tiny", help="'tiny' (offline random weights) or an InstantID folder/repo id")
    parser.add_argument("--base", default=None, help="SDXL base: folder, repo id or .safetensors (default $INSTANTID_BASE)")
    parser.add_argument("--face", required=True, help="reference photo; its largest face is used")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--preset", default="full", help="preset name or selectors, e.g. balanced, output:0-2+middle:0-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=parse_size, default=None, help="WxH (default 1024x1024; 128x128 on tiny)")
    parser.add_argument("--ip-weight", type=float, default=0.8)
    parser.add_argument("--cn-scale", type=float, default=0.8)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=[None, "fp16", "bf16", "fp32"])
    parser.add_argument("--cuda-graphs", default="auto", choices=["auto", "on", "off"],
                        help="denoising steps as captured CUDA graphs (default auto: on with CUDA, off on CPU)")
    parser.add_argument("--face-model-root", default=None, help="insightface root holding models/antelopev2")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--json", action="store_true", help="print the timing as JSON")
    return parser


def main_generate(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from . import GenerationRequest, load_engine, load_image
    from .face import FaceError
    from .loading import WeightsError
    from .presets import PresetError

    width, height = args.size or ((128, 128) if args.stack == "tiny" else (1024, 1024))
    try:
        image = load_image(args.face)
        engine = load_engine(args.stack, base=args.base, device=args.device, dtype=args.dtype,
                             face_model_root=args.face_model_root, cuda_graphs=args.cuda_graphs)
        request = GenerationRequest(face_image=image, prompt=args.prompt, negative_prompt=args.negative_prompt,
                                    seed=args.seed, steps=args.steps, width=width, height=height,
                                    ip_weight=args.ip_weight, cn_scale=args.cn_scale, guidance_scale=args.guidance)
        result = engine.generate(request, args.preset)
    except (FaceError, WeightsError, PresetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.image.save(args.out)
    report = {"out": args.out, "preset": result.preset, "layer_count": result.layer_count,
              "step_times_s": [round(t, 5) for t in result.step_times_s], "total_s": round(result.total_s, 4),
              "warnings": result.warnings, "timing_mode": result.timing_mode, **engine.describe()}
    if args.json:
        print(json.dumps(report))
    else:
        for i, t in enumerate(result.step_times_s, 1):
            print(f"step {i:3d}/{len(result.step_times_s)}  {t * 1e3:9.1f} ms")
        print(f"preset {result.preset} ({result.layer_count} layers), total {result.total_s:.2f} s on "
              f"{report['device']} ({report['dtype']}), steps {result.timing_mode}; wrote {args.out}")
        for warning in result.warnings:
            print(f"warning: {warning}")
    return 0

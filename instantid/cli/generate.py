"""``python -m instantid generate``: one image for a face, prompt, preset and seed, with per-step timing.

Examples::

    python -m instantid generate --stack tiny --face data/faces/astronaut.jpg --prompt "a portrait" \\
        --preset fast --seed 1 --steps 4 --out out.png
    python -m instantid generate --stack ./checkpoints --base stabilityai/stable-diffusion-xl-base-1.0 \\
        --face-model-root ~/.insightface --face me.jpg --prompt "a watercolor portrait" --preset balanced \\
        --seed 1 --steps 30 --json --out out.png

The timing goes to stdout (a table, or one JSON object with --json); warnings go to stderr.
Exit codes: 0 done, 2 bad input (unreadable face, no face, bad weights or preset).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from instantid.settings import GenerationSettings, size_argument

logger = logging.getLogger(__name__)

DEFAULTS = GenerationSettings()  # the flags' defaults are the settings' own


def out_problems(out: str) -> list[str]:
    """Why ``--out`` cannot take the PNG (checked before anything is generated); empty when it can."""
    path = Path(out).expanduser()
    if not out.strip():
        return ["--out is empty: name the output PNG file"]
    if path.is_dir():
        return [f"--out {out} is a folder; name a file inside it, e.g. {path / 'out.png'}"]
    if not path.parent.is_dir():
        return [f"--out {out}: the folder {path.parent} does not exist"]
    if path.suffix.lower() != ".png":
        return [f"--out {out}: the output is a PNG; end the name in .png"]
    return []


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m instantid generate``."""
    parser = argparse.ArgumentParser(prog="python -m instantid generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="tiny", help="'tiny' (offline random weights) or an InstantID folder/repo id")
    parser.add_argument("--base", default=None, help="SDXL base: folder, repo id or .safetensors (default $INSTANTID_BASE)")
    parser.add_argument("--face", required=True, help="reference photo; its largest face is used")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default=DEFAULTS.negative_prompt)
    parser.add_argument("--preset", default="full", help="preset name or selectors, e.g. balanced, output:0-2+middle:0-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps)
    parser.add_argument("--size", type=size_argument, default=None, help="WxH (default 1024x1024; 128x128 on tiny)")
    parser.add_argument("--ip-weight", type=float, default=DEFAULTS.ip_weight)
    parser.add_argument("--cn-scale", type=float, default=DEFAULTS.cn_scale)
    parser.add_argument("--guidance", type=float, default=DEFAULTS.guidance_scale)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"],
                        help="default fp16 on GPU, fp32 on CPU")
    parser.add_argument("--cuda-graphs", default="auto", choices=["auto", "on", "off"],
                        help="denoising steps as captured CUDA graphs (default auto: on with CUDA, off on CPU)")
    parser.add_argument("--face-model-root", default=None, help="insightface root holding models/antelopev2")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--json", action="store_true", help="print the timing as JSON")
    return parser


def main_generate(argv: Sequence[str]) -> int:
    """Check the arguments and the face, generate one image, save it and print its timing; returns the status."""
    args = build_parser().parse_args(list(argv))
    from instantid.face import FaceError, load_image  # the face is read before torch and diffusers load
    from instantid.limits import request_problems
    from instantid.settings import GenerationRequest

    width, height = args.size or ((128, 128) if args.stack == "tiny" else (1024, 1024))
    settings = dict(negative_prompt=args.negative_prompt, steps=args.steps, width=width, height=height,
                    ip_weight=args.ip_weight, cn_scale=args.cn_scale, guidance_scale=args.guidance)
    # cheap checks first: the request (instantid/limits.py, as GenerationRequest checks itself) and the output
    # path, all listed at once, before the image is decoded and long before the engine loads
    problems = request_problems(prompt=args.prompt, seed=args.seed, settings=settings) + out_problems(args.out)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        request = GenerationRequest(face_image=load_image(args.face), prompt=args.prompt, seed=args.seed,
                                    settings=GenerationSettings(**settings))
    except FaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from instantid.engine import load_engine
    from instantid.loading import WeightsError
    from instantid.presets import PresetError

    try:
        engine = load_engine(args.stack, base=args.base, device=args.device, dtype=args.dtype,
                             face_model_root=args.face_model_root, cuda_graphs=args.cuda_graphs)
        result = engine.generate(request, args.preset)
    except (FaceError, WeightsError, PresetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result.image.save(args.out, format="PNG")
    except OSError as exc:  # e.g. the disk filled up during the generation: no partial file stays
        Path(args.out).unlink(missing_ok=True)
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
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
            print(f"warning: {warning}", file=sys.stderr)
    return 0

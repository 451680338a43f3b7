"""Which GPU kernels make up the face branch's cost: torch.profiler over eager steps of `full` and `none`.

The graphs benchmark measures the whole branch (full[g] / none[g]); a captured graph hides its kernels from the
profiler, so this profiles the same step eagerly: the kernels `full` runs that `none` does not (or runs longer)
are the face branch. CUDA time per kernel name is summed over STEPS steps and divided by the steps; the table
lists the largest differences. Needs a CUDA GPU (sdxl-shape stack at 1024², fp16, CFG batch 2).

    python scripts/profile_face_branch.py [--steps 5] [--out $OUT/profile-face-branch.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instantid.bench.stack import load_bench_stack  # noqa: E402
from instantid.presets import resolve_preset  # noqa: E402
from instantid.step import build_step_inputs, denoise_step  # noqa: E402

logger = logging.getLogger("profile_face_branch")


def kernel_times(engine, inputs, layers: frozenset[str], steps: int) -> dict[str, float]:
    """Mean CUDA microseconds per step, per kernel name, for one preset's eager step."""
    engine.patcher.apply(layers)
    engine.patcher.clear_cache()
    t = inputs.timesteps[0]
    for _ in range(3):  # warm-up: cuBLAS handles, the face K/V cache filled
        denoise_step(engine.pipe, inputs, t)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            denoise_step(engine.pipe, inputs, t)
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
        if cuda_us and event.key and not event.key.startswith("ProfilerStep"):
            totals[event.key] += cuda_us / steps
    return dict(totals)


def main(argv: list[str] | None = None) -> int:
    """Profile full and none; print the kernels that differ most; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per preset (default 5)")
    parser.add_argument("--size", type=int, default=1024, help="square output side (default 1024)")
    parser.add_argument("--top", type=int, default=15, help="rows in the table (default 15)")
    parser.add_argument("--out", type=Path, default=None, help="JSON with every kernel's time per preset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU", file=sys.stderr)
        return 2
    engine = load_bench_stack("sdxl-shape", "cuda", "fp16")
    inputs = build_step_inputs(engine.pipe, args.size, args.size, 10, seed=0)
    arms = {name: resolve_preset(name, engine.layers).layers for name in ("full", "none")}
    times = {name: kernel_times(engine, inputs, layers, args.steps) for name, layers in arms.items()}
    full, none = times["full"], times["none"]
    names = set(full) | set(none)
    diff = sorted(((full.get(n, 0.0) - none.get(n, 0.0), n) for n in names), reverse=True)
    total_full, total_none = sum(full.values()), sum(none.values())
    print(f"face branch kernels, sdxl-shape {args.size}x{args.size} fp16 CFG batch 2, eager, mean per step over "
          f"{args.steps} steps ({torch.cuda.get_device_name(0)})")
    print(f"sum of kernel time per step: full {total_full / 1e3:.2f} ms, none {total_none / 1e3:.2f} ms, "
          f"difference {(total_full - total_none) / 1e3:.3f} ms")
    print(f"{'full - none us':>14} {'full us':>10} {'none us':>10}  kernel")
    for delta, name in diff[: args.top]:
        print(f"{delta:14.1f} {full.get(name, 0.0):10.1f} {none.get(name, 0.0):10.1f}  {name[:110]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"steps": args.steps, "size": args.size, "full_us": full, "none_us": none},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m review generate``: paired generation (full vs selective presets) into the study database.

Examples::

    python -m review generate --stack tiny --db var/study.db --faces data/faces/astronaut.jpg \\
        --prompts "a portrait photo, studio light" --presets balanced,fast --seeds 1,2 --steps 2
    python -m review generate --stack /models/InstantID --db var/study.db --faces data/faces \\
        --prompts data/prompts.txt --presets balanced,fast,output_only --seeds 1-4 --steps 30
    python -m review generate --stack tiny --db var/study.db --matrix usecases --presets balanced,fast

Several GPUs or processes (each takes whole conditions, all write the same --db; see docs/scale-out.md)::

    accelerate launch --multi_gpu --num_processes 4 -m review generate --stack /models/InstantID --db var/study.db ...

Re-running skips every pair the database already holds. Exit codes: 0 done, 1 some generations failed (the rest
are stored; re-run to retry), 2 bad input (nothing generated).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from instantid import GenerationSettings, RequestError, parse_size
from review.cli.common import error, setup_logging
from review.cli.generate_run import drop_bad_faces, run_generation
from review.generation.conditions import (
    Condition,
    InputError,
    expand_conditions,
    face_files,
    load_matrix,
    parse_presets,
    read_prompts,
)
from review.generation.inputs import parse_seeds
from review.generation.uploads import read_upload

logger = logging.getLogger(__name__)

DEFAULT_DB = "var/study.db"  # var/ is git-ignored
TINY_STEPS, TINY_SIZE, TINY_SCALE = 4, "128x128", 0.125  # tiny-stack defaults (steps, --size, --size-scale)
DEFAULTS = GenerationSettings()  # the flags' defaults are the settings' own


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (settings defaults as ``GenerationSettings``'s)."""
    parser = argparse.ArgumentParser(prog="python -m review generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--stack", default="tiny", help="'tiny' (offline random stack) or an InstantID weights folder / repo id")
    add("--base", default=None, help="SDXL base for real weights (default $INSTANTID_BASE or the hub id)")
    add("--device", default=None, help="torch device (default cuda when available)")
    add("--dtype", default=None, choices=["fp16", "bf16", "fp32"], help="default fp16 on GPU, fp32 on CPU")
    add("--face-model-root", default=None, help="insightface root holding models/antelopev2")
    add("--cuda-graphs", default="auto", choices=["auto", "on", "off"],
        help="denoising steps as captured CUDA graphs (default auto: on with CUDA); each pair records its mode")
    add("--db", default=DEFAULT_DB, help=f"SQLite database (created when missing; default {DEFAULT_DB})")
    add("--data-dir", default=None, help="where images/ and faces/ are written (default: the database's folder)")
    add("--faces", default=None, help="a face image or a folder of them")
    add("--prompts", default=None, help="a prompts file (one per line, # comments) or one prompt text")
    add("--matrix", default=None, help="'usecases' or a matrix JSON file; replaces --faces/--prompts/--size/...")
    add("--presets", default="balanced,fast", help="selective presets, comma separated (default balanced,fast)")
    add("--seeds", default=None, help="seeds: 1,2,3 or ranges 1-4 (default 1; with --matrix the file's)")
    add("--steps", type=int, default=None, help=f"denoising steps (default {DEFAULTS.steps}; {TINY_STEPS} on tiny)")
    add("--size", default=None, help=f"WxH, multiples of 8 (default {DEFAULTS.size}; {TINY_SIZE} on tiny)")
    add("--size-scale", type=float, default=None, help=f"--matrix only: scale its sizes (default 1; {TINY_SCALE} "
                                                       "on tiny)")
    add("--ip-weight", type=float, default=DEFAULTS.ip_weight, help=f"face-branch scale (default {DEFAULTS.ip_weight})")
    add("--cn-scale", type=float, default=DEFAULTS.cn_scale, help=f"IdentityNet strength (default {DEFAULTS.cn_scale})")
    add("--guidance", type=float, default=DEFAULTS.guidance_scale,
        help=f"guidance scale (default {DEFAULTS.guidance_scale})")
    add("--negative-prompt", default=DEFAULTS.negative_prompt, help="negative prompt (default empty)")
    add("--no-warmup", action="store_true", help="skip the untimed warm-up generation")
    add("--quiet", action="store_true", help="no progress bar")
    add("-v", "--verbose", action="store_true", help="log each generation")
    return parser


def _given(value: int | None, default: int | None) -> int | None:
    """``value`` unless it was not given (0 is given, and refused by the limits, never replaced by the default)."""
    return default if value is None else value


def conditions_from_args(args: argparse.Namespace) -> list[Condition]:
    """The conditions the arguments name (InputError or RequestError for bad input); nothing is read but file
    names and prompts."""
    tiny = args.stack == "tiny"
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None  # the app's seed rules
    # the settings and every condition are checked against instantid's limits when they are made
    if args.matrix is not None:
        clashing = [f"--{name.replace('_', '-')}" for name in ("faces", "prompts", "size")
                    if getattr(args, name) is not None]
        if clashing:
            raise InputError(f"--matrix defines faces, prompts and sizes; drop {', '.join(clashing)}")
        scale = args.size_scale if args.size_scale is not None else (TINY_SCALE if tiny else 1.0)
        return load_matrix(args.matrix, seeds=seeds, steps=_given(args.steps, TINY_STEPS if tiny else None),
                           size_scale=scale)
    if args.faces is None or args.prompts is None:
        raise InputError("give --faces and --prompts (or --matrix usecases)")
    if args.size_scale is not None:
        raise InputError("--size-scale applies to --matrix only; use --size")
    width, height = parse_size(args.size or (TINY_SIZE if tiny else DEFAULTS.size))
    settings = GenerationSettings(
        negative_prompt=args.negative_prompt, steps=_given(args.steps, TINY_STEPS if tiny else DEFAULTS.steps),
        width=width, height=height, ip_weight=args.ip_weight, cn_scale=args.cn_scale, guidance_scale=args.guidance)
    return expand_conditions(face_files(args.faces), read_prompts(args.prompts), seeds or [1], settings)


def main_generate(argv: Sequence[str]) -> int:
    """Generate the pairs the arguments name into the study; the exit code as the module docstring says."""
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    from instantid import FaceError, PresetError, WeightsError

    try:
        conditions = conditions_from_args(args)
        presets = parse_presets(args.presets)
    except (InputError, RequestError, FaceError) as exc:
        return error(str(exc))
    bad: dict[Path, str] = {}
    for face in dict.fromkeys(c.face for c in conditions):  # unreadable files: found before the engine loads
        try:
            upload = read_upload(face)  # the app's reader: size from the header, pixel cap, same conversions
        except (InputError, FaceError) as exc:
            bad[face] = str(exc)
            continue
        for note in upload.notes:  # every fix is reported, as the app shows it beside the result
            print(f"note: {face}: {note}", file=sys.stderr)
    conditions = drop_bad_faces(conditions, bad)
    if not conditions:
        return error("no usable face; nothing generated:\n" + "\n".join(f"  {f}: {r}" for f, r in bad.items()))
    faces = list(dict.fromkeys(c.face for c in conditions))
    db = Path(args.db).expanduser()
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else db.parent
    face_dirs = {f.resolve().parent for f in faces}
    if (data_dir / "faces").resolve() in face_dirs:
        return error(f"--data-dir {data_dir} would write face copies among the input faces; choose another")
    problem = _db_problem(db)  # before the engine loads: a damaged, foreign or unwritable --db is found now
    if problem:
        return error(problem)
    code = run_generation(args, conditions, presets, db, data_dir, (FaceError, PresetError, WeightsError), bad)
    if bad:
        print(f"error: {len(bad)} face file(s) skipped, the others were processed:", file=sys.stderr)
        for face, reason in bad.items():
            print(f"  {face}: {reason}", file=sys.stderr)
        return max(code, 1)
    return code


def _db_problem(db: Path) -> str | None:
    """Why ``--db`` cannot take the study (checked read-only: nothing is written), or None."""
    from review.store import Store, StoreError
    from review.store.opening import check_path

    try:
        check_path(db, must_exist=False, writable=True)
        if db.exists() and db.stat().st_size:
            Store(db, read_only=True, migrate=False).close()  # quick_check and the schema, through mode=ro
    except (StoreError, OSError) as exc:
        return str(exc)
    return None

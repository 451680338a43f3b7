"""Generation conditions and the inputs that expand into them: faces, prompts, seeds, sizes, the use-case matrix.

A condition is everything a generation depends on except the preset: face, prompt, negative prompt, seed, steps,
size, ip_weight, ControlNet strength (and guidance). ``expand_conditions`` takes the cartesian product of faces x
prompts x seeds at one ``ConditionSettings``; ``load_matrix`` expands the proposal's validation matrix (``data/usecases.json``)
group by group and drops duplicates (a condition named by two groups is generated once, tagged with the first).
Everything here is pure input handling: no engine, no store. Bad input raises ``InputError`` with a message meant
for the command line.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from review.errors import InputError  # one error type for CLI and UI

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # shipped faces, prompts and the use-case matrix
MATRICES = {"usecases": DATA_DIR / "usecases.json"}  # --matrix NAME -> file (a path to a JSON file also works)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # files taken from a --faces folder
_AUTO_SPEC = re.compile(r"auto-\d+")  # auto-K presets need the engine's telemetry; checked after loading


@dataclass(frozen=True)
class ConditionSettings:
    negative_prompt: str = ""  # empty: SDXL's zero negative embedding
    steps: int = 30  # denoising steps
    width: int = 1024  # output width, a multiple of 8
    height: int = 1024  # output height, a multiple of 8
    ip_weight: float = 0.8  # face-branch scale (InstantID demo default)
    cn_scale: float = 0.8  # IdentityNet (ControlNet) strength (InstantID demo default)
    guidance_scale: float = 5.0  # classifier-free guidance


@dataclass(frozen=True)
class Condition:
    face: Path  # reference photo (its largest face conditions the generation)
    prompt: str
    seed: int
    negative_prompt: str = ""  # empty: SDXL's zero negative embedding
    steps: int = 30  # denoising steps
    width: int = 1024  # multiple of 8
    height: int = 1024  # multiple of 8
    ip_weight: float = 0.8  # face-branch scale
    cn_scale: float = 0.8  # IdentityNet strength
    guidance_scale: float = 5.0  # classifier-free guidance
    group: str = field(default="", compare=False)  # use-case tag from the matrix; not a generation input

    def __post_init__(self) -> None:
        from instantid import (
            request_problems,  # the engine's own limits: one definition (instantid/limits.py)
        )

        problems = request_problems(prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.seed,
                                    steps=self.steps, width=self.width, height=self.height,
                                    ip_weight=self.ip_weight, cn_scale=self.cn_scale,
                                    guidance_scale=self.guidance_scale)
        if problems:
            raise InputError(*problems)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def check_size(width: int, height: int) -> tuple[int, int]:
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise InputError(f"width and height must be positive multiples of 8, got {width}x{height}")
    return width, height


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); both positive multiples of 8."""
    try:
        width, height = (int(v) for v in text.lower().strip().split("x"))
    except ValueError:
        raise InputError(f"size must look like 1024x1024, got {text!r}") from None
    return check_size(width, height)


def parse_presets(text: str) -> list[str]:
    """Comma-separated selective preset specs, normalized (no whitespace, lower case); 'full' is refused (it is
    the reference arm of every pair). Specs are checked against the SDXL layer map here; the engine re-checks
    them against its own UNet before anything is generated."""
    from instantid import PresetError, resolve_preset

    specs = list(dict.fromkeys(normalize_preset(p) for p in text.split(",") if p.strip()))
    if not specs:
        raise InputError("no presets given (e.g. --presets balanced,fast)")
    if "full" in specs:
        raise InputError("'full' is the reference arm of every pair; list only selective presets")
    for spec in specs:
        if not _AUTO_SPEC.fullmatch(spec):
            try:
                resolve_preset(spec)
            except PresetError as exc:
                raise InputError(f"bad preset {spec!r}: {exc}") from exc
    return specs


def normalize_preset(spec: str) -> str:
    """The key a preset is stored under: the spec without whitespace, lower case."""
    return "".join(spec.split()).lower()


def face_files(spec: str | Path) -> list[Path]:
    """An image file, or every image in a folder (sorted by name; not recursive)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"no face images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    if path.is_file():
        return [path]
    raise InputError(f"face image or folder not found: {path}")


def read_prompts(spec: str) -> list[str]:
    """A prompts file (one prompt a line; blank lines and lines starting with '#' skipped) or one prompt text.
    A text that looks like a file name (``*.txt``) but names no file is an error, not a prompt."""
    if not spec.strip():
        raise InputError("--prompts is empty: give a prompt text or a prompts file")
    path = Path(spec).expanduser()
    try:  # a long text or one with a NUL is no file name: the OS refuses it (ENAMETOOLONG, ValueError)
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError):
        is_file = is_dir = False
    if is_file:
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the prompts file {path}: {exc}") from None
        prompts = [line for line in lines if line and not line.startswith("#")]
        if not prompts:
            raise InputError(f"no prompts in {path}")
        return list(dict.fromkeys(prompts))
    if is_dir:
        raise InputError(f"--prompts names a folder, not a prompts file: {path}")
    if spec.strip().lower().endswith(".txt") and "\n" not in spec and len(spec) < 256:
        raise InputError(f"prompts file not found: {path} (a prompt text must not end in .txt)")
    return [spec.strip()]


def expand_conditions(faces: Sequence[str | Path], prompts: Sequence[str], seeds: Sequence[int],
                      settings: ConditionSettings = ConditionSettings(), group: str = "") -> list[Condition]:
    """faces x prompts x seeds at one setting, in that nesting order (face outermost)."""
    return [Condition(face=Path(face), prompt=prompt, seed=int(seed), negative_prompt=settings.negative_prompt,
                      steps=settings.steps, width=settings.width, height=settings.height,
                      ip_weight=settings.ip_weight, cn_scale=settings.cn_scale,
                      guidance_scale=settings.guidance_scale, group=group)
            for face, prompt, seed in itertools.product(faces, prompts, seeds)]


def scale_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """Both sides times ``factor``, rounded to the nearest multiple of 8 (at least 8)."""
    return (max(8, round(width * factor / 8) * 8), max(8, round(height * factor / 8) * 8))


def _list(value: Any, name: str, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InputError(f"{where}: '{name}' is empty")
    return values


def load_matrix(path: str | Path = MATRICES["usecases"], *, seeds: Sequence[int] | None = None,
                steps: int | None = None, size_scale: float = 1.0) -> list[Condition]:
    """Expand a use-case matrix file (see ``data/usecases.json``) into unique conditions.

    Each group takes ``faces`` x ``prompts`` x ``sizes`` x ``ip_weights`` x ``cn_scales`` x seeds; a key the
    group leaves out comes from ``defaults``. Face paths are relative to the matrix file. ``seeds``/``steps``
    override the file's; ``size_scale`` multiplies every size (rounded to multiples of 8), e.g. 0.125 to run the
    1024-pixel matrix on the tiny stack."""
    path = Path(MATRICES.get(str(path), path))
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"matrix file not found: {path} (known names: {', '.join(MATRICES)})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if size_scale <= 0:
        raise InputError(f"size scale must be positive, got {size_scale}")
    defaults = spec.get("defaults", {})
    conditions: dict[Condition, None] = {}
    for index, group in enumerate(spec.get("groups", [])):
        name = group.get("name", f"group {index}")
        where = f"{path.name} group {name!r}"
        merged = {**defaults, **group}
        base = ConditionSettings(negative_prompt=merged.get("negative_prompt", ""),
                        steps=int(steps if steps is not None else merged.get("steps", ConditionSettings.steps)),
                        guidance_scale=float(merged.get("guidance_scale", ConditionSettings.guidance_scale)))
        faces = [path.parent / f for f in _list(merged.get("faces"), "faces", where)]
        missing = [str(f) for f in faces if not f.is_file()]
        if missing:
            raise InputError(f"{where}: face file(s) not found: {', '.join(missing)}")
        prompts = [str(p) for p in _list(merged.get("prompts"), "prompts", where)]
        sizes = [scale_size(*parse_size(s), size_scale) for s in _list(merged.get("sizes", "1024x1024"), "sizes",
                                                                        where)]
        ip_weights = [float(w) for w in _list(merged.get("ip_weights", ConditionSettings.ip_weight), "ip_weights", where)]
        cn_scales = [float(s) for s in _list(merged.get("cn_scales", ConditionSettings.cn_scale), "cn_scales", where)]
        group_seeds = list(seeds) if seeds is not None else [int(s) for s in _list(merged.get("seeds", [0]),
                                                                                    "seeds", where)]
        for (width, height), ip_weight, cn_scale in itertools.product(sizes, ip_weights, cn_scales):
            settings = replace(base, width=width, height=height, ip_weight=ip_weight, cn_scale=cn_scale)
            for condition in expand_conditions(faces, prompts, group_seeds, settings, group=name):
                conditions.setdefault(condition, None)
    if not conditions:
        raise InputError(f"{path} defines no conditions")
    logger.info("matrix %s: %d unique conditions", path.name, len(conditions))
    return list(conditions)

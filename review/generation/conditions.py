"""Generation conditions and the inputs that expand into them: faces, prompts, seeds, sizes, the use-case matrix.

A condition is everything a generation depends on except the preset: a face, a prompt and a seed at one
``instantid.GenerationSettings`` (negative prompt, steps, size, ip_weight, ControlNet strength, guidance), which
is defined and checked once in instantid. ``expand_conditions`` takes the cartesian product of faces x prompts x
seeds at one setting; ``load_matrix`` expands the proposal's validation matrix (``data/usecases.json``) group by
group and drops duplicates (a condition named by two groups is generated once, tagged with the first).
Everything here is pure input handling: no engine, no store. Bad input raises ``InputError`` with a message meant
for the command line.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instantid import (
    GenerationRequest,
    GenerationSettings,
    PresetError,
    RequestError,
    is_auto_spec,
    parse_size,
    request_problems,
    resolve_preset,
    split_presets,
)
from review.errors import InputError  # one error type for CLI and UI

if TYPE_CHECKING:
    import PIL.Image

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # shipped faces, prompts and the use-case matrix
MATRICES = {"usecases": DATA_DIR / "usecases.json"}  # --matrix NAME -> file (a path to a JSON file also works)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # files taken from a --faces folder


@dataclass(frozen=True)
class Condition:
    """What one generation depends on except the preset: a face, a prompt and a seed at one setting."""

    face: Path  # reference photo (its largest face conditions the generation)
    prompt: str
    seed: int
    settings: GenerationSettings = GenerationSettings()  # checked when made (instantid/settings.py)
    group: str = field(default="", compare=False)  # use-case tag from the matrix; not a generation input

    def __post_init__(self) -> None:
        problems = request_problems(prompt=self.prompt, seed=self.seed)  # the engine's own check (instantid)
        if problems:
            raise InputError(*problems)
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def size(self) -> str:
        """``"WxH"`` of the output."""
        return self.settings.size

    def inputs(self) -> dict[str, Any]:
        """The generation inputs the store keys a condition by (with the face's hash and the stack)."""
        return {"prompt": self.prompt, "seed": self.seed, **self.settings.as_dict()}

    def request(self, face_image: PIL.Image.Image, steps: int | None = None) -> GenerationRequest:
        """The engine request for this condition (``steps``: fewer, for an untimed warm-up)."""
        settings = self.settings if steps is None else GenerationSettings(**{**self.settings.as_dict(),
                                                                              "steps": steps})
        return GenerationRequest(face_image=face_image, prompt=self.prompt, seed=self.seed, settings=settings)


def parse_presets(text: str) -> list[str]:
    """Comma-separated selective preset specs in their normal form (``instantid.split_presets``); 'full' is
    refused (it is the reference arm of every pair). Specs are checked against the SDXL layer map here; the engine
    re-checks them against its own UNet before anything is generated (auto-K, which needs its telemetry, only
    there)."""
    specs = split_presets(text)
    if not specs:
        raise InputError("no presets given (e.g. --presets balanced,fast)")
    if "full" in specs:
        raise InputError("'full' is the reference arm of every pair; list only selective presets")
    for spec in specs:
        if not is_auto_spec(spec):
            try:
                resolve_preset(spec)
            except PresetError as exc:
                raise InputError(f"bad preset {spec!r}: {exc}") from exc
    return specs


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
                      settings: GenerationSettings = GenerationSettings(), group: str = "") -> list[Condition]:
    """faces x prompts x seeds at one setting, in that nesting order (face outermost)."""
    return [Condition(face=Path(face), prompt=prompt, seed=int(seed), settings=settings, group=group)
            for face, prompt, seed in itertools.product(faces, prompts, seeds)]


def scale_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """Both sides times ``factor``, rounded to the nearest multiple of 8 (at least 8)."""
    return (max(8, round(width * factor / 8) * 8), max(8, round(height * factor / 8) * 8))


def _list(value: Any, name: str, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InputError(f"{where}: '{name}' is empty")
    return values


def _group_conditions(group: dict[str, Any], where: str, folder: Path, seeds: Sequence[int] | None,
                      steps: int | None, size_scale: float) -> list[Condition]:
    """One matrix group (merged with the defaults) as conditions: sizes x ip_weights x cn_scales x faces x
    prompts x seeds."""
    defaults = GenerationSettings()
    faces = [folder / f for f in _list(group.get("faces"), "faces", where)]
    missing = [str(f) for f in faces if not f.is_file()]
    if missing:
        raise InputError(f"{where}: face file(s) not found: {', '.join(missing)}")
    prompts = [str(p) for p in _list(group.get("prompts"), "prompts", where)]
    group_seeds = list(seeds) if seeds is not None else [int(s) for s in _list(group.get("seeds", [0]), "seeds",
                                                                                where)]
    out: list[Condition] = []
    try:
        sizes = [scale_size(*parse_size(s), size_scale) for s in _list(group.get("sizes", defaults.size), "sizes",
                                                                         where)]
        for (width, height), ip_weight, cn_scale in itertools.product(
                sizes, _list(group.get("ip_weights", defaults.ip_weight), "ip_weights", where),
                _list(group.get("cn_scales", defaults.cn_scale), "cn_scales", where)):
            settings = GenerationSettings(
                negative_prompt=group.get("negative_prompt", defaults.negative_prompt),
                steps=steps if steps is not None else group.get("steps", defaults.steps), width=width,
                height=height, ip_weight=ip_weight, cn_scale=cn_scale,
                guidance_scale=group.get("guidance_scale", defaults.guidance_scale))
            out += expand_conditions(faces, prompts, group_seeds, settings, group=group.get("name", ""))
    except RequestError as exc:
        raise InputError(*(f"{where}: {problem}" for problem in exc.problems)) from None
    return out


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
    conditions: dict[Condition, None] = {}
    for index, group in enumerate(spec.get("groups", [])):
        merged = {**spec.get("defaults", {}), **group, "name": group.get("name", f"group {index}")}
        where = f"{path.name} group {merged['name']!r}"
        for condition in _group_conditions(merged, where, path.parent, seeds, steps, size_scale):
            conditions.setdefault(condition, None)
    if not conditions:
        raise InputError(f"{path} defines no conditions")
    logger.info("matrix %s: %d unique conditions", path.name, len(conditions))
    return list(conditions)

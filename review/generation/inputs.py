"""Validation of the generation inputs (admin Generate tab, batch CLI): the upload, the settings, the face.

Every refusal is an ``InputError`` (a ValueError) whose text is for the user: ``except InputError as e: show(str(e))``.
Fixes that keep an input usable (first frame of an animation, alpha on white, CMYK/16-bit converted, EXIF rotation,
several faces, a prompt longer than CLIP reads) come back as ``notes`` to show beside the result.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from instantid import ACCEPTED_FORMS, LIMITS, Face, FaceError, PresetError, resolve_preset

if TYPE_CHECKING:
    from instantid import Engine, GenerationRequest

from review.errors import InputError
from review.generation.uploads import MAX_BYTES, MAX_PIXELS, MAX_SIDE, Upload, read_upload

__all__ = ["InputError", "Limits", "Settings", "Upload", "check_faces", "parse_seeds", "read_upload",
           "validate_settings", "MAX_BYTES", "MAX_PIXELS", "MAX_SIDE"]

logger = logging.getLogger(__name__)

MIN_FACE_PX = LIMITS.min_face_px  # a face whose bbox is shorter than this on a side is refused
_SEED_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)
_AUTO_SPEC = re.compile(r"auto-[0-9]+")  # auto-K needs the engine's telemetry: checked only with an engine


# --- settings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The generation limits of ``instantid.LIMITS`` (one definition) plus what only a submission has."""

    min_steps: int = LIMITS.min_steps  # fewest denoising steps
    max_steps: int = LIMITS.max_steps  # most denoising steps
    min_size: int = LIMITS.min_size  # smallest output side, px
    max_size: int = LIMITS.max_size  # largest output side, px
    size_multiple: int = LIMITS.size_multiple  # output sides must be multiples of this
    min_ip_weight: float = LIMITS.min_ip_weight  # face-branch scale range
    max_ip_weight: float = LIMITS.max_ip_weight
    min_cn_scale: float = LIMITS.min_cn_scale  # IdentityNet strength range
    max_cn_scale: float = LIMITS.max_cn_scale
    min_guidance: float = LIMITS.min_guidance  # classifier-free guidance range
    max_guidance: float = LIMITS.max_guidance
    max_prompt_chars: int = LIMITS.max_prompt_chars  # longer prompts are refused
    max_seeds: int = 16  # seeds per submission
    max_seed: int = LIMITS.max_seed  # seeds are 0..max_seed
    max_presets: int = 10  # presets per submission
    max_preset_chars: int = 200  # longest accepted preset spec
    clip_tokens: int = 77  # CLIP's context; a longer prompt is allowed, truncated, and noted
    max_n_boot: int = 100_000  # bootstrap replicates per statistic (leaderboard/export; 1000 is the default)


@dataclass
class Settings:
    prompt: str  # stripped, non-empty
    negative_prompt: str  # stripped, may be empty
    presets: list[str]  # normalized specs (no whitespace, lower case: the store's key), distinct; each resolves
    seeds: list[int]  # distinct, in the given order
    steps: int
    width: int
    height: int
    ip_weight: float
    cn_scale: float
    notes: list[str] = field(default_factory=list)  # prompt truncation, preset warnings of the engine

    def request(self, face_image: Image.Image, seed: int, face: Face | None = None) -> GenerationRequest:
        """The engine request for one seed; ``face`` (from ``check_faces`` on ``face_image``) skips re-detection."""
        from instantid import GenerationRequest

        same = ("prompt", "negative_prompt", "steps", "width", "height", "ip_weight", "cn_scale")
        return GenerationRequest(face_image=face_image, seed=seed, face=face, **{k: getattr(self, k) for k in same})


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _in_range(value: object, what: str, low: float, high: float, *, whole: bool = False) -> float:
    """A finite number (int, float or numeric text; never bool/None) in [low, high]."""
    try:
        if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
            raise TypeError
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be a number, got {_show(value)}") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {_show(value)}")
    if whole and not number.is_integer():
        raise InputError(f"{what} must be a whole number, got {_show(value)}")
    if not low <= number <= high:
        raise InputError(f"{what} must be between {low:g} and {high:g}, got {number:g}")
    return number


def parse_seeds(seeds: str | int | Sequence[int | str], *, max_seeds: int = 16, max_seed: int = 2**32 - 1) -> list[int]:
    """Seeds from ``"1,2,3"``, ``"1-4"``, ``"0, 7-9"``, an int or a list of those; distinct, in order."""
    items: Any = [seeds] if isinstance(seeds, (str, int, float, np.number)) else seeds
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise InputError(f"seeds must be numbers like 1,2,3 or a range like 1-4, got {_show(seeds)}")
    found: dict[int, None] = {}
    for item in items:
        if isinstance(item, str):
            terms = [t for t in re.split(r"[,;\s]+", re.sub(r"\s*-\s*", "-", item.strip())) if t]
        else:
            terms = [str(int(_in_range(item, "a seed", 0, max_seed, whole=True)))]
        for term in terms:
            match = _SEED_RANGE.fullmatch(term)
            if match is None:
                raise InputError(f"seed {_show(term)} is not a whole number or a range like 1-4")
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            if high > max_seed:
                raise InputError(f"seed {high} is above the largest seed {max_seed}")
            if low > high:
                raise InputError(f"seed range {term} runs backwards")
            if high - low + 1 > max_seeds or len(found.keys() | range(low, high + 1)) > max_seeds:
                raise InputError(f"too many seeds ({term}); at most {max_seeds} are accepted")
            found.update(dict.fromkeys(range(low, high + 1)))
    if not found:
        raise InputError("no seed given: enter one or more seeds, e.g. 0 or 1-4")
    return list(found)


def _text(value: object, what: str, limits: Limits) -> str:
    if not isinstance(value, str | None):
        raise InputError(f"the {what} must be text, got {type(value).__name__}")
    text = (value or "").strip()
    if len(text) > limits.max_prompt_chars:
        raise InputError(f"the {what} is {len(text):,} characters; at most {limits.max_prompt_chars:,} are accepted")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the {what} contains invalid characters (unpaired surrogates)") from None
    if "\x00" in text:
        raise InputError(f"the {what} contains a NUL character")
    return text


def _split_presets(presets: object) -> list[str]:
    """Specs from ``"balanced,fast"`` or a list (commas split there too), normalized as
    ``review.generation.conditions.normalize_preset`` does (the key presets are stored under), distinct, in order."""
    items: Any = [presets] if isinstance(presets, str | None) else presets
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise InputError(f"presets must be text like 'balanced,fast', got {type(presets).__name__}")
    if not all(isinstance(item, str | None) for item in items):
        raise InputError("every preset must be text like 'balanced' or 'output:0-2'")
    return list(dict.fromkeys("".join(s.split()).lower() for item in items if item for s in item.split(",")
                              if s.strip()))


def validate_settings(prompt: object, negative_prompt: object, presets: object, seeds: object, steps: object,
                      width: object, height: object, ip_weight: object, cn_scale: object, *,
                      limits: Limits | None = None, engine: Engine | None = None,
                      selective_only: bool = True) -> Settings:
    """Check every generation setting; raise one InputError listing all problems, or return clean Settings.

    With ``engine`` the presets resolve on its layer map (``engine.resolve``: SD1.5, auto-K, unknown UNets) and
    prompts are counted in CLIP tokens (over 77: a note); without it presets resolve on the SDXL map (auto-K
    left to the engine). ``selective_only``: 'full' is refused, as it is every pair's reference arm.
    """
    limits = limits or Limits()
    problems: list[str] = []
    notes: list[str] = []

    def check(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            problems.extend(exc.problems)
            return None

    text = check(_text, prompt, "prompt", limits)
    if text == "":
        problems.append("the prompt is empty: describe the image to generate")
    negative = check(_text, negative_prompt, "negative prompt", limits)
    steps_n = check(_in_range, steps, "steps", limits.min_steps, limits.max_steps, whole=True)
    sizes = {}
    for what, value in (("width", width), ("height", height)):
        size = sizes[what] = check(_in_range, value, what, limits.min_size, limits.max_size, whole=True)
        if size is not None and size % limits.size_multiple:
            step = limits.size_multiple
            near = min(max(round(size / step) * step, limits.min_size), limits.max_size)
            problems.append(f"{what} {size:g} is not a multiple of {step} (try {near:g})")
    ip = check(_in_range, ip_weight, "ip_weight", limits.min_ip_weight, limits.max_ip_weight)
    cn = check(_in_range, cn_scale, "cn_scale", limits.min_cn_scale, limits.max_cn_scale)
    seed_list = check(parse_seeds, seeds, max_seeds=limits.max_seeds, max_seed=limits.max_seed)
    specs = check(_split_presets, presets)
    if specs == []:
        problems.append("choose at least one preset")
    elif specs and len(specs) > limits.max_presets:
        problems.append(f"{len(specs)} presets chosen; at most {limits.max_presets} per run")
    bad_preset = False
    for spec in specs if specs and len(specs) <= limits.max_presets else []:
        try:
            if len(spec) > limits.max_preset_chars:
                raise PresetError(f"the spec is {len(spec)} characters; at most {limits.max_preset_chars}")
            if selective_only and spec == "full":
                problems.append("'full' is the reference arm of every pair; choose only selective presets")
                continue
            if engine is None and _AUTO_SPEC.fullmatch(spec):
                continue
            if engine is None:
                resolve_preset(spec, ip_weight=0.8 if ip is None else ip)
            else:
                notes.extend(engine.resolve(spec, 0.8 if ip is None else ip)[2])
        except PresetError as exc:
            problems.append(f"preset {_show(spec)}: {getattr(exc, 'problem', exc)}")
            bad_preset = True
    if bad_preset:
        problems.append(ACCEPTED_FORMS)
    for value, what in ((text, "prompt"), (negative, "negative prompt")):
        tokens = engine.prompt_tokens(value) if engine is not None and value else 0
        if tokens > limits.clip_tokens:
            notes.append(f"the {what} is {tokens} CLIP tokens; only the first {limits.clip_tokens} are read,"
                         " the rest is truncated")
    if problems:
        raise InputError(*problems)
    return Settings(prompt=text, negative_prompt=negative, presets=specs, seeds=seed_list, steps=int(steps_n),
                    width=int(sizes["width"]), height=int(sizes["height"]), ip_weight=ip, cn_scale=cn,
                    notes=list(dict.fromkeys(notes)))


# --- the reference face --------------------------------------------------------------------------------------


def check_faces(engine: Engine, image: Image.Image, *, min_face_px: float = MIN_FACE_PX) -> tuple[Face, list[str]]:
    """The face InstantID will use (the largest) and notes; InputError for no face or a too small one."""
    try:
        faces = engine.face_analyzer.detect(image)
    except FaceError as exc:
        raise InputError(f"the reference image could not be analysed: {exc}") from exc
    if not faces:
        width, height = image.size
        raise InputError(f"no face found in the reference image ({width}x{height}): use a photo in which one face"
                         " is clearly visible, roughly frontal, well lit and not tiny")
    notes = [f"{len(faces)} faces found; the largest is used"] if len(faces) > 1 else []
    x1, y1, x2, y2 = (float(v) for v in np.asarray(faces[0].bbox).reshape(-1)[:4])
    if min(x2 - x1, y2 - y1) < min_face_px:
        raise InputError(f"the face is too small: {x2 - x1:.0f}x{y2 - y1:.0f} px (its shorter side must be at least"
                         f" {min_face_px:g} px); use a closer crop or a larger photo")
    return faces[0], notes

"""Validation of the generation inputs (admin Generate tab, batch CLI): the upload, the settings, the face.

Every refusal is an ``InputError`` (a ValueError) whose text is for the user: ``except InputError as e: show(str(e))``.
Fixes that keep an input usable (first frame of an animation, alpha on white, CMYK/16-bit converted, EXIF rotation,
several faces, a prompt longer than CLIP reads) come back as ``notes`` to show beside the result. The settings'
rules are instantid's (``instantid.request_problems``, the check ``GenerationSettings`` runs when made); this
module only turns form values (text, floats from sliders) into the types those rules check.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from instantid import (
    ACCEPTED_FORMS,
    LIMITS,
    Face,
    FaceError,
    GenerationLimits,
    GenerationSettings,
    PresetError,
    RequestError,
    is_auto_spec,
    request_problems,
    resolve_preset,
    split_presets,
)

if TYPE_CHECKING:
    from instantid import Engine

from review.errors import InputError
from review.generation.uploads import MAX_BYTES, MAX_PIXELS, MAX_SIDE, Upload, read_upload

__all__ = ["InputError", "Limits", "Submission", "Upload", "check_faces", "parse_seeds", "read_upload",
           "validate_settings", "MAX_BYTES", "MAX_PIXELS", "MAX_SIDE"]

logger = logging.getLogger(__name__)

MIN_FACE_PX = LIMITS.min_face_px  # a face whose bbox is shorter than this on a side is refused
_SEED_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)
_TEXTS = {n for n, v in GenerationSettings().as_dict().items() if isinstance(v, str)}  # the settings read as text


# --- settings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits(GenerationLimits):
    """The generation limits of ``instantid.LIMITS`` (one definition) plus what only a submission has."""

    max_seeds: int = 16  # seeds per submission
    max_presets: int = 10  # presets per submission
    max_preset_chars: int = 200  # longest accepted preset spec
    clip_tokens: int = 77  # CLIP's context; a longer prompt is allowed, truncated, and noted
    max_n_boot: int = 100_000  # bootstrap replicates per statistic (leaderboard/export; 1000 is the default)


@dataclass(frozen=True)
class Submission:
    """A checked Generate-tab submission: one prompt at every seed x preset, at one ``GenerationSettings``."""

    prompt: str  # stripped, non-empty
    presets: tuple[str, ...]  # normal-form specs (``instantid.preset_key``: the store's key), distinct; each resolves
    seeds: tuple[int, ...]  # distinct, in the given order
    settings: GenerationSettings  # negative prompt (stripped), steps, size, scales, guidance
    notes: tuple[str, ...] = ()  # prompt truncation, preset warnings of the engine


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


def _form_text(value: object) -> object:
    """Form text stripped (None: empty); anything else as given, for the check to name."""
    return (value or "").strip() if isinstance(value, str | None) else value


def _form_number(value: object) -> object:
    """Numeric form text as a float (``" 30 "`` -> 30.0); anything else as given, for the check to name."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def _preset_problems(specs: list[str], ip_weight: float, limits: Limits, engine: Engine | None,
                     selective_only: bool, notes: list[str]) -> list[str]:
    """Why each spec cannot be generated (none: every spec resolves); the engine's warnings go to ``notes``."""
    if not specs:
        return ["choose at least one preset"]
    if len(specs) > limits.max_presets:
        return [f"{len(specs)} presets chosen; at most {limits.max_presets} per run"]
    problems: list[str] = []
    unresolved = False
    for spec in specs:
        try:
            if len(spec) > limits.max_preset_chars:
                raise PresetError(f"the spec is {len(spec)} characters; at most {limits.max_preset_chars}")
            if selective_only and spec == "full":
                problems.append("'full' is the reference arm of every pair; choose only selective presets")
            elif engine is not None:
                notes.extend(engine.resolve(spec, ip_weight)[2])
            elif not is_auto_spec(spec):  # auto-K needs the engine's telemetry: checked only with an engine
                resolve_preset(spec, ip_weight=ip_weight)
        except PresetError as exc:
            problems.append(f"preset {_show(spec)}: {exc.problem}")
            unresolved = True
    if unresolved:
        problems.append(ACCEPTED_FORMS)
    return problems


def _token_notes(engine: Engine | None, texts: dict[str, object], limits: Limits) -> list[str]:
    """A note for each prompt longer than CLIP reads (counted by the engine's tokenizer; none without one)."""
    notes = []
    for what, value in texts.items():
        tokens = engine.prompt_tokens(value) if engine is not None and isinstance(value, str) and value else 0
        if tokens > limits.clip_tokens:
            notes.append(f"the {what} is {tokens} CLIP tokens; only the first {limits.clip_tokens} are read,"
                         " the rest is truncated")
    return notes


def validate_settings(prompt: object, negative_prompt: object, presets: object, seeds: object, steps: object,
                      width: object, height: object, ip_weight: object, cn_scale: object,
                      guidance_scale: object = GenerationSettings.guidance_scale, *, limits: Limits | None = None,
                      engine: Engine | None = None, selective_only: bool = True) -> Submission:
    """Check every generation setting; raise one InputError listing all problems, or return a clean Submission.

    The prompt and the settings go through instantid's own check (``request_problems`` at ``limits``); seeds and
    presets are read here. With ``engine`` the presets resolve on its layer map (``engine.resolve``: SD1.5,
    auto-K, unknown UNets) and prompts are counted in CLIP tokens (over 77: a note); without it presets resolve on
    the SDXL map (auto-K left to the engine). ``selective_only``: 'full' is refused, as it is every pair's
    reference arm.
    """
    limits = limits or Limits()
    text = _form_text(prompt)
    form = {"negative_prompt": negative_prompt, "steps": steps, "width": width, "height": height,
            "ip_weight": ip_weight, "cn_scale": cn_scale, "guidance_scale": guidance_scale}
    values = {name: (_form_text if name in _TEXTS else _form_number)(value) for name, value in form.items()}
    problems = request_problems(prompt=text, settings=values, limits=limits)
    notes: list[str] = []

    def check(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, PresetError) as exc:
            problems.extend(getattr(exc, "problems", None) or [exc.problem])
            return None

    seed_list = check(parse_seeds, seeds, max_seeds=limits.max_seeds, max_seed=limits.max_seed)
    specs = check(split_presets, presets)
    if specs is not None:
        ip = values["ip_weight"]
        usable_ip = ip if isinstance(ip, int | float) and not isinstance(ip, bool) and math.isfinite(ip) else 0.8
        problems += _preset_problems(specs, usable_ip, limits, engine, selective_only, notes)
    if problems:
        raise InputError(*problems)
    notes += _token_notes(engine, {"prompt": text, "negative prompt": values["negative_prompt"]}, limits)
    try:  # checked above at ``limits``; a GenerationSettings also holds instantid's own (never looser) limits
        settings = GenerationSettings(**values)
    except RequestError as exc:
        raise InputError(*exc.problems) from None
    return Submission(prompt=str(text), presets=tuple(specs), seeds=tuple(seed_list), settings=settings,
                      notes=tuple(dict.fromkeys(notes)))


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

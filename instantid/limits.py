"""The one definition of what a generation accepts: steps, sizes, scales, seeds, prompts, faces and input images.

``GenerationSettings`` and ``GenerationRequest`` (instantid/settings.py) check themselves here when they are made,
both command lines check their arguments with ``request_problems`` before anything loads, and ``review`` (the
app's Generate tab, the batch CLI, ``review.generation.inputs.Limits``) takes its numbers from here, so a library
caller, a CLI user and an admin get the same message for the same value. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationLimits:
    """The accepted range of every generation setting and of reference images."""

    min_steps: int = 1  # fewest denoising steps
    max_steps: int = 100  # most denoising steps (SDXL converges well before this)
    min_size: int = 64  # smallest output side, px
    max_size: int = 2048  # largest output side, px (SDXL is trained at 1024)
    size_multiple: int = 8  # output sides must be multiples of the VAE's downsampling factor
    min_ip_weight: float = 0.0  # face-branch scale range (demo default 0.8)
    max_ip_weight: float = 2.0
    min_cn_scale: float = 0.0  # IdentityNet strength range (demo default 0.8)
    max_cn_scale: float = 2.0
    min_guidance: float = 0.0  # classifier-free guidance range (default 5.0)
    max_guidance: float = 30.0
    max_seed: int = 2**32 - 1  # seeds are 0..2**32-1 (portable across numpy, torch and the store)
    max_prompt_chars: int = 2000  # longer prompts are refused (CLIP reads 77 tokens anyway)
    min_face_px: int = 32  # a face whose bbox is shorter than this on a side is refused (too small for identity)
    max_image_bytes: int = 64 * 2**20  # largest reference-image file read
    max_image_side: int = 4096  # longest accepted side of a reference image, px (checked from the header)
    max_image_pixels: int = 4096 * 4096  # most pixels in a reference image (also PIL's bomb limit while decoding)


LIMITS = GenerationLimits()


class RequestError(ValueError):
    """A generation setting outside ``LIMITS``; ``problems`` lists each one, ``str()`` joins them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _number(value: Any, what: str, low: float, high: float, whole: bool, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy scalars and other real numbers
            value = float(value) if not isinstance(value, (bool, str, bytes)) and value is not None else None
        except (TypeError, ValueError):
            value = None
        if value is None:
            problems.append(f"{what} must be a number")
            return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{what} must be a finite number, got {value}")
    elif whole and not (isinstance(value, int) or float(value).is_integer()):  # (a huge int has no float)
        problems.append(f"{what} must be a whole number, got {value}")
    elif not low <= value <= high:
        shown = (lambda v: f"{int(v)}") if whole else (lambda v: f"{v:g}")
        problems.append(f"{what} must be between {shown(low)} and {shown(high)}, got {shown(value)}")


def _text(value: Any, what: str, limits: GenerationLimits, problems: list[str], *, required: bool) -> None:
    if not isinstance(value, str):
        problems.append(f"the {what} must be text")
        return
    if required and not value.strip():
        problems.append(f"the {what} is empty: describe the image to generate")
    if len(value) > limits.max_prompt_chars:
        problems.append(f"the {what} is {len(value):,} characters; at most {limits.max_prompt_chars:,} are accepted")
    if "\x00" in value:
        problems.append(f"the {what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"the {what} contains invalid characters (unpaired surrogates)")


def _size(value: Any, what: str, limits: GenerationLimits, problems: list[str]) -> None:
    before = len(problems)
    _number(value, what, limits.min_size, limits.max_size, True, problems)
    step = limits.size_multiple
    if len(problems) == before and int(value) % step:
        near = min(max(round(int(value) / step) * step, limits.min_size), limits.max_size)
        problems.append(f"{what} {int(value)} is not a multiple of {step} (try {near})")


def settings_problems(settings: Mapping[str, Any], limits: GenerationLimits = LIMITS) -> list[str]:
    """Every value of ``settings`` (``GenerationSettings``' fields by name) outside the limits, one message each."""
    problems: list[str] = []
    _text(settings["negative_prompt"], "negative prompt", limits, problems, required=False)
    _number(settings["steps"], "steps", limits.min_steps, limits.max_steps, True, problems)
    _size(settings["width"], "width", limits, problems)
    _size(settings["height"], "height", limits, problems)
    _number(settings["ip_weight"], "ip_weight", limits.min_ip_weight, limits.max_ip_weight, False, problems)
    _number(settings["cn_scale"], "cn_scale", limits.min_cn_scale, limits.max_cn_scale, False, problems)
    _number(settings["guidance_scale"], "guidance scale", limits.min_guidance, limits.max_guidance, False, problems)
    return problems


def request_problems(*, prompt: Any, seed: Any = 0, settings: Mapping[str, Any] | None = None,
                     limits: GenerationLimits = LIMITS) -> list[str]:
    """Every problem of a request, one message each (empty when it is acceptable): the prompt, the seed and,
    when given, ``settings`` (``GenerationSettings``' fields by name, as ``settings_problems`` checks them)."""
    problems: list[str] = []
    _text(prompt, "prompt", limits, problems, required=True)
    _number(seed, "seed", 0, limits.max_seed, True, problems)
    if settings is not None:
        problems += settings_problems(settings, limits)
    return problems


def check_request(*, prompt: Any, seed: Any = 0, settings: Mapping[str, Any] | None = None,
                  limits: GenerationLimits = LIMITS) -> None:
    """Raise RequestError listing every problem ``request_problems`` finds."""
    problems = request_problems(prompt=prompt, seed=seed, settings=settings, limits=limits)
    if problems:
        raise RequestError(problems)

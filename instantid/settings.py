"""What a generation is asked for: ``GenerationSettings`` (the one definition of the settings) and the request.

A generation depends on a face, a prompt, a seed, a preset and the settings below. ``GenerationSettings`` is
defined here once; ``GenerationRequest`` (for ``Engine.generate``), review's ``Condition`` and ``GenerateJob`` and
the store's ``conditions`` columns are built from it, never re-listing its fields. Both types check themselves
against ``instantid.limits.LIMITS`` when they are made (``RequestError`` lists every problem), so whatever holds
one needs no second check. ``parse_size`` is the one reader of ``"WxH"`` sizes. Nothing here imports torch: the
store, the UI and the command lines use this module cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .limits import LIMITS, RequestError, check_request, settings_problems

if TYPE_CHECKING:
    import PIL.Image

    from .face import Face

logger = logging.getLogger(__name__)

_TYPES = {"str": str, "int": int, "float": float}  # the settings' field types (annotations are strings here)


@dataclass(frozen=True)
class GenerationSettings:
    """Every generation input except the face, the prompt, the seed and the preset; checked when made."""

    negative_prompt: str = ""  # empty: SDXL's zero negative embedding
    steps: int = 30  # denoising steps
    width: int = 1024  # output width, px, a multiple of 8
    height: int = 1024  # output height, px, a multiple of 8
    ip_weight: float = 0.8  # face-branch (IP-Adapter) scale (InstantID demo default)
    cn_scale: float = 0.8  # IdentityNet (ControlNet) strength (InstantID demo default)
    guidance_scale: float = 5.0  # classifier-free guidance

    def __post_init__(self) -> None:
        problems = settings_problems(self.as_dict())
        if problems:
            raise RequestError(problems)  # a ValueError listing every problem
        for name, value in self.typed(self.as_dict()).items():  # 30.0 -> 30, numpy scalars -> float
            object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order: the settings columns of the store's ``conditions`` table."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def typed(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Each field's value from ``values`` as the field's type (str, int, float), unchecked; TypeError names a
        missing or unknown field. What a stored row holds (``review.store`` keys and writes conditions with it)."""
        unknown, missing = set(values) - set(cls.names()), set(cls.names()) - set(values)
        if unknown or missing:
            raise TypeError(f"generation settings: unknown {sorted(unknown)}, missing {sorted(missing)}")
        return {f.name: _TYPES[str(f.type)](values[f.name]) for f in dataclasses.fields(cls)}

    def as_dict(self) -> dict[str, Any]:
        """The settings by field name (the store's column values)."""
        return {name: getattr(self, name) for name in self.names()}

    @property
    def size(self) -> str:
        """``"WxH"``, the form ``parse_size`` reads."""
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class GenerationRequest:
    """One generation for ``Engine.generate``: a face, a prompt and a seed at some settings; checked when made."""

    face_image: PIL.Image.Image | None  # reference photo; its largest face is used
    prompt: str
    seed: int = 0  # initial latents come from a CPU generator with this seed (same on every device)
    settings: GenerationSettings = GenerationSettings()  # negative prompt, steps, size, scales (checked already)
    face: Face | None = None  # an already analysed face; skips detection when given

    def __post_init__(self) -> None:
        check_request(prompt=self.prompt, seed=self.seed)  # RequestError (a ValueError)
        if not isinstance(self.settings, GenerationSettings):
            raise TypeError(f"settings must be GenerationSettings, got {type(self.settings).__name__}")
        object.__setattr__(self, "seed", int(self.seed))


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H), both positive multiples of 8 (the range is the settings' check); RequestError."""
    try:
        width, height = (int(v) for v in str(text).lower().strip().split("x"))
    except ValueError:
        raise RequestError([f"size must look like 1024x1024, got {text!r}"]) from None
    step = LIMITS.size_multiple
    if width <= 0 or height <= 0 or width % step or height % step:
        raise RequestError([f"width and height must be positive multiples of {step}, got {width}x{height}"])
    return width, height


def size_argument(text: str) -> tuple[int, int]:
    """``parse_size`` as an argparse ``type=``: its message becomes the usage error (argparse shows only that
    exception type's text)."""
    try:
        return parse_size(text)
    except RequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

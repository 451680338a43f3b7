"""Uploaded reference photos: decoded safely into RGB, or refused with a message for the user.

The reader is instantid's (``instantid.read_reference_image``: the one used by ``instantid.load_image``, both
command lines and the app), so every entry point refuses and fixes the same images the same way. Refused:
non-images, truncated or empty files, decompression bombs and over-large images (checked from the header before
decoding). Fixed with a note: animations (first frame), CMYK, 16-bit (scaled), alpha (on white), grayscale and
palette images, EXIF rotation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from PIL import Image

from instantid import LIMITS, ImageReadError, read_reference_image
from review.errors import InputError

logger = logging.getLogger(__name__)

MAX_SIDE = LIMITS.max_image_side  # longest accepted side of an uploaded image, px
MAX_PIXELS = LIMITS.max_image_pixels  # most pixels accepted in an upload; also PIL's bomb limit while decoding it
MAX_BYTES = LIMITS.max_image_bytes  # largest accepted upload file


@dataclass
class Upload:
    """A decoded reference upload and the notes on what was changed to make it usable."""

    image: Image.Image  # RGB, EXIF-upright, fully decoded (detached from the file)
    notes: list[str] = field(default_factory=list)  # what was changed to make it usable


def read_upload(data: bytes | bytearray | memoryview | str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
                max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES) -> Upload:
    """Decode an uploaded reference photo into an upright RGB image, or raise InputError saying why not."""
    try:
        image, notes = read_reference_image(data, max_pixels=max_pixels, max_side=max_side, max_bytes=max_bytes)
    except ImageReadError as exc:
        raise InputError(str(exc)) from exc
    return Upload(image, notes)

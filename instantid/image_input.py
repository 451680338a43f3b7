"""Reading a reference photo safely: one reader for ``instantid.load_image``, both command lines and the app.

Cheap checks first: the file size before reading it whole, the pixel count from the header before decoding (PIL's
bomb limit set to the same cap while decoding). Refused (``ImageReadError``, naming the file): non-images,
truncated or empty files, decompression bombs and over-large images. Fixed with a note: animations (first frame),
CMYK, 16-bit (scaled, not clipped), alpha (composited on white), grayscale and palette images, EXIF rotation.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .face import EXIF_ERRORS, ImageReadError
from .limits import LIMITS

logger = logging.getLogger(__name__)

MAX_SIDE = LIMITS.max_image_side  # longest accepted side, px
MAX_PIXELS = LIMITS.max_image_pixels  # most pixels accepted; also PIL's bomb limit while decoding
MAX_BYTES = LIMITS.max_image_bytes  # largest accepted file

_PIL_LOCK = threading.Lock()  # PIL's limits are process-wide: one upload at a time sets and restores them
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16/32-bit modes that PIL's convert would clip
_MODE_NAMES = {"CMYK": "CMYK image", "L": "grayscale image", "1": "black-and-white image", "P": "palette image"}


@contextmanager
def _pil_limits(max_pixels: int) -> Iterator[None]:
    """PIL's bomb limit set to ``max_pixels`` (its warning an error), truncated files refused; all restored."""
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # corrupt-metadata chatter
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _read_bytes(data: bytes | bytearray | memoryview | str | os.PathLike, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw, name = bytes(data), "the uploaded file"
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        name = path.name or str(path)
        if not path.is_file():
            raise ImageReadError(f"cannot read {name}: no such file")
        try:
            with path.open("rb") as handle:
                raw = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageReadError(f"cannot read {name}: {exc.strerror or exc}") from exc
    else:
        raise ImageReadError(f"expected image bytes or a file path, got {type(data).__name__}")
    if not raw:
        raise ImageReadError(f"{name} is empty")
    if len(raw) > max_bytes:
        raise ImageReadError(f"{name} is larger than the {max_bytes / 2**20:g} MiB upload limit")
    return raw, name


def read_reference_image(data: bytes | bytearray | memoryview | str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
                         max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES) -> tuple[Image.Image, list[str]]:
    """Decode a reference photo into an upright RGB image and the notes on what was fixed, or raise
    ImageReadError saying why not."""
    raw, name = _read_bytes(data, max_bytes)
    try:
        with _pil_limits(max_pixels), Image.open(io.BytesIO(raw)) as opened:
            return _decode(opened, name, max_pixels, max_side)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{name} declares more than {max_pixels:,} pixels and was refused unread"
                         f" (a possible decompression bomb): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(f"not an image file: {name} (upload a PNG, JPEG or WebP photo)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{name} is truncated or corrupt and cannot be decoded ({exc})") from exc
    except Exception as exc:  # decoders of malformed files raise assorted errors (struct.error, MemoryError...)
        logger.info("decoder failed on %s", name, exc_info=True)
        raise ImageReadError(f"{name} is corrupt or too large to decode ({type(exc).__name__}: {exc})") from exc


def _decode(image: Image.Image, name: str, max_pixels: int, max_side: int) -> tuple[Image.Image, list[str]]:
    width, height = image.size  # from the header: nothing is decoded yet
    if max(width, height) > max_side or min(width, height) < 1:
        raise ImageReadError(f"{name} is {width}x{height} pixels; the longest accepted side is {max_side} px")
    if width * height > max_pixels:  # PIL's own check (same limit) normally refuses it in Image.open already
        raise ImageReadError(f"{name} is {width}x{height} = {width * height:,} pixels; at most {max_pixels:,} accepted")
    notes: list[str] = []
    frames = int(getattr(image, "n_frames", 1)) if getattr(image, "is_animated", False) else 1
    if frames > 1:
        image.seek(0)
        notes.append(f"animated image ({frames} frames): the first frame is used")
    image.load()  # the full decode: a truncated file fails here
    try:
        orientation = int(image.getexif().get(0x0112, 1))
        image = ImageOps.exif_transpose(image) or image
        if orientation in range(2, 9):
            notes.append(f"rotated upright according to its EXIF orientation ({orientation})")
    except EXIF_ERRORS as exc:  # a malformed EXIF block must not make a readable photo unusable
        logger.info("ignoring unreadable EXIF in %s: %s", name, exc)
        notes.append("the EXIF orientation could not be read; the image is used as stored")
    return to_rgb(image, name, notes), notes


def to_rgb(image: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """An RGB copy of a decoded image: 16/32-bit scaled to 8 bits, transparency composited on white, other modes
    converted; each change appended to ``notes``."""
    mode = image.mode
    if mode in _HIGH_DEPTH:  # scale the range down; convert("RGB") would clip everything above 255
        values = np.asarray(image)  # its own dtype (uint16 / int32 / float32): no float64 copy of the whole image
        rows = 256  # converted a band at a time, so a 4096x4096 image costs MBs, not a 134 MB float64 copy

        def band(start: int) -> np.ndarray:
            part = values[start:start + rows].astype(np.float32)
            return np.nan_to_num(part, copy=False, nan=0.0, posinf=0.0, neginf=0.0)

        top = max((float(band(start).max()) for start in range(0, values.shape[0], rows)), default=0.0)
        scale = 255.0 if mode == "F" and top <= 1.0 else 255.0 / max(65535.0, top) if top > 255 else 1.0
        out = np.empty(values.shape, np.uint8)
        for start in range(0, values.shape[0], rows):
            out[start:start + rows] = np.clip(np.rint(band(start) * scale), 0, 255)
        notes.append(f"high bit depth image ({mode}) reduced to 8 bits and converted to RGB")
        return Image.fromarray(out, "L").convert("RGB")
    try:
        if "A" in mode or "a" in mode or "transparency" in image.info:
            rgba = image.convert("RGBA")
            alpha = rgba.getchannel("A")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=alpha)
            opaque = alpha.getextrema() == (255, 255)
            notes.append("alpha channel dropped (fully opaque)" if opaque else "transparent areas composited onto white")
            return flat
        if mode != "RGB":
            shift = " (colours may shift slightly)" if mode == "CMYK" else ""
            notes.append(f"{_MODE_NAMES.get(mode, f'{mode} image')} converted to RGB{shift}")
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageReadError(f"{name} uses colour mode {mode}, which cannot be converted to RGB") from exc

"""Image files of the study: PNGs re-encoded from pixels, opaque random names, per-trial served copies.

Blinding rules (docs: /work/shared/notes/review-app-facts.md section 6):
- every file is written from its raw RGB pixels (``Image.frombytes``), so no text chunk, EXIF, iCCP or other
  metadata of the source can survive; names are ``secrets.token_hex(16) + ".png"`` and reveal neither preset
  nor arm;
- names coming back from outside (a request, a DB row) must match ``^[0-9a-f]{32}\\.png$``, so they cannot
  escape the data folder;
- ``with_nonce`` gives each served URL its own bytes for the same pixels (``review.study.served``), so no URL or
  content hash repeats across trials: a private ancillary chunk ``rnDm`` (ancillary, private, reserved bit clear,
  safe-to-copy) holding 16-48 random bytes as hex text (zero-byte free), spliced in right after IHDR. Nothing is
  re-encoded: the stored file's bytes plus one chunk (a re-encode costs ~1 ms at 128x128 and ~270 ms at
  1024x1024 with zlib level 6 on the 2-core VM; the splice is a copy).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import struct
import zlib
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[0-9a-f]{32}\.png$")
NONCE_CHUNK = b"rnDm"
IMAGE_CHUNKS = frozenset({"IHDR", "PLTE", "IDAT", "IEND"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class StoredImage(NamedTuple):
    """One image file written into the study's image folder."""
    file: str  # opaque name inside the folder
    sha256: str  # of the file's bytes
    width: int
    height: int


class ImageNameError(ValueError):
    """A file name that is not one of ours (could escape the data folder)."""


def check_name(file: str) -> str:
    """Return ``file`` when it is an opaque image name (32 lowercase hex + .png); raise ImageNameError otherwise."""
    if not isinstance(file, str) or not NAME_RE.fullmatch(file):
        raise ImageNameError(f"not an image name of this store: {file!r}")
    return file


def image_path(folder: str | Path, file: str) -> Path:
    """The path of ``file`` inside ``folder``, after checking that the name cannot leave the folder."""
    root = Path(folder).resolve()
    path = (root / check_name(file)).resolve()
    if path.parent != root:
        raise ImageNameError(f"{file!r} resolves outside {root}")
    return path


def _rgb_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels of shape (H, W, 3), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """A metadata-free PNG of the image's RGB pixels (written from the raw pixels: no chunk of the source)."""
    pixels = _rgb_pixels(image)
    height, width = pixels.shape[:2]
    clean = Image.frombytes("RGB", (width, height), pixels.tobytes())
    buffer = BytesIO()
    clean.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _write_new(folder: Path, data: bytes) -> str:
    """Write ``data`` under a fresh random name (exclusive create, fsync); return the name. A crash mid-write
    can leave a partial file, but no database row points at it: rows are added after this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        file = secrets.token_hex(16) + ".png"
        try:
            handle = open(folder / file, "xb")  # exclusive create: never overwrite an existing image
        except FileExistsError:
            continue
        try:
            with handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:  # e.g. ENOSPC: no partial file stays behind
            (folder / file).unlink(missing_ok=True)
            raise
        return file


def write_image(folder: str | Path, image: Image.Image | np.ndarray) -> StoredImage:
    """Write pixels as a metadata-free PNG under an opaque name; return (file, sha256, width, height)."""
    pixels = _rgb_pixels(image)
    data = encode_png(pixels)
    file = _write_new(Path(folder), data)
    height, width = pixels.shape[:2]
    logger.debug("wrote %s (%dx%d)", file, width, height)
    return StoredImage(file, hashlib.sha256(data).hexdigest(), width, height)


def read_image(folder: str | Path, file: str) -> np.ndarray:
    """The RGB uint8 pixels (H, W, 3) of an image in ``folder`` (name checked)."""
    with Image.open(image_path(folder, file)) as image:
        return np.asarray(image.convert("RGB"))


def new_nonce() -> bytes:
    """16-48 random hex characters for a ``rnDm`` chunk (random length too, so sizes differ)."""
    return secrets.token_hex(8 + secrets.randbelow(17)).encode("ascii")


def with_nonce(png: bytes, nonce: bytes) -> bytes:
    """``png`` with a ``rnDm`` chunk holding ``nonce`` right after IHDR: the same pixels in different bytes."""
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with IHDR")
    if not nonce or b"\0" in nonce:
        raise ValueError("the nonce must be non-empty and free of zero bytes")
    end = len(_PNG_SIGNATURE) + 12 + struct.unpack(">I", png[8:12])[0]
    chunk = (struct.pack(">I", len(nonce)) + NONCE_CHUNK + nonce
             + struct.pack(">I", zlib.crc32(NONCE_CHUNK + nonce) & 0xFFFFFFFF))
    return b"".join((png[:end], chunk, png[end:]))


def png_chunks(path: str | Path | bytes) -> list[str]:
    """The chunk types of a PNG file (or its bytes), in order."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, offset = [], len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append(kind.decode("latin-1"))
        offset += 12 + length
    return chunks


def png_has_metadata(path: str | Path | bytes) -> list[str]:
    """Chunks other than image data and the nonce (tEXt, iTXt, zTXt, eXIf, iCCP, pHYs, tIME...); [] = clean."""
    return [c for c in png_chunks(path) if c not in IMAGE_CHUNKS and c != NONCE_CHUNK.decode()]


def degrade(pixels: np.ndarray) -> np.ndarray:
    """A visibly degraded copy of RGB pixels for catch trials: strong blur, then 8 levels per channel."""
    from PIL import ImageFilter, ImageOps

    array = _rgb_pixels(pixels)
    radius = max(2.0, min(array.shape[:2]) / 48)
    image = Image.fromarray(array).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(ImageOps.posterize(image, 3), dtype=np.uint8)

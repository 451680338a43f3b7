"""Per-serve copies of an image that differ from every other copy in pixels and in bytes, and share one length.

``dithered_png(pixels, seed)`` moves ``DITHER_BYTES`` channel values by ±1 (one random position in each of that
many equal stretches of the image, so the change starts in the first rows and reaches the last) and encodes the
result as a PNG: Up filter on every row, zlib level 1 with the run-length strategy (at 1024x1024 about a tenth
of the time of Pillow's level-6 encoder, for about 15 % more bytes; docs/hardening.md has the figures).
The same (pixels, seed) always gives the same bytes, so a URL answers one byte string for its life even when its
bytes are made again.

``pad_png(png, length)`` brings a copy to an exact byte length without touching its pixels: empty stored deflate
blocks (5 bytes each) lengthen the image data (IDAT) to within 4 bytes of a length shared by the whole trial, and a
private ``rnDm`` chunk takes the rest. So neither the file size nor the IDAT length can match ABX's X to A or B, or
mark a gold twin. What is left to compare is the pixels themselves (and long byte runs the encoder emits alike for
equal stretches of pixels): see docs/hardening.md, "What a devtools user can still do".

Written by hand because Pillow's encoder cannot pad the image data and spends ~280 ms per 1024x1024 image.
"""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np

logger = logging.getLogger(__name__)

DITHER_BYTES = 256  # channel values moved by ±1 per served copy (of 3 145 728 at 1024x1024)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EMPTY_STORED = b"\x00\x00\x00\xff\xff"  # a non-final stored block with no data (after a byte-aligning flush)
_FINAL_EMPTY = b"\x01\x00\x00\xff\xff"  # the final one
IDAT_SLACK = 4  # the IDAT length of a padded copy is within this many bytes below the trial's IDAT length


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def dither(pixels: np.ndarray, seed: int, count: int = DITHER_BYTES) -> np.ndarray:
    """A copy of ``pixels`` (uint8) with ``count`` values moved by ±1, one per equal stretch of the flat array."""
    out = np.array(pixels, dtype=np.uint8, copy=True)
    flat = out.reshape(-1)
    count = max(1, min(count, flat.size))
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, flat.size, count + 1).astype(np.int64)
    positions = bounds[:-1] + (rng.random(count) * np.maximum(bounds[1:] - bounds[:-1], 1)).astype(np.int64)
    step = np.where(rng.random(count) < 0.5, -1, 1).astype(np.int16)
    values = flat[positions].astype(np.int16)
    step[values == 0], step[values == 255] = 1, -1
    flat[positions] = (values + step).astype(np.uint8)
    return out


def _idat_body(pixels: np.ndarray) -> tuple[bytes, bytes]:
    """(zlib stream up to a byte-aligning flush, adler32 trailer) of the Up-filtered scanlines."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = 2  # filter type Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    raw = filtered.tobytes()
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    body = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return body, struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF)


def dithered_png(pixels: np.ndarray, seed: int) -> bytes:
    """A PNG of ``pixels`` (H, W, 3 uint8) dithered with ``seed``; deterministic; unpadded (``pad_png``)."""
    height, width = pixels.shape[:2]
    body, adler = _idat_body(dither(pixels, seed))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", body + _FINAL_EMPTY + adler),
                     _chunk(b"IEND", b"")))


PAD_OVERHEAD = 12 + 8  # the smallest rnDm chunk: 12 bytes of frame, 8 characters


def pad_png(png: bytes, length: int, seed: int) -> bytes:
    """``png`` (from ``dithered_png``) made exactly ``length`` bytes: empty stored blocks in its IDAT, then an
    ``rnDm`` chunk of 8-12 hex characters (from ``seed``). ValueError when ``png`` is too long for it."""
    spare = length - len(png) - PAD_OVERHEAD
    if spare < 0:
        raise ValueError(f"a {len(png)}-byte PNG cannot be padded to {length} bytes")
    blocks, extra = divmod(spare, len(_EMPTY_STORED))
    ihdr_end = len(_SIGNATURE) + 25
    idat_len = struct.unpack(">I", png[ihdr_end:ihdr_end + 4])[0]
    idat = png[ihdr_end + 8:ihdr_end + 8 + idat_len]
    tail = len(_FINAL_EMPTY) + 4  # the final empty block and adler32 end every IDAT made here
    idat = idat[:-tail] + _EMPTY_STORED * blocks + idat[-tail:]
    text = np.random.default_rng(seed).bytes(8).hex().encode("ascii")[:8 + extra]
    return b"".join((png[:ihdr_end], _chunk(b"rnDm", text), _chunk(b"IDAT", idat),
                     png[ihdr_end + 12 + idat_len:]))

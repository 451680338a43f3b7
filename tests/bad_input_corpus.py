"""The bad-input corpus, generated (no binary blobs): undecodable and hostile images, out-of-range and hostile
settings, damaged and foreign databases, bad output paths and statistics options.

Each case is (class, name, value); ``tests/test_bad_input_corpus.py`` feeds every case through every entry point
that takes it and classifies the outcome (clear error / traceback / accepted, and whether anything was written).
"""

from __future__ import annotations

import io
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (1-bit grey) with almost no data: a decompression-bomb stand-in."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def bad_images() -> dict[str, bytes]:
    """Files no entry point may use: each must be refused with a message naming the problem."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    png, jpeg = _encoded(photo, "PNG"), _encoded(photo, "JPEG")
    return {
        "text_file": b"name,score\nalice,3\n" * 20,
        "html_as_png": b"<html><body><script>alert(1)</script></body></html>",
        "empty_file": b"",
        "nul_bytes": b"\0" * 4096,
        "png_signature_only": b"\x89PNG\r\n\x1a\n",
        "truncated_png": png[: len(png) // 2],
        "truncated_jpeg": jpeg[: len(jpeg) // 3],
        "bomb_20000x20000": png_header_only(20000, 20000),
        "bomb_13000_squared_grey": png_header_only(13000, 13000),
        "too_wide_5000x8": png_header_only(5000, 8),
        "zero_width_header": png_header_only(0, 16),
        "corrupt_idat": png[:40] + bytes(b ^ 0x5A for b in png[40:-12]) + png[-12:],
        "gif_header_garbage": b"GIF89a" + b"\xff" * 64,
    }


# (what, CLI flag of `review generate` / `instantid generate`, value); each is outside instantid.LIMITS
BAD_SETTINGS: list[tuple[str, str, object]] = [
    ("steps", "--steps", 0), ("steps", "--steps", 100000), ("steps", "--steps", -1),
    ("width", "--size", "13x64"), ("width", "--size", "0x0"), ("width", "--size", "100000x64"),
    ("ip_weight", "--ip-weight", -3.0), ("ip_weight", "--ip-weight", float("inf")),
    ("ip_weight", "--ip-weight", float("nan")), ("cn_scale", "--cn-scale", float("inf")),
    ("cn_scale", "--cn-scale", 99.0), ("guidance", "--guidance", 1e9), ("guidance", "--guidance", float("nan")),
    ("prompt", "--prompt", ""), ("prompt", "--prompt", "   "), ("prompt", "--prompt", "a\x00b"),
    ("prompt", "--prompt", "x" * 100_000), ("negative_prompt", "--negative-prompt", "no\x00pe"),
]
BAD_SEEDS = ["-1", str(2**64 + 1), "1-99999", "abc", "3-1"]
BAD_PRESETS = ["output:0-99", "bogus", "full", "a" * 500, "output:5-1", "+", "middle:0-40", "input:99"]


def make_bad_database(path: Path, kind: str, study: Path | None = None) -> None:
    """A file at ``path`` that no command may use as a study (``study``: an intact one to damage)."""
    if kind in ("damaged_pages", "truncated"):
        data = bytearray((study or path).read_bytes())
        if kind == "truncated":
            data = data[:10]
        else:
            for page in range(2, len(data) // 4096):
                data[page * 4096 + 8: page * 4096 + 40] = b"\xa5" * 32
        path.write_bytes(bytes(data))
    elif kind == "garbage":
        path.write_bytes(b"PK\x03\x04 a zip archive, not a study" * 40)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    else:
        conn = sqlite3.connect(path)
        conn.execute({"foreign_with_votes": "CREATE TABLE votes (id INTEGER PRIMARY KEY, poll TEXT)",
                      "foreign_other": "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
                      "fake_migrations": "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                         "applied_at TEXT)"}[kind])
        if kind == "fake_migrations":
            conn.execute("INSERT INTO schema_migrations VALUES (2, 'x')")
        conn.commit()
        conn.close()


BAD_DATABASES = ["damaged_pages", "truncated", "garbage", "empty", "directory", "foreign_with_votes", "foreign_other",
                 "fake_migrations", "missing"]
BAD_STATS_OPTIONS = [["--n-boot", "1000000000"], ["--n-boot", "0"], ["--seed", "-1"], ["--seed", str(2**40)],
                     ["--margin", "2"], ["--n-boot", "many"]]

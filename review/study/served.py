"""Served images: each trial's images under URLs of their own, answered from memory.

``ServedImages.add(path)`` gives a stored image a fresh opaque name (32 hex + ``.png``) and a random nonce;
``get(name)`` answers the stored file's bytes with that nonce spliced in (``review.images.with_nonce``). So the
same pixels shown in two trials (a gold twin, ABX's X) come under two unrelated URLs with different bytes, and
nothing is re-encoded or written to disk per trial. Names are unguessable (128 random bits); an unknown, expired
or malformed name gets None.

``add_group(paths)`` names the images of one trial together, as dithered copies (``review.study.dither``): every copy
differs from every other served copy in its pixels (±1 on 256 channel values) and in its bytes, and all copies of
one trial have the same byte length (a random 0-32 bytes above what the largest needs) and the same IDAT length
(within 4 bytes): neither hashes nor sizes (the ``Content-Length`` in the network panel) can match ABX's X to A or
B, tell a gold twin from a pair, or recognise an image seen in an earlier trial. A copy's bytes are made when the
trial is made (so its length is known) and kept in an LRU of ``encoded_bytes``; one evicted is made again from
its seed, byte for byte. ``degraded`` sources are the catch trials' visibly degraded copies (``images.degrade``),
made in memory from the stored image.

Entries live in memory: they expire after ``max_age_s`` (past ``max_entries`` the least recently used go first)
and are lost when the server restarts, like the review sessions themselves (a reloaded page gets a new trial).
Pinned entries (the reference face thumbnails, ``add_bytes``: kept in memory, never written to disk) never expire.
Stored files are read once and kept in an LRU cache of ``cache_bytes``; ``is_cached`` lets the HTTP route read a
file that is not cached outside its event loop.

The four caches are cachetools' (``TTLCache`` for names, ``LRUCache`` sized in bytes for files, decoded pixels and
encoded copies); cachetools is not thread-safe, so every use is under the one lock.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from cachetools import LRUCache, TTLCache
from PIL import Image

from review.images import NAME_RE, degrade, new_nonce, with_nonce
from review.study.dither import PAD_OVERHEAD, dithered_png, pad_png

logger = logging.getLogger(__name__)

ROUTE = "review-image"  # the HTTP path the web layer serves these copies under (review/ui/image_route.py)


def image_url(name: str | None) -> str | None:
    """The page's URL for a served name (relative, so a path prefix in front of the app keeps working)."""
    return f"{ROUTE}/{name}" if name else None


def _nbytes(pixels: np.ndarray) -> int:
    return pixels.nbytes


def _keep(cache: LRUCache, key: object, value: bytes | np.ndarray, lock: threading.Lock) -> None:
    """Add ``value`` to a byte-bounded LRU unless already there or larger than the whole cache."""
    with lock:
        if key not in cache and cache.getsizeof(value) <= cache.maxsize:
            cache[key] = value

class _Entry(NamedTuple):
    path: str  # the stored file (already checked to be inside its folder by the caller)
    nonce: bytes  # 16-48 random hex characters
    pad: int  # "0" characters after the nonce
    seed: int | None = None  # dithered copies: the dither's seed (None: the stored bytes with the nonce)
    length: int = 0  # dithered copies: the exact byte length (one per trial)
    degraded: bool = False  # the catch trials' degraded copy of the stored image


class ServedImages:
    """Opaque name -> (stored file, nonce); thread-safe."""

    def __init__(self, *, max_age_s: float = 2 * 3600.0, max_entries: int = 200_000,
                 cache_bytes: int = 128 * 2**20, encoded_bytes: int = 128 * 2**20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s, self.max_entries, self.cache_bytes, self._clock = max_age_s, max_entries, cache_bytes, clock
        self.encoded_bytes = encoded_bytes
        # decoded sources and dithered copies (by name), LRUs bounded in bytes
        self._pixels: LRUCache[tuple[str, bool], np.ndarray] = LRUCache(cache_bytes, getsizeof=_nbytes)
        self._encoded: LRUCache[str, bytes] = LRUCache(encoded_bytes, getsizeof=len)
        self._entries: TTLCache[str, _Entry] = TTLCache(max_entries, ttl=max_age_s, timer=clock)
        self._pinned: dict[str, _Entry] = {}
        self._files: LRUCache[str, bytes] = LRUCache(cache_bytes, getsizeof=len)  # stored files' bytes
        self._blobs: dict[str, bytes] = {}  # add_bytes: pinned PNGs held in memory
        self._lock = threading.Lock()

    def add(self, path: str | Path, *, pinned: bool = False) -> str:
        """A new opaque name serving ``path`` with a fresh nonce."""
        return self._add(path, new_nonce(), 0, pinned=pinned)

    def add_bytes(self, png: bytes) -> str:
        """A pinned name serving ``png`` (made in memory, e.g. a thumbnail) with a fresh nonce."""
        key = f"memory:{secrets.token_hex(16)}"
        with self._lock:
            self._blobs[key] = png
        return self._add(key, new_nonce(), 0, pinned=True)

    def _add(self, path: str | Path, nonce: bytes, pad: int, *, pinned: bool, seed: int | None = None,
             length: int = 0, degraded: bool = False) -> str:
        entry = _Entry(str(path), nonce, pad, seed, length, degraded)
        with self._lock:
            name = secrets.token_hex(16) + ".png"
            while name in self._entries or name in self._pinned:  # 128 random bits: never in practice
                name = secrets.token_hex(16) + ".png"
            if pinned:
                self._pinned[name] = entry
                return name
            self._entries[name] = entry  # drops expired names, then the least recently used past max_entries
        return name

    def add_group(self, paths: list[str | Path] | tuple[str | Path, ...],
                  degraded: list[bool] | tuple[bool, ...] | None = None) -> list[str]:
        """New names for one trial's images: dithered copies of one byte length (see the module doc)."""
        flags = list(degraded or [False] * len(paths))
        seeds = [secrets.randbits(63) for _ in paths]
        copies = []
        for path, flag, seed in zip(paths, flags, seeds, strict=True):
            pixels = self._source_pixels(str(path), flag)
            copies.append(None if pixels is None else dithered_png(pixels, seed))
        length = max((len(c) for c in copies if c is not None), default=0) + PAD_OVERHEAD + secrets.randbelow(33)
        names = []
        for path, flag, seed, copy in zip(paths, flags, seeds, copies, strict=True):
            name = self._add(path, b"", 0, pinned=False, seed=seed, length=length, degraded=flag)
            if copy is not None:
                self._keep_encoded(name, pad_png(copy, length, seed))
            names.append(name)
        return names

    def _keep_encoded(self, name: str, data: bytes) -> None:
        _keep(self._encoded, name, data, self._lock)

    def _source_pixels(self, path: str, degraded: bool) -> np.ndarray | None:
        """The stored image's RGB pixels (or its degraded copy), decoded once and kept in an LRU."""
        key = (path, degraded)
        with self._lock:
            pixels = self._pixels.get(key)  # a hit is moved to the recent end
        if pixels is not None:
            return pixels
        data = self._file(path)
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            logger.warning("served image source is not an image: %s", exc)
            return None
        if degraded:
            pixels = degrade(pixels)
        _keep(self._pixels, key, pixels, self._lock)
        return pixels

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is served now (known, not expired)."""
        return self._entry(name) is not None

    def __len__(self) -> int:
        """How many names are served now (pinned ones included)."""
        with self._lock:
            return len(self._entries) + len(self._pinned)

    def _entry(self, name: object) -> _Entry | None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return None
        with self._lock:
            return self._pinned.get(name) or self._entries.get(name)  # None once expired

    def is_cached(self, name: object) -> bool:
        """Whether ``get(name)`` can answer without reading a file (unknown names: True, they read nothing)."""
        entry = self._entry(name)
        if entry is None:
            return True
        with self._lock:
            if entry.seed is not None:
                return name in self._encoded
            return entry.path in self._files or entry.path in self._blobs

    def get(self, name: object) -> bytes | None:
        """The bytes served under ``name``, or None (unknown, expired, malformed, the file gone or not a PNG)."""
        entry = self._entry(name)
        if entry is None:
            return None
        if entry.seed is not None:
            return self._dithered(name, entry)
        data = self._file(entry.path)
        if data is None:
            return None
        try:
            return with_nonce(data, entry.nonce + b"0" * entry.pad)
        except ValueError as exc:
            logger.warning("served image source is not a PNG: %s", exc)
            return None

    def _dithered(self, name: str, entry: _Entry) -> bytes | None:
        with self._lock:
            data = self._encoded.get(name)
        if data is not None:
            return data
        pixels = self._source_pixels(entry.path, entry.degraded)
        if pixels is None or entry.seed is None:
            return None
        try:
            data = pad_png(dithered_png(pixels, entry.seed), entry.length, entry.seed)
        except ValueError as exc:  # the source changed since the trial was made
            logger.warning("served copy cannot be made again: %s", exc)
            return None
        self._keep_encoded(name, data)
        return data

    def _file(self, path: str) -> bytes | None:
        with self._lock:
            data = self._blobs.get(path) or self._files.get(path)
        if data is not None:
            return data
        if path.startswith("memory:"):
            return None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            logger.warning("served image source unreadable: %s", exc)
            return None
        _keep(self._files, path, data, self._lock)
        return data

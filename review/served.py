"""Served images: each trial's images under URLs of their own, answered from memory.

``ServedImages.add(path)`` gives a stored image a fresh opaque name (32 hex + ``.png``) and a random nonce;
``get(name)`` answers the stored file's bytes with that nonce spliced in (``review.images.with_nonce``). So the
same pixels shown in two trials (a gold twin, ABX's X) come under two unrelated URLs with different bytes, and
nothing is re-encoded or written to disk per trial. Names are unguessable (128 random bits); an unknown, expired
or malformed name gets None.

``add_group(paths)`` names the images of one trial together and pads their nonces (with "0" characters, kept as
a count) so that every image of the trial has the same byte length, a random 0-32 bytes above what the largest
needs: the sizes a browser sees (the ``Content-Length`` in the network panel) cannot match ABX's X to A or B, nor
tell a gold twin from a pair.

Entries live in memory: they expire after ``max_age_s`` (the oldest go first past ``max_entries``) and are lost
when the server restarts, like the review sessions themselves (a reloaded page gets a new trial). Pinned entries
(the reference face thumbnails, ``add_bytes``: kept in memory, never written to disk) never expire. Stored files
are read once and kept in an LRU cache of ``cache_bytes``; ``is_cached`` lets the HTTP route read a file that is
not cached outside its event loop.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from review.images import NAME_RE, new_nonce, with_nonce

logger = logging.getLogger(__name__)


class _Entry(NamedTuple):
    path: str  # the stored file (already checked to be inside its folder by the caller)
    nonce: bytes  # 16-48 random hex characters
    pad: int  # "0" characters after the nonce (one byte length per trial)
    created: float


class ServedImages:
    """Opaque name -> (stored file, nonce); thread-safe."""

    def __init__(self, *, max_age_s: float = 2 * 3600.0, max_entries: int = 200_000,
                 cache_bytes: int = 128 * 2**20, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s, self.max_entries, self.cache_bytes, self._clock = max_age_s, max_entries, cache_bytes, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._pinned: dict[str, _Entry] = {}
        self._files: OrderedDict[str, bytes] = OrderedDict()  # LRU of stored files' bytes
        self._file_bytes = 0
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

    def _add(self, path: str | Path, nonce: bytes, pad: int, *, pinned: bool) -> str:
        now = self._clock()
        entry = _Entry(str(path), nonce, pad, now)
        with self._lock:
            name = secrets.token_hex(16) + ".png"
            while name in self._entries or name in self._pinned:  # 128 random bits: never in practice
                name = secrets.token_hex(16) + ".png"
            if pinned:
                self._pinned[name] = entry
                return name
            self._entries[name] = entry
            while self._entries:
                oldest = next(iter(self._entries.values()))
                if now - oldest.created <= self.max_age_s and len(self._entries) <= self.max_entries:
                    break
                self._entries.popitem(last=False)
        return name

    def add_group(self, paths: list[str | Path] | tuple[str | Path, ...]) -> list[str]:
        """New names for one trial's images, all answered with the same number of bytes (see the module doc)."""
        sizes, nonces = [], [new_nonce() for _ in paths]
        for path in paths:
            data = self._file(str(path))
            sizes.append(None if data is None else len(data))
        bodies = [size + len(nonce) for size, nonce in zip(sizes, nonces, strict=True) if size is not None]
        target = max(bodies, default=0) + secrets.randbelow(33)
        return [self._add(path, nonce, 0 if size is None else target - size - len(nonce), pinned=False)
                for path, nonce, size in zip(paths, nonces, sizes, strict=True)]

    def __contains__(self, name: object) -> bool:
        return self._entry(name) is not None

    def __len__(self) -> int:
        return len(self._entries) + len(self._pinned)

    def _entry(self, name: object) -> _Entry | None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return None
        with self._lock:
            entry = self._pinned.get(name) or self._entries.get(name)
        if entry is None or (name not in self._pinned and self._clock() - entry.created > self.max_age_s):
            return None
        return entry

    def is_cached(self, name: object) -> bool:
        """Whether ``get(name)`` can answer without reading a file (unknown names: True, they read nothing)."""
        entry = self._entry(name)
        if entry is None:
            return True
        with self._lock:
            return entry.path in self._files or entry.path in self._blobs

    def get(self, name: object) -> bytes | None:
        """The bytes served under ``name``, or None (unknown, expired, malformed, the file gone or not a PNG)."""
        entry = self._entry(name)
        if entry is None:
            return None
        data = self._file(entry.path)
        if data is None:
            return None
        try:
            return with_nonce(data, entry.nonce + b"0" * entry.pad)
        except ValueError as exc:
            logger.warning("served image source is not a PNG: %s", exc)
            return None

    def _file(self, path: str) -> bytes | None:
        with self._lock:
            data = self._blobs.get(path) or self._files.get(path)
            if data is not None:
                if path in self._files:
                    self._files.move_to_end(path)
                return data
        if path.startswith("memory:"):
            return None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            logger.warning("served image source unreadable: %s", exc)
            return None
        with self._lock:
            if path not in self._files and len(data) <= self.cache_bytes:
                self._files[path] = data
                self._file_bytes += len(data)
                while self._file_bytes > self.cache_bytes:
                    _, dropped = self._files.popitem(last=False)
                    self._file_bytes -= len(dropped)
        return data

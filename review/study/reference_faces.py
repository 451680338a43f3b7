"""The reference face shown beside each pair: a thumbnail made once per face and process, served from memory.

Faces are not blinded (every trial of a condition shows the same face), but their names stay opaque like every
served image's; the thumbnail is re-encoded from pixels (no EXIF or other metadata of the upload reaches the
page), turned upright first (EXIF orientation), and kept in memory (``ServedImages.add_bytes``), so nothing is
written per process start.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PIL import Image, ImageOps

from review.images import encode_png
from review.store import Store
from review.study.served import ServedImages, image_url
from review.study.services import DataDirs

logger = logging.getLogger(__name__)

FACE_SIDE = 384  # the reference face is served at most this large


class ReferenceFaces:
    """face id -> the page's URL of its thumbnail (made on first use; thread-safe)."""

    def __init__(self, store: Store, dirs: DataDirs, served: ServedImages) -> None:
        self.store, self.dirs, self.served = store, dirs, served
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def url(self, face_id: int) -> str | None:
        """The thumbnail's URL, or None (logged) when the face's file is gone or unreadable: the pair is shown
        without a reference face rather than not at all."""
        with self._lock:
            if face_id in self._urls:
                return self._urls[face_id]
            row = self.store.get_face(face_id)
            path = self._locate(row["file"]) if row else None
            if path is None:
                logger.warning("reference face %s not found", face_id)
                return None
            try:
                png = thumbnail_png(path)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                logger.warning("reference face %s unreadable: %s", face_id, exc)
                return None
            url = image_url(self.served.add_bytes(png))
            self._urls[face_id] = url
            return url

    def _locate(self, file: str) -> Path | None:
        """A face row's file: absolute, or relative to the data root, the faces folder or the images folder."""
        path = Path(file)
        candidates = [path] if path.is_absolute() else [self.dirs.root / path, self.dirs.faces / path,
                                                         self.dirs.faces / path.name, self.dirs.images / path]
        return next((c for c in candidates if c.is_file()), None)


def thumbnail_png(path: Path) -> bytes:
    """An upright RGB thumbnail (at most FACE_SIDE a side) as PNG bytes, written from pixels: no metadata."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    image.thumbnail((FACE_SIDE, FACE_SIDE))
    return encode_png(image)

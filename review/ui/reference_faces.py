"""The reference face shown beside each pair: a thumbnail written once per face, served from memory.

Faces are not blinded (every trial of a condition shows the same face), but their names stay opaque like every
served image's; the thumbnail is re-encoded from pixels (``review.images.write_image``), so no EXIF or other
metadata of the upload reaches the page, and it is turned upright first (EXIF orientation).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from review.images import write_image
from review.served import ServedImages
from review.store import Store
from review.ui.image_route import image_url
from review.ui.services import DataDirs

logger = logging.getLogger(__name__)

FACE_SIDE = 384  # the reference face is served at most this large


class ReferenceFaces:
    """face id -> the page's URL of its thumbnail (made on first use; thread-safe)."""

    def __init__(self, store: Store, dirs: DataDirs, served: ServedImages) -> None:
        self.store, self.dirs, self.served = store, dirs, served
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def url(self, face_id: int) -> str | None:
        """The thumbnail's URL, or None (logged) when the face's file is gone."""
        with self._lock:
            cached = self._urls.get(face_id)
            if cached and cached.rsplit("/", 1)[-1] in self.served:
                return cached
            row = self.store.get_face(face_id)
            path = self._locate(row["file"]) if row else None
            if path is None:
                logger.warning("reference face %s not found", face_id)
                return None
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image.thumbnail((FACE_SIDE, FACE_SIDE))
                stored = write_image(self.dirs.serve / "faces", np.asarray(image))
            url = image_url(self.served.add(self.dirs.serve / "faces" / stored.file, pinned=True))
            self._urls[face_id] = url
            return url

    def _locate(self, file: str) -> Path | None:
        """A face row's file: absolute, or relative to the data root, the faces folder or the images folder."""
        path = Path(file)
        candidates = [path] if path.is_absolute() else [self.dirs.root / path, self.dirs.faces / path,
                                                         self.dirs.faces / path.name, self.dirs.images / path]
        return next((c for c in candidates if c.is_file()), None)

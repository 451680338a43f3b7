"""Face input for InstantID: image loading, insightface (antelopev2) analysis, and the keypoint hint image.

InstantID conditions on the RAW 512-d ``face.embedding`` of the largest face (by bbox area) found by
``insightface.app.FaceAnalysis(name="antelopev2")`` and on ``draw_kps`` of that face's 5 keypoints.
``normed_embedding`` is never used (official repo, diffusers community pipeline, ComfyUI node all agree).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# what reading a malformed EXIF block can still raise (PIL only warns on most corruption and reads on): a
# non-integer or unhashable orientation, a bad offset or count, a truncated value. Such a photo is used as stored.
EXIF_ERRORS = (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, struct.error)

DEFAULT_MODEL = "antelopev2"  # the pack InstantID was trained with (SCRFD-10G detector + glintr100 ArcFace)
DEFAULT_ROOT = "~/.insightface"  # insightface's own default root; packs live in <root>/models/<name>
ROOT_ENV = "INSTANTID_FACE_ROOT"  # overrides DEFAULT_ROOT when no root is passed
MODULES = ("detection", "recognition")  # landmark/genderage models of the pack are not needed
DOWNLOAD_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/antelopev2.zip"
# InstantID's keypoint drawing (pipeline_stable_diffusion_xl_instantid.py, draw_kps).
KPS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
KPS_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # eyes and mouth corners to the nose
KPS_STICKWIDTH = 4
KPS_LIMB_DIM = 0.6  # the limb canvas is scaled by this before the points are drawn
KPS_RADIUS = 10
_ALIGN_WARNING = r".*`estimate` is deprecated"  # scikit-image 0.26 FutureWarning from insightface's face_align
_GET_LOCK = threading.Lock()  # serialises FaceAnalysis.get, which also makes the warnings filter thread-safe

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image


class FaceError(ValueError):
    """Base class for problems with the face input."""


class ImageReadError(FaceError):
    """The image could not be read (missing, not an image, truncated or corrupt)."""


class NoFaceError(FaceError):
    """No face was detected in the image."""


class FaceModelError(FaceError, FileNotFoundError):
    """The insightface model pack is missing or unusable."""


@dataclass
class Face:
    """One detected face: box, five keypoints and the identity embedding."""

    bbox: np.ndarray  # [4] x1, y1, x2, y2 (float, image pixels)
    kps: np.ndarray  # [5, 2] eyes, nose, mouth corners (x, y)
    embedding: np.ndarray  # [512] raw insightface `embedding` (NOT normed_embedding)
    det_score: float  # detector confidence in [0, 1]

    @property
    def area(self) -> float:
        """The box's area in pixels (the largest face conditions the image)."""
        x1, y1, x2, y2 = (float(v) for v in np.asarray(self.bbox).reshape(-1)[:4])
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def sort_largest_first(faces: Iterable[Face]) -> list[Face]:
    """Faces by bbox area, largest first; ties keep the detector's (score) order."""
    return sorted(faces, key=lambda face: -face.area)


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of image data>"
    name = getattr(source, "filename", "") if isinstance(source, Image.Image) else ""
    return str(name) or "<image>"


def load_image(source: ImageSource) -> Image.Image:
    """Read a path, raw bytes or PIL image into an RGB, EXIF-transposed PIL image.

    Paths and bytes go through ``instantid.image_input.read_reference_image`` (size and pixel caps from the
    header first; 16-bit scaled, transparency on white: the same image the review app would use). Raises
    ImageReadError (naming the file) for missing, non-image, truncated, corrupt or over-large input.
    """
    from .image_input import read_reference_image, to_rgb

    if isinstance(source, Image.Image):
        try:
            source.load()
            try:
                upright = ImageOps.exif_transpose(source) or source
            except EXIF_ERRORS as exc:  # malformed EXIF must not make a readable photo unusable
                logger.warning("ignoring unreadable EXIF orientation: %s", exc)
                upright = source
            return to_rgb(upright, _describe(source), [])
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise ImageReadError(f"Cannot read image {_describe(source)}: truncated or corrupt ({exc})") from exc
    return read_reference_image(source)[0]


def _to_bgr_array(image: ImageSource | np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR array for insightface. ndarrays are taken as RGB (HxW grey and HxWx4 accepted)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
            raise FaceError(f"expected an HxWx3 RGB image array, got shape {image.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        arr = np.asarray(load_image(image))
    return np.ascontiguousarray(arr[:, :, ::-1])


def _default_providers() -> list[str]:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _missing_models_message(folder: Path, name: str, problem: str) -> str:
    nested = sorted({p.parent for p in folder.glob("*/*.onnx")}) if folder.is_dir() else []
    hint = (f" Found .onnx files one level down in {nested[0]}: the zip unpacks into its own folder, so move"
            f" them up into {folder} (or pass that folder as the model name)." if nested else "")
    return (f"Face models not found: {folder} {problem}.{hint} InstantID needs insightface's '{DEFAULT_MODEL}'"
            f" pack: download {DOWNLOAD_URL} and unzip it so the .onnx files sit directly in"
            f" <root>/models/{DEFAULT_MODEL} (root defaults to {DEFAULT_ROOT}; set ${ROOT_ENV} or pass root=),"
            f" or pass name=<folder holding the .onnx files>. (Requested: name={name!r}.)")


class FaceAnalyzer:
    """insightface ``FaceAnalysis`` (detection + recognition only) with InstantID's face selection."""

    def __init__(self, name: str = DEFAULT_MODEL, root: str | Path | None = None,
                 providers: Sequence[Any] | None = None, det_size: tuple[int, int] = (640, 640)) -> None:
        from insightface.app import FaceAnalysis

        name = str(name)
        looks_like_path = Path(name).expanduser().is_absolute() or any(sep in name for sep in ("/", os.sep))
        if looks_like_path:
            folder = Path(name).expanduser().resolve()
            self.root: Path | None = None
        else:
            self.root = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()
            folder = (self.root / "models" / name).resolve()
        # Check first: insightface would try a network download for a missing pack and fail with a bare
        # AssertionError for an empty one.
        if not folder.is_dir():
            raise FaceModelError(_missing_models_message(folder, name, "does not exist"))
        onnx_files = sorted(p.name for p in folder.glob("*.onnx"))
        if not onnx_files:
            raise FaceModelError(_missing_models_message(folder, name, "contains no .onnx files"))
        self.name, self.model_dir, self.det_size = name, folder, (int(det_size[0]), int(det_size[1]))
        self.providers = list(providers) if providers is not None else _default_providers()
        first = self.providers[0] if self.providers else "CPUExecutionProvider"
        first = first[0] if isinstance(first, (tuple, list)) else first
        self.ctx_id = -1 if first == "CPUExecutionProvider" else 0
        # Load exactly as users do: FaceAnalysis(name='antelopev2', root=R) or FaceAnalysis(name=<folder>).
        # A same-named folder in the working directory would shadow R/models/<name> inside insightface.
        by_name = self.root is not None and not Path(name).is_dir()
        try:
            where = {"name": name, "root": str(self.root)} if by_name else {"name": str(folder)}
            self.app = FaceAnalysis(**where, allowed_modules=list(MODULES), providers=self.providers)
        except AssertionError as exc:
            raise FaceModelError(f"No face detection model among {onnx_files} in {folder}; expected the"
                                 f" '{DEFAULT_MODEL}' pack ({DOWNLOAD_URL}).") from exc
        except Exception as exc:
            raise FaceModelError(f"Could not load the face models in {folder}: {exc}") from exc
        if "recognition" not in self.app.models:
            raise FaceModelError(f"No face recognition (ArcFace) model among {onnx_files} in {folder};"
                                 f" expected the '{DEFAULT_MODEL}' pack ({DOWNLOAD_URL}).")
        self.app.prepare(ctx_id=self.ctx_id, det_size=self.det_size)
        logger.info("face models %s loaded from %s (%s) on %s", name, folder,
                    {k: type(v).__name__ for k, v in self.app.models.items()}, self.providers)

    def __repr__(self) -> str:
        return f"FaceAnalyzer(name={self.name!r}, model_dir='{self.model_dir}', providers={self.providers})"

    def _raw_faces(self, bgr: np.ndarray) -> list[Any]:
        with _GET_LOCK, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_ALIGN_WARNING, category=FutureWarning)
            return list(self.app.get(bgr))

    def _detect_bgr(self, bgr: np.ndarray) -> list[Face]:
        faces = []
        for raw in self._raw_faces(bgr):
            if raw.embedding is None:
                raise FaceError("the recognition model returned no embedding")
            faces.append(Face(bbox=np.array(raw.bbox, dtype=np.float32).reshape(4),
                              kps=np.array(raw.kps, dtype=np.float32).reshape(5, 2),
                              embedding=np.array(raw.embedding),  # raw, NOT normed_embedding
                              det_score=float(raw.det_score)))
        faces = sort_largest_first(faces)
        logger.debug("detected %d face(s); areas %s", len(faces), [round(f.area) for f in faces])
        return faces

    def detect(self, image: ImageSource | np.ndarray) -> list[Face]:
        """All faces, largest bbox area first. ``np.ndarray`` input is RGB (like PIL), not BGR."""
        return self._detect_bgr(_to_bgr_array(image))

    def largest(self, image: ImageSource | np.ndarray) -> Face:
        """The largest face (InstantID's choice); raises NoFaceError when there is none."""
        bgr = _to_bgr_array(image)
        faces = self._detect_bgr(bgr)
        if not faces:
            what = "<image array>" if isinstance(image, np.ndarray) else _describe(image)
            raise NoFaceError(f"No face found in {what} ({bgr.shape[1]}x{bgr.shape[0]}). Use a photo in which"
                              " one face is clearly visible, roughly frontal, well lit and not tiny.")
        return faces[0]


def fit_kps(kps: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Keypoints of a ``source``-sized photo in the coordinates of a ``target``-sized output.

    The photo is scaled to cover the output (aspect kept) and centred, as a centre crop would place it, so the
    keypoint geometry is never stretched when the output's aspect ratio differs from the photo's."""
    (sw, sh), (tw, th) = source, target
    scale = max(tw / sw, th / sh)
    offset = np.array([(tw - sw * scale) / 2, (th - sh * scale) / 2])
    return np.asarray(kps, dtype=np.float64) * scale + offset


def draw_kps(image_size: tuple[int, int], kps: np.ndarray) -> Image.Image:
    """InstantID's IdentityNet hint: the 5 keypoints drawn on black, ``image_size`` = (width, height).

    Same drawing as the official ``draw_kps``: limbs (eye/mouth corner -> nose) as filled
    ``cv2.ellipse2Poly`` polygons of half-width 4 in the colour of their first point, the limb canvas
    scaled by 0.6, then filled circles of radius 10 at each keypoint (coordinates truncated by ``int()``).
    """
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    kps = np.asarray(kps, dtype=np.float64)
    if kps.shape != (5, 2) or not np.all(np.isfinite(kps)):
        raise ValueError(f"kps must be 5 finite (x, y) points, got shape {kps.shape}")
    out = np.zeros([height, width, 3])
    for a, b in KPS_LIMBS:
        x, y = kps[[a, b], 0], kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), KPS_STICKWIDTH),
                                   int(angle), 0, 360, 1)
        out = cv2.fillConvexPoly(out.copy(), polygon, KPS_COLORS[a])
    out = (out * KPS_LIMB_DIM).astype(np.uint8)
    for (x, y), color in zip(kps, KPS_COLORS, strict=True):
        out = cv2.circle(out.copy(), (int(x), int(y)), KPS_RADIUS, color, -1)
    return Image.fromarray(out.astype(np.uint8))

"""Pure image and identity metrics for pairs: SSIM (scikit-image) and ArcFace-embedding cosines.

Nothing here invents a value: a missing face gives NULL cosines plus a reason; a zero or non-finite embedding is
an error (it means a bug upstream, not a measurement).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import structural_similarity

logger = logging.getLogger(__name__)

SSIM_MIN_SIDE = 11  # gaussian_weights with sigma=1.5 (truncate 3.5) uses an 11x11 window


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images of one shape (Wang et al. settings: Gaussian sigma 1.5, population
    covariance, data_range 255, per channel then averaged)."""
    for name, image in (("a", a), ("b", b)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"ssim: {name} must be a uint8 RGB array (H, W, 3), got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < SSIM_MIN_SIDE:
        raise ValueError(f"ssim: images must be at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, got {a.shape[:2]}")
    value = structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False)
    return float(value)


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine similarity of two 1-D vectors of one length; raises on zero, NaN or infinite input."""
    a = np.asarray(u, dtype=np.float64)
    b = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"cosine: need two non-empty 1-D vectors of one length, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("cosine: vector contains NaN or infinity")
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:
        raise ValueError("cosine: zero vector has no direction")
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


@dataclass(frozen=True)
class IdentityScore:
    """The identity cosines of one pair, or the reasons they are missing."""

    id_cos_sel_full: float | None  # selective output vs full output (same seed): identity change from patching
    id_cos_sel_ref: float | None  # selective output vs the reference photo
    id_cos_full_ref: float | None  # full output vs the reference photo
    identity_failure: str | None  # why some value is NULL ("selective: no face detected"), None when complete

    def as_row(self) -> dict[str, float | str | None]:
        """The pairs-table columns (``store.add_pair(..., **score.as_row())``)."""
        return asdict(self)


def identity_scores(ref_emb: np.ndarray | None, full_emb: np.ndarray | None, sel_emb: np.ndarray | None,
                    reasons: Mapping[str, str] | None = None) -> IdentityScore:
    """Cosines between the available embeddings; a missing one leaves its cosines NULL and names the reason.

    ``reasons`` maps "ref" / "full" / "selective" to why that embedding is missing (e.g. the NoFaceError text);
    a missing embedding without a reason is reported as "no embedding"."""
    reasons = dict(reasons or {})
    embeddings = {"ref": ref_emb, "full": full_emb, "selective": sel_emb}
    missing = [name for name, emb in embeddings.items() if emb is None]

    def cos(x: str, y: str) -> float | None:
        ex, ey = embeddings[x], embeddings[y]
        return None if ex is None or ey is None else cosine(ex, ey)

    failure = "; ".join(f"{name}: {reasons.get(name, 'no embedding')}" for name in missing) or None
    if failure:
        logger.info("identity scores incomplete: %s", failure)
    return IdentityScore(id_cos_sel_full=cos("selective", "full"), id_cos_sel_ref=cos("selective", "ref"),
                         id_cos_full_ref=cos("full", "ref"), identity_failure=failure)

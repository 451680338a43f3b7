"""Pair metrics: SSIM as scikit-image computes it, cosine, identity scores that never invent values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from review.generation.metrics import IdentityScore, cosine, identity_scores, ssim


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=a.shape)
    return a, np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)


def test_ssim_of_an_image_with_itself_is_one(images):
    assert ssim(images[0], images[0]) == 1.0


def test_ssim_equals_scikit_image_called_directly(images):
    a, b = images
    expected = structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    value = ssim(a, b)
    assert isinstance(value, float) and value == float(expected)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("b, match", [
    (np.zeros((48, 32, 3), np.uint8), "shapes differ"),
    (np.zeros((48, 64, 3), np.float32), "uint8 RGB"),
    (np.zeros((48, 64), np.uint8), "uint8 RGB"),
    (np.zeros((48, 64, 4), np.uint8), "uint8 RGB"),
])
def test_ssim_refuses_mismatched_inputs(images, b, match):
    with pytest.raises(ValueError, match=match):
        ssim(images[0], b)


def test_ssim_refuses_images_smaller_than_its_window():
    tiny = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(tiny, tiny)


def test_cosine_of_known_vectors():
    assert cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    assert cosine(np.array([1, 2, 3]), np.array([2, 4, 6])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == -1.0
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 0.0


@pytest.mark.parametrize("u, v, match", [
    ([0.0, 0.0], [1.0, 1.0], "zero vector"),
    ([1.0, 1.0], [0.0, 0.0], "zero vector"),
    ([np.nan, 1.0], [1.0, 1.0], "NaN"),
    ([np.inf, 1.0], [1.0, 1.0], "NaN or infinity"),
    ([1.0, 1.0], [1.0, 1.0, 1.0], "one length"),
    ([[1.0, 1.0]], [[1.0, 1.0]], "1-D"),
    ([], [], "non-empty"),
])
def test_cosine_raises_instead_of_inventing_a_value(u, v, match):
    with pytest.raises(ValueError, match=match):
        cosine(np.array(u), np.array(v))


def test_identity_scores_with_every_face():
    ref, full, sel = np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.0, 1.0])
    score = identity_scores(ref, full, sel)
    assert score == IdentityScore(id_cos_sel_full=pytest.approx(1 / math.sqrt(2)), id_cos_sel_ref=0.0,
                                  id_cos_full_ref=pytest.approx(1 / math.sqrt(2)), identity_failure=None)


def test_identity_scores_leave_missing_faces_null_with_the_reason():
    ref, full = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    score = identity_scores(ref, full, None, {"selective": "no face detected"})
    assert score.as_row() == {"id_cos_sel_full": None, "id_cos_sel_ref": None,
                              "id_cos_full_ref": pytest.approx(1 / math.sqrt(2)),
                              "identity_failure": "selective: no face detected"}
    both = identity_scores(ref, None, None)
    assert both.as_row() == {"id_cos_sel_full": None, "id_cos_sel_ref": None, "id_cos_full_ref": None,
                             "identity_failure": "full: no embedding; selective: no embedding"}


def test_identity_scores_raise_on_a_zero_embedding():
    with pytest.raises(ValueError, match="zero vector"):
        identity_scores(np.zeros(4), np.ones(4), np.ones(4))

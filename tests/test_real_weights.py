"""Real InstantX/InstantID + SDXL + antelopev2 weights, when present (skipped otherwise).

Set INSTANTID_WEIGHTS (folder with ip-adapter.bin and ControlNetModel/), INSTANTID_BASE (SDXL base folder or
.safetensors) and INSTANTID_FACE_ROOT (insightface root with models/antelopev2) to run them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

WEIGHTS = os.environ.get("INSTANTID_WEIGHTS")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not WEIGHTS or not Path(WEIGHTS).is_dir(), reason="INSTANTID_WEIGHTS not set to a folder"),
]


@pytest.fixture(scope="module")
def engine():
    from instantid import load_engine

    return load_engine(WEIGHTS, base=os.environ.get("INSTANTID_BASE"),
                       face_model_root=os.environ.get("INSTANTID_FACE_ROOT"))


def test_real_stack_has_the_sdxl_map_and_generates_every_preset(engine):
    from PIL import Image
    from skimage.data import astronaut

    from instantid import GenerationRequest, GenerationSettings

    assert engine.describe()["known_map"] and len(engine.layers) == 70
    request = GenerationRequest(face_image=Image.fromarray(astronaut()), prompt="a photo of an astronaut",
                                seed=1, settings=GenerationSettings(steps=4, width=768, height=768))
    images = {p: np.asarray(engine.generate(request, p).image) for p in ("full", "balanced", "none")}
    assert all(img.shape == (768, 768, 3) and img.std() > 1 for img in images.values())
    assert not np.array_equal(images["full"], images["none"])

"""load_engine() on folders laid out exactly as users have them, written from the tiny stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instantid import GenerationRequest, GenerationSettings, WeightsError, load_engine
from instantid.layers import layer_map_for
from instantid.loading import layer_widths
from instantid.pipeline import InstantIDPipeline
from instantid.tiny import TinyConfig, random_adapter_state, tiny_components


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory):
    """base/ (a diffusers SDXL folder), instantid/ (ip-adapter.bin + ControlNetModel/), faces/models/antelopev2."""
    from instantid import build_tiny_face_models

    root = tmp_path_factory.mktemp("weights")
    parts = tiny_components(TinyConfig(seed=5))
    controlnet = parts.pop("controlnet")
    InstantIDPipeline(**parts, controlnet=controlnet).save_pretrained(root / "base")
    controlnet.save_pretrained(root / "instantid" / "ControlNetModel")
    layers = layer_map_for(parts["unet"])
    state = random_adapter_state(layers, layer_widths(parts["unet"], layers), resampler_width=128, seed=5)
    torch.save(state, root / "instantid" / "ip-adapter.bin")
    build_tiny_face_models(root / "faces" / "models" / "antelopev2")
    return root


def test_engine_loads_from_user_folders_and_generates(user_folders):
    from PIL import Image
    from skimage.data import astronaut

    engine = load_engine(str(user_folders / "instantid"), base=str(user_folders / "base"),
                         face_model_root=str(user_folders / "faces"))
    assert engine.describe()["known_map"] is True
    assert len(engine.layers) == 70
    result = engine.generate(GenerationRequest(face_image=Image.fromarray(astronaut()), prompt="a portrait",
                                               settings=GenerationSettings(steps=2, width=128, height=128)),
                             "balanced")
    assert result.layer_count == 55 and result.image.size == (128, 128)
    assert len(result.step_times_s) == 2 and all(t > 0 for t in result.step_times_s)
    assert np.asarray(result.image).std() > 0


def test_missing_base_folder_is_named(user_folders, tmp_path):
    with pytest.raises(WeightsError, match="model_index.json"):
        load_engine(str(user_folders / "instantid"), base=str(tmp_path), face_model_root=str(user_folders / "faces"))

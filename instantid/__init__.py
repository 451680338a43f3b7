"""InstantID on diffusers with a per-layer choice of which cross-attention layers carry the face branch.

The public API is what this module exports; ``review/`` uses nothing else. Names load lazily so that
``import instantid`` stays cheap (torch and diffusers load on first use of the engine).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import quiet

quiet.install()  # known third-party notices that cannot be fixed at the cause (see instantid/quiet.py)

_EXPORTS = {
    # layer maps
    "LayerInfo": "layers", "SDXL_LAYERS": "layers", "SD15_LAYERS": "layers", "layer_map_for": "layers",
    "layers_by_name": "layers",
    # presets
    "Preset": "presets", "PresetError": "presets", "PRESET_NAMES": "presets", "resolve_preset": "presets",
    "describe_presets": "presets", "select_layers": "presets", "ACCEPTED_FORMS": "presets", "preset_key": "presets",
    "split_presets": "presets", "is_auto_spec": "telemetry",
    # work model
    "preset_work": "bench.work_model",
    # faces
    "Face": "face", "FaceAnalyzer": "face", "FaceError": "face", "ImageReadError": "face", "NoFaceError": "face",
    "FaceModelError": "face",
    "load_image": "face", "read_reference_image": "image_input", "draw_kps": "face", "build_tiny_face_models": "tiny_face_models",
    # engine
    "Engine": "engine", "GenerationResult": "engine", "GenerationError": "engine", "load_engine": "engine",
    "WeightsError": "loading",
    # what a generation is asked for (torch-free: the store, the UI and the CLIs import it cheaply)
    "GenerationSettings": "settings", "GenerationRequest": "settings", "parse_size": "settings",
    "size_argument": "settings",
    # limits (one definition for the engine, both CLIs and the app)
    "LIMITS": "limits", "GenerationLimits": "limits", "RequestError": "limits", "check_request": "limits",
    "request_problems": "limits", "settings_problems": "limits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'instantid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

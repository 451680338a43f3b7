"""Load InstantID weights the way users have them, with errors that name the file and the key.

* Face adapter: ``ip-adapter.bin`` = ``{"image_proj": Resampler state, "ip_adapter": {"{2n+1}.to_k_ip.weight",
  "{2n+1}.to_v_ip.weight"}}``, or a ``.safetensors`` with the same keys flattened under ``image_proj.`` /
  ``ip_adapter.``; from a file, a local folder or a hub repo id.
* IdentityNet: ``ControlNetModel/`` (a diffusers ControlNet) in the same folder or repo.
* SDXL base: a diffusers folder, a hub repo id, or a single ``.safetensors`` checkpoint.

The adapter is checked against the UNet's layer map before diffusers' ``load_ip_adapter`` consumes it, so a
missing, extra or misshaped key is reported by name instead of surfacing as a shape error deep in torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .layers import LayerInfo

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("ip-adapter.bin", "ip-adapter.safetensors", "ip_adapter.bin", "ip_adapter.safetensors")
CONTROLNET_SUBFOLDER = "ControlNetModel"


class WeightsError(RuntimeError):
    """Weights are missing, incomplete or of the wrong shape; the message names the file and key."""


def _hub_file(repo_id: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename)
    except Exception as exc:  # offline, missing repo, missing file: all mean "not here"
        raise WeightsError(f"could not get {filename!r} from hub repo {repo_id!r}: {exc}") from exc


def find_adapter_file(source: str | os.PathLike) -> Path:
    """The face-adapter file for a file path, a local folder or a hub repo id."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ADAPTER_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"no face adapter in {path}: expected one of {', '.join(ADAPTER_FILES)}")
    if str(source).count("/") == 1 and not str(source).startswith((".", "/")):
        return Path(_hub_file(str(source), "ip-adapter.bin"))
    raise WeightsError(f"face adapter not found: {source} is neither a file, a folder nor a hub repo id")


def read_adapter(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``ip-adapter.bin`` or the prefixed ``.safetensors`` into ``{"image_proj", "ip_adapter"}``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"face adapter file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            for key, value in flat.items():
                group, _, rest = key.partition(".")
                if group not in state or not rest:
                    raise WeightsError(f"{path}: key {key!r} has neither an 'image_proj.' nor an 'ip_adapter.' prefix")
                state[group][rest] = value
            return state
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable face adapter ({exc})") from exc
    if not isinstance(state, dict) or set(state) != {"image_proj", "ip_adapter"}:
        found = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{path}: expected top-level keys 'image_proj' and 'ip_adapter', found {found}")
    return state


def layer_widths(unet, layers: tuple[LayerInfo, ...]) -> dict[str, int]:
    """Width of each cross-attention layer as built in ``unet`` (640/1280 for SDXL)."""
    return {layer.name: unet.get_submodule(layer.name).to_k.out_features for layer in layers}


def expected_adapter_shapes(layers: tuple[LayerInfo, ...], widths: dict[str, int],
                            cross_attention_dim: int) -> dict[str, tuple[int, ...]]:
    """Every ``ip_adapter`` key with its shape: ``{2n+1}.to_k_ip.weight`` / ``to_v_ip`` = [width, context]."""
    shapes = {}
    for layer in layers:
        for proj in ("to_k_ip", "to_v_ip"):
            shapes[f"{layer.weight_key}.{proj}.weight"] = (widths[layer.name], cross_attention_dim)
    return shapes


def expected_resampler_shapes(resampler: dict[str, torch.Tensor], cross_attention_dim: int,
                              embed_dim: int = 512, depth: int = 4) -> dict[str, tuple[int, ...]]:
    """Every ``image_proj`` key of InstantID's Resampler with its shape (width taken from ``latents``)."""
    latents = resampler.get("latents")
    if latents is None or latents.ndim != 3:
        raise WeightsError("image_proj: key 'latents' is missing or not [1, tokens, width]")
    tokens, dim = latents.shape[1], latents.shape[2]
    shapes: dict[str, tuple[int, ...]] = {
        "latents": (1, tokens, dim), "proj_in.weight": (dim, embed_dim), "proj_in.bias": (dim,),
        "proj_out.weight": (cross_attention_dim, dim), "proj_out.bias": (cross_attention_dim,),
        "norm_out.weight": (cross_attention_dim,), "norm_out.bias": (cross_attention_dim,),
    }
    for i in range(depth):
        for norm in ("norm1", "norm2"):
            shapes[f"layers.{i}.0.{norm}.weight"] = (dim,)
            shapes[f"layers.{i}.0.{norm}.bias"] = (dim,)
        shapes[f"layers.{i}.0.to_q.weight"] = (dim, dim)
        shapes[f"layers.{i}.0.to_kv.weight"] = (2 * dim, dim)
        shapes[f"layers.{i}.0.to_out.weight"] = (dim, dim)
        shapes[f"layers.{i}.1.0.weight"] = (dim,)
        shapes[f"layers.{i}.1.0.bias"] = (dim,)
        shapes[f"layers.{i}.1.1.weight"] = (4 * dim, dim)
        shapes[f"layers.{i}.1.3.weight"] = (dim, 4 * dim)
    return shapes


def _check(group: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], where: str) -> None:
    missing = [k for k in expected if k not in group]
    if missing:
        raise WeightsError(f"{where}: missing key {missing[0]!r} (expected shape {list(expected[missing[0]])}"
                           f"{f'; {len(missing) - 1} more missing' if len(missing) > 1 else ''})")
    extra = sorted(set(group) - set(expected))
    if extra:
        raise WeightsError(f"{where}: unexpected key {extra[0]!r}; the file does not match this model")
    for key, shape in expected.items():
        if tuple(group[key].shape) != shape:
            raise WeightsError(f"{where}: key {key!r} has shape {list(group[key].shape)}, expected {list(shape)}")


def validate_adapter(state: dict, layers: tuple[LayerInfo, ...], widths: dict[str, int], cross_attention_dim: int,
                     source: str) -> None:
    """Raise :class:`WeightsError` naming ``source`` and the key unless every key is present and shaped right."""
    _check(state["ip_adapter"], expected_adapter_shapes(layers, widths, cross_attention_dim),
           f"{source} [ip_adapter]")
    _check(state["image_proj"], expected_resampler_shapes(state["image_proj"], cross_attention_dim),
           f"{source} [image_proj]")


def load_controlnet(source: str | os.PathLike, dtype: torch.dtype):
    """IdentityNet from ``<folder>/ControlNetModel``, a ControlNet folder itself, or ``<repo>/ControlNetModel``."""
    from diffusers import ControlNetModel

    path = Path(source)
    try:
        if path.is_dir():
            folder = path / CONTROLNET_SUBFOLDER if (path / CONTROLNET_SUBFOLDER).is_dir() else path
            if not (folder / "config.json").is_file():
                raise WeightsError(f"IdentityNet not found: {folder}/config.json is missing")
            return ControlNetModel.from_pretrained(str(folder), dtype=dtype)
        return ControlNetModel.from_pretrained(str(source), subfolder=CONTROLNET_SUBFOLDER, dtype=dtype)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"could not load IdentityNet from {source}: {exc}") from exc


def load_base(pipeline_cls, base: str | os.PathLike, controlnet, dtype: torch.dtype):
    """The SDXL base from a diffusers folder, a hub repo id or a single ``.safetensors`` checkpoint."""
    path = Path(base)
    try:
        if path.is_file():
            return pipeline_cls.from_single_file(str(path), controlnet=controlnet, dtype=dtype)
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise WeightsError(f"SDXL base folder {path} has no model_index.json")
        return pipeline_cls.from_pretrained(str(base), controlnet=controlnet, dtype=dtype)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"could not load the SDXL base from {base}: {exc}") from exc


def cast_modules(modules, dtype: torch.dtype) -> None:
    """Cast modules to ``dtype`` in place with torch's own ``Module.to``. diffusers' ``ModelMixin.to`` logs
    "modules that should be kept in float32: []" on every dtype cast, even when there are none to keep (0.42)."""
    for module in modules:
        if isinstance(module, torch.nn.Module) and any(p.dtype != dtype for p in module.parameters()):
            torch.nn.Module.to(module, dtype=dtype)

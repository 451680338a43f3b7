"""Attach an InstantID face adapter to a pipeline: validate, load with diffusers, take over its processors."""

from __future__ import annotations

import logging

from .layers import LayerInfo, layer_map_for
from .loading import layer_widths, validate_adapter
from .patching import FacePatcher
from .pipeline import InstantIDPipeline

logger = logging.getLogger(__name__)


def attach_face_adapter(pipe: InstantIDPipeline, state: dict, source: str) -> FacePatcher:
    """Validate ``state`` against the UNet, load it with diffusers' ``load_ip_adapter`` and take it over.

    The Resampler moves to ``pipe.resampler`` (run once per generation instead of inside every UNet call) and
    each loaded IP processor becomes a :class:`FaceAttnProcessor` sharing its weights."""
    unet = pipe.unet
    original = dict(unet.attn_processors)
    names = tuple(n.removesuffix(".processor") for n in original if n.endswith("attn2.processor"))
    layers = layer_map_for(unet) or plain_layers(names)
    validate_adapter(state, layers, layer_widths(unet, layers), unet.config.cross_attention_dim, source)
    # InstantID feeds face embeddings, not CLIP image features: no image encoder or feature extractor. The UNet's
    # own loader (what pipe.load_ip_adapter calls after making those) builds the processors without
    # warning about the missing encoder or building a CLIPImageProcessor nothing uses. diffusers has no public
    # name for this step: load_ip_adapter is the only public entry and always does the two things above.
    unet._load_ip_adapter_weights([state], low_cpu_mem_usage=True)  # noqa: SLF001 - see the comment above
    pipe.resampler = unet.encoder_hid_proj.image_projection_layers[0]
    unet.encoder_hid_proj = None  # the pipeline passes (text, [face tokens]) itself
    unet.register_to_config(encoder_hid_dim_type=None)
    patcher = FacePatcher(unet, layers, original)
    pipe.face_state = patcher.state
    patcher.apply(frozenset(patcher.face))
    return patcher


def plain_layers(names: tuple[str, ...]) -> tuple[LayerInfo, ...]:
    """Layer records for a UNet that matches no known map: names and weight keys only."""
    return tuple(LayerInfo(index=i, name=n, processor_name=n + ".processor", block=n.split(".transformer_blocks")[0],
                           comfy_key=("unknown", 0, i), weight_key=2 * i + 1, width=0, tokens_1024=0)
                 for i, n in enumerate(names))

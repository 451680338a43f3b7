"""Cross-attention (attn2) layer maps of the SDXL and SD1.5 UNets, the layers InstantID's face branch patches.

Each map lists the attn2 layers in diffusers ``unet.attn_processors`` order (down -> up -> mid), which is also the
order of the ``ip-adapter.bin`` weight keys: layer ``n`` owns ``"{2n+1}.to_k_ip.weight"`` / ``"{2n+1}.to_v_ip.weight"``
(attn1 processors take the even slots and have no parameters).

The maps are generated from a compact block description (one row per Transformer2DModel) instead of a literal.

``tokens_1024`` is the number of query tokens a layer sees for a **1024x1024 output image** in both maps (latent
128x128, halved per UNet level): 128^2 = 16384, 64^2 = 4096, 32^2 = 1024, 16^2 = 256. SD1.5 is native at 512^2, where
its counts are a quarter of these. Note that SD1.5's mid block sits one level below its 1280-wide down/up blocks
(16^2 = 256 tokens at 1024^2, 8^2 = 64 at 512^2), so tokens follow the level, not the width.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_LATENT_SIDE_1024 = 128  # 1024 px output / VAE factor 8


@dataclass(frozen=True)
class LayerInfo:
    """One cross-attention layer (``...transformer_blocks.i.attn2``) of a UNet."""

    index: int  # 0.. in diffusers attn_processors order (down -> up -> mid)
    name: str  # "down_blocks.1.attentions.0.transformer_blocks.0.attn2" (module path)
    processor_name: str  # name + ".processor" (key in unet.attn_processors)
    block: str  # "down_blocks.1.attentions.0" (the Transformer2DModel)
    comfy_key: tuple[str, int, int]  # ComfyUI key: ("input", 4, 0), ("middle", 0, i), ("output", 0..5, i);
    # ComfyUI_InstantID's ApplyInstantID patches ("middle", 1, i): selectors accept middle:0:... and middle:1:...
    weight_key: int  # 2*index + 1 ("{k}.to_k_ip.weight" in ip-adapter.bin)
    width: int  # hidden size (query channels): 320 / 640 / 1280
    tokens_1024: int  # query tokens at 1024x1024 output (latent 128^2 halved per level)


@dataclass(frozen=True)
class _Block:
    """One Transformer2DModel: its diffusers path, ComfyUI section/number, depth, width and UNet level."""

    path: str  # "down_blocks.1.attentions.0"
    section: str  # ComfyUI "input" / "middle" / "output"
    number: int  # ComfyUI block number
    depth: int  # transformer_blocks inside
    width: int  # channels
    level: int  # number of 2x downsamplings from the latent (0 = 128^2 at 1024^2 output)


def _blocks(
    prefix: str, section: str, numbers: Sequence[int], attentions: int, depth: int, width: int, level: int
) -> list[_Block]:
    """The ``attentions`` Transformer2DModels of one diffusers down/up block, numbered ComfyUI-style."""
    return [
        _Block(f"{prefix}.attentions.{a}", section, numbers[a], depth, width, level)
        for a in range(attentions)
    ]


def _build(blocks: Iterable[_Block]) -> tuple[LayerInfo, ...]:
    layers: list[LayerInfo] = []
    for blk in blocks:
        side = _LATENT_SIDE_1024 >> blk.level
        for i in range(blk.depth):
            index = len(layers)
            name = f"{blk.path}.transformer_blocks.{i}.attn2"
            layers.append(
                LayerInfo(
                    index=index,
                    name=name,
                    processor_name=f"{name}.processor",
                    block=blk.path,
                    comfy_key=(blk.section, blk.number, i),
                    weight_key=2 * index + 1,
                    width=blk.width,
                    tokens_1024=side * side,
                )
            )
    return tuple(layers)


# SDXL base: block_out_channels (320, 640, 1280), transformer_layers_per_block (1, 2, 10); down_blocks.0 and
# up_blocks.2 have no attention. diffusers order: down, up, mid.
SDXL_LAYERS: tuple[LayerInfo, ...] = _build(
    [
        *_blocks("down_blocks.1", "input", (4, 5), 2, 2, 640, 1),
        *_blocks("down_blocks.2", "input", (7, 8), 2, 10, 1280, 2),
        *_blocks("up_blocks.0", "output", (0, 1, 2), 3, 10, 1280, 2),
        *_blocks("up_blocks.1", "output", (3, 4, 5), 3, 2, 640, 1),
        _Block("mid_block.attentions.0", "middle", 0, 10, 1280, 2),
    ]
)

# SD1.5: block_out_channels (320, 640, 1280, 1280), one transformer block each; down_blocks.3 / up_blocks.0 have
# no attention; the mid block is at the lowest level (3).
SD15_LAYERS: tuple[LayerInfo, ...] = _build(
    [
        *_blocks("down_blocks.0", "input", (1, 2), 2, 1, 320, 0),
        *_blocks("down_blocks.1", "input", (4, 5), 2, 1, 640, 1),
        *_blocks("down_blocks.2", "input", (7, 8), 2, 1, 1280, 2),
        *_blocks("up_blocks.1", "output", (3, 4, 5), 3, 1, 1280, 2),
        *_blocks("up_blocks.2", "output", (6, 7, 8), 3, 1, 640, 1),
        *_blocks("up_blocks.3", "output", (9, 10, 11), 3, 1, 320, 0),
        _Block("mid_block.attentions.0", "middle", 0, 1, 1280, 3),
    ]
)

LAYER_MAPS: dict[str, tuple[LayerInfo, ...]] = {"sdxl": SDXL_LAYERS, "sd15": SD15_LAYERS}


def layers_by_name(layers: Iterable[LayerInfo]) -> dict[str, LayerInfo]:
    """``{LayerInfo.name: LayerInfo}`` in map order."""
    return {layer.name: layer for layer in layers}


def map_name(layers: Sequence[LayerInfo] | None) -> str | None:
    """``"sdxl"`` / ``"sd15"`` when ``layers`` is one of the known maps, else None."""
    if layers is None:
        return None
    found = tuple(layers)
    for key, known in LAYER_MAPS.items():
        if found == known:
            return key
    return None


def attn2_processor_names(unet_or_names: Any) -> list[str]:
    """Keys of ``unet.attn_processors`` that end in ``attn2.processor``, in order.

    Accepts a diffusers UNet (anything with an ``attn_processors`` mapping) or an iterable of processor names.
    """
    names = getattr(unet_or_names, "attn_processors", unet_or_names)
    return [str(n) for n in names if str(n).endswith("attn2.processor")]


def attn2_layer_names(unet_or_names: Any) -> list[str]:
    """Module paths of the attn2 layers (processor names without ``.processor``), in order."""
    return [n[: -len(".processor")] for n in attn2_processor_names(unet_or_names)]


def layer_map_for(unet: Any) -> tuple[LayerInfo, ...] | None:
    """The layer map whose attn2 processor names equal the UNet's (same set and order), or None.

    ``unet`` is a diffusers ``UNet2DConditionModel`` (anything with ``attn_processors``) or an iterable of
    processor names. None means the topology matches no known map; callers then patch every layer ("full").
    """
    found = tuple(attn2_processor_names(unet))
    for key, known in LAYER_MAPS.items():
        if found == tuple(layer.processor_name for layer in known):
            logger.debug("UNet matches the %s layer map (%d attn2 layers)", key, len(found))
            return known
    logger.info("UNet with %d attn2 layers matches no known layer map", len(found))
    return None

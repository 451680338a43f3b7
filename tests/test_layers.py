"""Layer maps: SDXL's 70 and SD1.5's 16 cross-attention layers, weight keys, ComfyUI keys, and matching real UNets."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from diffusers import UNet2DConditionModel

from instantid.bench.work_model import layer_tokens
from instantid.layers import (
    SD15_LAYERS,
    SDXL_LAYERS,
    attn2_layer_names,
    attn2_processor_names,
    layer_map_for,
    layers_by_name,
    map_name,
)


def tiny_sdxl_unet(transformer_layers_per_block: tuple[int, int, int] = (1, 2, 10)) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        transformer_layers_per_block=transformer_layers_per_block,
        attention_head_dim=(2, 4, 8),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )


def tiny_sd15_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
    )


@pytest.fixture(scope="module")
def sdxl_unet() -> UNet2DConditionModel:
    return tiny_sdxl_unet()


@pytest.fixture(scope="module")
def sd15_unet() -> UNet2DConditionModel:
    return tiny_sd15_unet()


def keys_of(block: str) -> list[int]:
    return [layer.weight_key for layer in SDXL_LAYERS if layer.block == block]


def test_sdxl_map_has_70_layers_down_then_up_then_mid() -> None:
    assert len(SDXL_LAYERS) == 70
    assert [layer.index for layer in SDXL_LAYERS] == list(range(70))
    per_block = Counter(layer.block for layer in SDXL_LAYERS)
    assert per_block == {
        "down_blocks.1.attentions.0": 2,
        "down_blocks.1.attentions.1": 2,
        "down_blocks.2.attentions.0": 10,
        "down_blocks.2.attentions.1": 10,
        "up_blocks.0.attentions.0": 10,
        "up_blocks.0.attentions.1": 10,
        "up_blocks.0.attentions.2": 10,
        "up_blocks.1.attentions.0": 2,
        "up_blocks.1.attentions.1": 2,
        "up_blocks.1.attentions.2": 2,
        "mid_block.attentions.0": 10,
    }
    order = [layer.block.split(".")[0] for layer in SDXL_LAYERS]
    assert order == ["down_blocks"] * 24 + ["up_blocks"] * 36 + ["mid_block"] * 10


def test_names_processor_names_and_blocks_agree() -> None:
    for layer in (*SDXL_LAYERS, *SD15_LAYERS):
        assert layer.name.startswith(layer.block + ".transformer_blocks.")
        assert layer.name.endswith(".attn2")
        assert layer.processor_name == layer.name + ".processor"
    assert len({layer.name for layer in SDXL_LAYERS}) == 70


def test_weight_keys_are_exactly_the_odd_numbers_1_to_139() -> None:
    assert [layer.weight_key for layer in SDXL_LAYERS] == list(range(1, 140, 2))
    assert all(layer.weight_key == 2 * layer.index + 1 for layer in SDXL_LAYERS)


def test_weight_keys_land_on_the_documented_layers() -> None:
    assert keys_of("mid_block.attentions.0") == list(range(121, 140, 2))
    assert keys_of("up_blocks.0.attentions.1") == list(range(69, 88, 2))
    assert keys_of("down_blocks.2.attentions.1") == list(range(29, 48, 2))
    assert keys_of("down_blocks.1.attentions.0") == [1, 3]
    assert keys_of("down_blocks.2.attentions.0") == list(range(9, 28, 2))
    assert keys_of("up_blocks.0.attentions.0") == list(range(49, 68, 2))
    assert keys_of("up_blocks.1.attentions.0") == [109, 111]
    assert keys_of("up_blocks.1.attentions.2") == [117, 119]
    mid3 = layers_by_name(SDXL_LAYERS)["mid_block.attentions.0.transformer_blocks.3.attn2"]
    assert mid3.weight_key == 127 and mid3.comfy_key == ("middle", 0, 3)


def test_sdxl_comfy_keys_widths_and_tokens() -> None:
    by_key = {layer.comfy_key: layer for layer in SDXL_LAYERS}
    assert len(by_key) == 70
    blocks = Counter(layer.comfy_key[:2] for layer in SDXL_LAYERS)
    assert blocks == {
        ("input", 4): 2,
        ("input", 5): 2,
        ("input", 7): 10,
        ("input", 8): 10,
        ("output", 0): 10,
        ("output", 1): 10,
        ("output", 2): 10,
        ("output", 3): 2,
        ("output", 4): 2,
        ("output", 5): 2,
        ("middle", 0): 10,
    }
    assert by_key[("input", 8, 0)].block == "down_blocks.2.attentions.1"
    assert by_key[("output", 1, 9)].name == "up_blocks.0.attentions.1.transformer_blocks.9.attn2"
    assert by_key[("output", 5, 1)].block == "up_blocks.1.attentions.2"
    for layer in SDXL_LAYERS:
        assert layer.width in (640, 1280)
        assert layer.tokens_1024 == (4096 if layer.width == 640 else 1024)
    assert sum(layer.width == 640 for layer in SDXL_LAYERS) == 10


def test_sd15_map_has_16_layers_with_comfy_keys_and_tokens_at_1024() -> None:
    assert len(SD15_LAYERS) == 16
    assert [layer.weight_key for layer in SD15_LAYERS] == list(range(1, 32, 2))
    assert [layer.comfy_key for layer in SD15_LAYERS] == [
        *[("input", n, 0) for n in (1, 2, 4, 5, 7, 8)],
        *[("output", n, 0) for n in range(3, 12)],
        ("middle", 0, 0),
    ]
    assert [layer.width for layer in SD15_LAYERS] == [320, 320, 640, 640, 1280, 1280] + [1280] * 3 + [
        640
    ] * 3 + [320] * 3 + [1280]
    tokens = {layer.width: layer.tokens_1024 for layer in SD15_LAYERS[:-1]}
    assert tokens == {320: 16384, 640: 4096, 1280: 1024}
    assert SD15_LAYERS[-1].block == "mid_block.attentions.0" and SD15_LAYERS[-1].tokens_1024 == 256


def test_layers_by_name_and_map_name() -> None:
    table = layers_by_name(SDXL_LAYERS)
    assert list(table) == [layer.name for layer in SDXL_LAYERS]
    assert table["up_blocks.0.attentions.1.transformer_blocks.0.attn2"].weight_key == 69
    assert map_name(SDXL_LAYERS) == "sdxl" and map_name(list(SD15_LAYERS)) == "sd15"
    assert map_name(SDXL_LAYERS[:10]) is None and map_name(None) is None


def test_tiny_sdxl_unet_matches_the_sdxl_map(sdxl_unet: UNet2DConditionModel) -> None:
    assert layer_map_for(sdxl_unet) is SDXL_LAYERS
    assert attn2_layer_names(sdxl_unet) == [layer.name for layer in SDXL_LAYERS]
    for layer in SDXL_LAYERS[::7]:
        assert sdxl_unet.get_submodule(layer.name).to_q.in_features == {640: 64, 1280: 128}[layer.width]


def test_tiny_sd15_unet_matches_the_sd15_map(sd15_unet: UNet2DConditionModel) -> None:
    assert layer_map_for(sd15_unet) is SD15_LAYERS


def test_mismatching_unet_and_orders_match_no_map() -> None:
    assert layer_map_for(tiny_sdxl_unet(transformer_layers_per_block=(1, 2, 2))) is None
    names = [layer.processor_name for layer in SDXL_LAYERS]
    assert layer_map_for(names) is SDXL_LAYERS
    assert layer_map_for(names[::-1]) is None  # same set, other order
    assert layer_map_for(names[:-1]) is None
    assert layer_map_for([]) is None


def test_processor_names_skip_self_attention(sd15_unet: UNet2DConditionModel) -> None:
    all_names = list(sd15_unet.attn_processors)
    assert len(all_names) == 32
    assert attn2_processor_names(sd15_unet) == [n for n in all_names if n.endswith("attn2.processor")]


def _observed_tokens(unet: UNet2DConditionModel, sample: torch.Tensor, **kwargs) -> dict[str, int]:
    seen: dict[str, int] = {}

    def hook(name: str):
        def record(module, args, kw):
            seen[name] = (args[0] if args else kw["hidden_states"]).shape[1]

        return record

    handles = [
        unet.get_submodule(name).register_forward_pre_hook(hook(name), with_kwargs=True)
        for name in attn2_layer_names(unet)
    ]
    try:
        with torch.no_grad():
            unet(sample, 1, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_query_tokens_follow_the_map_for_odd_sizes(
    sdxl_unet: UNet2DConditionModel, sd15_unet: UNet2DConditionModel
) -> None:
    """A 20x12 latent (160x96 px output) exercises the round-up at each downsampling."""
    sample = torch.randn(1, 4, 20, 12)
    seen = _observed_tokens(
        sdxl_unet,
        sample,
        encoder_hidden_states=torch.randn(1, 4, 2048),
        added_cond_kwargs={"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)},
    )
    assert seen == {layer.name: layer_tokens(layer, 160, 96) for layer in SDXL_LAYERS}
    assert seen["mid_block.attentions.0.transformer_blocks.0.attn2"] == 5 * 3
    seen = _observed_tokens(sd15_unet, sample, encoder_hidden_states=torch.randn(1, 4, 32))
    assert seen == {layer.name: layer_tokens(layer, 160, 96) for layer in SD15_LAYERS}
    assert seen["mid_block.attentions.0.transformer_blocks.0.attn2"] == 3 * 2

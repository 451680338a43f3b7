"""The offline tiny stack: every InstantID component with random weights and SDXL's exact block topology.

Nothing is downloaded. The UNet has SDXL's 70 cross-attention layers under the same names (narrow channels),
the tokenizer is a byte-level CLIP tokenizer made in memory (model_max_length 77), and the face adapter is a
random state dict written in the real ``ip-adapter.bin`` key layout and loaded through the real loading code.
Images from it are noise-like: the stack exists to exercise code paths, not to make faces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .layers import LayerInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes and seed of the offline random stack."""

    seed: int = 0  # all random weights come from this seed
    resampler_width: int = 128  # InstantID uses 1280 (20 heads x 64); heads = width // 64
    block_out_channels: tuple[int, int, int] = (32, 64, 128)  # SDXL: (320, 640, 1280)
    cross_attention_dim: int = 2048  # as SDXL: 768 (CLIP-L) + 1280 (OpenCLIP-G)
    face_embedding_dim: int = 512  # antelopev2 embedding size


def tiny_tokenizer(pad_token: str = "<|endoftext|>"):
    """A byte-level CLIP tokenizer (no merges) built in memory: 514 tokens, model_max_length 77."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token=pad_token)


def tiny_unet(config: TinyConfig = TinyConfig()):
    """A small UNet with SDXL's exact cross-attention topology (70 attn2 layers), random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=config.block_out_channels, transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(2, 4, 8), cross_attention_dim=config.cross_attention_dim, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )


def tiny_components(config: TinyConfig = TinyConfig()) -> dict:
    """Keyword arguments for :class:`~instantid.pipeline.InstantIDPipeline` with random weights."""
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(config.seed)
    unet = tiny_unet(config)
    controlnet = ControlNetModel.from_unet(unet)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=128)
    text_kwargs = dict(num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                       max_position_embeddings=77, vocab_size=514, eos_token_id=1, bos_token_id=0, pad_token_id=1)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, **text_kwargs))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, projection_dim=1280, **text_kwargs))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return dict(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tiny_tokenizer(),
                tokenizer_2=tiny_tokenizer(pad_token="!"), unet=unet, controlnet=controlnet, scheduler=scheduler,
                add_watermarker=False)


def random_adapter_state(layers: tuple[LayerInfo, ...], widths: dict[str, int] | None = None, *,
                         cross_attention_dim: int = 2048,
                         resampler_width: int = 1280, embed_dim: int = 512, depth: int = 4, tokens: int = 16,
                         seed: int = 0, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> dict[str, dict[str, torch.Tensor]]:
    """A random face adapter in InstantX/InstantID's ``ip-adapter.bin`` layout for ``layers``.

    ``widths`` maps layer names to the UNet's widths (default: the map's SDXL widths 640/1280). With the defaults
    and SDXL's layers it has the real file's keys and shapes (422.8 M parameters)."""
    widths = widths or {layer.name: layer.width for layer in layers}
    gen = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int, fan_in: int | None = None) -> torch.Tensor:
        std = 1.0 / (fan_in or shape[-1]) ** 0.5
        return (torch.randn(*shape, generator=gen, device=device) * std).to(dtype)

    dim = resampler_width
    proj: dict[str, torch.Tensor] = {
        "latents": rand(1, tokens, dim), "proj_in.weight": rand(dim, embed_dim),
        "proj_in.bias": torch.zeros(dim, dtype=dtype, device=device), "proj_out.weight": rand(cross_attention_dim, dim),
        "proj_out.bias": torch.zeros(cross_attention_dim, dtype=dtype, device=device),
        "norm_out.weight": torch.ones(cross_attention_dim, dtype=dtype, device=device),
        "norm_out.bias": torch.zeros(cross_attention_dim, dtype=dtype, device=device),
    }
    for i in range(depth):
        for norm in ("0.norm1", "0.norm2", "1.0"):
            proj[f"layers.{i}.{norm}.weight"] = torch.ones(dim, dtype=dtype, device=device)
            proj[f"layers.{i}.{norm}.bias"] = torch.zeros(dim, dtype=dtype, device=device)
        proj[f"layers.{i}.0.to_q.weight"] = rand(dim, dim)
        proj[f"layers.{i}.0.to_kv.weight"] = rand(2 * dim, dim)
        proj[f"layers.{i}.0.to_out.weight"] = rand(dim, dim)
        proj[f"layers.{i}.1.1.weight"] = rand(4 * dim, dim)
        proj[f"layers.{i}.1.3.weight"] = rand(dim, 4 * dim)
    adapter = {}
    for layer in layers:
        adapter[f"{layer.weight_key}.to_k_ip.weight"] = rand(widths[layer.name], cross_attention_dim)
        adapter[f"{layer.weight_key}.to_v_ip.weight"] = rand(widths[layer.name], cross_attention_dim)
    return {"image_proj": proj, "ip_adapter": adapter}


"""The stacks the benchmark times: ``tiny`` (offline, CPU), ``sdxl-shape`` (full-size SDXL UNet + IdentityNet with
random weights, GPU) and real weights (a folder / repo id, as ``load_engine`` takes).

Every stack comes back as an :class:`~instantid.engine.Engine` without a face analyser (the benchmark builds its
step inputs itself), so presets resolve exactly as they do in generation (``Engine.resolve``, ``auto-K`` too).
Nothing is downloaded for ``tiny`` and ``sdxl-shape``; text encoders, VAE and tokenizers are left out of
``sdxl-shape`` (the step inputs use random text embeddings of SDXL's shapes).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from instantid.adapter import attach_face_adapter
from instantid.engine import DEFAULT_BASE, Engine, _pick_device
from instantid.layers import layer_map_for
from instantid.loading import layer_widths
from instantid.pipeline import InstantIDPipeline

logger = logging.getLogger(__name__)

# SDXL base 1.0 UNet (stabilityai/stable-diffusion-xl-base-1.0 unet/config.json), 2.567 B parameters.
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,  # 1024 px / 8
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),  # heads per block (diffusers' historical name); 64 channels each
    "cross_attention_dim": 2048,  # CLIP-L 768 + OpenCLIP-G 1280
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,  # 1280 pooled + 6 * 256 time ids
}

# The same topology at the tiny stack's widths (for CPU tests of build_shape_stack).
TINY_UNET_CONFIG: dict[str, Any] = {**SDXL_UNET_CONFIG, "sample_size": 16, "block_out_channels": (32, 64, 128),
                                    "attention_head_dim": (2, 4, 8)}


def sdxl_scheduler():
    """Euler discrete with SDXL's noise schedule (the scheduler does not change step cost)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


def build_shape_stack(config: dict[str, Any] = SDXL_UNET_CONFIG, device: str | torch.device = "cuda",
                      dtype: torch.dtype = torch.float16, *, resampler_width: int = 1280,
                      seed: int = 0) -> Engine:
    """UNet from ``config`` + ``ControlNetModel.from_unet`` + a random face adapter, created on ``device``.

    With :data:`SDXL_UNET_CONFIG` and the default ``resampler_width`` every tensor has the real InstantID size
    (UNet 2.57 B, IdentityNet 1.25 B, adapter 0.42 B parameters), so step cost matches the real stack's.

    ``device="meta"`` is a shape-only dry run (tests): every tensor has its real shape and dtype but no storage,
    so the full-size stack builds and runs a denoising step on a CPU in seconds and ~2 GB of RAM (the random
    adapter state, 0.85 GB in fp16, is drawn on the CPU and dropped: the seeded generator cannot live on meta).
    Its outputs carry no values."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from instantid.tiny import random_adapter_state

    device = torch.device(device)
    meta = device.type == "meta"
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**config).to(dtype)
        controlnet = ControlNetModel.from_unet(unet).to(dtype)
    pipe = InstantIDPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                             unet=unet, controlnet=controlnet, scheduler=sdxl_scheduler(), add_watermarker=False)
    layers = layer_map_for(unet)
    if layers is None:
        raise ValueError("the UNet config does not have SDXL's 70 cross-attention layers")
    state = random_adapter_state(layers, layer_widths(unet, layers), cross_attention_dim=config["cross_attention_dim"],
                                 resampler_width=resampler_width, seed=seed, dtype=dtype,
                                 device="cpu" if meta else device)
    if meta:
        state = {part: {key: value.to(device) for key, value in tensors.items()} for part, tensors in state.items()}
    patcher = attach_face_adapter(pipe, state, f"random face adapter (resampler width {resampler_width})")
    del state
    patcher.modules.to(device, dtype)
    pipe.resampler.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    logger.info("sdxl-shape stack on %s (%s): UNet %.2f B parameters", device, dtype,
                sum(p.numel() for p in unet.parameters()) / 1e9)
    return Engine("sdxl-shape", pipe, patcher, face_analyzer=None)  # type: ignore[arg-type]


def build_tiny_stack(device: torch.device, dtype: torch.dtype, seed: int = 0) -> Engine:
    """The offline tiny stack (as ``load_engine("tiny")`` builds it, without the face models)."""
    from instantid.tiny import TinyConfig, random_adapter_state, tiny_components

    config = TinyConfig(seed=seed)
    pipe = InstantIDPipeline(**tiny_components(config))
    layers = layer_map_for(pipe.unet)
    state = random_adapter_state(layers, layer_widths(pipe.unet, layers), resampler_width=config.resampler_width,
                                 seed=seed)
    patcher = attach_face_adapter(pipe, state, "tiny random face adapter")
    return _finish(Engine("tiny", pipe, patcher, face_analyzer=None), device, dtype)  # type: ignore[arg-type]


def build_weights_stack(source: str, device: torch.device, dtype: torch.dtype, base: str | None = None) -> Engine:
    """Real InstantID weights (``ip-adapter.bin`` + ``ControlNetModel/``) on an SDXL base, no face analyser."""
    from instantid.loading import find_adapter_file, load_base, load_controlnet, read_adapter

    adapter_file = find_adapter_file(source)
    state = read_adapter(adapter_file)
    controlnet = load_controlnet(source, dtype)
    pipe = load_base(InstantIDPipeline, base or os.environ.get("INSTANTID_BASE", DEFAULT_BASE), controlnet, dtype)
    patcher = attach_face_adapter(pipe, state, str(adapter_file))
    return _finish(Engine(source, pipe, patcher, face_analyzer=None), device, dtype)  # type: ignore[arg-type]


def _finish(engine: Engine, device: torch.device, dtype: torch.dtype) -> Engine:
    engine.pipe.to(device, dtype)
    engine.patcher.modules.to(device, dtype)
    engine.pipe.resampler.to(device, dtype)
    engine.pipe.set_progress_bar_config(disable=True)
    engine.device, engine.dtype = engine.pipe.unet.device, engine.pipe.unet.dtype
    return engine


def load_bench_stack(stack: str, device: str | None = None, dtype: str | None = None, *, base: str | None = None,
                     seed: int = 0) -> Engine:
    """``tiny`` | ``sdxl-shape`` (CUDA only) | a weights folder / repo id."""
    dev, torch_dtype = _pick_device(device, dtype)
    if stack == "sdxl-shape":
        if dev.type != "cuda":
            raise SystemExit("--stack sdxl-shape builds a full-size SDXL UNet + IdentityNet (3.8 B parameters) and "
                             f"needs a CUDA GPU; device is {dev} (use --stack tiny on CPU)")
        return build_shape_stack(SDXL_UNET_CONFIG, dev, torch_dtype, seed=seed)
    if stack == "tiny":
        return build_tiny_stack(dev, torch_dtype, seed)
    return build_weights_stack(stack, dev, torch_dtype, base)


__all__ = ["SDXL_UNET_CONFIG", "TINY_UNET_CONFIG", "build_shape_stack", "build_tiny_stack", "build_weights_stack",
           "load_bench_stack"]

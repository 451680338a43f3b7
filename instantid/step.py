"""One denoising step of :class:`~instantid.pipeline.InstantIDPipeline` (its step 6), callable on its own.

The benchmark and the telemetry recorder build the step inputs once (:func:`build_step_inputs`) and call
:func:`denoise_step` (IdentityNet + UNet + CFG, no scheduler) or :func:`denoise` (the whole loop with the
scheduler) directly, so no text encoding, face analysis or decoding is timed. With a prompt and a face embedding
the inputs are exactly the pipeline's (``tests/test_bench.py`` checks that :func:`denoise` reproduces
``pipe(...)``); without them the text and face context are random tensors of the right shapes, which is all a
timing needs and lets a stack without text encoders (``sdxl-shape``) run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from .attention import FaceBranchState
from .presets import in_window

logger = logging.getLogger(__name__)

TEXT_TOKENS = 77  # CLIP context length
POOLED_DIM = 1280  # OpenCLIP-G pooled text embedding (SDXL's text_embeds)


@dataclass
class StepInputs:
    """Everything one denoising step reads; built once, reused by every step and every preset."""

    latents: torch.Tensor  # [1, 4, H/8, W/8] initial latents (already scaled by init_noise_sigma)
    timesteps: torch.Tensor  # the scheduler's timesteps for ``steps`` steps
    face_tokens: torch.Tensor  # [2, 16, 2048] with CFG: cat(Resampler(zeros), Resampler(face))
    context: tuple[torch.Tensor, list[torch.Tensor]]  # (text tokens [2, 77, 2048], [face tokens])
    added_cond: dict[str, torch.Tensor]  # {"text_embeds": [2, 1280], "time_ids": [2, 6]}
    hint: torch.Tensor  # [2, 3, H, W] keypoint image for IdentityNet
    guidance_scale: float = 5.0  # classifier-free guidance (the pipeline default)
    cn_scale: float = 0.8  # IdentityNet strength (the pipeline default)
    do_cfg: bool = True  # batch 2 (uncond, cond) with guidance; False: batch 1, no guidance (guidance_scale <= 1)


def _text_context(pipe, prompt: str | None, width: int, height: int, device: torch.device, dtype: torch.dtype,
                  gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pipeline step 3 (``pipe.text_conditioning``) when a prompt and text encoders are there; otherwise random
    [2,77,D] / [2,1280] tensors and the size conditioning."""
    if prompt is not None and getattr(pipe, "text_encoder_2", None) is not None:
        text, added = pipe.text_conditioning(prompt, None, width, height, True)
        pooled, time_ids = added["text_embeds"], added["time_ids"]
    else:
        dim = pipe.unet.config.cross_attention_dim
        text = torch.randn(2, TEXT_TOKENS, dim, generator=gen)
        pooled = torch.randn(2, POOLED_DIM, generator=gen)
        time_ids = torch.tensor([[height, width, 0, 0, height, width]] * 2, dtype=torch.float32)
    added = {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids.to(device, dtype)}
    return text.to(device, dtype), added


@torch.no_grad()
def build_step_inputs(pipe, width: int = 1024, height: int = 1024, steps: int = 30, *,
                      prompt: str | None = None, face_embedding: np.ndarray | None = None,
                      keypoint_image: PIL.Image.Image | None = None, seed: int = 0,
                      guidance_scale: float = 5.0, cn_scale: float = 0.8) -> StepInputs:
    """Steps 2-5 of the pipeline, with CFG (batch 2). Random text / face / keypoints where not given."""
    if width % 8 or height % 8:
        raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    gen = torch.Generator("cpu").manual_seed(seed)
    if face_embedding is None:
        face_embedding = (torch.randn(512, generator=gen) * 20).numpy()  # raw antelopev2-like scale
    face_tokens = pipe.face_tokens(face_embedding, True).to(dtype)
    text, added = _text_context(pipe, prompt, width, height, device, dtype, gen)
    image = keypoint_image if keypoint_image is not None else PIL.Image.new("RGB", (width, height))
    hint = pipe.prepare_image(image, width, height, 1, 1, device, pipe.controlnet.dtype,
                              do_classifier_free_guidance=True)
    # meta tensors (the shape-only dry run of tests/test_bench.py) hold no values for the scheduler to index
    pipe.scheduler.set_timesteps(steps, device="cpu" if device.type == "meta" else device)
    latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, dtype, device,
                                   torch.Generator("cpu").manual_seed(seed))
    return StepInputs(latents=latents, timesteps=pipe.scheduler.timesteps, face_tokens=face_tokens,
                      context=(text, [face_tokens]), added_cond=added, hint=hint,
                      guidance_scale=guidance_scale, cn_scale=cn_scale)


def scaled_model_input(pipe, inputs: StepInputs, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The UNet's input at ``t``: the latents doubled for CFG, scaled by the scheduler (kept outside CUDA graphs:
    the scheduler looks up its step index on the host)."""
    return pipe.scheduler.scale_model_input(torch.cat([latents] * 2) if inputs.do_cfg else latents, t)


@torch.no_grad()
def predict_noise(pipe, inputs: StepInputs, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """IdentityNet(face tokens, hint) -> UNet(text + face) -> CFG on a prepared ``model_input``: the part of a
    step that :mod:`instantid.graphs` captures as one CUDA graph (no host synchronisation inside)."""
    down_res, mid_res = pipe.controlnet(
        model_input, t, encoder_hidden_states=inputs.face_tokens, controlnet_cond=inputs.hint,
        conditioning_scale=inputs.cn_scale, added_cond_kwargs=inputs.added_cond, return_dict=False)
    noise = pipe.unet(
        model_input, t, encoder_hidden_states=inputs.context, added_cond_kwargs=inputs.added_cond,
        down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res, return_dict=False)[0]
    if not inputs.do_cfg:
        return noise
    uncond, cond = noise.chunk(2)
    return uncond + inputs.guidance_scale * (cond - uncond)


@torch.no_grad()
def denoise_step(pipe, inputs: StepInputs, t: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
    """IdentityNet(face tokens, hint) -> UNet(text + face) -> CFG: the noise prediction for ``latents`` at ``t``."""
    latents = inputs.latents if latents is None else latents
    return predict_noise(pipe, inputs, scaled_model_input(pipe, inputs, latents, t), t)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU (no-op elsewhere), so a host timer sees the step's real end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


StepHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]  # (step, timestep, latents) -> latents


@torch.no_grad()
def run_denoising(pipe, inputs: StepInputs, runner=None, *, window: tuple[float, float] = (0.0, 1.0),
                  state: FaceBranchState | None = None, timed: bool = False, on_step_end: StepHook | None = None,
                  interrupted: Callable[[], bool] | None = None) -> tuple[torch.Tensor, list[float]]:
    """THE denoising loop (the pipeline's step 6, :func:`denoise`, the benchmark's checks and telemetry).

    For each timestep the face branch follows ``window`` (:func:`~instantid.presets.in_window`), ``runner`` (a
    :class:`~instantid.runners.StepRunner`; default eager) predicts the noise and the scheduler steps; then
    ``on_step_end(step, t, latents)`` may replace the latents (the pipeline's ``callback_on_step_end``) and
    ``interrupted()`` may end the loop early (diffusers' ``pipe.interrupt``). Returns the final latents and, with
    ``timed``, each step's seconds (device-synchronised; the hook is not timed)."""
    from .runners import EagerStepRunner  # runners import this module

    runner = runner or EagerStepRunner(pipe)
    state = state or pipe.face_state or FaceBranchState()
    runner.bind(inputs)
    latents, step_times = inputs.latents, []
    timesteps = inputs.timesteps
    if hasattr(runner, "prepare"):  # graphs: capture what the loop needs before any step is timed
        runner.prepare({in_window(window, i, len(timesteps)) for i in range(len(timesteps))})
    try:
        for i, t in enumerate(timesteps):
            if interrupted is not None and interrupted():
                break
            t0 = _start_timer(latents.device) if timed else 0.0
            noise = runner.predict(inputs, latents, t, step=i, active=in_window(window, i, len(timesteps)))
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
            if timed:
                synchronize(latents.device)
                step_times.append(time.perf_counter() - t0)
            if on_step_end is not None:
                latents = on_step_end(i, t, latents)
    finally:
        state.active = True
    return latents, step_times


def _start_timer(device: torch.device) -> float:
    """Synchronise, then read the clock: a step's start."""
    synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def denoise(pipe, inputs: StepInputs, state: FaceBranchState | None = None, runner=None) -> torch.Tensor:
    """The whole denoising loop (scheduler included) over ``inputs.timesteps``; returns the final latents.

    The scheduler must still hold the timesteps ``build_step_inputs`` set (call it again to rerun)."""
    return run_denoising(pipe, inputs, runner, state=state)[0]


__all__ = ["StepInputs", "build_step_inputs", "denoise", "denoise_step", "predict_noise", "run_denoising",
           "scaled_model_input"]

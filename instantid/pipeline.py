"""The InstantID pipeline on diffusers' SDXL ControlNet pipeline, in numbered steps, with diffusers' call contract.

``pipe(prompt, image=keypoint_image, face_embedding=embedding, ...)`` takes the parent's keywords it supports
(``height``, ``width``, ``num_inference_steps``, ``guidance_scale``, ``negative_prompt``, ``generator``,
``latents``, ``output_type``, ``return_dict``, ``controlnet_conditioning_scale``, ``callback_on_step_end`` and
``callback_on_step_end_tensor_inputs``) with the parent's meaning, and returns a
:class:`~diffusers.pipelines.stable_diffusion_xl.StableDiffusionXLPipelineOutput` (here
:class:`InstantIDPipelineOutput`, which adds the per-step times and the final latents) or ``(images,)``.

What differs from a plain SDXL ControlNet call:
* the face embedding goes through the Resampler once per generation (negative = Resampler(zeros));
* the UNet's context is ``(text tokens, [face tokens])``; the face processors read the face part;
* IdentityNet (the ControlNet) gets the **face tokens** as ``encoder_hidden_states`` and the keypoint image as hint;
* the denoising loop is :func:`instantid.step.run_denoising` (shared with the benchmark): every step is timed
  (with device synchronisation), the face branch follows a step window and a step may replay a CUDA graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionXLControlNetPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput

from .attention import FaceBranchState
from .loading import cast_modules
from .runners import StepRunner
from .step import StepInputs, run_denoising

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")  # diffusers' output_type values


@dataclass
class InstantIDPipelineOutput(StableDiffusionXLPipelineOutput):
    """diffusers' SDXL output (``images``) plus what the engine and the benchmark read."""

    step_times_s: list[float] = field(default_factory=list)  # UNet + IdentityNet + scheduler per step, synchronised
    latents: torch.Tensor | None = None  # final latents, before decoding


StepEndCallback = Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks


class InstantIDPipeline(StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet + face-attention processors (attached by :func:`instantid.adapter.attach_face_adapter`)."""

    resampler: torch.nn.Module | None = None  # face embedding [B,1,512] -> face tokens [B,16,2048]
    face_state: FaceBranchState | None = None  # shared with the face processors
    # what callback_on_step_end may read and replace: the text, pooled and hint tensors are bound once per
    # generation (a CUDA graph reads them from static buffers), so only the latents can change between steps
    _callback_tensor_inputs = ["latents"]  # diffusers' class attribute (its callbacks and check read it)

    @torch.no_grad()
    def face_tokens(self, embedding: np.ndarray | torch.Tensor, do_cfg: bool) -> torch.Tensor:
        """Resampler(embedding); with CFG, ``cat([Resampler(zeros), Resampler(embedding)])``."""
        if self.resampler is None:
            raise RuntimeError("no face adapter attached: call attach_face_adapter() first")
        param = next(self.resampler.parameters())
        emb = torch.as_tensor(np.asarray(embedding, dtype=np.float32)).reshape(1, 1, -1)
        expected = self.resampler.proj_in.in_features
        if emb.shape[-1] != expected:
            raise ValueError(f"face embedding has {emb.shape[-1]} values; the Resampler takes {expected}")
        emb = emb.to(device=param.device, dtype=param.dtype)
        if do_cfg:
            emb = torch.cat([torch.zeros_like(emb), emb])
        return self.resampler(emb)

    @torch.no_grad()
    def text_conditioning(self, prompt: str, negative_prompt: str | None, width: int, height: int,
                          do_cfg: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Step 3: both SDXL text encoders, the pooled embedding and the size/crop conditioning (with CFG
        ``cat([negative, positive])``); returns (text tokens, ``{"text_embeds", "time_ids"}``)."""
        device = self._execution_device
        embeds, negative, pooled, negative_pooled = self.encode_prompt(
            prompt, None, device, 1, do_cfg, negative_prompt or None, None)
        time_ids = self._get_add_time_ids(
            (height, width), (0, 0), (height, width), dtype=embeds.dtype,
            text_encoder_projection_dim=self.text_encoder_2.config.projection_dim)
        if do_cfg:
            embeds = torch.cat([negative, embeds])
            pooled = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        return embeds.to(device), {"text_embeds": pooled.to(device), "time_ids": time_ids.to(device)}

    def check_call_inputs(self, prompt: str | None, image: PIL.Image.Image | None, face_embedding, width: int,
                          height: int, num_inference_steps: int, output_type: str,
                          tensor_inputs: list[str]) -> None:
        """Step 1: refuse what this pipeline cannot run, with the reason (diffusers' ``check_inputs`` role)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be one string (one face, one image), got {type(prompt).__name__}")
        if image is None or face_embedding is None:
            raise ValueError("InstantID needs image= (the keypoint image) and face_embedding= (the face's 512 values)")
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, "
                             f"but found {unknown}")

    def step_end_hook(self, callback: StepEndCallback,
                      tensor_inputs: list[str]) -> Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]:
        """diffusers' ``callback_on_step_end(pipe, step, timestep, tensors) -> tensors`` as the loop's per-step
        hook: the callback sees the tensors it asked for and may return new latents."""

        def on_step_end(step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            tensors = {"latents": latents}
            outputs = callback(self, step, timestep, {k: tensors[k] for k in tensor_inputs}) or {}
            return outputs.get("latents", latents)

        return on_step_end

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        *,
        image: PIL.Image.Image | None = None,
        face_embedding: np.ndarray | torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        negative_prompt: str | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        controlnet_conditioning_scale: float = 0.8,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        face_window: tuple[float, float] = (0.0, 1.0),
        step_runner: StepRunner | None = None,
    ) -> InstantIDPipelineOutput | tuple:
        """Generate one image of the face in ``face_embedding`` posed by the keypoint ``image``.

        The keywords shared with :meth:`StableDiffusionXLControlNetPipeline.__call__` mean what they mean there
        (``height``/``width`` default to the keypoint image's size; ``callback_on_step_end_tensor_inputs`` may name
        ``latents`` only); ``face_window`` is the [start, end) fraction of steps that run the face branch and
        ``step_runner`` (:mod:`instantid.runners`) computes each step's noise, eagerly or as a CUDA graph."""
        # 1. Check inputs
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        width = width or getattr(image, "width", 0)
        height = height or getattr(image, "height", 0)
        self.check_call_inputs(prompt, image, face_embedding, width, height, num_inference_steps, output_type,
                               tensor_inputs)
        device = self._execution_device
        do_cfg = guidance_scale > 1.0
        # the run state behind diffusers' public properties (guidance_scale, num_timesteps, interrupt), which
        # step-end callbacks read; set here as the parent's own __call__ sets it
        self._guidance_scale, self._interrupt = guidance_scale, False

        # 2. Face tokens: Resampler(face embedding), negative = Resampler(zeros)
        face_tokens = self.face_tokens(face_embedding, do_cfg).to(self.unet.dtype)

        # 3. Text: both SDXL encoders, pooled embedding, size/crop conditioning
        text, added_cond = self.text_conditioning(prompt, negative_prompt, width, height, do_cfg)

        # 4. Keypoint image -> IdentityNet hint
        hint = self.prepare_image(image, width, height, 1, 1, device, self.controlnet.dtype,
                                  do_classifier_free_guidance=do_cfg)

        # 5. Timesteps and initial latents
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(1, self.unet.config.in_channels, height, width, text.dtype, device,
                                       generator, latents)

        # 6. Denoising loop (instantid/step.py, shared with the benchmark): per step IdentityNet(face tokens, hint)
        #    -> UNet(text + face) -> CFG -> scheduler; eagerly or as a captured CUDA graph (``step_runner``)
        inputs = StepInputs(latents=latents, timesteps=timesteps, face_tokens=face_tokens,
                            context=(text, [face_tokens]), added_cond=added_cond, hint=hint,
                            guidance_scale=guidance_scale, cn_scale=controlnet_conditioning_scale, do_cfg=do_cfg)
        on_step_end = None if callback_on_step_end is None else self.step_end_hook(callback_on_step_end,
                                                                                    tensor_inputs)
        latents, step_times = run_denoising(self, inputs, step_runner, window=face_window, state=self.face_state,
                                            timed=True, on_step_end=on_step_end, interrupted=lambda: self.interrupt)

        # 7. Decode
        images = latents if output_type == "latent" else self.decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return InstantIDPipelineOutput(images=images, step_times_s=step_times, latents=latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output_type: str = "pil") -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        """VAE decode and postprocess to ``output_type``; an fp16 VAE that needs it decodes in fp32 and is put
        back even when decoding fails."""
        vae = self.vae
        dtype = vae.dtype
        upcast = dtype == torch.float16 and vae.config.force_upcast
        try:
            if upcast:
                cast_modules([vae], torch.float32)
            latents = latents.to(vae.dtype) / vae.config.scaling_factor
            image = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                cast_modules([vae], dtype)
        return self.image_processor.postprocess(image, output_type=output_type)


__all__ = ["InstantIDPipeline", "InstantIDPipelineOutput"]

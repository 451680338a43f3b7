"""The InstantID pipeline on diffusers' SDXL ControlNet pipeline, in numbered steps.

What differs from a plain SDXL ControlNet call:
* the face embedding goes through the Resampler once per generation (negative = Resampler(zeros));
* the UNet's context is ``(text tokens, [face tokens])``; the face processors read the face part;
* IdentityNet (the ControlNet) gets the **face tokens** as ``encoder_hidden_states`` and the keypoint image as hint;
* every denoising step is timed (with device synchronisation) and the face branch follows a step window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionXLControlNetPipeline

from .attention import FaceBranchState
from .graphs import StepRunner
from .loading import cast_modules
from .step import StepInputs, run_denoising, synchronize  # noqa: F401 - synchronize: re-exported

logger = logging.getLogger(__name__)


@dataclass
class DenoiseOutput:
    image: PIL.Image.Image  # RGB result
    step_times_s: list[float]  # UNet + IdentityNet + scheduler per step, synchronised on GPU
    latents: torch.Tensor  # final latents, before decoding


class InstantIDPipeline(StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet + face-attention processors (attached by :func:`instantid.engine.attach_face_adapter`)."""

    resampler: torch.nn.Module | None = None  # face embedding [B,1,512] -> face tokens [B,16,2048]
    face_state: FaceBranchState | None = None  # shared with the face processors

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
    def __call__(  # noqa: C901 - the steps read best in one place, as in diffusers
        self,
        prompt: str,
        face_embedding: np.ndarray,
        keypoint_image: PIL.Image.Image,
        negative_prompt: str = "",
        width: int = 1024,
        height: int = 1024,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        controlnet_conditioning_scale: float = 0.8,
        face_window: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        step_callback: Callable[[int, int], None] | None = None,
        step_runner: StepRunner | None = None,
    ) -> DenoiseOutput:
        # 1. Check inputs
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        device = self._execution_device
        do_cfg = guidance_scale > 1.0
        self._guidance_scale = guidance_scale
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._interrupt = False

        # 2. Face tokens: Resampler(face embedding), negative = Resampler(zeros)
        face_tokens = self.face_tokens(face_embedding, do_cfg).to(self.unet.dtype)

        # 3. Text: both SDXL encoders, pooled embedding, size/crop conditioning
        prompt_embeds, negative_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt, None, device, 1, do_cfg, negative_prompt or None, None)
        add_time_ids = self._get_add_time_ids(
            (height, width), (0, 0), (height, width), dtype=prompt_embeds.dtype,
            text_encoder_projection_dim=self.text_encoder_2.config.projection_dim)
        if do_cfg:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])
            pooled = torch.cat([negative_pooled, pooled])
            add_time_ids = torch.cat([add_time_ids, add_time_ids])
        added_cond = {"text_embeds": pooled.to(device), "time_ids": add_time_ids.to(device)}
        context = (prompt_embeds.to(device), [face_tokens])  # the face processors split this

        # 4. Keypoint image -> IdentityNet hint
        hint = self.prepare_image(keypoint_image, width, height, 1, 1, device, self.controlnet.dtype,
                                  do_classifier_free_guidance=do_cfg)

        # 5. Timesteps and initial latents
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(1, self.unet.config.in_channels, height, width, prompt_embeds.dtype,
                                       device, generator)

        # 6. Denoising loop (instantid/step.py, shared with the benchmark): per step IdentityNet(face tokens, hint)
        #    -> UNet(text + face) -> CFG -> scheduler; eagerly or as a captured CUDA graph (``step_runner``)
        inputs = StepInputs(latents=latents, timesteps=timesteps, face_tokens=face_tokens, context=context,
                            added_cond=added_cond, hint=hint, guidance_scale=guidance_scale,
                            cn_scale=controlnet_conditioning_scale, do_cfg=do_cfg)
        latents, step_times = run_denoising(self, inputs, step_runner, window=face_window, state=self.face_state,
                                            timed=True, step_callback=step_callback)

        # 7. Decode
        image = self.decode(latents)
        return DenoiseOutput(image=image, step_times_s=step_times, latents=latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> PIL.Image.Image:
        """VAE decode; an fp16 VAE that needs it decodes in fp32 and is put back even when decoding fails."""
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
        return self.image_processor.postprocess(image, output_type="pil")[0]

"""Engine details from issue 16: inference mode with the K/V cache, spatial_norm, ComfyUI middle-block keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from PIL import Image

from instantid import GenerationRequest, GenerationSettings
from instantid.attention import FaceAttnProcessor, FaceBranchState
from instantid.layers import SDXL_LAYERS
from instantid.presets import PresetError, select_layers


def test_generation_under_inference_mode_uses_the_kv_cache(tiny_engine):
    from skimage.data import astronaut

    req = GenerationRequest(face_image=Image.fromarray(astronaut()), prompt="x",
                            settings=GenerationSettings(steps=2, width=64, height=64))
    want = tiny_engine.generate(req, "full")
    calls = {"n": 0}
    proc = next(iter(tiny_engine.patcher.face.values()))
    hook = proc.to_k_ip[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        with torch.inference_mode():
            got = tiny_engine.generate(req, "full")
    finally:
        hook.remove()
    assert calls["n"] == 1  # projected once, reused at step 2 (inference tensors have no version counter)
    assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


def test_the_face_processor_honours_spatial_norm():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16, spatial_norm_dim=8)
    hidden, temb = torch.randn(1, 32, 4, 4), torch.randn(1, 8, 2, 2)
    text, face = torch.randn(1, 5, 16), torch.randn(1, 4, 16)
    proc = FaceAttnProcessor("x", 32, 16, FaceBranchState(), num_tokens=4, scale=0.0)  # face branch off
    want = AttnProcessor2_0()(attn, hidden, text, temb=temb)
    got = proc(attn, hidden, (text, [face]), temb=temb)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, AttnProcessor2_0()(attn, hidden, text, temb=torch.zeros_like(temb)))


@pytest.mark.parametrize("spec", ["middle:1:0-4", "middle:0:0-4", "middle:0-4", "middle:0-1:0-4"])
def test_comfyui_middle_keys_block_0_and_1_name_the_same_block(spec):
    layers, _ = select_layers(spec, SDXL_LAYERS)
    assert layers == {f"mid_block.attentions.0.transformer_blocks.{i}.attn2" for i in range(5)}
    with pytest.raises(PresetError, match="matches no layer"):  # there is no third middle block
        select_layers("middle:2:0-4", SDXL_LAYERS)


# ---- the pipeline's call contract: diffusers' keywords, output type, callbacks ----------------------------------

def test_the_pipeline_keeps_diffusers_call_contract(tiny_pipe):
    from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput

    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    emb, hint = np.random.RandomState(0).randn(512).astype(np.float32) * 20, Image.new("RGB", (64, 64))
    seen = []

    def record(pipe_, step, timestep, tensors):
        seen.append((step, float(timestep), sorted(tensors), pipe_.num_timesteps, pipe_.guidance_scale))
        return {}

    def call(steps=2, **kw):
        return pipe("a portrait", image=hint, face_embedding=emb, num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(3), **kw)

    out = call(callback_on_step_end=record)
    assert isinstance(out, StableDiffusionXLPipelineOutput) and out.images[0].size == (64, 64)  # size from image
    assert len(out.step_times_s) == 2 and out.latents.shape == (1, 4, 8, 8)
    timesteps = [float(t) for t in pipe.scheduler.timesteps]
    assert seen == [(0, timesteps[0], ["latents"], 2, 5.0), (1, timesteps[1], ["latents"], 2, 5.0)]
    (as_np,) = call(output_type="np", return_dict=False)  # diffusers' tuple form
    assert as_np.shape == (1, 64, 64, 3) and np.array_equal(np.round(as_np[0] * 255), np.asarray(out.images[0]))
    # a callback may replace the latents (the last step's replacement is the result) and interrupt the loop
    zeroed = call(1, output_type="latent", callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"] * 0})
    assert not zeroed.latents.any() and zeroed.images is zeroed.latents  # "latent": the latents, not decoded

    def stop(pipe_, step, timestep, tensors):
        pipe_._interrupt = True  # as diffusers documents it
        return {}

    assert len(call(output_type="latent", callback_on_step_end=stop).step_times_s) == 1
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        call(callback_on_step_end=record, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    with pytest.raises(ValueError, match="face_embedding"):
        pipe("a portrait", image=hint)

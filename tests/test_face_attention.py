"""The face-attention equation, layer skipping, K/V reuse and processor swapping on the tiny SDXL stack."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from instantid.attention import FaceAttnProcessor, TextOnlyAttnProcessor
from instantid.presets import resolve_preset

EMB = np.random.RandomState(0).randn(512).astype(np.float32) * 20  # raw (unnormalised) antelopev2-like
HINT = PIL.Image.new("RGB", (64, 64))


def reference_attention(attn, hidden, context, to_k_ip, to_v_ip, scale, num_tokens=16):
    """InstantID's equation written out: out = to_out(attn(q, text) + scale * attn(q, face)), split at -16."""
    text, face = context[:, :-num_tokens], context[:, -num_tokens:]
    heads = attn.heads

    def attend(q, k, v):
        b, n, c = q.shape
        d = c // heads
        q, k, v = (x.reshape(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        return (weights @ v).transpose(1, 2).reshape(b, n, c)

    q = attn.to_q(hidden)
    out = attend(q, attn.to_k(text), attn.to_v(text)) + scale * attend(q, to_k_ip(face), to_v_ip(face))
    return attn.to_out[1](attn.to_out[0](out))


class ReferenceProcessor(torch.nn.Module):
    """A plain processor for the whole UNet using the official context form cat(text, face)."""

    def __init__(self, face_proc: FaceAttnProcessor):
        super().__init__()
        self.face_proc = face_proc

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        text, faces = encoder_hidden_states
        context = torch.cat([text, faces[0]], dim=1)
        p = self.face_proc
        return reference_attention(attn, hidden_states, context, p.to_k_ip[0], p.to_v_ip[0], p.ip_scale)


def run(pipe, seed=1, steps=2, **kwargs):
    return pipe("a portrait", image=HINT, face_embedding=EMB, width=64, height=64, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed), **kwargs)


def test_processor_matches_the_written_out_equation(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    name = "up_blocks.0.attentions.1.transformer_blocks.3.attn2"
    attn, proc = pipe.unet.get_submodule(name), patcher.face[name]
    torch.manual_seed(0)
    hidden, text, face = torch.randn(2, 64, attn.query_dim), torch.randn(2, 77, 2048), torch.randn(2, 16, 2048)
    with torch.no_grad():
        got = proc(attn, hidden, (text, [face]))
        got_cat = proc(attn, hidden, torch.cat([text, face], dim=1))
        want = reference_attention(attn, hidden, torch.cat([text, face], 1), proc.to_k_ip[0], proc.to_v_ip[0],
                                   proc.ip_scale)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_cat, want, rtol=1e-4, atol=1e-5)


def test_full_preset_matches_reference_implementation_over_the_whole_unet(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    ours = run(pipe)
    reference = {f"{n}.processor": ReferenceProcessor(p) for n, p in patcher.face.items()}
    current = pipe.unet.attn_processors
    pipe.unet.set_attn_processor({k: reference.get(k, v) for k, v in current.items()})
    try:
        theirs = run(pipe)
    finally:
        patcher.apply(frozenset(patcher.face))
    torch.testing.assert_close(ours.latents, theirs.latents, rtol=1e-4, atol=1e-4)


def test_same_seed_same_image_and_smaller_preset_differs(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    a, b = run(pipe), run(pipe)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    patcher.apply(resolve_preset("fast").layers)
    fast = run(pipe)
    patcher.apply(frozenset(patcher.face))
    assert not torch.allclose(a.latents, fast.latents)


def test_none_preset_equals_face_branch_disabled(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset())
    none = run(pipe)
    patcher.apply(frozenset(patcher.face))
    patcher.set_scale(0.0)  # diffusers semantics: scale 0 skips the branch
    try:
        disabled = run(pipe)
    finally:
        patcher.set_scale(0.8)
    torch.testing.assert_close(none.latents, disabled.latents, rtol=0, atol=0)


def test_skipped_layers_never_project_face_tokens(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    calls: dict[str, int] = {name: 0 for name in patcher.face}
    hooks = []
    for name, proc in patcher.face.items():
        for linear in (proc.to_k_ip[0], proc.to_v_ip[0]):
            hooks.append(linear.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1)))
    keep = resolve_preset("fast").layers
    patcher.apply(keep)
    try:
        run(pipe, steps=2)
    finally:
        for hook in hooks:
            hook.remove()
        patcher.apply(frozenset(patcher.face))
    assert {n for n, c in calls.items() if c} == keep
    # K/V reuse: each patched layer projects the face tokens once per generation (K and V), not once per step
    assert {calls[n] for n in keep} == {2}


def test_skipped_layer_drops_face_tokens():
    torch.manual_seed(0)
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=64, cross_attention_dim=2048, heads=2, dim_head=32)
    hidden, text, face = torch.randn(2, 16, 64), torch.randn(2, 77, 2048), torch.randn(2, 16, 2048)
    with torch.no_grad():
        text_only = AttnProcessor2_0()(attn, hidden, text)
        attends_face = AttnProcessor2_0()(attn, hidden, torch.cat([text, face], 1))
        skipped_tuple = TextOnlyAttnProcessor()(attn, hidden, (text, [face]))
        skipped_cat = TextOnlyAttnProcessor()(attn, hidden, torch.cat([text, face], 1))
    torch.testing.assert_close(skipped_tuple, text_only)
    torch.testing.assert_close(skipped_cat, text_only)
    assert not torch.allclose(attends_face, text_only)


def test_kv_cache_is_exact(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    cached = run(pipe)
    patcher.state.cache_kv = False
    try:
        uncached = run(pipe)
    finally:
        patcher.state.cache_kv = True
    assert torch.equal(cached.latents, uncached.latents)


def test_step_window_limits_the_face_branch(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    patcher.state.face_calls = 0
    run(pipe, steps=4, face_window=(0.0, 0.3))  # fractions 0, .25 active; .5, .75 not
    assert patcher.state.face_calls == 2 * len(patcher.face)


def test_switching_presets_reuses_the_same_weights(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    before = {p.data_ptr() for p in pipe.unet.parameters()} | {p.data_ptr() for p in patcher.modules.parameters()}
    for spec in ("balanced", "fast", "none", "output_only", "full"):
        patcher.apply(resolve_preset(spec).layers)
    after = {p.data_ptr() for p in pipe.unet.parameters()} | {p.data_ptr() for p in patcher.modules.parameters()}
    assert before == after
    kinds = [type(p).__name__ for n, p in pipe.unet.attn_processors.items() if n.endswith("attn2.processor")]
    assert kinds == ["FaceAttnProcessor"] * 70


def test_restore_puts_back_the_original_processors(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    try:
        patcher.restore()
        assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    finally:
        patcher.apply(frozenset(patcher.face))


@pytest.mark.parametrize("spec", ["fast", "none"])
def test_preset_run_touches_only_its_layers_in_telemetry(tiny_pipe, spec):
    pipe, patcher, _ = tiny_pipe
    keep = resolve_preset(spec).layers
    patcher.apply(keep)
    patcher.state.telemetry = {}
    try:
        run(pipe, steps=2)
        recorded = {name for name, _ in patcher.state.telemetry}
    finally:
        patcher.state.telemetry = None
        patcher.apply(frozenset(patcher.face))
    assert recorded == keep


def test_step_windows_tile_without_overlap(tiny_pipe):
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    counts = []
    for window in ((0.0, 0.5), (0.5, 1.0)):
        patcher.state.face_calls = 0
        run(pipe, steps=2, face_window=window)
        counts.append(patcher.state.face_calls // len(patcher.face))
    assert counts == [1, 1]


def test_whole_pipeline_matches_a_loop_written_out_in_the_test(tiny_pipe):
    """Independent of pipeline.__call__: uncond = Resampler(zeros), IdentityNet gets the face tokens (not text)
    and the keypoint hint, the UNet gets cat(text, face) through the reference equation, CFG, Euler."""
    pipe, patcher, _ = tiny_pipe
    patcher.apply(frozenset(patcher.face))
    ours = run(pipe, steps=2)

    with torch.no_grad():
        emb = torch.as_tensor(EMB).reshape(1, 1, 512)
        face = pipe.resampler(torch.cat([torch.zeros_like(emb), emb]))  # [uncond, cond]
        text, neg, pooled, neg_pooled = pipe.encode_prompt("a portrait", None, "cpu", 1, True, None)
        text, pooled = torch.cat([neg, text]), torch.cat([neg_pooled, pooled])
        time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
        cond = {"text_embeds": pooled, "time_ids": time_ids}
        hint = torch.zeros(2, 3, 64, 64)  # the black HINT image, as the ControlNet preprocessor gives it
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(2)
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
        reference = {f"{n}.processor": ReferenceProcessor(p) for n, p in patcher.face.items()}
        current = pipe.unet.attn_processors
        pipe.unet.set_attn_processor({k: reference.get(k, v) for k, v in current.items()})
        try:
            for t in scheduler.timesteps:
                x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                down, mid = pipe.controlnet(x, t, encoder_hidden_states=face, controlnet_cond=hint,
                                            conditioning_scale=0.8, added_cond_kwargs=cond, return_dict=False)
                noise = pipe.unet(x, t, encoder_hidden_states=(text, [face]), added_cond_kwargs=cond,
                                  down_block_additional_residuals=down, mid_block_additional_residual=mid,
                                  return_dict=False)[0]
                uncond, conditioned = noise.chunk(2)
                latents = scheduler.step(uncond + 5.0 * (conditioned - uncond), t, latents, return_dict=False)[0]
        finally:
            patcher.apply(frozenset(patcher.face))
    torch.testing.assert_close(ours.latents, latents, rtol=1e-4, atol=1e-4)

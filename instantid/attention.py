"""Face-attention processors for SDXL cross-attention (attn2) layers, in the diffusers manner.

The UNet receives its context as ``(text_tokens, [face_tokens])`` (diffusers' IP-Adapter form) or, as the
official InstantID code passes it, as one tensor ``cat(text_tokens, face_tokens)`` whose last 16 tokens are
the face. Both forms are accepted.

* :class:`FaceAttnProcessor` (a patched layer) computes
  ``out = attn(q, text K/V) + scale * attn(q, face K/V)`` before ``to_out``. It subclasses diffusers'
  :class:`IPAdapterAttnProcessor2_0` and shares that processor's ``to_k_ip``/``to_v_ip`` weights; what it adds
  is per-generation reuse of the face keys/values (the face tokens do not change between steps), a step window
  and optional telemetry.
* :class:`TextOnlyAttnProcessor` (a layer that is not patched) drops the face tokens and attends to the text
  only: no face K/V projection, no second attention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

logger = logging.getLogger(__name__)

FACE_TOKENS = 16  # InstantID's Resampler emits 16 face tokens


@dataclass
class FaceBranchState:
    """State shared by every face processor of one UNet, set by the pipeline once per step."""

    active: bool = True  # False outside the preset's step window: every layer skips the face branch
    step: int = 0  # index of the current denoising step (telemetry key)
    cache_kv: bool = True  # reuse face K/V across steps (off only to measure what the cache saves)
    telemetry: dict[tuple[str, int], float] | None = None  # (layer name, step) -> |scale*face| / |text|
    face_calls: int = field(default=0, repr=False)  # face-branch executions, for tests and benchmarks


def split_context(
    encoder_hidden_states: torch.Tensor | tuple, num_tokens: int = FACE_TOKENS
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (text tokens, face tokens or None) from either context form."""
    if isinstance(encoder_hidden_states, tuple):
        text, face = encoder_hidden_states
        if isinstance(face, (list, tuple)):
            face = face[0]
        return text, face
    end = encoder_hidden_states.shape[1] - num_tokens
    return encoder_hidden_states[:, :end], encoder_hidden_states[:, end:]


def tensor_version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version counter; inference tensors (``torch.inference_mode``) have none and count as
    version -1, so the K/V cache keys on the tensor object alone there (the engine clears it per generation)."""
    # the version counter has no public accessor; an in-place edit of the face tokens must invalidate the cache
    return -1 if tensor.is_inference() else tensor._version  # noqa: SLF001 - see the line above


class TextOnlyAttnProcessor(AttnProcessor2_0):
    """Cross-attention of a layer that is not patched: the face tokens are dropped before attention."""

    def __init__(self, num_tokens: int = FACE_TOKENS) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs):
        """diffusers' attention over the text tokens only."""
        if encoder_hidden_states is not None:
            encoder_hidden_states, _ = split_context(encoder_hidden_states, self.num_tokens)
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


class FaceAttnProcessor(IPAdapterAttnProcessor2_0):
    """A patched layer: text attention plus ``scale`` times attention over the 16 face tokens."""

    def __init__(self, name: str, hidden_size: int, cross_attention_dim: int, state: FaceBranchState,
                 num_tokens: int = FACE_TOKENS, scale: float = 1.0) -> None:
        super().__init__(hidden_size, cross_attention_dim, num_tokens=(num_tokens,), scale=scale)
        self.name = name
        self.state = state
        self._kv_source: torch.Tensor | None = None  # the face tokens the cached K/V were computed from
        self._kv_version = -1
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_loaded(cls, name: str, loaded: IPAdapterAttnProcessor2_0, state: FaceBranchState) -> FaceAttnProcessor:
        """Wrap a processor built by ``load_ip_adapter``, sharing (not copying) its face K/V weights."""
        with torch.device("meta"):
            proc = cls(name, loaded.hidden_size, loaded.cross_attention_dim, state, loaded.num_tokens[0])
        proc.to_k_ip, proc.to_v_ip = loaded.to_k_ip, loaded.to_v_ip
        return proc

    @property
    def ip_scale(self) -> float:
        """The face-branch scale (diffusers keeps one per adapter; InstantID has one)."""
        return float(self.scale[0])

    def clear_cache(self) -> None:
        """Forget the cached face K/V (a new generation, new weights or a new device)."""
        self._kv_source, self._kv, self._kv_version = None, None, -1

    def face_kv(self, face: torch.Tensor, batch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Face keys/values shaped for SDPA; computed once per face-token tensor when caching is on.

        The cache is keyed on the tensor object, so it hits with the tuple context the pipeline passes; the
        ``cat(text, face)`` form slices a new tensor every call and is computed each time (still exact)."""
        cached = self.cached_kv(face) if self.state.cache_kv else None
        if cached is not None:
            return cached
        key, value = self.project_kv(face, batch, heads)
        if self.state.cache_kv:
            self._kv_source, self._kv_version, self._kv = face, tensor_version(face), (key, value)
        return key, value

    def project_kv(self, face: torch.Tensor, batch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``to_k_ip`` / ``to_v_ip`` of the face tokens, as [batch, heads, tokens, head_dim] (never cached)."""
        key, value = self.to_k_ip[0](face), self.to_v_ip[0](face)
        head_dim = key.shape[-1] // heads
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        return key, value

    def cached_kv(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The K/V cached for ``face`` (this tensor object, unchanged since), or None: the buffers a captured graph
        reads (:class:`~instantid.graphs.GraphStepRunner`)."""
        if self._kv is None or self._kv_source is not face or self._kv_version != tensor_version(face):
            return None
        return self._kv

    def pin_kv(self, face: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Make ``kv`` the cached K/V of ``face`` as it is now (the CPU stand-in for a graph's baked-in buffers)."""
        self._kv_source, self._kv_version, self._kv = face, tensor_version(face), kv

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        """``to_out(attn(q, text K/V) + scale * attn(q, face K/V))``; the face part only when this step runs it."""
        text, face = split_context(encoder_hidden_states, self.num_tokens[0])
        residual = hidden_states
        if attn.spatial_norm is not None:  # as diffusers' processors do (SDXL has none)
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, text.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)

        query = attn.to_q(hidden_states)
        key, value = attn.to_k(text), attn.to_v(text)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        scale = self.ip_scale
        if face is not None and scale != 0 and self.state.active:
            self.state.face_calls += 1
            face_key, face_value = self.face_kv(face, batch, attn.heads)
            face_out = F.scaled_dot_product_attention(query, face_key, face_value, dropout_p=0.0)
            face_out = face_out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
            if self.state.telemetry is not None:
                ratio = (scale * face_out.float().norm() / out.float().norm().clamp_min(1e-12)).item()
                self.state.telemetry[(self.name, self.state.step)] = ratio
            out = out + scale * face_out

        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

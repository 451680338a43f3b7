"""Analytic FLOPs and memory traffic of InstantID's face (IP) branch, per cross-attention layer and per preset.

Per layer and UNet call (batch ``B`` = 2 with CFG, ``N`` query tokens, width ``C``, ``T`` = 16 face tokens,
context ``D`` = 2048, ``e`` bytes per element, ``S = B*N*C*e``), following the eager ``IPAttnProcessor2_0``:

FLOPs
    projections   to_k_ip and to_v_ip of the face tokens     2 * 2*B*T*D*C   (with K/V caching: /steps, or 0)
    q @ k^T                                                  2*B*N*T*C
    attn @ v                                                 2*B*N*T*C
    scale * ip + hidden (two element-wise ops)               2*B*N*C
    The softmax over 16 keys (~5 FLOP x B*heads*N*T, ~0.6 %) is not counted.

Bytes
    weights       to_k_ip + to_v_ip                          2*D*C*e         (with caching: /steps, or 0)
    projections   read the face tokens twice, write K and V  2*B*T*D*e + 2*B*T*C*e   (likewise)
    SDPA          read q and K, V; write the output          2*S + 2*B*T*C*e
    reshape of the output to [B, N, C]                       2*S
    scale * ip                                               2*S
    hidden + scaled ip                                       3*S
    i.e. ``9*S + weights`` plus the small face-token terms.

K/V caching (``kv_cache=True``): the face tokens do not change during a generation, so the projections run once
per generation. ``steps`` (UNet calls per generation) spreads that one projection over the calls, ``1/steps`` of
it per call, as a benchmark arm-repetition of ``steps`` steps pays it; without ``steps`` it is left out.

Shares (:func:`preset_work`) are relative to **all layers under the reference caching** (``reference_kv_cache``,
default: the preset's own): the benchmark passes ``reference_kv_cache=True`` so every arm is measured against
``full`` as it runs (K/V once per generation); then ``none`` = 0, ``full`` = 1 and ``full-nocache`` (every
layer, K/V every step) > 1, the projection work the cache saves.

Cross-check with docs/performance-model.md at 1024^2, B = 2, 2-byte dtype, no caching: 508.6 MFLOP per 32^2
C=1280 layer and 513.8 MFLOP per 64^2 C=640 layer (the notes' 509 / 514), 35.65 GFLOP per UNet call for all 70
layers (notes: 35.7). Bytes: 58.3 MB (notes: 57.7) and 100.0 MB (notes: 99.6) per layer, 4.50 GB per call
(notes: 4.46): the notes' ``9S + weights`` leaves out the face-token reads and the K/V write and read
(0.59 MB per 1280-wide layer, 0.43 MB per 640-wide one); FLOP and byte shares agree with the notes' preset table
(section 4) to 0.1 percentage point.
The notes' extra traffic of the official processor's debug ``attn_map`` and all-ones mask is not modelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from instantid.layers import LayerInfo

logger = logging.getLogger(__name__)

IP_TOKENS = 16  # face tokens from the Resampler
CONTEXT_DIM = 2048  # SDXL cross_attention_dim (to_k_ip / to_v_ip input size)
_VAE_FACTOR = 8  # pixels per latent cell
_LATENT_SIDE_1024 = 128  # latent side at a 1024 px output


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes moved."""

    flops: float
    bytes: float

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes)


def _level(layer: LayerInfo) -> int:
    side = round(layer.tokens_1024**0.5)
    level = (_LATENT_SIDE_1024 // side).bit_length() - 1
    if side * side != layer.tokens_1024 or _LATENT_SIDE_1024 != side << level:
        raise ValueError(
            f"{layer.name}: tokens_1024={layer.tokens_1024} is not a power-of-two level of 128^2"
        )
    return level


def layer_tokens(layer: LayerInfo, width: int = 1024, height: int = 1024) -> int:
    """Query tokens the layer sees for a ``width`` x ``height`` output: latent = size/8, each level halves it
    rounding up (stride-2 convolutions with padding 1), as in diffusers."""
    w, h = -(-width // _VAE_FACTOR), -(-height // _VAE_FACTOR)
    for _ in range(_level(layer)):
        w, h = -(-w // 2), -(-h // 2)
    return w * h


def kv_projection_work(
    layer: LayerInfo,
    *,
    batch: int = 2,
    dtype_bytes: int = 2,
    ip_tokens: int = IP_TOKENS,
    context_dim: int = CONTEXT_DIM,
) -> Work:
    """to_k_ip + to_v_ip for one layer: done every UNet call without caching, once per generation with it."""
    c = layer.width
    flops = 2 * 2 * batch * ip_tokens * context_dim * c
    traffic = (
        2 * context_dim * c + 2 * batch * ip_tokens * context_dim + 2 * batch * ip_tokens * c
    ) * dtype_bytes
    return Work(float(flops), float(traffic))


def layer_work(
    layer: LayerInfo,
    width: int = 1024,
    height: int = 1024,
    *,
    batch: int = 2,
    dtype_bytes: int = 2,
    kv_cache: bool = False,
    steps: int | None = None,
    ip_tokens: int = IP_TOKENS,
    context_dim: int = CONTEXT_DIM,
) -> Work:
    """Face-branch work of one layer in one UNet call (see the module docstring for the terms).

    With ``kv_cache`` the K/V projections count ``1/steps`` per call (once per ``steps``-call generation), or
    not at all when ``steps`` is None."""
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n, c = layer_tokens(layer, width, height), layer.width
    s = batch * n * c * dtype_bytes
    kv_read = 2 * batch * ip_tokens * c * dtype_bytes
    core = Work(float(2 * 2 * batch * n * ip_tokens * c + 2 * batch * n * c), float(9 * s + kv_read))
    if kv_cache and steps is None:
        return core
    projection = kv_projection_work(
        layer, batch=batch, dtype_bytes=dtype_bytes, ip_tokens=ip_tokens, context_dim=context_dim
    )
    if kv_cache:
        projection = Work(projection.flops / steps, projection.bytes / steps)
    return core + projection


def total_work(
    names: Iterable[str] | None,
    layers: Sequence[LayerInfo],
    width: int = 1024,
    height: int = 1024,
    *,
    batch: int = 2,
    dtype_bytes: int = 2,
    kv_cache: bool = False,
    steps: int | None = None,
) -> Work:
    """Summed per-call work of the named layers (None = every layer); unknown names raise ValueError."""
    wanted = None if names is None else set(names)
    if wanted is not None:
        unknown = wanted - {layer.name for layer in layers}
        if unknown:
            raise ValueError(f"layers not in this map: {sorted(unknown)[:5]}")
    total = Work(0.0, 0.0)
    for layer in layers:
        if wanted is None or layer.name in wanted:
            total = total + layer_work(
                layer, width, height, batch=batch, dtype_bytes=dtype_bytes, kv_cache=kv_cache, steps=steps
            )
    return total


def preset_work(
    preset_layers: Iterable[str] | object,
    layers: Sequence[LayerInfo],
    width: int = 1024,
    height: int = 1024,
    *,
    batch: int = 2,
    dtype_bytes: int = 2,
    kv_cache: bool = False,
    reference_kv_cache: bool | None = None,
    steps: int | None = None,
) -> dict[str, float]:
    """Per-UNet-call face-branch work of a preset and its share of all layers' work.

    ``preset_layers`` is a set of layer names or a ``Preset`` (its ``.layers``). ``kv_cache`` is the preset's
    caching, ``reference_kv_cache`` the caching of the all-layers reference (default: the same) and ``steps`` the
    UNet calls a cached projection is spread over (see :func:`layer_work`). Returns
    ``{"flops", "bytes", "flops_share", "bytes_share"}``; shares are fractions of the reference (none = 0.0,
    all layers under the reference's caching = 1.0; all layers without the cache against a cached reference > 1).
    """
    names = getattr(preset_layers, "layers", preset_layers)
    kwargs = {"batch": batch, "dtype_bytes": dtype_bytes, "steps": steps}
    reference = kv_cache if reference_kv_cache is None else reference_kv_cache
    part = total_work(names, layers, width, height, kv_cache=kv_cache, **kwargs)  # type: ignore[arg-type]
    whole = total_work(None, layers, width, height, kv_cache=reference, **kwargs)  # type: ignore[arg-type]
    return {
        "flops": part.flops,
        "bytes": part.bytes,
        "flops_share": part.flops / whole.flops if whole.flops else 0.0,
        "bytes_share": part.bytes / whole.bytes if whole.bytes else 0.0,
    }

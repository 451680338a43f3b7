"""Which cross-attention layers carry the face branch: swap processors on one loaded UNet.

Every face processor is built once, when the weights load, and kept here. Choosing a preset only points each
attn2 layer at its face processor or at the shared text-only processor: no reload, no copy, no new tensors.
``restore()`` puts back the processors the UNet had before InstantID was attached. ``apply_stock()`` puts diffusers'
own ``IPAdapterAttnProcessor2_0`` on every face layer instead (the processors ``load_ip_adapter`` built, same
weights): the benchmark's reference for what this patching itself costs.
"""

from __future__ import annotations

import logging
import time

import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from .attention import FaceAttnProcessor, FaceBranchState, TextOnlyAttnProcessor
from .layers import LayerInfo

logger = logging.getLogger(__name__)


class FacePatcher:
    """Owns the face processors of one UNet and applies a set of patched layers to it."""

    def __init__(self, unet, layers: tuple[LayerInfo, ...], original: dict, ip_scale: float = 0.8) -> None:
        self.unet = unet
        self.layers = layers
        self.original = dict(original)  # processors before InstantID (restored by restore())
        self.state = FaceBranchState()
        self.text_only = TextOnlyAttnProcessor()
        self.face: dict[str, FaceAttnProcessor] = {}
        self.stock: dict[str, IPAdapterAttnProcessor2_0] = {}  # diffusers' own, sharing the weights (apply_stock)
        for proc_name, proc in unet.attn_processors.items():
            if isinstance(proc, IPAdapterAttnProcessor2_0) and not isinstance(proc, FaceAttnProcessor):
                name = proc_name.removesuffix(".processor")
                self.face[name] = FaceAttnProcessor.from_loaded(name, proc, self.state)
                self.stock[name] = proc
        # keep the face weights reachable as one module so .to(device) moves them with the engine
        self.modules = torch.nn.ModuleList(self.face.values())
        self.patched: frozenset[str] = frozenset()
        self.stock_active = False  # diffusers' stock processors are on (apply_stock) instead of ours
        self.scale = float(ip_scale)
        self.set_scale(ip_scale)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Every face-attention layer this patcher can patch, in UNet order."""
        return tuple(self.face)

    def signature(self) -> tuple:
        """What the processors compute now (patched layers, stock or ours, face scale): a CUDA graph's key part."""
        return (self.patched, self.stock_active, self.scale)

    def set_scale(self, scale: float) -> None:
        """The face-branch scale (``ip_weight``) of every face processor, ours and stock."""
        self.scale = float(scale)
        for proc in (*self.face.values(), *self.stock.values()):
            proc.scale = [float(scale)]

    def apply(self, patched: frozenset[str]) -> float:
        """Patch exactly ``patched`` (layer names); every other attn2 layer drops the face tokens.

        Returns the seconds the switch took."""
        unknown = set(patched) - set(self.face)
        if unknown:
            raise KeyError(f"not face-attention layers of this UNet: {sorted(unknown)[:3]}")
        start = time.perf_counter()
        procs = {}
        for proc_name, proc in self.unet.attn_processors.items():
            name = proc_name.removesuffix(".processor")
            if name in self.face:
                procs[proc_name] = self.face[name] if name in patched else self.text_only
            else:
                procs[proc_name] = proc
        self.unet.set_attn_processor(procs)
        self.patched = frozenset(patched)
        self.stock_active = False
        seconds = time.perf_counter() - start
        logger.debug("patched %d of %d layers in %.2f ms", len(patched), len(self.face), seconds * 1e3)
        return seconds

    def apply_stock(self, layers: frozenset[str] | None = None) -> float:
        """Every face layer on diffusers' stock ``IPAdapterAttnProcessor2_0`` (the same weights; face K/V computed
        at every call, no step window, no telemetry); ``apply`` switches back. Returns the seconds it took.

        ``layers``: only these keep the face scale; every other stock processor gets scale 0, which diffusers'
        processor skips. That is what ``pipe.set_ip_adapter_scale`` writes per processor (``processor.scale[i]``);
        its per-block configs cannot name single transformer blocks (``balanced``'s middle:0-4), so the scales
        are set here directly, with the same effect."""
        unknown = set(layers or ()) - set(self.stock)
        if unknown:
            raise KeyError(f"not face-attention layers of this UNet: {sorted(unknown)[:3]}")
        start = time.perf_counter()
        for name, proc in self.stock.items():
            proc.scale = [self.scale if layers is None or name in layers else 0.0]
        procs = {}
        for proc_name, proc in self.unet.attn_processors.items():
            procs[proc_name] = self.stock.get(proc_name.removesuffix(".processor"), proc)
        self.unet.set_attn_processor(procs)
        self.patched = frozenset(self.stock) if layers is None else frozenset(layers)
        self.stock_active = True
        return time.perf_counter() - start

    def clear_cache(self) -> None:
        """Forget every face processor's cached K/V."""
        for proc in self.face.values():
            proc.clear_cache()

    def restore(self) -> None:
        """Put back the UNet's processors from before InstantID."""
        self.clear_cache()
        self.unet.set_attn_processor(dict(self.original))
        self.patched = frozenset()

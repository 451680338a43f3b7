"""CUDA-graph denoising steps: :class:`GraphStepRunner` replays one captured step per :class:`GraphKey`.

:func:`~instantid.step.run_denoising` calls ``runner.predict(...)`` per step; this runner (the eager one is
:class:`~instantid.runners.EagerStepRunner`) copies each generation's inputs into **static buffers** (``bind``),
scales the model input outside the graph (the scheduler looks up its step index on the host) and replays one
captured graph of IdentityNet + UNet + CFG per :class:`GraphKey` (patched layers, face branch on/off for step
windows, K/V caching, size, batch, dtype and the scales baked into kernels). Each graph is captured on first use
(:mod:`instantid.graph_capture`: CUDA, or the CPU stand-in the tests use), kept in an LRU cache and reused. The
face K/V of cached layers are projected once per generation **into the buffers the graph reads** (the entry's
refresh graph), so a new face needs no recapture and preset switching copies no weights. The scheduler update
stays outside the graph.

A capture that fails (an op that synchronises, an unsupported kernel) turns graphs off for the runner with the
reason logged (traceback included) and ``fallback_reason`` set; the step then runs eagerly.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .graph_capture import CudaGraphBackend, EagerStandInBackend
from .runners import EagerStepRunner
from .step import StepInputs, predict_noise, scaled_model_input

logger = logging.getLogger(__name__)

MAX_GRAPHS = 16  # graphs kept per runner (LRU); each holds one step's activation memory (graph_memory)


@dataclass(frozen=True)
class GraphKey:
    """Everything a captured step bakes in: one graph per distinct key."""

    processors: tuple  # FacePatcher.signature(): patched layers, stock or ours, face scales
    active: bool  # face branch on (inside the preset's step window) or off
    cache_kv: bool  # face K/V from the per-generation buffers (True) or projected inside the graph
    shape: tuple[int, ...]  # model input [batch, 4, H/8, W/8] (batch 2 with CFG)
    dtype: str  # model input dtype
    guidance_scale: float  # baked into the CFG kernel
    cn_scale: float  # baked into IdentityNet's residual scaling


@dataclass
class StaticInputs:
    """The buffers a captured graph reads; every generation of the same shapes copies into them."""

    inputs: StepInputs  # a StepInputs whose tensors are the static buffers
    sample: torch.Tensor  # scaled model input of the current step
    t: torch.Tensor  # current timestep (0-dim)
    epoch: int = 0  # bumped by every bind: cached K/V must be re-projected


@dataclass
class GraphEntry:
    """One captured step."""

    graph: object  # torch.cuda.CUDAGraph, or the stand-in's record
    output: torch.Tensor  # static output the replay writes
    static: StaticInputs
    key: GraphKey
    refresh: object = None  # a second graph: the face K/V projection into the ``kv`` buffers
    kv: list[tuple[object, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (processor, K, V) buffers
    epoch: int = -1  # the static epoch the K/V buffers hold
    capture_s: float = 0.0  # warm-up + capture seconds
    memory: dict[str, float] = field(default_factory=dict)  # allocated_mb / reserved_mb the capture added


class GraphStepRunner:
    """Replays one captured graph per :class:`GraphKey` on static buffers; eager fallback on capture failure."""

    mode = "graphs"

    def __init__(self, pipe, patcher, backend: CudaGraphBackend | EagerStandInBackend | None = None,
                 max_graphs: int = MAX_GRAPHS) -> None:
        self.pipe = pipe
        self.patcher = patcher
        self.backend = backend or CudaGraphBackend()
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[GraphKey, GraphEntry] = OrderedDict()
        self.statics: dict[tuple, StaticInputs] = {}
        self.static: StaticInputs | None = None  # the one the current generation is bound to
        self.fallback_reason: str | None = None  # set when a capture failed: every step runs eagerly after it
        self.fallback_traceback: str | None = None
        self.graph_steps = 0  # steps replayed (counters: callers reset them per generation)
        self.eager_steps = 0  # steps run eagerly (fallback, telemetry)
        self.captures = 0
        self._eager = EagerStepRunner(pipe)

    # -- buffers ------------------------------------------------------------------------------------------
    def bind(self, inputs: StepInputs) -> None:
        """Copy the generation's tensors into the static buffers of its shapes (allocated on first use)."""
        text, faces = inputs.context
        signature = tuple((tuple(x.shape), x.dtype, x.device) for x in (
            inputs.latents, text, inputs.face_tokens, inputs.hint, *inputs.added_cond.values())) + (inputs.do_cfg,)
        static = self.statics.get(signature)
        if static is None:
            face = inputs.face_tokens.clone()
            added = {k: v.clone() for k, v in inputs.added_cond.items()}
            batch = 2 if inputs.do_cfg else 1
            sample = torch.empty((batch, *inputs.latents.shape[1:]), dtype=inputs.latents.dtype,
                                 device=inputs.latents.device)
            step_inputs = StepInputs(latents=inputs.latents.clone(), timesteps=inputs.timesteps, face_tokens=face,
                                     context=(text.clone(), [face]), added_cond=added, hint=inputs.hint.clone(),
                                     guidance_scale=inputs.guidance_scale, cn_scale=inputs.cn_scale,
                                     do_cfg=inputs.do_cfg)
            t = torch.zeros((), dtype=inputs.timesteps.dtype, device=inputs.latents.device)
            static = self.statics[signature] = StaticInputs(step_inputs, sample, t)
        else:
            s = static.inputs
            s.timesteps = inputs.timesteps
            s.latents.copy_(inputs.latents)
            s.context[0].copy_(text)
            s.face_tokens.copy_(inputs.face_tokens)
            s.hint.copy_(inputs.hint)
            for name, value in inputs.added_cond.items():
                s.added_cond[name].copy_(value)
        # python floats baked into kernels: the key carries them, the static StepInputs follows the generation
        static.inputs.guidance_scale, static.inputs.cn_scale = inputs.guidance_scale, inputs.cn_scale
        static.epoch += 1
        self.static = static

    def prepare(self, actives: set[bool]) -> None:
        """Capture, before a timed loop, the graphs its steps will need (face branch on and/or off), so no step
        time includes a capture; the capture reads whatever the static buffers hold (its output is dropped)."""
        static = self.static
        if self.fallback_reason is not None or static is None or self.pipe.face_state.telemetry is not None:
            return
        static.sample.zero_()
        static.t.copy_(static.inputs.timesteps[0])
        for active in sorted(actives, reverse=True):
            key = self.key(static, active)
            if key not in self.graphs and self._capture(key, static) is None:
                return

    def key(self, static: StaticInputs, active: bool) -> GraphKey:
        """The graph this step needs."""
        s = static.inputs
        return GraphKey(self.patcher.signature(), bool(active), bool(self.pipe.face_state.cache_kv),
                        tuple(static.sample.shape), str(static.sample.dtype), float(s.guidance_scale),
                        float(s.cn_scale))

    # -- steps --------------------------------------------------------------------------------------------
    def predict(self, inputs: StepInputs, latents: torch.Tensor, t: torch.Tensor, *, step: int,
                active: bool) -> torch.Tensor:
        """Replay the key's graph (capturing it first); eager when graphs are off, failed or telemetry records."""
        state = self.pipe.face_state
        static = self.static
        if self.fallback_reason is not None or state.telemetry is not None or static is None:
            self.eager_steps += 1
            return self._eager.predict(inputs, latents, t, step=step, active=active)
        state.step = step
        static.sample.copy_(scaled_model_input(self.pipe, static.inputs, latents, t))
        static.t.copy_(t)
        key = self.key(static, active)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, static)
            if entry is None:
                self.eager_steps += 1
                return self._eager.predict(inputs, latents, t, step=step, active=active)
        else:
            self.graphs.move_to_end(key)
        if entry.epoch != static.epoch:  # a new generation: its face K/V into the buffers the graph reads
            if entry.refresh is not None:
                self.backend.replay(entry.refresh)
            entry.epoch = static.epoch
        if self.backend.stand_in:  # the eager stand-in reads the K/V through the processors' caches
            face = static.inputs.face_tokens
            for proc, kv_key, kv_value in entry.kv:
                proc.pin_kv(face, (kv_key, kv_value))  # type: ignore[attr-defined]
            state.active, state.cache_kv = key.active, key.cache_kv
        self.backend.replay(entry.graph)
        self.graph_steps += 1
        return entry.output.clone()

    @staticmethod
    def _refresh_fn(entry: GraphEntry) -> Callable[[], None]:
        """Projects the bound face tokens into the entry's K/V buffers (captured as the entry's refresh graph)."""
        face = entry.static.inputs.face_tokens

        def refresh() -> None:
            with torch.no_grad():
                for proc, key, value in entry.kv:
                    new_key, new_value = proc.project_kv(face, key.shape[0], key.shape[1])  # type: ignore[attr-defined]
                    key.copy_(new_key)
                    value.copy_(new_value)

        return refresh

    def _capture(self, key: GraphKey, static: StaticInputs) -> GraphEntry | None:
        """Capture the step for ``key`` (None, with graphs turned off and the reason logged, if it fails)."""
        patcher, state = self.patcher, self.pipe.face_state
        device = static.sample.device
        cuda = device.type == "cuda"
        while len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)
        patcher.clear_cache()  # the warm-up projects the K/V into fresh buffers that this graph alone reads
        state.active, state.cache_kv = key.active, key.cache_kv
        if cuda:
            torch.cuda.synchronize(device)
            before = (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))
        started = time.perf_counter()
        try:
            with torch.no_grad():
                graph, output = self.backend.capture(
                    lambda: predict_noise(self.pipe, static.inputs, static.sample, static.t), device)
        except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly, say why
            self._fall_back(exc)
            patcher.clear_cache()
            if cuda:
                torch.cuda.synchronize(device)
            return None
        finally:
            state.active, state.cache_kv = True, key.cache_kv
        entry = GraphEntry(graph=graph, output=output, static=static, key=key, epoch=static.epoch,
                           capture_s=time.perf_counter() - started)
        face = static.inputs.face_tokens
        cached = ((proc, proc.cached_kv(face)) for proc in patcher.face.values()) if key.cache_kv else ()
        entry.kv = [(proc, *kv) for proc, kv in cached if kv is not None]
        if entry.kv:
            try:  # 70 layers x (2 projections + 2 copies) as one replay instead of ~400 launches per generation
                entry.refresh, _ = self.backend.capture(self._refresh_fn(entry), device, warmup=1)
            except Exception as exc:  # noqa: BLE001 - same rule as the step graph
                self._fall_back(exc)
                return None
        entry.capture_s = time.perf_counter() - started
        if cuda:
            entry.memory = {"allocated_mb": (torch.cuda.memory_allocated(device) - before[0]) / 2**20,
                            "reserved_mb": (torch.cuda.memory_reserved(device) - before[1]) / 2**20}
        self.graphs[key] = entry
        self.captures += 1
        logger.info("captured a step graph in %.2f s (%d face layers, active=%s, %s)", entry.capture_s,
                    len(key.processors[0]), key.active, entry.memory or "cpu stand-in")
        return entry

    def _fall_back(self, exc: Exception) -> None:
        """Graphs off for this runner from now on, with the reason and traceback kept and logged."""
        self.fallback_reason = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running eagerly"
        self.fallback_traceback = traceback.format_exc()
        logger.warning("%s\n%s", self.fallback_reason, self.fallback_traceback)

    def reset_counts(self) -> None:
        """Start counting graph / eager steps for a new generation."""
        self.graph_steps = self.eager_steps = 0

    def graph_memory(self) -> list[dict]:
        """Per cached graph: layers, face on/off, size and the memory its capture added."""
        return [{"layers": len(k.processors[0]), "active": k.active, "cache_kv": k.cache_kv, "shape": list(k.shape),
                 "capture_s": round(e.capture_s, 3), **{m: round(v, 1) for m, v in e.memory.items()}}
                for k, e in self.graphs.items()]



__all__ = ["MAX_GRAPHS", "GraphEntry", "GraphKey", "GraphStepRunner", "StaticInputs"]

"""The engine: one loaded InstantID stack that generates with any set of patched layers.

``load_engine("tiny")`` builds the offline random stack; ``load_engine("<folder or repo id>")`` loads real
weights. ``Engine.generate(request, preset)`` analyses the face, patches the preset's layers (a processor swap
on the same UNet), runs the pipeline and returns the image with per-step timings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .adapter import attach_face_adapter
from .face import Face, FaceAnalyzer, NoFaceError, draw_kps, fit_kps
from .graphs import GraphStepRunner
from .layers import layer_map_for
from .loading import (
    WeightsError,
    cast_modules,
    find_adapter_file,
    layer_widths,
    load_base,
    load_controlnet,
    read_adapter,
)
from .patching import FacePatcher
from .pipeline import InstantIDPipeline, InstantIDPipelineOutput
from .presets import Preset, PresetError, preset_window, resolve_preset, select_layers
from .runners import EagerStepRunner, StepRunner, resolve_graph_mode, timing_mode
from .settings import GenerationRequest

logger = logging.getLogger(__name__)

DEFAULT_BASE = "stabilityai/stable-diffusion-xl-base-1.0"  # overridden by --base or INSTANTID_BASE


class GenerationError(RuntimeError):
    """Generation failed or produced an unusable image (NaN, all black, out of memory)."""


@dataclass
class GenerationResult:
    """One generated image with its timing, its preset's layers and the face that conditioned it."""

    image: PIL.Image.Image  # RGB output
    step_times_s: list[float]  # per denoising step
    total_s: float  # whole generation including text encoding and decoding
    preset: str  # preset name or spec
    layer_count: int  # layers that carried the face branch
    layers: tuple[str, ...]  # their names
    face: Face  # the face that conditioned the image
    switch_s: float = 0.0  # time to swap processors for this preset
    warnings: list[str] = field(default_factory=list)
    timing_mode: str = "eager"  # how the steps ran (and were timed): "graphs", "eager" or "mixed" (a fallback)


class Engine:
    """A loaded InstantID stack; presets switch by swapping processors on the same UNet."""

    def __init__(self, name: str, pipe: InstantIDPipeline, patcher: FacePatcher, face_analyzer: FaceAnalyzer) -> None:
        self.name = name
        self.pipe = pipe
        self.patcher = patcher
        self.face_analyzer = face_analyzer
        self.known_map = layer_map_for(pipe.unet)  # None: selective presets are refused
        self.layers = self.known_map or patcher.layers
        self.device = pipe.unet.device
        self.dtype = pipe.unet.dtype
        self._lock = threading.Lock()
        self.telemetry: dict[str, float] | None = None  # {layer: mean face/text ratio}; enables "auto-K"
        self.cuda_graphs = "auto"  # auto | on | off: captured CUDA-graph steps (auto: on for CUDA)
        self.graph_runner: GraphStepRunner | None = None  # made on first graphed generation; tests may set one

    def step_runner(self) -> StepRunner:
        """The step runner generation uses: the graph runner when ``cuda_graphs`` allows it, else eager."""
        if self.cuda_graphs == "off":
            return EagerStepRunner(self.pipe)
        if self.graph_runner is None and resolve_graph_mode(self.cuda_graphs, self.device):
            self.graph_runner = GraphStepRunner(self.pipe, self.patcher)
        return self.graph_runner or EagerStepRunner(self.pipe)

    def load_telemetry(self, path: str | Path) -> dict[str, float]:
        """Load per-layer contributions (``python -m instantid.bench --telemetry``) so "auto-K" resolves."""
        from .telemetry import load_telemetry

        self.telemetry = load_telemetry(path)
        return self.telemetry

    def resolve(self, preset: Preset | str, ip_weight: float = 0.8) -> tuple[Preset, frozenset[str], list[str]]:
        """The preset, the layer names it patches on this UNet, and warnings (unknown topology: all layers)."""
        from .telemetry import auto_preset, is_auto_spec

        auto = is_auto_spec(preset)
        if auto is not None:
            preset = auto_preset(self.telemetry or {}, int(auto.group(1)))
            unknown = preset.layers - set(self.patcher.face)
            if unknown:
                raise PresetError(f"telemetry names layers this UNet lacks: {sorted(unknown)[:3]}")
            return preset, preset.layers, []
        if self.known_map is None:
            name = preset if isinstance(preset, str) else preset.name
            layers, warnings = select_layers(name, None, available=self.patcher.face)
            start, end = preset_window(name) if isinstance(preset, str) else (preset.start, preset.end)
            return Preset(name=name, layers=layers, start=start, end=end), layers, warnings
        if isinstance(preset, str):
            preset = resolve_preset(preset, self.known_map, ip_weight=ip_weight)
        layers, warnings = select_layers(preset, self.known_map, ip_weight=ip_weight)
        return preset, layers, warnings

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the CLIP tokenizer makes of ``prompt`` (with start/end); above 77 the rest is cut off."""
        return len(self.pipe.tokenizer(prompt, truncation=False).input_ids)

    def generate(self, request: GenerationRequest, preset: Preset | str = "full",
                 progress: Callable[[int, int], None] | None = None) -> GenerationResult:
        """Check the request, find the face, patch the preset's layers and run the pipeline; ``progress(done, total)``
        is called after each denoising step. Raises RequestError, PresetError, NoFaceError or GenerationError."""
        start = time.perf_counter()
        settings = request.settings  # checked when the request was made (instantid/settings.py)
        preset, layers, warnings = self.resolve(preset, settings.ip_weight)
        face = request.face
        if face is None:
            if request.face_image is None:
                raise ValueError("a face image or an analysed face is required")
            faces = self.face_analyzer.detect(request.face_image)
            if not faces:
                raise NoFaceError("no face found in the reference image; use a photo with a clearly visible face")
            face = faces[0]
            if len(faces) > 1:
                warnings.append(f"{len(faces)} faces found; the largest is used")
        tokens = self.prompt_tokens(request.prompt)
        limit = self.pipe.tokenizer.model_max_length
        if tokens > limit:
            warnings.append(f"prompt is {tokens} tokens; CLIP reads the first {limit}, the rest was truncated")
        size = (settings.width, settings.height)
        source = request.face_image.size if request.face_image is not None else size
        hint = draw_kps(size, fit_kps(face.kps, source, size))
        with self._lock:  # one generation at a time: processors, face state and scheduler are shared
            runner = self.step_runner()
            out, switch_s = self._run(request, preset, layers, face, hint, progress, runner)
            mode, reason = timing_mode(runner), getattr(runner, "fallback_reason", None)
        image = out.images[0]
        check_output(out.latents, image)
        order = [layer.name for layer in self.layers if layer.name in layers]
        if mode != "graphs" and reason:
            warnings.append(reason)
        return GenerationResult(image=image, step_times_s=out.step_times_s, total_s=time.perf_counter() - start,
                                preset=preset.name, layer_count=len(layers), layers=tuple(order),
                                face=face, switch_s=switch_s, warnings=warnings, timing_mode=mode)

    def _run(self, request: GenerationRequest, preset: Preset, layers: frozenset[str], face: Face,
             hint: PIL.Image.Image, progress: Callable[[int, int], None] | None,
             runner: StepRunner) -> tuple[InstantIDPipelineOutput, float]:
        settings = request.settings
        self.patcher.set_scale(settings.ip_weight)
        runner.graph_steps = runner.eager_steps = 0  # this generation's count (timing_mode)
        switch_s = self.patcher.apply(layers)
        try:
            out = self.pipe(
                request.prompt, image=hint, face_embedding=face.embedding, negative_prompt=settings.negative_prompt,
                width=settings.width, height=settings.height, num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale, controlnet_conditioning_scale=settings.cn_scale,
                generator=torch.Generator("cpu").manual_seed(request.seed),
                callback_on_step_end=progress_callback(progress), face_window=(preset.start, preset.end),
                step_runner=runner)
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"out of memory at {settings.size}: {exc}") from exc
        finally:
            self.patcher.clear_cache()
        return out, switch_s

    def describe(self) -> dict:
        """The stack, device, dtype, versions and layer count (the benchmark's and the app's metadata)."""
        import diffusers

        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {"stack": self.name, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "torch": torch.__version__, "diffusers": diffusers.__version__, "gpu_name": gpu,
                "layers": len(self.layers), "known_map": self.known_map is not None}


def progress_callback(progress: Callable[[int, int], None] | None) -> Callable[..., dict] | None:
    """``progress(done, total)`` as diffusers' ``callback_on_step_end`` (changes no tensor)."""
    if progress is None:
        return None

    def on_step_end(pipe: InstantIDPipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
        progress(step + 1, pipe.num_timesteps)
        return {}

    return on_step_end


def check_output(latents: torch.Tensor, image: PIL.Image.Image) -> None:
    """Refuse NaN/Inf latents and an all-black image instead of storing them."""
    if not torch.isfinite(latents).all():
        raise GenerationError("the generation produced NaN or infinite values (try fp32/bf16 or a lower ip_weight)")
    if int(np.asarray(image).max()) == 0:
        raise GenerationError("the generation produced an all-black image")


def _pick_device(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        return dev, torch.float16 if dev.type == "cuda" else torch.float32
    return dev, {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}[dtype]


def tiny_face_folder() -> Path:
    root = Path(os.environ.get("INSTANTID_CACHE", Path.home() / ".cache" / "instantid"))
    return root / "tiny-face-models"


def load_engine(stack: str = "tiny", *, base: str | None = None, device: str | None = None,
                dtype: str | None = None, face_model_root: str | None = None, seed: int = 0,
                cuda_graphs: str = "auto") -> Engine:
    """``"tiny"``: the offline random stack. Otherwise an InstantID folder / repo id (``ip-adapter.bin`` +
    ``ControlNetModel/``) with the SDXL base from ``base``, ``$INSTANTID_BASE`` or the SDXL hub id.
    ``cuda_graphs``: auto | on | off, captured CUDA-graph denoising steps (instantid/graphs.py; auto: on CUDA)."""
    from .tiny import TinyConfig, random_adapter_state, tiny_components
    from .tiny_face_models import build_tiny_face_models

    dev, torch_dtype = _pick_device(device, dtype)
    resolve_graph_mode(cuda_graphs, dev)  # a bad mode, or "on" without CUDA, fails before anything loads
    if stack == "tiny":
        config = TinyConfig(seed=seed)
        pipe = InstantIDPipeline(**tiny_components(config))
        layers = layer_map_for(pipe.unet)
        state = random_adapter_state(layers, layer_widths(pipe.unet, layers),
                                     resampler_width=config.resampler_width, seed=seed)
        patcher = attach_face_adapter(pipe, state, "tiny random face adapter")
        analyzer = FaceAnalyzer(name=str(build_tiny_face_models(tiny_face_folder())))
    else:
        adapter_file = find_adapter_file(stack)
        state = read_adapter(adapter_file)
        controlnet = load_controlnet(stack, torch_dtype)
        pipe = load_base(InstantIDPipeline, base or os.environ.get("INSTANTID_BASE", DEFAULT_BASE), controlnet,
                         torch_dtype)
        patcher = attach_face_adapter(pipe, state, str(adapter_file))
        analyzer = FaceAnalyzer(root=face_model_root)
    # real weights load in torch_dtype already; the tiny stack is built in fp32 and cast once here
    cast_modules([*pipe.components.values(), patcher.modules, pipe.resampler], torch_dtype)
    pipe.to(dev)
    patcher.modules.to(dev)
    pipe.resampler.to(dev)
    pipe.set_progress_bar_config(disable=True)
    logger.info("loaded %s on %s (%s)", stack, dev, torch_dtype)
    engine = Engine(stack, pipe, patcher, analyzer)
    engine.cuda_graphs = cuda_graphs
    return engine


__all__ = ["Engine", "GenerationError", "GenerationRequest", "GenerationResult", "WeightsError", "load_engine"]

"""Step runners: what computes one denoising step's noise prediction for :func:`~instantid.step.run_denoising`.

* :class:`StepRunner` is the interface: ``bind(inputs)`` once per generation, ``predict(...)`` per step.
* :class:`EagerStepRunner` runs :func:`~instantid.step.denoise_step` op by op (the reference).
* :class:`~instantid.graphs.GraphStepRunner` replays captured CUDA graphs of the same step (instantid/graphs.py).

``--cuda-graphs auto|on|off`` picks one (:func:`resolve_graph_mode`); :func:`timing_mode` says afterwards how a
generation's steps actually ran.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from .step import StepInputs, denoise_step

logger = logging.getLogger(__name__)

GRAPH_MODES = ("auto", "on", "off")  # --cuda-graphs: auto = on for CUDA, off elsewhere


class StepRunner(Protocol):
    """Computes the CFG noise prediction of one denoising step."""

    mode: str  # "eager" or "graphs"

    def bind(self, inputs: StepInputs) -> None:
        """Take a generation's inputs (before its first step)."""

    def predict(self, inputs: StepInputs, latents: torch.Tensor, t: torch.Tensor, *, step: int,
                active: bool) -> torch.Tensor:
        """The noise prediction for ``latents`` at ``t``; ``active``: the face branch runs in this step."""


def resolve_graph_mode(mode: str, device: torch.device) -> bool:
    """Whether ``--cuda-graphs MODE`` captures graphs on ``device`` (auto: on for CUDA); "on" off CUDA is refused."""
    if mode not in GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(GRAPH_MODES)}, got {mode!r}")
    if mode == "on" and device.type != "cuda":
        raise ValueError(f"--cuda-graphs on needs a CUDA device; this engine runs on {device} (use auto or off)")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class EagerStepRunner:
    """The reference: each step runs op by op (``denoise_step``)."""

    mode = "eager"

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.graph_steps = 0  # never: kept so callers can read every runner alike
        self.eager_steps = 0

    def bind(self, inputs: StepInputs) -> None:
        """Nothing to copy: the eager step reads ``inputs`` directly."""

    def predict(self, inputs: StepInputs, latents: torch.Tensor, t: torch.Tensor, *, step: int,
                active: bool) -> torch.Tensor:
        """Set the face-branch state and run the step."""
        state = self.pipe.face_state
        if state is not None:
            state.step, state.active = step, active
        self.eager_steps += 1
        return denoise_step(self.pipe, inputs, t, latents)



def timing_mode(runner) -> str:
    """"graphs" when every step of the generation replayed a graph, "eager" when none did, else "mixed"."""
    graphs, eager = getattr(runner, "graph_steps", 0), getattr(runner, "eager_steps", 0)
    if graphs and not eager:
        return "graphs"
    return "mixed" if graphs else "eager"



__all__ = ["GRAPH_MODES", "EagerStepRunner", "StepRunner", "resolve_graph_mode", "timing_mode"]

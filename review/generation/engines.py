"""The app's engine: loaded once on first use, with ``generate`` routed through ZeroGPU's ``spaces.GPU`` on Spaces.

Under ZeroGPU each decorated call gets a GPU in a worker process; the engine loads there, inside the GPU context,
on the first call, and only the request and the preset cross the process boundary (never the engine). Without the
``spaces`` package the decorator is not applied and generation runs in this process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

try:  # ZeroGPU: each decorated call gets a GPU; without the package the decorator does nothing
    import spaces
except ImportError:
    spaces = None

LOAD_S, GENERATE_S = 300, 120  # GPU time asked for: the first call also loads the engine


class Engines:
    """Loads the engine once, on first use (thread-safe). ``get()`` is the engine with ``generate`` routed
    through ``spaces.GPU`` (GpuEngine); ``load()`` the engine itself."""

    def __init__(self, weights: str | None) -> None:
        self.stack = weights or "tiny"
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the engine is loaded already."""
        return self._engine is not None

    def load(self) -> Any:
        """The engine, loaded on the first call."""
        with self._lock:
            if self._engine is None:
                from instantid import load_engine

                logger.info("loading the %s engine ...", self.stack)
                self._engine = load_engine(self.stack)
                logger.info("engine ready: %s", self._engine.describe())
            return self._engine

    def get(self) -> GpuEngine:
        """The engine with ``generate`` routed through ``spaces.GPU``."""
        return GpuEngine(self)


ENGINES: Engines | None = None  # set by install_engines(); the GPU function reaches the engine through it


def _gpu_seconds(request: Any, preset: Any) -> int:
    return GENERATE_S if ENGINES is not None and ENGINES.loaded else LOAD_S


def _generate(request: Any, preset: Any) -> Any:
    """One generation. Under ZeroGPU this runs in the GPU worker: the engine loads there, inside the GPU context,
    on the first call; only the request and the preset cross the process boundary (never the engine)."""
    assert ENGINES is not None
    return ENGINES.load().generate(request, preset)


_generate_on_gpu = spaces.GPU(duration=_gpu_seconds)(_generate) if spaces is not None else _generate


class GpuEngine:
    """The engine with ``generate`` routed through ``spaces.GPU`` (everything else delegated, loaded on use)."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines

    def generate(self, request: Any, preset: Any = "full", progress: Any = None) -> Any:
        """``Engine.generate`` in the GPU worker (``progress`` stays here: it cannot cross the boundary)."""
        return _generate_on_gpu(request, preset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engines.load(), name)


def install_engines(weights: str | None) -> Engines:
    """The process's engines (``weights`` None: the offline tiny stack), reachable from the GPU function."""
    global ENGINES
    ENGINES = Engines(weights)
    return ENGINES

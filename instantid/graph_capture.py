"""How a denoising step is captured and replayed: real CUDA graphs, or an eager stand-in on CPU.

:class:`~instantid.graphs.GraphStepRunner` calls ``backend.capture(fn, device)`` once per graph and
``backend.replay(handle)`` per step. :class:`CudaGraphBackend` follows PyTorch's rule for ``torch.cuda.graph``
(warm-up calls on a side stream, then one captured call). :class:`EagerStandInBackend` keeps the function and a
static output buffer instead, so the runner's keys, buffers, K/V refresh and fallback are tested without a GPU
(tests/test_graphs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

WARMUP_CALLS = 2  # eager calls on a side stream before capture (cuDNN/cuBLAS autotuning, lazy init, K/V cache)


class CudaGraphBackend:
    """``torch.cuda.CUDAGraph`` capture (warm-up on a side stream first) and replay."""

    stand_in = False

    def capture(self, fn: Callable[[], torch.Tensor | None], device: torch.device,
                warmup: int = WARMUP_CALLS) -> tuple[object, torch.Tensor | None]:
        """Warm up ``fn`` on a side stream, then capture one call; returns (graph, its static output)."""
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA work (the app's) does not invalidate this capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = fn()
        torch.cuda.synchronize(device)
        return graph, output

    def replay(self, handle: object) -> None:
        """Launch the captured kernels on the current stream."""
        handle.replay()  # type: ignore[attr-defined]


class EagerStandInBackend:
    """CPU stand-in for capture/replay with the same static-buffer contract: "capture" warms up, then keeps the
    function and a static output buffer; "replay" calls it again and copies into that buffer. The runner pins
    each cached layer's K/V to the entry's buffers first, so the eager step reads what the graph would."""

    stand_in = True

    def __init__(self, pipe, fail_with: BaseException | None = None) -> None:
        self.pipe = pipe
        self.fail_with = fail_with  # tests: simulate a capture failure

    def capture(self, fn: Callable[[], torch.Tensor | None], device: torch.device,
                warmup: int = WARMUP_CALLS) -> tuple[object, torch.Tensor | None]:
        """No warm-up (an eager call needs none; the "capture" call fills the K/V caches as the CUDA warm-up
        does), then keep ``fn`` and a static output buffer."""
        if self.fail_with is not None:
            raise self.fail_with
        output = fn()
        output = None if output is None else output.clone()
        return (fn, output), output

    def replay(self, handle: object) -> None:
        """Call the kept function; its result goes into the static output."""
        fn, output = handle  # type: ignore[misc]
        result = fn()
        if output is not None:
            output.copy_(result)



__all__ = ["WARMUP_CALLS", "CudaGraphBackend", "EagerStandInBackend"]

"""The app's engine holder (review/generation/engines.py): loaded once, inside the ZeroGPU call when ``spaces`` is
installed; the GPU time asked for covers the first call's loading."""

from __future__ import annotations

import importlib
import sys
import types

import instantid


class FakeEngine:
    def __init__(self, stack: str) -> None:
        self.stack, self.calls = stack, []

    def describe(self) -> dict:
        return {"stack": self.stack}

    def generate(self, request, preset):
        self.calls.append((request, preset))
        return f"{request}-{preset}"


def test_generation_runs_inside_the_gpu_call_and_loads_the_engine_there_once(monkeypatch):
    seen: list[tuple[str, int, bool]] = []
    loads: list[str] = []

    def gpu(duration):
        def wrap(fn):
            def call(*args):
                from review.generation import engines as holder
                seen.append(("gpu", duration(*args), holder.ENGINES.loaded))  # asked for before the call runs
                return fn(*args)
            return call
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setattr(instantid, "load_engine", lambda stack: loads.append(stack) or FakeEngine(stack))
    import review.generation.engines as engines_module

    engines_module = importlib.reload(engines_module)  # the decorator is applied at import, as on Spaces
    try:
        engines = engines_module.install_engines(None)
        assert engines.stack == "tiny" and not engines.loaded and loads == []  # nothing loads at start
        front = engines.get()
        assert front.generate("r1", "fast") == "r1-fast"
        assert front.generate("r2", "full") == "r2-full"
        assert loads == ["tiny"]  # once, inside the first GPU call
        assert seen == [("gpu", engines_module.LOAD_S, False), ("gpu", engines_module.GENERATE_S, True)]
        assert front.describe() == {"stack": "tiny"}  # everything else is the engine's own
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(engines_module)  # back to the undecorated module for the other tests


def test_without_spaces_generation_runs_in_this_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    monkeypatch.setattr(instantid, "load_engine", FakeEngine)
    import review.generation.engines as engines_module

    engines_module = importlib.reload(engines_module)
    assert engines_module.spaces is None and engines_module._generate_on_gpu is engines_module._generate
    assert engines_module.install_engines("/weights").get().generate("r", "none") == "r-none"

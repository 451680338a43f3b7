"""Shared test setup: offline hub, quiet threads. Fixtures that build tiny components live beside the tests that use them
or in tests/fixtures_*.py; session-wide ones are registered here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# one torch/OpenMP thread: the tiny stack is dispatch-bound, and two threads on a shared 2-core machine spin against
# each other (tests/test_face_attention.py + tests/test_engine.py: 183 s with 2 threads, 25 s with 1, load ~2)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture()
def one_thread():
    """One torch thread for the test, put back afterwards: the tiny stack is dispatch-bound, and two threads on a
    shared 2-core CPU crawl (seconds per step)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny InstantID pipeline (SDXL topology, random weights) with its face adapter attached."""
    from instantid.adapter import attach_face_adapter
    from instantid.layers import layer_map_for
    from instantid.loading import layer_widths
    from instantid.pipeline import InstantIDPipeline
    from instantid.tiny import TinyConfig, random_adapter_state, tiny_components

    config = TinyConfig()
    pipe = InstantIDPipeline(**tiny_components(config))
    layers = layer_map_for(pipe.unet)
    state = random_adapter_state(layers, layer_widths(pipe.unet, layers), resampler_width=config.resampler_width)
    patcher = attach_face_adapter(pipe, state, "tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe, patcher, state


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory):
    """The whole offline engine, as the app runs it (tiny face models in a temporary cache)."""
    import os

    os.environ["INSTANTID_CACHE"] = str(tmp_path_factory.mktemp("instantid-cache"))
    from instantid import load_engine

    return load_engine("tiny")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the modules that hold a ``slow`` test first (each module's own order kept, so module fixtures are built
    once): with ``pytest -n 2`` (make test) the long tests start at once and the short ones fill in around them,
    instead of one worker finishing a long test alone at the end."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow") and item.module}
    items.sort(key=lambda item: 0 if item.module and item.module.__name__ in slow_modules else 1)

"""Shared test setup: offline hub, quiet threads. Fixtures that build tiny components live beside the tests that use them
or in tests/fixtures_*.py; session-wide ones are registered here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_NUM_THREADS", "2")

"""Hugging Face Spaces (and any host) set-up that happens before the app starts: where the study lives, and which
onnxruntime wheel the face models run on.

- ``storage_root()``: ``/data/review`` when a persistent volume is mounted at ``/data`` (a Space with a storage
  bucket), else ``var`` in the working directory (wiped with a Space's restart). REVIEW_DB / REVIEW_DATA still win.
- ``ensure_onnxruntime(choice)``: REVIEW_ORT=gpu swaps the ``onnxruntime`` wheel for ``onnxruntime-gpu``
  (requirements-gpu.txt) once, before anything imports it, so a GPU Space needs no edited requirements file.
  Both wheels write the same ``onnxruntime/`` folder: the CPU one is uninstalled first, the GPU one force-installed
  without dependencies (docs/spaces.md). Face analysis works with either wheel (CUDA provider when available).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

PERSISTENT_DIR = "/data"  # where Spaces mount a storage bucket; REVIEW_PERSISTENT_DIR overrides (tests)
GPU_REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-gpu.txt"


def storage_root() -> Path:
    """``<persistent dir>/review`` when the persistent directory exists and is writable, else ``var``."""
    persistent = Path(os.environ.get("REVIEW_PERSISTENT_DIR", PERSISTENT_DIR))
    if persistent.is_dir() and os.access(persistent, os.W_OK):
        return persistent / "review"
    return Path("var")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def ensure_onnxruntime(choice: str | None) -> bool:
    """For ``choice == "gpu"``: make onnxruntime-gpu the installed wheel (pip, once). Returns True when it
    changed anything. Call before onnxruntime is imported. Any other choice: nothing."""
    if (choice or "").strip().lower() != "gpu":
        return False
    if "onnxruntime" in sys.modules:
        logger.warning("REVIEW_ORT=gpu: onnxruntime is already imported; the wheel is left as it is")
        return False
    if _installed("onnxruntime-gpu") and not _installed("onnxruntime"):
        return False
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    logger.info("REVIEW_ORT=gpu: replacing onnxruntime with onnxruntime-gpu (%s)", GPU_REQUIREMENTS.name)
    if _installed("onnxruntime"):
        subprocess.run([*pip, "uninstall", "-y", "onnxruntime"], check=True)
    subprocess.run([*pip, "install", "--force-reinstall", "--no-deps", "-r", str(GPU_REQUIREMENTS)], check=True)
    return True

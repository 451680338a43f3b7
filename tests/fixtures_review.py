"""A small study written straight through the Store API (no engine): faces, conditions, pairs of noise images;
and a review app launched on a free local port."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from review.images import write_image
from review.store import Store
from review.study.services import AppConfig, DataDirs, Services
from review.study.trials import StudyConfig

PRESETS = ("balanced", "fast", "output_only")
ALL_NAMES = ("full", "selective", "balanced", "fast", "output_only", "none", "adaptive")


def make_study(root: Path, *, seeds: Sequence[int] = (0, 1), presets: Sequence[str] = PRESETS,
               size: int = 64, shared_full: bool = False) -> tuple[Store, DataDirs]:
    """len(seeds) x len(presets) pairs (one face); images are seeded noise, full != selective. With
    ``shared_full`` the presets of a seed share one condition and its full arm (as real studies do)."""
    dirs = DataDirs.under(root).make()
    store = Store(root / "study.db")
    rng = np.random.default_rng(0)
    face_pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    face_file = write_image(dirs.faces, face_pixels)
    face = store.add_face(sha256=hashlib.sha256(face_pixels.tobytes()).hexdigest(), file=face_file.file,
                          width=size, height=size, label="noise")
    def generation(preset: str, count: int, cond_id: int) -> dict:
        image = write_image(dirs.images, rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        row = store.add_image(file=image.file, sha256=image.sha256, width=size, height=size)
        return store.add_generation(condition_id=cond_id, preset=preset, layers=[f"l{i}" for i in range(count)],
                                    layer_count=count, image_id=row["id"], total_s=1.0, step_times=[0.25] * 4,
                                    device="cpu", dtype="float32", versions={"torch": "x"}, run_id="r1")

    for seed in seeds:
        # a reviewer gets one pair per condition; by default every pair has its own condition (and full arm)
        groups = [list(presets)] if shared_full else [[p] for p in presets]
        for j, group in enumerate(groups):
            cond = store.upsert_condition(face_id=face["id"], prompt="a portrait", negative_prompt="",
                                          seed=seed * 1000 + j, steps=4, width=size, height=size, ip_weight=0.8,
                                          cn_scale=0.8, guidance_scale=5.0, stack="tiny")
            full = generation("full", 10, cond["id"])
            for preset in group:
                sel = generation(preset, 3, cond["id"])
                store.add_pair(full_generation_id=full["id"], selective_generation_id=sel["id"], ssim=0.9)
    return store, dirs


def make_services(root: Path, *, password: str | None = "s3cret-admin", study: StudyConfig | None = None,
                  **kwargs) -> Services:
    store, dirs = make_study(root, **kwargs)
    config = AppConfig(study=study or StudyConfig(), admin_password=password,
                       banner="Offline tiny stack: random weights; images are noise, not faces.",
                       preset_choices=("balanced", "fast", "output_only", "none", "adaptive"))
    return Services(store=store, dirs=dirs, config=config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def launched(services: Services) -> Iterator[str]:
    """The app on 127.0.0.1:<free port>, served as app.py serves it; yields its base URL."""
    from review.ui.app import build_demo
    from review.ui.serving import Server

    server = Server(build_demo(services), services, "127.0.0.1", free_port()).start()
    try:
        yield server.url
    finally:
        server.close()

"""Timing mode per generation (issue 14): stored by migration v3, joined into pair rows, never pooled in a ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from review.stats.leaderboard import leaderboard
from review.store import LATEST, Store, StoreIntegrityError

T0 = "2025-01-01T00:00:00.000+00:00"


def _arm(store: Store, cond: int, preset: str, image: int, mode: str, steps: list[float]) -> dict:
    img = store.add_image(file=f"{image:x}" * 32 + ".png", sha256="b" * 64, width=64, height=64)
    return store.add_generation(condition_id=cond, preset=preset, layers=["l0"], layer_count=1, image_id=img["id"],
                                total_s=1.0, step_times=steps, device="cuda:0", dtype="float16", versions={},
                                run_id="run1", timing_mode=mode)


def test_generations_store_their_timing_mode_and_pairs_carry_it(tmp_path: Path):
    with Store(tmp_path / "s.db", clock=lambda: T0) as store:
        assert store.schema_version() == LATEST
        face = store.add_face(sha256="a" * 64, file="faces/a.jpg", label="a", width=64, height=64)
        cond = store.upsert_condition(face_id=face["id"], prompt="p", negative_prompt="", seed=1, steps=2, width=64,
                                      height=64, ip_weight=0.8, cn_scale=0.8, guidance_scale=5.0, stack="tiny")
        full = _arm(store, cond["id"], "full", 1, "graphs", [0.2, 0.2])
        sel = _arm(store, cond["id"], "fast", 2, "eager", [0.1, 0.1])
        assert (full["timing_mode"], sel["timing_mode"]) == ("graphs", "eager")
        pair = store.add_pair(full_generation_id=full["id"], selective_generation_id=sel["id"], ssim=0.9)
        row = store.get_pair(pair["id"])
        assert (row["full_timing_mode"], row["sel_timing_mode"]) == ("graphs", "eager")
        with pytest.raises(StoreIntegrityError):
            _arm(store, cond["id"], "balanced", 3, "compiled", [0.1])


def _rows(mode_full: str, mode_sel: str, ratio: float, n: int, start: int) -> list[dict]:
    return [{"pair_id": start + i, "preset": "fast", "layer_count": 20, "condition_id": f"c{start + i}",
             "ssim": 0.97, "id_cos_sel_full": 0.99, "id_cos_sel_ref": 0.7, "id_cos_full_ref": 0.7,
             "identity_failure": None, "full_step_median_s": 0.1, "sel_step_median_s": 0.1 * ratio,
             "full_run_id": "r", "sel_run_id": "r", "full_device": "cuda:0", "sel_device": "cuda:0",
             "full_timing_mode": mode_full, "sel_timing_mode": mode_sel} for i in range(n)]


def test_the_step_ratio_never_pools_graphs_and_eager_timings():
    graphs = _rows("graphs", "graphs", 0.95, 12, 0)
    eager = _rows("eager", "eager", 0.80, 5, 100)
    crossed = _rows("graphs", "eager", 0.50, 3, 200)  # arms timed differently: no ratio at all
    row = next(r for r in leaderboard(graphs + eager + crossed, [], seed=1)["rows"] if r["preset"] == "fast")
    assert row["timing_mode"] == "graphs" and row["timing_device"] == "cuda:0"
    assert row["n_timing_pairs"] == 12 and row["n_timing_excluded"] == 8
    assert row["step_ratio"] == pytest.approx(0.95)
    old = [{k: v for k, v in r.items() if "timing_mode" not in k} for r in eager]  # rows from before v3: eager
    row = next(r for r in leaderboard(old, [], seed=1)["rows"] if r["preset"] == "fast")
    assert row["timing_mode"] == "eager" and np.isclose(row["step_ratio"], 0.8)

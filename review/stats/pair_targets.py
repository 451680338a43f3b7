"""Pair-level statistics of one preset: the step-time ratio, SSIM and identity against the proposal's targets.

These need no reviewer: each pair's timings and image metrics were stored when it was generated
(``review.generation.jobs``). ``review.stats.leaderboard`` calls :func:`pair_block` once per preset.
"""

from __future__ import annotations

import logging
import math
import zlib

import numpy as np

from review.stats import basics as st

logger = logging.getLogger(__name__)

SSIM_TARGET = 0.95  # proposal: SSIM > 0.95 vs full
IDENTITY_TARGET = 0.98  # proposal: face-recognition cosine > 0.98 vs full
MIN_PAIRS = 5  # fewer pairs than this -> pair-level targets are 'not enough data'


def sub_seed(seed: int, *parts: str) -> int:
    """A reproducible, distinct seed per (seed, preset, statistic)."""
    words = [seed] + [zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _floats(rows: list[dict], key: str) -> np.ndarray:
    """The values under ``key`` as floats, None as NaN."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def _verdict(lo: float | None, hi: float | None, threshold: float, *, above: bool, enough: bool = True) -> str:
    """'met' when the CI lies on the wanted side of ``threshold``, 'not met' when on the other side."""
    if not enough or lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "not enough data"
    if above:
        return "met" if lo > threshold else "not met" if hi <= threshold else "not enough data"
    return "met" if hi < threshold else "not met" if lo >= threshold else "not enough data"


def _mode(row: dict, arm: str) -> str:
    """A pair arm's timing mode; rows from before the column were eager."""
    return row.get(f"{arm}_timing_mode") or "eager"


def pair_block(preset: str, rows: list[dict], seed: int, n_boot: int) -> dict[str, object]:
    """Pair-level statistics for one preset (independent of reviewers)."""
    out: dict[str, object] = {"n_pairs": len(rows)}
    full_t, sel_t = _floats(rows, "full_step_median_s"), _floats(rows, "sel_step_median_s")
    same = np.array([r.get("full_run_id") is not None and r.get("full_run_id") == r.get("sel_run_id")
                     and r.get("full_device") is not None and r.get("full_device") == r.get("sel_device")
                     and _mode(r, "full") == _mode(r, "sel") for r in rows], dtype=bool)
    ok = same & (full_t > 0) & (sel_t > 0)
    # one device and one timing mode (graphs / eager) per ratio: pairs timed otherwise than the most common
    # (device, mode) are excluded, never pooled
    kinds = [(r.get("full_device"), _mode(r, "full")) for r, keep in zip(rows, ok, strict=True) if keep]
    out["timing_device"], out["timing_mode"] = max(set(kinds), key=kinds.count) if kinds else (None, None)
    ok &= np.array([(r.get("full_device"), _mode(r, "full")) == (out["timing_device"], out["timing_mode"])
                    for r in rows], dtype=bool)
    ratio = sel_t[ok] / full_t[ok]
    out["n_timing_pairs"], out["n_timing_excluded"] = int(ok.sum()), int((~ok).sum())  # after the device rule
    out["step_ratio"] = float(np.exp(np.log(ratio).mean())) if ratio.size else math.nan
    out["step_ratio_ci"] = st.bootstrap_ci(ratio, "geomean", n_boot=n_boot, seed=sub_seed(seed, preset, "ratio"))

    ssim = _floats(rows, "ssim")
    ssim = ssim[~np.isnan(ssim)]
    out["n_ssim"] = int(ssim.size)
    out["ssim_mean"] = float(ssim.mean()) if ssim.size else math.nan
    out["ssim_ci"] = st.bootstrap_ci(ssim, "mean", n_boot=n_boot, seed=sub_seed(seed, preset, "ssim"))
    k = int((ssim > SSIM_TARGET).sum())
    out["ssim_share_above"] = k / ssim.size if ssim.size else math.nan
    out["ssim_share_above_ci"] = st.wilson_ci(k, ssim.size)

    failed = np.array([bool(r.get("identity_failure")) for r in rows], dtype=bool)
    out["identity_failures"] = int(failed.sum())
    for key in ("id_cos_sel_full", "id_cos_sel_ref", "id_cos_full_ref"):
        cos = _floats(rows, key)
        cos = cos[~failed & ~np.isnan(cos)]
        out[f"n_{key}"] = int(cos.size)
        out[f"{key}_mean"] = float(cos.mean()) if cos.size else math.nan
        out[f"{key}_ci"] = st.bootstrap_ci(cos, "mean", n_boot=n_boot, seed=sub_seed(seed, preset, key))
        denom, k = int(cos.size + failed.sum()), int((cos > IDENTITY_TARGET).sum())
        out[f"{key}_share_above"] = k / denom if denom else math.nan
        out[f"{key}_share_above_ci"] = st.wilson_ci(k, denom)
    out["targets"] = {
        "ssim_above_0.95": _verdict(*out["ssim_ci"], SSIM_TARGET, above=True, enough=ssim.size >= MIN_PAIRS),
        # a pair whose face was lost fails identity: any failure makes the target 'not met'
        "identity_above_0.98": "not met" if failed.any() else _verdict(
            *out["id_cos_sel_full_ci"], IDENTITY_TARGET, above=True, enough=out["n_id_cos_sel_full"] >= MIN_PAIRS),
        "faster_than_full": _verdict(*out["step_ratio_ci"], 1.0, above=False, enough=ratio.size >= MIN_PAIRS),
    }
    return out

"""Leaderboard rows for the selective-vs-full study (pure: plain rows in, a JSON-ready dict out).

Input rows (as ``review/store.py`` returns them; extra keys are ignored):

pairs: one per (condition, selective preset) comparison with the full arm
    {pair_id, preset: str, layer_count: int, condition_id,
     ssim: float | None,                          # selective vs full image
     id_cos_sel_full, id_cos_sel_ref, id_cos_full_ref: float | None,   # ArcFace cosines
     identity_failure: str | None,                # reason when a face could not be measured; never imputed
     full_step_median_s, sel_step_median_s: float | None,              # median denoising-step time
     full_run_id, sel_run_id, full_device, sel_device: str | None,
     full_timing_mode, sel_timing_mode: 'graphs' | 'eager' | 'mixed' | None (None/absent: eager)}
votes: one per answered trial
    {trial_id, pair_id, preset: str, condition_id, reviewer_id: str,
     mode: 'preference' | 'abx', is_gold: bool, left_arm: 'full' | 'selective',
     choice: 'left' | 'right' | 'same' (preference) or 'a' | 'b' (ABX; A is the left image),
     outcome: 'selective' | 'full' | 'same' (preference) or 'correct' | 'wrong' (ABX)}

Rules
- Gold trials (identical images, preference only; the right answer is 'same') never enter preset statistics;
  they only screen reviewers: >= ``min_gold`` gold trials and accuracy < ``gold_threshold`` -> failing.
  ``rows_without_failing`` repeats the rows without the failing reviewers.
- Preference: ties ('same') are excluded from the binomial test and reported (``tie_rule``).
- Step-time ratio: per pair ``sel_step_median_s / full_step_median_s``, only when both timings come from the
  same run_id, the same device and the same timing mode (CUDA graphs or eager: never pooled; the most common
  (device, mode) is used, ``timing_device`` / ``timing_mode``; others are counted in ``n_timing_excluded``); summarised by the geometric
  mean with a percentile bootstrap CI over pairs.
- SSIM / identity: means with percentile bootstrap CIs over pairs. Pairs with ``identity_failure`` are counted
  as failures, left out of the cosine means, and count as "not above" in the ``*_share_above`` shares.
- Vote-level intervals are Wilson; ``*_cluster_ci`` is a two-way (reviewer x condition) cluster bootstrap.
- Targets ('met' / 'not met' / 'not enough data'): mean SSIM > 0.95 and mean id_cos_sel_full > 0.98 by their
  95 % CI (lower above -> met, upper at or below -> not met); < 10 % identify by the identification-rate Wilson
  95 % CI (upper < 0.10 -> met, lower >= 0.10 -> not met); faster by the step-ratio CI (upper < 1 -> met,
  lower >= 1 -> not met). Fewer than ``MIN_PAIRS`` pairs -> 'not enough data'.
- Equivalence: ``equivalence`` holds ``review.stats.equivalence_verdict`` (one-sided 95 % Clopper-Pearson
  upper bound on vote-level ABX accuracy < ``margin``); it treats votes as independent, so compare
  ``abx_cluster_ci`` (reviewer x condition bootstrap) before claiming equivalence on few reviewers.
Only reviewer_id, preset, condition_id, mode, is_gold, choice and outcome are read from votes.

Output: ``{"rows": [...], "rows_without_failing": [...], "bradley_terry", "bradley_terry_without_failing",
"side_bias", "gold", "failing_reviewers", "excluded_reviewers", "settings"}``; a row has preset, layer_count,
n_pairs, n_timing_pairs, n_timing_excluded, step_ratio(_ci), n_ssim, ssim_mean/_ci/_share_above/_share_above_ci,
identity_failures, n_/..._mean/_ci/_share_above/_share_above_ci for each of id_cos_sel_full / id_cos_sel_ref /
id_cos_full_ref, n_preference, pref_selective/_same/_full counts, pref_*_share and pref_*_ci,
pref_selective_share_non_tie (+ Wilson and cluster CIs), pref_p_value, tie_rule, n_abx, abx_correct,
abx_accuracy, abx_ci, abx_cluster_ci, abx_p_greater, identification_rate(_ci), equivalence {verdict,
upper_bound, bound_method, margin, p_greater, votes_needed}, n_votes, n_reviewers, n_conditions and targets
{ssim_above_0.95, identity_above_0.98, faster_than_full, identify_under_10pct}. NaN is reported as ``None``,
intervals as ``[low, high]``.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from operator import itemgetter

import numpy as np

from review import stats as st
from review.bradley_terry import bradley_terry

logger = logging.getLogger(__name__)

SSIM_TARGET = 0.95  # proposal: SSIM > 0.95 vs full
IDENTITY_TARGET = 0.98  # proposal: face-recognition cosine > 0.98 vs full
IDENTIFY_TARGET = 0.10  # proposal: < 10 % of people can identify the selective image
MIN_PAIRS = 5  # fewer pairs than this -> pair-level targets are 'not enough data'
TIE_RULE = "ties ('same') are excluded from the binomial test and reported as their own count"
_VOTE_KEYS = ("reviewer_id", "preset", "condition_id", "mode", "is_gold", "choice", "outcome")


def _sub_seed(seed: int, *parts: str) -> int:
    """A reproducible, distinct seed per (seed, preset, statistic)."""
    words = [seed] + [zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _codes(values: Sequence[object]) -> tuple[np.ndarray, list[object]]:
    """Integer codes in order of first appearance, and the distinct values."""
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values)), list(index)


def _is(codes: tuple[np.ndarray, list[object]], *wanted: str) -> np.ndarray:
    """Mask of the rows whose coded value is one of ``wanted``."""
    return np.isin(codes[0], [i for i, value in enumerate(codes[1]) if value in wanted])


def _floats(rows: list[dict], key: str) -> np.ndarray:
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


def _pair_block(preset: str, rows: list[dict], seed: int, n_boot: int) -> dict[str, object]:
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
    out["step_ratio_ci"] = st.bootstrap_ci(ratio, "geomean", n_boot=n_boot, seed=_sub_seed(seed, preset, "ratio"))

    ssim = _floats(rows, "ssim")
    ssim = ssim[~np.isnan(ssim)]
    out["n_ssim"] = int(ssim.size)
    out["ssim_mean"] = float(ssim.mean()) if ssim.size else math.nan
    out["ssim_ci"] = st.bootstrap_ci(ssim, "mean", n_boot=n_boot, seed=_sub_seed(seed, preset, "ssim"))
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
        out[f"{key}_ci"] = st.bootstrap_ci(cos, "mean", n_boot=n_boot, seed=_sub_seed(seed, preset, key))
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


def _vote_block(preset: str, v: dict[str, np.ndarray], mask: np.ndarray, seed: int, n_boot_cluster: int,
                margin: float, alpha: float, power: float) -> dict[str, object]:
    """Vote-level statistics for one preset over the votes selected by ``mask`` (non-gold already)."""
    pref, abx = mask & v["is_pref"], mask & v["is_abx"]
    sel, tie, full = (int((pref & v["out_sel"]).sum()), int((pref & v["out_same"]).sum()),
                      int((pref & v["out_full"]).sum()))
    n_pref, n_nt = sel + tie + full, sel + full
    out: dict[str, object] = {"n_preference": n_pref, "pref_selective": sel, "pref_same": tie, "pref_full": full,
                              "tie_rule": TIE_RULE}
    for name, k in (("selective", sel), ("same", tie), ("full", full)):
        out[f"pref_{name}_share"] = k / n_pref if n_pref else math.nan
        out[f"pref_{name}_ci"] = st.wilson_ci(k, n_pref)
    out["pref_selective_share_non_tie"] = sel / n_nt if n_nt else math.nan
    out["pref_selective_non_tie_ci"] = st.wilson_ci(sel, n_nt)
    nt = pref & (v["out_sel"] | v["out_full"])
    out["pref_selective_non_tie_cluster_ci"] = st.cluster_bootstrap_ci(
        v["out_sel"][nt], v["reviewer"][nt], v["condition"][nt], n_boot=n_boot_cluster,
        seed=_sub_seed(seed, preset, "pref"))
    out["pref_p_value"] = st.binom_p_two_sided(sel, n_nt)

    valid_abx = abx & (v["correct"] | v["wrong"])
    k, n = int((valid_abx & v["correct"]).sum()), int(valid_abx.sum())
    out.update({"n_abx": n, "abx_correct": k, "abx_accuracy": k / n if n else math.nan,
                "abx_ci": st.wilson_ci(k, n), "abx_p_greater": st.binom_p_greater(k, n)})
    out["abx_cluster_ci"] = st.cluster_bootstrap_ci(
        v["correct"][valid_abx], v["reviewer"][valid_abx], v["condition"][valid_abx], n_boot=n_boot_cluster,
        seed=_sub_seed(seed, preset, "abx"))
    rate, lo, hi = st.identification_rate(k, n)
    out.update({"identification_rate": rate, "identification_ci": (lo, hi)})
    out["equivalence"] = st.equivalence_verdict(k, n, margin, alpha, power)
    used = pref | valid_abx
    out["n_votes"] = int(used.sum())
    out["n_reviewers"] = int(np.unique(v["reviewer"][used]).size)
    out["n_conditions"] = int(np.unique(v["condition"][used]).size)
    out["targets"] = {"identify_under_10pct": _verdict(lo, hi, IDENTIFY_TARGET, above=False, enough=n > 0)}
    return out


def _vote_arrays(votes: list[dict]) -> tuple[dict[str, np.ndarray], list[object], list[object]]:
    try:  # fast path: every row has every key
        cols = {key: list(map(itemgetter(key), votes)) for key in _VOTE_KEYS}
    except KeyError:
        cols = {key: [r.get(key) for r in votes] for key in _VOTE_KEYS}
    reviewer, reviewer_names = _codes(cols["reviewer_id"])
    preset, preset_names = _codes(cols["preset"])
    mode, outcome, choice, gold = (_codes(cols[k]) for k in ("mode", "outcome", "choice", "is_gold"))
    v = {"reviewer": reviewer, "condition": _codes(cols["condition_id"])[0], "preset": preset,
         "is_gold": np.isin(gold[0], [i for i, g in enumerate(gold[1]) if g]),
         "is_pref": _is(mode, "preference"), "is_abx": _is(mode, "abx"),
         "out_sel": _is(outcome, "selective"), "out_full": _is(outcome, "full"), "out_same": _is(outcome, "same"),
         "correct": _is(outcome, "correct"), "wrong": _is(outcome, "wrong"),
         "left": _is(choice, "left", "a"), "right": _is(choice, "right", "b"), "same_choice": _is(choice, "same")}
    bad = ~((v["is_pref"] & (v["out_sel"] | v["out_full"] | v["out_same"]))
            | (v["is_abx"] & (v["correct"] | v["wrong"])))
    if bad.any():
        logger.warning("%d vote rows with an unknown mode/outcome are ignored", int(bad.sum()))
    return v, reviewer_names, preset_names


def _bt(v: dict[str, np.ndarray], mask: np.ndarray, preset_names: list[object], items: list[str],
        n_boot: int, seed: int) -> dict[str, object]:
    """Bradley-Terry over the non-gold preference votes in ``mask``: each is 'full' vs its preset."""
    pref = mask & v["is_pref"] & (v["out_sel"] | v["out_full"] | v["out_same"])
    score_full = np.where(v["out_full"][pref], 1.0, np.where(v["out_same"][pref], 0.5, 0.0))
    items_b = [str(preset_names[i]) for i in v["preset"][pref]]
    return bradley_terry(["full"] * len(items_b), items_b, score_full, anchor="full", items=items,
                         n_boot=n_boot, seed=_sub_seed(seed, "bt"))


def leaderboard(
    pairs: list[dict], votes: list[dict], *, exclude_reviewers: set[str] | frozenset[str] = frozenset(),
    margin: float = 0.60, seed: int = 0, n_boot: int = 1000, n_boot_cluster: int = 200, n_boot_bt: int = 100,
    gold_threshold: float = 0.7, min_gold: int = 3, alpha: float = 0.05, power: float = 0.8,
) -> dict[str, object]:
    """Per-preset leaderboard plus Bradley-Terry, side bias, gold screening and rows without failing reviewers.

    ``n_boot``: percentile-bootstrap replicates for pair statistics; ``n_boot_cluster``: two-way cluster
    bootstrap replicates for vote shares; ``n_boot_bt``: Bradley-Terry bootstrap replicates.
    """
    v, reviewer_names, preset_names = _vote_arrays(votes)
    names = np.array([str(r) for r in reviewer_names], dtype=object)
    keep = ~np.isin(v["reviewer"], [i for i, r in enumerate(reviewer_names) if r in exclude_reviewers])
    gold = keep & v["is_gold"] & v["is_pref"]
    if (v["is_gold"] & ~v["is_pref"]).any():
        logger.warning("gold trials are preference only; %d non-preference gold votes ignored",
                       int((v["is_gold"] & ~v["is_pref"]).sum()))
    gold_table, failing = st.gold_screening(names[v["reviewer"][gold]], v["same_choice"][gold],
                                            threshold=gold_threshold, min_trials=min_gold)
    live = keep & ~v["is_gold"]
    without = live & ~np.isin(v["reviewer"], [i for i, r in enumerate(names) if r in set(failing)])

    by_preset: dict[str, list[dict]] = {}
    for r in pairs:
        by_preset.setdefault(str(r["preset"]), []).append(r)
    voted = {str(preset_names[i]) for i in np.unique(v["preset"][live])}
    layer_counts = {p: rows_[0].get("layer_count") for p, rows_ in by_preset.items()}

    def order(p: str) -> tuple[int, str]:  # most patched layers first; presets without pairs last
        count = layer_counts.get(p)
        return (-count if count is not None else 1, p)

    presets = sorted(set(by_preset) | voted, key=order)
    rows, rows_wo = [], []
    for p in presets:
        base = {"preset": p, "layer_count": layer_counts.get(p)}
        pair_part = _pair_block(p, by_preset.get(p, []), seed, n_boot)
        pmask = np.isin(v["preset"], [i for i, name in enumerate(preset_names) if str(name) == p])
        for target, mask in ((rows, live & pmask), (rows_wo, without & pmask)):
            if target is rows_wo and not failing:  # nothing to drop: same numbers
                rows_wo.append(rows[-1])
                continue
            vote_part = _vote_block(p, v, mask, seed, n_boot_cluster, margin, alpha, power)
            row = {**base, **pair_part, **vote_part}
            row["targets"] = {**pair_part["targets"], **vote_part["targets"]}
            target.append(row)

    items = ["full", *[p for p in presets if p != "full"]]
    bt = _bt(v, live, preset_names, items, n_boot_bt, seed)
    bt_wo = _bt(v, without, preset_names, items, n_boot_bt, seed) if failing else bt
    pref_lr, abx_lr = (live & v["is_pref"] & (v["left"] | v["right"]),
                       live & v["is_abx"] & (v["left"] | v["right"]))
    side = st.side_bias(v["left"][pref_lr], names[v["reviewer"][pref_lr]])
    side["abx"] = {k: val for k, val in st.side_bias(v["left"][abx_lr]).items() if k != "per_reviewer"}
    result = {"rows": rows, "rows_without_failing": rows_wo, "bradley_terry": bt,
              "bradley_terry_without_failing": bt_wo, "side_bias": side,
              "gold": gold_table, "failing_reviewers": failing, "excluded_reviewers": sorted(exclude_reviewers),
              "settings": {"margin": margin, "alpha": alpha, "power": power, "seed": seed, "n_boot": n_boot,
                           "n_boot_cluster": n_boot_cluster, "n_boot_bt": n_boot_bt,
                           "gold_threshold": gold_threshold, "min_gold": min_gold, "tie_rule": TIE_RULE}}
    return _clean(result)


def _clean(x: object) -> object:
    """NaN -> None, numpy scalars -> Python, tuples -> lists (JSON-ready)."""
    if isinstance(x, dict):
        return {k: _clean(val) for k, val in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(val) for val in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x

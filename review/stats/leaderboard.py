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
    {trial_id, pair_id, preset: str, condition_id, reviewer_id: str, session: str | None,
     mode: 'preference' | 'abx', is_gold: bool, left_arm: 'full' | 'selective', x_arm: str | None (ABX),
     choice: 'left' | 'right' | 'same' (preference) or 'a' | 'b' (ABX; A is the left image),
     outcome: 'selective' | 'full' | 'same' (preference) or 'correct' | 'wrong' (ABX),
     correct: 1 | 0 | None (gold and catch trials: answered right)}

Rules
- Gold and catch trials never enter preset statistics; they screen reviewers (``review.stats.screening``: a unit passes
  when its gold answers beat chance), per (reviewer, session) by default. Failing units are left out of ``rows``,
  Bradley-Terry and side bias; ``rows_including_failing`` etc. keep them (one click away in every view).
- Verdicts (``equivalence``, ``preference_reviewer``) are reviewer-level and anytime-valid with Holm over the
  presets (``review.stats.verdicts``, docs/statistics.md); the vote-level Wilson intervals, exact binomial p-values and
  the two-way cluster bootstrap (``*_cluster_ci``) are descriptive only.
- Preference: ties ('same') are excluded from the binomial test and reported (``tie_rule``).
- Step-time ratio: per pair ``sel_step_median_s / full_step_median_s``, only when both timings come from the
  same run_id, the same device and the same timing mode (CUDA graphs or eager: never pooled; the most common
  (device, mode) is used, ``timing_device`` / ``timing_mode``; others are counted in ``n_timing_excluded``); summarised by the geometric
  mean with a percentile bootstrap CI over pairs.
- SSIM / identity: means with percentile bootstrap CIs over pairs. Pairs with ``identity_failure`` are counted
  as failures, left out of the cosine means, and count as "not above" in the ``*_share_above`` shares.
- Targets ('met' / 'not met' / 'not enough data'): mean SSIM > 0.95 and mean id_cos_sel_full > 0.98 by their
  95 % CI (lower above -> met, upper at or below -> not met); < 10 % identify: met when the ABX verdict is
  'indistinguishable' at a margin of at most 10 % identification, not met when the reviewer-level lower bound of
  the identification rate is 10 % or more; faster by the step-ratio CI (upper < 1 -> met, lower >= 1 -> not met).
  Fewer than ``MIN_PAIRS`` pairs -> 'not enough data'.

Output keys: docs/contracts.md ("Verdicts, screening and allocation") lists them. NaN is reported as ``None``,
intervals as ``[low, high]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from operator import itemgetter

import numpy as np

from review.stats import basics as st
from review.stats import verdicts as vd
from review.stats.bradley_terry import bradley_terry
from review.stats.pair_targets import pair_block, sub_seed
from review.stats.screening import screen, screening_units
from review.stats.verdict_config import VerdictConfig

logger = logging.getLogger(__name__)

IDENTIFY_TARGET = 0.10  # proposal: < 10 % of people can identify the selective image
TIE_RULE = "ties ('same') are excluded from the binomial test and reported as their own count"
_VOTE_KEYS = ("reviewer_id", "preset", "condition_id", "mode", "is_gold", "choice", "outcome", "session", "x_arm",
              "left_arm", "correct")


def _codes(values: Sequence[object]) -> tuple[np.ndarray, list[object]]:
    """Integer codes in order of first appearance, and the distinct values."""
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values)), list(index)


def _is(codes: tuple[np.ndarray, list[object]], *wanted: object) -> np.ndarray:
    """Mask of the rows whose coded value is one of ``wanted``."""
    return np.isin(codes[0], [i for i, value in enumerate(codes[1]) if value in wanted])


def _vote_block(preset: str, v: dict[str, np.ndarray], mask: np.ndarray, seed: int, n_boot_cluster: int,
                config: VerdictConfig) -> dict[str, object]:
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
        seed=sub_seed(seed, preset, "pref"))
    out["pref_p_value"] = st.binom_p_two_sided(sel, n_nt)

    valid_abx = abx & (v["correct"] | v["wrong"])
    k, n = int((valid_abx & v["correct"]).sum()), int(valid_abx.sum())
    out.update({"n_abx": n, "abx_correct": k, "abx_accuracy": k / n if n else math.nan,
                "abx_ci": st.wilson_ci(k, n), "abx_p_greater": st.binom_p_greater(k, n)})
    out["abx_cluster_ci"] = st.cluster_bootstrap_ci(
        v["correct"][valid_abx], v["reviewer"][valid_abx], v["condition"][valid_abx], n_boot=n_boot_cluster,
        seed=sub_seed(seed, preset, "abx"))
    # the verdict statistics: reviewer-level, anytime-valid (review.stats.verdicts); the figures above are descriptive
    reviewer_abx = vd.abx_block(v["correct"][valid_abx], v["reviewer"][valid_abx], v["condition"][valid_abx],
                                v["left"][valid_abx], v["x_is_a"][valid_abx], config)
    out["abx_reviewer"] = reviewer_abx
    out["identification_rate"] = reviewer_abx["identification_rate"]
    out["identification_ci"] = reviewer_abx["identification_ci"]
    out["abx_dprime"], out["abx_dprime_ci"] = reviewer_abx["dprime"], reviewer_abx["dprime_ci"]
    out["preference_reviewer"] = vd.preference_block(v["out_sel"][nt], v["reviewer"][nt], v["condition"][nt], config)
    used = pref | valid_abx
    out["n_votes"] = int(used.sum())
    out["n_reviewers"] = int(np.unique(v["reviewer"][used]).size)
    out["n_conditions"] = int(np.unique(v["condition"][used]).size)
    out["targets"] = {}  # identify_under_10pct: set with the verdict (``_identify_target``)
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
    # ABX: X shows the arm of A (the left image) or of B; an older trial without x_arm had X = full
    x_arm = ["full" if x is None else x for x in cols["x_arm"]]
    v["x_is_a"] = np.fromiter((x == a for x, a in zip(x_arm, cols["left_arm"], strict=True)), dtype=bool,
                              count=len(votes))
    # a gold/catch vote is right when the store says so (votes.correct); older preference gold: 'same' is right
    stored = _codes(cols["correct"])
    known = ~_is(stored, None)
    v["gold_correct"] = np.where(known, _is(stored, 1, True), np.where(v["is_pref"], v["same_choice"], v["correct"]))
    v["session"], v["session_names"] = _codes(cols["session"])
    bad = ~((v["is_pref"] & (v["out_sel"] | v["out_full"] | v["out_same"]))
            | (v["is_abx"] & (v["correct"] | v["wrong"]))
            | (v["is_gold"] & (v["correct"] | v["wrong"])))  # gold with an expected answer (catch trials)
    if bad.any():
        logger.warning("%d vote rows with an unknown mode/outcome are ignored", int(bad.sum()))
    return v, reviewer_names, preset_names


def _bt(v: dict[str, np.ndarray], mask: np.ndarray, preset_names: list[object], items: list[str],
        n_boot: int, seed: int) -> dict[str, object]:
    """Bradley-Terry over the non-gold preference votes in ``mask``: each is 'full' vs its preset."""
    pref = mask & v["is_pref"] & (v["out_sel"] | v["out_full"] | v["out_same"])
    score_full = np.where(v["out_full"][pref], 1.0, np.where(v["out_same"][pref], 0.5, 0.0))
    items_b = [str(preset_names[i]) for i in v["preset"][pref]]
    out = bradley_terry(["full"] * len(items_b), items_b, score_full, anchor="full", items=items,
                        n_boot=n_boot, seed=sub_seed(seed, "bt"))
    # every comparison here is full vs one preset: each strength is that preset's logit share of the votes
    # (ties half), so BT restates the preference shares and is never used as further evidence for a verdict
    out["all_against_anchor"] = True
    out["note"] = ("every comparison is full vs one preset, so each strength is that preset's logit preference "
                   "share (votes treated as independent): a ranking aid, not evidence beyond the preference verdict")
    return out


def leaderboard(
    pairs: list[dict], votes: list[dict], *, config: VerdictConfig | None = None,
    exclude_reviewers: set[str] | frozenset[str] = frozenset(), margin: float | None = None,
    alpha: float | None = None, power: float | None = None, seed: int = 0, n_boot: int = 1000,
    n_boot_cluster: int = 200, n_boot_bt: int = 100,
) -> dict[str, object]:
    """Per-preset leaderboard with reviewer-level, anytime-valid verdicts (Holm over presets), gold screening
    (failing units left out of ``rows`` by default; ``rows_including_failing`` keeps them), side bias and
    Bradley-Terry.

    ``config``: the study's verdict settings (``margin``/``alpha``/``power`` override its fields);
    ``n_boot``: percentile-bootstrap replicates for pair statistics; ``n_boot_cluster``: the descriptive two-way
    cluster bootstrap of vote shares; ``n_boot_bt``: Bradley-Terry bootstrap replicates.
    """
    config = config or VerdictConfig()
    overrides = {k: val for k, val in (("margin", margin), ("alpha", alpha), ("power", power)) if val is not None}
    config = replace(config, **overrides) if overrides else config
    v, reviewer_names, preset_names = _vote_arrays(votes)
    names = np.array([str(r) for r in reviewer_names], dtype=object)
    keep = ~np.isin(v["reviewer"], [i for i, r in enumerate(reviewer_names) if r in exclude_reviewers])
    # screening unit per vote: (reviewer, session) or reviewer
    unit_codes, labels = screening_units(v["reviewer"], names, v["session"], v["session_names"], config.screen_by)
    v["unit"] = unit_codes  # screening unit; the verdicts cluster by reviewer id (the coarser, safer unit)
    gold = keep & v["is_gold"]
    gold_table, failing_units = screen(np.array(labels, dtype=object)[unit_codes[gold]], v["gold_correct"][gold],
                                       gold_alpha=config.gold_alpha, chance=config.gold_chance)
    failing_set = set(failing_units)
    failing_codes = [i for i, label in enumerate(labels) if label in failing_set]
    failing = sorted({str(names[v["reviewer"][unit_codes == i][0]]) for i in failing_codes})
    live = keep & ~v["is_gold"]
    screened = live & ~np.isin(unit_codes, failing_codes)

    by_preset: dict[str, list[dict]] = {}
    for r in pairs:
        by_preset.setdefault(str(r["preset"]), []).append(r)
    voted = {str(preset_names[i]) for i in np.unique(v["preset"][live])}
    layer_counts = {p: rows_[0].get("layer_count") for p, rows_ in by_preset.items()}

    def order(p: str) -> tuple[int, str]:  # most patched layers first; presets without pairs last
        count = layer_counts.get(p)
        return (-count if count is not None else 1, p)

    presets = sorted(set(by_preset) | voted, key=order)
    rows, rows_all = [], []
    for p in presets:
        base = {"preset": p, "layer_count": layer_counts.get(p)}
        pair_part = pair_block(p, by_preset.get(p, []), seed, n_boot)
        pmask = np.isin(v["preset"], [i for i, name in enumerate(preset_names) if str(name) == p])
        for target, mask in ((rows, screened & pmask), (rows_all, live & pmask)):
            if target is rows_all and not failing:  # nothing was dropped: same numbers
                rows_all.append(rows[-1])
                continue
            vote_part = _vote_block(p, v, mask, seed, n_boot_cluster, config)
            row = {**base, **pair_part, **vote_part}
            row["targets"] = {**pair_part["targets"], **vote_part["targets"]}
            target.append(row)
    error_control = vd.decide(rows, config)
    if failing:
        vd.decide(rows_all, config)
    for row in {id(r): r for r in rows + rows_all}.values():
        row["targets"]["identify_under_10pct"] = vd.identify_target(row, config, IDENTIFY_TARGET)

    items = ["full", *[p for p in presets if p != "full"]]
    bt = _bt(v, screened, preset_names, items, n_boot_bt, seed)
    bt_all = _bt(v, live, preset_names, items, n_boot_bt, seed) if failing else bt
    side, side_all = _side(v, screened, names), (_side(v, live, names) if failing else None)
    settings = {**asdict(config), "identification_margin": config.identification_margin,
                "error_control": error_control, "seed": seed, "n_boot": n_boot, "n_boot_cluster": n_boot_cluster,
                "n_boot_bt": n_boot_bt, "tie_rule": TIE_RULE, "verdict_method": vd.METHOD,
                "planned_votes": vd.planned_votes(config.margin, config.alpha, config.power, config.design_votes),
                "gold_rule": f"pass when P(guessing scores >= k of n gold | chance {config.gold_chance}) <= "
                             f"{config.gold_alpha}; screened per {config.screen_by}"}
    result = {"rows": rows, "rows_without_failing": rows, "rows_including_failing": rows_all,
              "bradley_terry": bt, "bradley_terry_without_failing": bt, "bradley_terry_including_failing": bt_all,
              "side_bias": side, "side_bias_including_failing": side_all or side,
              "gold": gold_table, "failing_units": failing_units, "failing_reviewers": failing,
              "excluded_reviewers": sorted(exclude_reviewers), "settings": settings}
    return _clean(result)


def _side(v: dict[str, np.ndarray], mask: np.ndarray, names: np.ndarray) -> dict[str, object]:
    """Side bias of the non-gold votes in ``mask`` (preference: left chosen; ABX: A chosen)."""
    pref_lr, abx_lr = (mask & v["is_pref"] & (v["left"] | v["right"]), mask & v["is_abx"] & (v["left"] | v["right"]))
    side = st.side_bias(v["left"][pref_lr], names[v["reviewer"][pref_lr]])
    side["abx"] = {k: val for k, val in st.side_bias(v["left"][abx_lr]).items() if k != "per_reviewer"}
    return side


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

"""Readable views of a ``review.stats.leaderboard.leaderboard`` result: a per-preset table, a speed/quality plot, verdict
text (Markdown) and a plain-text table for the CLI. Pure formatting: no Gradio, no torch, no store.

Missing statistics (``None`` in the result) show as an em dash; reviewer ids are shortened to 8 characters
(a reviewer id is the token a browser claims its votes with, so a page must never show it whole).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from review.stats.pair_targets import IDENTITY_TARGET, SSIM_TARGET

logger = logging.getLogger(__name__)

Row = dict[str, Any]
DASH = "—"
HEADERS: tuple[str, ...] = (
    "Preset", "Layers", "Pairs", "Step time vs full [95% CI]", "SSIM mean [95% CI] · share > 0.95",
    "Identity cos sel-full [95% CI] · share > 0.98", "Identity failures",
    "Preference selective / same / full · p", "ABX accuracy [95% CI] · p", "Identification rate [95% CI]",
    "Equivalence (ABX)", "Targets", "Votes", "Reviewers", "Conditions",
)
TARGET_LABELS: dict[str, str] = {  # result key -> short label
    "ssim_above_0.95": "SSIM > 0.95", "identity_above_0.98": "identity > 0.98",
    "faster_than_full": "faster than full", "identify_under_10pct": "identified < 10%",
}
METRICS: dict[str, tuple[str, float, str]] = {  # plot metric -> (row key prefix, target, axis label)
    "ssim": ("ssim", SSIM_TARGET, "SSIM selective vs full (mean, 95% CI)"),
    "identity": ("id_cos_sel_full", IDENTITY_TARGET, "ArcFace cosine selective vs full (mean, 95% CI)"),
}


def _rows(result: Row, include_failing: bool) -> list[Row]:
    """The screened rows (default) or, on request, the rows including reviewers who fail the gold screening."""
    return list(result.get("rows_including_failing" if include_failing else "rows") or [])


def _num(x: float | None, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{x:.0%}"


def _ci(ci: Sequence[float | None] | None, digits: int = 3, *, pct: bool = False) -> str:
    if not ci or any(v is None for v in ci):
        return ""
    lo, hi = ci
    return f"[{_pct(lo)}, {_pct(hi)}]" if pct else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _p(p: float | None) -> str:
    return DASH if p is None else f"{p:.3g}"


def short_id(reviewer_id: str) -> str:
    """The first 8 characters of a reviewer id (enough to tell reviewers apart, not enough to claim one)."""
    return reviewer_id if len(reviewer_id) <= 8 else reviewer_id[:8] + "…"


def _step_cell(r: Row) -> str:
    excluded = r.get("n_timing_excluded") or 0
    note = f" ({excluded} excluded: other run/device)" if excluded else ""
    if r.get("step_ratio") is None:
        return f"no timing{note}"
    return f"{r['step_ratio']:.2f}× {_ci(r.get('step_ratio_ci'), 2)} (n={r.get('n_timing_pairs')}){note}"


def _mean_cell(r: Row, key: str, target: float) -> str:
    if r.get(f"{key}_mean") is None:
        return DASH
    return f"{r[f'{key}_mean']:.3f} {_ci(r.get(f'{key}_ci'))} · {_pct(r.get(f'{key}_share_above'))} > {target}"


def _pref_cell(r: Row) -> str:
    if not r.get("n_preference"):
        return DASH
    parts = [f"{r[f'pref_{k}']} ({_pct(r.get(f'pref_{k}_share'))})" for k in ("selective", "same", "full")]
    return " / ".join(parts) + f" · p={_p(r.get('pref_p_value'))}"


def _abx_cell(r: Row) -> str:
    if not r.get("n_abx"):
        return DASH
    return (f"{_num(r.get('abx_accuracy'), 2)} {_ci(r.get('abx_ci'), 2)} · p={_p(r.get('abx_p_greater'))} "
            f"(n={r['n_abx']})")


def _ident_cell(r: Row) -> str:
    if r.get("identification_rate") is None:
        return DASH
    dprime = f" · d' {_num(r.get('abx_dprime'), 2)} {_ci(r.get('abx_dprime_ci'), 2)}" if r.get("abx_dprime") is not None else ""
    return f"{_pct(r['identification_rate'])} {_ci(r.get('identification_ci'), pct=True)}{dprime}"


def equivalence_text(eq: Row | None) -> str:
    """The verdict with its margin, always: 'indistinguishable (upper 0.53 < margin 0.55)', 'distinguishable
    (lower 0.58 > 0.5, margin 0.55)' or 'not enough votes (upper 0.57, margin 0.55; plan 1323 votes, +N)'."""
    if not eq:
        return DASH
    verdict, margin = eq.get("verdict", DASH), _num(eq.get("margin"), 2)
    note = f"; {eq['note']}" if eq.get("note") else ""
    if verdict == "indistinguishable":
        return f"{verdict} (upper {_num(eq.get('upper_bound'), 3)} < margin {margin}{note})"
    if verdict == "distinguishable":
        return f"{verdict} (lower {_num(eq.get('lower_bound'), 3)} > 0.5, margin {margin}{note})"
    need = eq.get("votes_needed")
    plan = f"; plan {eq.get('planned_votes')} ABX votes" + (f", +{need}" if need else "")
    return f"{verdict} (upper {_num(eq.get('upper_bound'), 3)}, margin {margin}{plan}{note})"


def targets_text(targets: Row | None) -> str:
    """The acceptance targets as one line of text (a dash when there are none)."""
    return "; ".join(f"{TARGET_LABELS.get(k, k)}: {v}" for k, v in (targets or {}).items()) or DASH


def table(result: Row, include_failing: bool = False) -> tuple[list[str], list[list[Any]]]:
    """(headers, one row per preset); counts stay ints, everything else is display text."""
    rows = []
    for r in _rows(result, include_failing):
        rows.append([
            r["preset"], r.get("layer_count"), r.get("n_pairs", 0), _step_cell(r),
            _mean_cell(r, "ssim", SSIM_TARGET), _mean_cell(r, "id_cos_sel_full", IDENTITY_TARGET),
            r.get("identity_failures", 0), _pref_cell(r), _abx_cell(r), _ident_cell(r),
            equivalence_text(r.get("equivalence")), targets_text(r.get("targets")),
            r.get("n_votes", 0), r.get("n_reviewers", 0), r.get("n_conditions", 0),
        ])
    return list(HEADERS), rows


def text_table(result: Row, include_failing: bool = False) -> str:
    """The table for a terminal, transposed (one column per preset, one line per statistic)."""
    headers, rows = table(result, include_failing)
    if not rows:
        return "No pairs or votes in the database yet."
    cells = [[h, *("" if row[i] is None else str(row[i]) for row in rows)] for i, h in enumerate(headers)
             if h != "Targets"]
    at = headers.index("Targets")
    for key, label in TARGET_LABELS.items():  # one line per target instead of one long cell
        cells.insert(at, [f"Target: {label}",
                          *(str((r.get("targets") or {}).get(key, DASH)) for r in _rows(result, include_failing))])
        at += 1
    widths = [max(len(line[c]) for line in cells) for c in range(len(cells[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _err(value: float, ci: Sequence[float | None] | None) -> list[list[float]] | None:
    if not ci or any(v is None for v in ci):
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def speed_quality_plot(result: Row, metric: str = "ssim", include_failing: bool = False) -> Figure:
    """Step-time ratio vs full (x) against SSIM or identity cosine (y), one labelled point per preset with both
    values; presets lacking either are named in the title as 'no data'. Rendered with Agg (no pyplot state)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, not {metric!r}")
    key, target, label = METRICS[metric]
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    missing: list[str] = []
    for r in _rows(result, include_failing):
        x, y = r.get("step_ratio"), r.get(f"{key}_mean")
        if x is None or y is None:
            missing.append(str(r["preset"]))
            continue
        ax.errorbar([x], [y], xerr=_err(x, r.get("step_ratio_ci")), yerr=_err(y, r.get(f"{key}_ci")),
                    fmt="o", capsize=3, label=str(r["preset"]))
        ax.annotate(f"{r['preset']} ({r.get('layer_count')} layers)", (x, y), xytext=(6, 6),
                    textcoords="offset points", fontsize=8)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="full (ratio 1.0)")
    ax.axhline(target, color="tab:red", linestyle=":", linewidth=1, label=f"target {target}")
    ax.set_xlabel("denoising-step time vs full (geometric mean, 95% CI; < 1 is faster)")
    ax.set_ylabel(label)
    title = f"Speed vs {'SSIM' if metric == 'ssim' else 'identity'} per preset"
    if missing:
        title += f"\nno data: {', '.join(missing)}"
    elif not ax.containers:
        title += "\nno data yet"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def _bt_lines(bt: Row) -> list[str]:
    items = bt.get("items") or []
    if not items:
        return ["No preference votes yet."]
    lines = [f"Anchor: {bt.get('anchor')} = 0; {bt.get('n_comparisons')} comparisons, "
             f"{bt.get('n_boot')} bootstrap replicates; {bt.get('tie_rule')}.", "",
             "| preset | strength [95% CI] | Elo [95% CI] | comparisons |", "|---|---|---|---|"]
    for it in items:
        if it.get("strength") is None:
            lines.append(f"| {it['item']} | not estimated (no comparisons) | {DASH} | {it.get('n', 0)} |")
            continue
        lines.append(f"| {it['item']} | {it['strength']:+.2f} {_ci(it.get('ci'), 2)} | "
                     f"{_num(it.get('elo'), 0)} {_ci(it.get('elo_ci'), 0)} | {it.get('n', 0)} |")
    return lines


def _side_lines(side: Row) -> list[str]:
    lines = []
    for name, block in (("Preference (left image chosen)", side), ("ABX (A chosen)", side.get("abx") or {})):
        if not block.get("n"):
            lines.append(f"- {name}: no non-tie choices yet")
            continue
        lines.append(f"- {name}: {_pct(block.get('left_share'))} {_ci(block.get('ci'), pct=True)} of "
                     f"{block['n']}, two-sided p={_p(block.get('p_value'))}")
    biased = sorted(short_id(rid) for rid, row in (side.get("per_reviewer") or {}).items()
                    if row.get("p_value") is not None and row["p_value"] < 0.05)
    if biased:
        lines.append(f"- reviewers with a side preference (p < 0.05): {', '.join(biased)}")
    return lines


def verdicts_markdown(result: Row, include_failing: bool = False) -> str:
    """Verdict per preset (with margin and error control), side bias, gold screening, Bradley-Terry and the rules."""
    settings = result.get("settings") or {}
    rows = _rows(result, include_failing)
    out = ["### Verdicts" + (" (including reviewers who fail the gold screening)" if include_failing else
                             " (reviewers who fail the gold screening left out)")]
    margin, alpha = settings.get("margin"), settings.get("alpha")
    ident = settings.get("identification_margin")
    out.append(f"Margin: ABX accuracy {margin} (= {_pct(ident)} of people identifying the image); "
               f"error control: {settings.get('error_control', DASH)}.")
    for r in rows:
        pref = (r.get("preference_reviewer") or {}).get("verdict")
        out.append(f"- **{r['preset']}** ({r.get('layer_count')} layers): ABX {equivalence_text(r.get('equivalence'))}"
                   + (f"; preference: {pref}" if pref and r.get("n_preference") else "")
                   + f"; {targets_text(r.get('targets'))}")
    if not rows:
        out.append("- no pairs or votes yet")
    side_key = "side_bias_including_failing" if include_failing else "side_bias"
    out += ["", "### Side bias", *_side_lines(result.get(side_key) or result.get("side_bias") or {})]
    failing = [short_id(r) for r in result.get("failing_reviewers") or []]
    excluded = [short_id(r) for r in result.get("excluded_reviewers") or []]
    out += ["", "### Reviewers",
            f"- gold screening ({settings.get('gold_rule', DASH)}): {len(result.get('gold') or {})} units with "
            f"gold trials; failing: {', '.join(failing) or 'none'}"
            + ("" if include_failing else " (left out of every figure above; tick the box to include them)")]
    if excluded:
        out.append(f"- excluded by request: {', '.join(excluded)}")
    bt_key = "bradley_terry_including_failing" if include_failing else "bradley_terry"
    bt = result.get(bt_key) or {}
    out += ["", "### Bradley-Terry (preference votes; not used for verdicts)", *_bt_lines(bt)]
    if bt.get("note"):
        out.append(f"\n_{bt['note']}._")
    level = f"{1 - alpha:.0%}" if alpha is not None else "95%"
    out += ["", "### Rules",
            f"- Tie rule: {settings.get('tie_rule', DASH)}.",
            f"- ABX verdicts ({settings.get('verdict_method', DASH)}): 'distinguishable' when the {level} lower "
            f"bound is above chance 0.5; 'indistinguishable' when the {level} upper bound is below the margin "
            f"{margin} and no test against chance (reviewer- or vote-level) rejects. The bounds are valid at every "
            "look, so watching this page does not raise the error rates; Wilson intervals and p-values are "
            "descriptive (votes as if independent).",
            f"- Planned ABX votes per preset: {settings.get('planned_votes', DASH)} (fixed design: accuracy 0.5 "
            f"against the margin, power {settings.get('power')}).",
            "- Gold and catch trials only screen reviewers; they never enter preset statistics."]
    return "\n".join(out)

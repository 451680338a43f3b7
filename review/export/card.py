"""The dataset card (README.md) of an export: YAML front matter with ``configs`` for the Hub's loader and viewer,
then provenance, files, study settings, the leaderboard's verdicts and a table of columns per config.

Column descriptions come from COLUMN_DOCS; a column the store adds later still gets a row (type only), so the
card never drifts silently from the files.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

Row = dict[str, Any]
TABLE_DOCS: dict[str, str] = {
    "votes": "one row per vote: the vote, its trial (mode, sides, gold check), the pair's metrics and its condition",
    "pairs": "one row per generated pair: a condition rendered with `full` attention and with a selective preset",
    "trials": "one row per trial served to a reviewer, with its vote columns (empty when unanswered)",
}
COLUMN_DOCS: dict[str, str] = {
    "vote_id": "vote number", "choice": "the answer: left / right / same (preference), a / b (ABX)",
    "outcome": "preference: which arm won (full / selective / same); ABX: correct / wrong",
    "correct": "gold checks: 1 when the answer was 'same'", "latency_ms": "ms from showing the pair to the vote",
    "client": "salted hash of the client address (full exports only)", "voted_at": "vote time (UTC, ISO 8601)",
    "trial_id": "opaque trial id", "reviewer_id": "reviewer pseudonym: HMAC-SHA256 of the browser's random id "
    "with this study's salt (stable within the study, not reversible)",
    "session": "Gradio session hash (full exports only)", "mode": "preference or abx",
    "left_arm": "the arm shown left (ABX: as A): full or selective", "x_arm": "ABX: the arm shown as X",
    "is_gold": "1 for a gold check (the same image on both sides)", "served_at": "trial time (UTC)",
    "pair_id": "pair number", "preset": "the selective preset (layers carrying the face branch)",
    "layer_count": "face-attention layers of the preset (of 70)", "condition_id": "condition number",
    "ssim": "SSIM of the selective image against the full one", "id_cos_sel_full": "ArcFace cosine selective vs full",
    "id_cos_sel_ref": "ArcFace cosine selective vs the reference face",
    "id_cos_full_ref": "ArcFace cosine full vs the reference face",
    "identity_failure": "why an identity metric is missing (no face found, ...)", "created_at": "creation time (UTC)",
    "face_id": "reference face number", "face_label": "reference face label", "prompt": "text prompt",
    "negative_prompt": "negative prompt", "seed": "generation seed", "steps": "denoising steps",
    "width": "image width (px)", "height": "image height (px)", "ip_weight": "face-branch scale",
    "cn_scale": "IdentityNet (ControlNet) strength", "guidance_scale": "classifier-free guidance scale",
    "stack": "model stack (tiny = random offline weights: noise, not faces)",
    "full_generation_id": "generation number of the full image",
    "selective_generation_id": "generation number of the selective image",
    "full_step_median_s": "median denoising-step time of the full image (s)",
    "sel_step_median_s": "median denoising-step time of the selective image (s)",
    "full_total_s": "total generation time, full (s)", "sel_total_s": "total generation time, selective (s)",
    "full_device": "device of the full generation", "sel_device": "device of the selective generation",
    "full_dtype": "dtype of the full generation", "sel_dtype": "dtype of the selective generation",
    "full_run_id": "run id of the full generation", "sel_run_id": "run id of the selective generation",
    "full_id_cos_ref": "ArcFace cosine full vs reference", "sel_id_cos_ref": "ArcFace cosine selective vs reference",
    "full_file": "image file of the full arm (in the app's data folder; not exported)",
    "sel_file": "image file of the selective arm (not exported)",
    "left_image": "served name of the left image", "right_image": "served name of the right image",
    "x_image": "served name of the X image (ABX)",
}


def _type_name(values: list[Any]) -> str:
    kinds = {type(v).__name__ for v in values if v is not None}
    return {"int": "int64", "float": "float64", "str": "string", "bool": "bool"}.get(
        next(iter(kinds)), "string") if len(kinds) == 1 else ("null" if not kinds else "string")


def _yaml_front(tables: dict[str, tuple[list[Row], list[str]]], parquet: bool) -> list[str]:
    lines = ["---", "pretty_name: InstantID selective face-attention review",
             "tags:", "- human-preference", "- image-generation", "- instantid", "- blind-review",
             "configs:"]
    loadable = [k for k, (_, columns) in tables.items() if parquet and columns]
    for i, kind in enumerate(loadable):
        lines += [f"- config_name: {kind}", f"  data_files: {kind}/*.parquet"] + (["  default: true"] if i == 0 else [])
    if not loadable:
        lines[-1] = "configs: []"
    return [*lines, "---"]


def _columns_section(kind: str, rows: list[Row], columns: list[str]) -> list[str]:
    out = [f"### `{kind}` ({len(rows)} rows)", "", TABLE_DOCS.get(kind, ""), ""]
    if not columns:
        return [*out, "No rows yet.", ""]
    out += ["| column | type | meaning |", "|---|---|---|"]
    for column in columns:
        doc = COLUMN_DOCS.get(column, "").replace("|", "\\|")
        out.append(f"| `{column}` | {_type_name([r.get(column) for r in rows])} | {doc} |")
    return [*out, ""]


def _verdicts(leaderboard: Row) -> str:
    try:  # the leaderboard's own rendering; a result it cannot render still leaves a card
        from review.stats.leaderboard_view import verdicts_markdown

        return verdicts_markdown(leaderboard).replace("### ", "#### ")
    except Exception:
        logger.exception("verdicts could not be rendered for the dataset card")
        return "The verdicts could not be rendered: see `leaderboard.json`."


def render_card(*, provenance: Row, tables: dict[str, tuple[list[Row], list[str]]], parquet: bool,
                settings: Row | None, leaderboard: Row) -> str:
    """README.md text for an export folder."""
    lines = _yaml_front(tables, parquet)
    lines += ["", "# InstantID selective face-attention review: votes, pairs and trials", "",
              "Blind human review of InstantID (SDXL) images made with face attention on every cross-attention "
              "layer (`full`) against the same condition with a selective preset of layers (models: "
              "InstantX/InstantID on stabilityai/stable-diffusion-xl-base-1.0). Exported by the review app "
              "(`python -m review export` or its Export tab).", "",
              "```python", "from datasets import load_dataset",
              'votes = load_dataset("parquet", data_dir="votes")["train"]   # or load_dataset(<this folder>, "votes")',
              "import pandas as pd", 'pairs = pd.read_parquet("pairs/pairs.parquet")', "```", "",
              "## Provenance", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {'' if v is None else v} |" for k, v in provenance.items()]
    lines += ["", "Reviewer ids are pseudonyms (salted HMAC, salt kept with the study database). "
              + ("This is a full export: it holds the answer keys, session and client-hash columns."
                 if provenance.get("full") else
                 "This is a public export: answered trials only, no session or client columns."), "",
              "## Files", "",
              "- `votes/`, `pairs/`, `trials/`: one Parquet file each (the configs above)",
              "- `csv/*.csv`, `json/*.json`: the same tables as CSV and as JSON (`{provenance, rows}`)",
              "- `leaderboard.json` (the whole leaderboard result), `leaderboard.csv` (its readable table)", "",
              "## Study settings", ""]
    if settings:
        lines += ["```json", json.dumps(settings, indent=1, sort_keys=True, default=str), "```", ""]
    else:
        lines += ["Not recorded (the app writes them beside the database when it starts).", ""]
    lines += ["## Leaderboard verdicts", "", _verdicts(leaderboard), "", "## Columns", ""]
    for kind, (rows, columns) in tables.items():
        lines += _columns_section(kind, rows, columns)
    return "\n".join(lines).rstrip("\n") + "\n"

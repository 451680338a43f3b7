"""The leaderboard as a readable HTML table: key columns first, every other column in a per-row "details" fold.

Columns are chosen by the start of their header name (KEY_COLUMNS), so whatever the leaderboard computes, its
rows still show; when none matches, the first KEY_FALLBACK columns stand in. On a narrow screen each row becomes
a card (CSS in LEADERBOARD_CSS): nothing scrolls sideways. Every value is HTML-escaped.
"""

from __future__ import annotations

import html
import logging
from typing import Any

logger = logging.getLogger(__name__)

# matched case-insensitively against the start of a header, in this order
KEY_COLUMNS: tuple[str, ...] = ("preset", "step time", "ssim", "abx accuracy", "equivalence", "verdict", "targets")
KEY_FALLBACK = 4
LEADERBOARD_CSS = """
.lb-table { width: 100%; border-collapse: collapse; table-layout: auto; }
.lb-table th, .lb-table td { text-align: left; vertical-align: top; padding: 6px 8px;
  border-bottom: 1px solid var(--border-color-primary); overflow-wrap: anywhere; }
.lb-table tr > :first-child { white-space: nowrap; overflow-wrap: normal; }
.lb-table details summary { cursor: pointer; white-space: nowrap; }
.lb-table dl { margin: 4px 0 0 0; } .lb-table dt { font-weight: 600; } .lb-table dd { margin: 0 0 4px 0; }
@media (max-width: 640px) {
  .lb-table thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  .lb-table tr, .lb-table td { display: block; }
  .lb-table tr { border: 1px solid var(--border-color-primary); border-radius: 6px; margin-bottom: 8px; }
  .lb-table td { border: 0; padding: 3px 8px; }
  .lb-table td[data-label]::before { content: attr(data-label) ": "; font-weight: 600; }
}"""


def key_indices(headers: list[str]) -> list[int]:
    """Indices of the key columns in ``headers`` (KEY_COLUMNS order), or the first KEY_FALLBACK."""
    keep: list[int] = []
    for prefix in KEY_COLUMNS:
        keep += [i for i, h in enumerate(headers) if h.lower().startswith(prefix) and i not in keep]
    return keep or list(range(min(KEY_FALLBACK, len(headers))))


def board_html(table: dict[str, Any] | None) -> str:
    """``{"headers", "data"}`` (the leaderboard tab's table) as the HTML described above."""
    if not table or not table.get("headers"):
        return "<p>No leaderboard rows yet.</p>"
    headers = [str(h) for h in table["headers"]]
    keep = key_indices(headers)
    rest = [i for i in range(len(headers)) if i not in keep]
    esc = html.escape
    out = ['<table class="lb-table"><thead><tr>', *(f"<th>{esc(headers[i])}</th>" for i in keep),
           "<th>Details</th>" if rest else "", "</tr></thead><tbody>"]
    for row in table.get("data") or []:
        cells = [f'<td data-label="{esc(headers[i])}">{esc(str(row[i]))}</td>' for i in keep]
        details = "".join(f"<dt>{esc(headers[i])}</dt><dd>{esc(str(row[i]))}</dd>" for i in rest)
        more = f"<td><details><summary>all columns</summary><dl>{details}</dl></details></td>" if rest else ""
        out.append(f"<tr>{''.join(cells)}{more}</tr>")
    if not table.get("data"):
        out.append(f'<tr><td colspan="{len(keep) + bool(rest)}">No leaderboard rows yet.</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)

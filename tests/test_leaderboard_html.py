"""The leaderboard's HTML table: key columns by name (any order, fallback), the rest folded, values escaped."""

from __future__ import annotations

from review.stats.leaderboard_view import HEADERS
from review.ui.leaderboard_html import board_html, key_indices


def test_key_columns_are_chosen_by_name_in_a_fixed_order():
    headers = ["Votes", "Targets", "Preset", "SSIM mean", "Step time vs full", "Other"]
    assert key_indices(headers) == [2, 4, 3, 1]
    assert [HEADERS[i] for i in key_indices(list(HEADERS))][:2] == ["Preset", "Step time vs full [95% CI]"]


def test_unknown_headers_fall_back_to_the_first_columns():
    assert key_indices(["a", "b", "c", "d", "e"]) == [0, 1, 2, 3]


def test_rows_show_key_cells_and_fold_the_rest_escaped():
    out = board_html({"headers": ["Preset", "Votes", "Targets"], "data": [["fast<script>", 3, "ok & good"]]})
    assert out.startswith('<table class="lb-table"><thead><tr><th>Preset</th><th>Targets</th><th>Details</th>')
    assert '<td data-label="Preset">fast&lt;script&gt;</td><td data-label="Targets">ok &amp; good</td>' in out
    assert "<details><summary>all columns</summary><dl><dt>Votes</dt><dd>3</dd></dl></details>" in out
    assert "<script>" not in out
    assert board_html(None) == "<p>No leaderboard rows yet.</p>"
    assert "No leaderboard rows yet." in board_html({"headers": ["Preset"], "data": []})

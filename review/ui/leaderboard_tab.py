"""The Leaderboard tab: per-preset table, speed-versus-quality plots and verdicts.

``board(include_failing)`` returns a :class:`review.stats.board.BoardView`. Nothing is computed or sent until the tab is
opened, so a reviewer's page never carries preset names or results unless asked for; and while the study runs
(``leaderboard_public`` off) only an admin page (unlocked in the Generate or Export tab) gets them: ``allowed``. While the tab is open a
timer re-checks every few seconds and recomputes only when the number of votes or pairs changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from review.ui.leaderboard_html import board_html

logger = logging.getLogger(__name__)

REFRESH_S = 10.0  # how often an open leaderboard checks for new votes


CLOSED = "The leaderboard is for the admin while the study runs: unlock in the Generate tab, then press Refresh."


def build_leaderboard_tab(board: Callable[[bool], Any] | None, version: Callable[[], Any] | None = None,
                          allowed: Callable[[str], bool] | None = None) -> None:
    """The Leaderboard tab; call inside ``gr.Tabs()``. ``version()`` changes when votes or pairs arrive;
    ``allowed(session)`` says whether a page may see it (None: everyone)."""
    with gr.Tab("Leaderboard", id="leaderboard") as tab:
        note = gr.Markdown("Open this tab or press Refresh to compute the leaderboard." if board else
                           "The leaderboard is not available yet.")
        # reviewers failing the gold screening are left out by default; the unscreened view is one click away
        without = gr.Checkbox(label="Include reviewers who fail the gold screening", value=False)
        # key columns first, the others folded per row; cards on a phone (no horizontal scrolling)
        table = gr.HTML("", elem_id="leaderboard-key")
        with gr.Row():
            ssim_plot = gr.Plot(label="step-time ratio vs SSIM")
            identity_plot = gr.Plot(label="step-time ratio vs identity")
        verdicts = gr.Markdown()
        refresh = gr.Button("Refresh", interactive=board is not None)
        timer = gr.Timer(REFRESH_S, active=False)
        seen = gr.State(None)

    outputs = [table, ssim_plot, identity_plot, verdicts, note, seen]

    def load(include_failing: bool, last: Any = None, only_if_changed: bool = False,
             request: gr.Request | None = None) -> list[Any]:
        if allowed is not None and not allowed(getattr(request, "session_hash", None) or ""):
            return [None, None, None, "", CLOSED, None]
        if board is None:
            return [gr.skip()] * 4 + ["The leaderboard is not available yet.", last]
        current = version() if version else None
        if only_if_changed and current is not None and current == last:
            return [gr.skip()] * 6
        try:
            view = board(bool(include_failing))
        except Exception as exc:
            logger.exception("leaderboard failed")
            return [gr.skip()] * 4 + [f"The leaderboard could not be computed: {exc}", last]
        return [board_html(view.table), view.ssim_plot, view.identity_plot, view.markdown, "", current]

    def opened(include_failing: bool, last: Any, request: gr.Request) -> list[Any]:
        return [*load(include_failing, last, request=request), gr.Timer(active=True)]

    def refreshed(include_failing: bool, last: Any, request: gr.Request) -> list[Any]:
        return load(include_failing, last, request=request)

    def ticked(include_failing: bool, last: Any, request: gr.Request) -> list[Any]:
        return load(include_failing, last, only_if_changed=True, request=request)

    private: dict[str, Any] = dict(api_visibility="private", show_progress="minimal")
    tab.select(opened, [without, seen], [*outputs, timer], **private)
    refresh.click(refreshed, [without, seen], outputs, **private)
    without.change(refreshed, [without, seen], outputs, **private)
    timer.tick(ticked, [without, seen], outputs, **private)

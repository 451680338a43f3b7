"""``build_demo(services) -> gr.Blocks``: the four tabs, the banner, keyboard shortcuts (served by
``review.ui.serving``)."""

from __future__ import annotations

import logging

import gradio as gr

from review.study.review_desk import ReviewDesk
from review.study.services import Services
from review.ui.export_tab import build_export_tab
from review.ui.generate_tab import build_generate_tab
from review.ui.leaderboard_tab import build_leaderboard_tab
from review.ui.review_js import KEYS_JS
from review.ui.review_tab import build_review_tab

logger = logging.getLogger(__name__)

TITLE = "Face-attention review"


def build_demo(services: Services, desk: ReviewDesk | None = None) -> gr.Blocks:
    """The whole app. ``desk`` (the review tab's server side) is made from ``services`` unless given."""
    desk = desk or ReviewDesk(services, allocation=services.allocation)
    # Gradio's cached copies of served files are deleted after 30 min (checked every 5 min); no telemetry
    with gr.Blocks(title=TITLE, delete_cache=(300, 1800), analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}", elem_id="app-title")
        if services.config.banner:
            gr.Markdown(f"**{services.config.banner}**", elem_id="banner")
        # "wrap": on a narrow phone every tab stays a visible tab on a second row; Gradio's default "menu" hides
        # the last ones (the Leaderboard first) behind a "..." button, depending on the width and the fonts
        with gr.Tabs(overflow_behavior="wrap"):
            build_review_tab(demo, services, desk)
            build_generate_tab(services)
            build_export_tab(services)
            build_leaderboard_tab(services.board, services.board_version, services.leaderboard_allowed)
        demo.load(None, None, None, js=KEYS_JS)
    demo.queue(api_open=False, default_concurrency_limit=8)
    return demo

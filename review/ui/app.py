"""``build_demo(services) -> gr.Blocks``: the four tabs, the banner, keyboard shortcuts; ``launch_options``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from review.ui.export_tab import build_export_tab
from review.ui.generate_tab import build_generate_tab
from review.ui.gradio_sessions import make_session_setup_lazy
from review.ui.image_route import image_routes
from review.ui.leaderboard_tab import build_leaderboard_tab
from review.ui.review_desk import ReviewDesk
from review.ui.review_js import KEYS_JS
from review.ui.review_tab import build_review_tab
from review.ui.services import Services

logger = logging.getLogger(__name__)

TITLE = "Face-attention review"
CSS = """#review-progress p, #review-reveal p { font-size: 1.1em; }
.review-figure { margin: 0; text-align: center; }
.review-figure figcaption { font-weight: 600; margin-bottom: 0.3em; }
.review-figure img { display: block; width: 100%; height: 420px; object-fit: contain; }  /* scaled to fit, both ways */
#review-face .review-figure img { height: 200px; }"""
# Gradio's queue rebuilds its analytics summary (a pandas DataFrame of the last GRADIO_ANALYTICS_MAX_EVENTS
# events, grouped and percentiled) after every queued event: ~1 ms at 100 events, ~6.5 ms at 10 000, on this VM.
# Only the /monitoring dashboard reads it, and launch_options turns that off.
QUEUE_ANALYTICS = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000000", "GRADIO_ANALYTICS_MAX_EVENTS": "100"}


def build_demo(services: Services, desk: ReviewDesk | None = None) -> gr.Blocks:
    """The whole app. ``desk`` (the review tab's server side) is made from ``services`` unless given."""
    desk = desk or ReviewDesk(services)
    make_session_setup_lazy()  # a page load no longer builds every block's config (~6 ms of CPU here)
    # Gradio's cached copies of served files are deleted after 30 min (checked every 5 min)
    with gr.Blocks(title=TITLE, delete_cache=(300, 1800), analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}")
        if services.config.banner:
            gr.Markdown(f"**{services.config.banner}**", elem_id="banner")
        with gr.Tabs():
            build_review_tab(demo, services, desk)
            build_generate_tab(services)
            build_export_tab(services)
            build_leaderboard_tab(services.board, services.board_version, services.leaderboard_allowed)
        demo.load(None, None, None, js=KEYS_JS)
    for key, value in QUEUE_ANALYTICS.items():  # read when the queue is made
        os.environ.setdefault(key, value)
    demo.queue(api_open=False, default_concurrency_limit=8)
    return demo


def launch_options(services: Services) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` (Gradio 6 takes css/footer there).

    No API page link; only gr.Error messages reach the page (show_error=False hides other exceptions' text,
    which could name a condition); uploads limited; the generated images, faces and the database are blocked
    from Gradio's file route; the export folder is allowed so its files can be returned from anywhere (e.g. a
    persistent /data volume outside the working and temp directories). The review images have a route of their
    own (``image_routes``), put in front of Gradio's routes."""
    blocked = [str(services.dirs.images.resolve()), str(services.dirs.faces.resolve())]
    if isinstance(services.store.path, Path):
        blocked.append(str(services.store.path.resolve()))
    return {
        "footer_links": ["gradio"],
        "enable_monitoring": False,  # no /monitoring dashboard (and nothing reads the queue's analytics)
        "show_error": False,
        "max_file_size": "20mb",
        "css": CSS,
        "allowed_paths": [str(services.dirs.exports.resolve())],
        "blocked_paths": blocked,
        "app_kwargs": {"routes": image_routes(services.served)},
        # client-side rendering: with SSR (GRADIO_SSR_MODE=true, as some hosts set) a Node server fronts Python and
        # the review-image route would sit behind it; nothing here needs SSR
        "ssr_mode": False,
    }

"""``build_demo(services) -> gr.Blocks``: the four tabs, the banner, keyboard shortcuts; ``launch_options``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from review.study.review_desk import ReviewDesk
from review.study.services import Services
from review.ui.edge import BodyLimit, EdgeLimits, health_routes
from review.ui.export_tab import build_export_tab
from review.ui.generate_tab import build_generate_tab
from review.ui.gradio_sessions import make_session_setup_lazy
from review.ui.image_route import image_routes
from review.ui.leaderboard_html import LEADERBOARD_CSS
from review.ui.leaderboard_tab import build_leaderboard_tab
from review.ui.review_js import KEYS_JS
from review.ui.review_tab import build_review_tab

logger = logging.getLogger(__name__)

TITLE = "Face-attention review"
CSS = """#review-progress p, #review-reveal p { font-size: 1.1em; }
.review-figure { margin: 0; text-align: center; }
.review-figure figcaption { font-weight: 600; margin-bottom: 0.2em; }
.review-figure a { display: block; padding: 0 !important; margin: 0 !important; }
/* the compared images: side by side, as large as the width allows while the answers stay on screen */
.review-figure img { display: block; width: 100%; height: auto; aspect-ratio: 1 / 1; object-fit: contain;
  max-height: max(160px, calc(100vh - 430px)); }
#review-images { flex-wrap: nowrap !important; gap: 8px !important; }
#review-left, #review-right, #review-x, #review-face { padding: 0 !important; border: 0 !important; }
#review-left .html-container, #review-right .html-container, #review-x .html-container,
#review-face .html-container { padding: 0 !important; }
#review-mode .wrap { flex-wrap: nowrap; gap: 6px; }
#review-images > div { flex: 1 1 0 !important; min-width: 0 !important; }
/* the reference face: small, beside the question */
#review-head { flex-wrap: nowrap !important; align-items: center; }
#review-face { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
#review-text { flex: 1 1 0 !important; min-width: 0 !important; }
#review-face .review-figure img { width: auto; height: 80px; max-height: 80px; aspect-ratio: auto; }
#review-face figcaption { font-size: 0.75em; font-weight: normal; }
#review-answers { flex-wrap: nowrap !important; gap: 6px !important; }
#review-answers button { min-width: 0 !important; white-space: normal; padding-left: 4px; padding-right: 4px; }
@media (max-width: 640px) {
  .column, .tabitem { gap: 6px !important; }
  .tabitem { padding: 4px 0 !important; }
  #review-reveal p { font-size: 0.95em; margin: 0; }
  #next-pair, #more-pairs { padding-top: 6px !important; padding-bottom: 6px !important; }
  #app-title h2 { font-size: 1.15em; margin: 0; }
  #banner p { font-size: 0.8em; margin: 0; }
  #review-mode { padding: 4px 6px !important; }
  #review-mode .wrap label { padding: 4px 6px; font-size: 0.85em; }
  #review-face .review-figure img { height: 56px; }
  .review-figure img { max-height: max(120px, calc(100vh - 330px)); }
  #review-images figcaption { font-size: 0.8em; margin-bottom: 0; }
  #review-answers button { font-size: 0.8em; line-height: 1.25; }
  #review-progress p, #review-question p { font-size: 0.95em; margin: 0; }
}"""
# Gradio scopes `css` to the inside of the app; the page margin (32 px a side, 17 % of a phone's width) is outside
HEAD = ("<style>@media (max-width: 640px) { .gradio-container .main.app "
        "{ padding: 8px 8px !important; } }</style>")
# Gradio's queue rebuilds its analytics summary (a pandas DataFrame of the last GRADIO_ANALYTICS_MAX_EVENTS
# events, grouped and percentiled) after every queued event: ~1 ms at 100 events, ~6.5 ms at 10 000, on this VM.
# Only the /monitoring dashboard reads it, and launch_options turns that off.
QUEUE_ANALYTICS = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000000", "GRADIO_ANALYTICS_MAX_EVENTS": "100"}


def build_demo(services: Services, desk: ReviewDesk | None = None) -> gr.Blocks:
    """The whole app. ``desk`` (the review tab's server side) is made from ``services`` unless given."""
    desk = desk or ReviewDesk(services, allocation=services.allocation)
    make_session_setup_lazy()  # a page load no longer builds every block's config (~6 ms of CPU here)
    # Gradio's cached copies of served files are deleted after 30 min (checked every 5 min)
    with gr.Blocks(title=TITLE, delete_cache=(300, 1800), analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}", elem_id="app-title")
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


def launch_options(services: Services, edge: EdgeLimits | None = None) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` (Gradio 6 takes css/footer there).

    No API page link; only gr.Error messages reach the page (show_error=False hides other exceptions' text,
    which could name a condition); uploads limited; the generated images, faces and the database are blocked
    from Gradio's file route; the export folder is allowed so its files can be returned from anywhere (e.g. a
    persistent /data volume outside the working and temp directories). The review images have a route of their
    own (``image_routes``), put in front of Gradio's routes, as has ``GET /healthz`` (the study database's
    write-ability); request bodies over ``edge``'s limits get 413 before they are parsed (``review/ui/edge.py``)."""
    edge = edge or EdgeLimits()
    blocked = [str(services.dirs.images.resolve()), str(services.dirs.faces.resolve()),
               str((services.dirs.root / "backup").resolve())]  # REVIEW_BACKUP_REPO's snapshot folder
    if isinstance(services.store.path, Path):  # the database and its sidecar files (export salt, settings)
        db = services.store.path.resolve()
        blocked += [str(db), f"{db}.salt", f"{db}.study.json"]
    return {
        "footer_links": ["gradio"],
        "enable_monitoring": False,  # no /monitoring dashboard (and nothing reads the queue's analytics)
        "show_error": False,
        "max_file_size": "20mb",  # EdgeLimits.max_upload_bytes leaves 1 MiB above it for multipart framing
        "css": CSS + LEADERBOARD_CSS,
        "head": HEAD,
        "allowed_paths": [str(services.dirs.exports.resolve())],
        "blocked_paths": blocked,
        "app_kwargs": {"routes": [*image_routes(services.served), *health_routes(services.store.health)],
                       "middleware": [Middleware(BodyLimit, limits=edge)]},
        # client-side rendering: with SSR (GRADIO_SSR_MODE=true, as some hosts set) a Node server fronts Python and
        # the review-image route would sit behind it; nothing here needs SSR
        "ssr_mode": False,
    }

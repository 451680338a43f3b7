"""Serving the app through documented APIs: the Gradio Blocks mounted on a FastAPI app (``gr.mount_gradio_app``),
run by a ``uvicorn.Server`` built with ``uvicorn.Config``'s own parameters (``edge.server_settings``).

``demo.launch`` builds its uvicorn ``Config`` itself and takes none of these settings, hence this path. The
FastAPI app holds the review-image and health routes (checked before Gradio's, which are mounted at ``/``) and
the body limit (``edge.BodyLimit``). uvicorn reads no proxy headers here (``proxy_headers=False``): the client
address comes from ``review.study.services.client_address`` alone (why: docs/hardening.md). The server runs in a
thread, so uvicorn installs no signal handlers and app.py's SIGTERM handling stays in charge.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import uvicorn
from fastapi import FastAPI
from starlette.middleware import Middleware

from review.study.services import Services
from review.ui.edge import BodyLimit, EdgeLimits, health_routes, server_settings
from review.ui.image_route import image_routes
from review.ui.layout_css import CSS, HEAD

logger = logging.getLogger(__name__)

GRACE_S = 5  # on close, open connections (e.g. an SSE stream) get this long before they are dropped


def mount_options(services: Services) -> dict[str, Any]:
    """Keyword arguments for ``gr.mount_gradio_app`` (what ``demo.launch`` would have taken).

    No API page link; only gr.Error messages reach the page (show_error=False hides other exceptions' text,
    which could name a condition); uploads limited; the generated images, faces and the database are blocked
    from Gradio's file route; the export folder is allowed so its files can be returned from anywhere (e.g. a
    persistent /data volume outside the working and temp directories)."""
    blocked = [str(services.dirs.images.resolve()), str(services.dirs.faces.resolve()),
               str((services.dirs.root / "backup").resolve())]  # REVIEW_BACKUP_REPO's snapshot folder
    if isinstance(services.store.path, Path):  # the database and its sidecar files (export salt, settings)
        db = services.store.path.resolve()
        blocked += [str(db), f"{db}.salt", f"{db}.study.json"]
    return {
        "footer_links": ["gradio"],
        "enable_monitoring": False,  # no /monitoring dashboard
        "show_error": False,
        "max_file_size": "20mb",  # EdgeLimits.max_upload_bytes leaves 1 MiB above it for multipart framing
        "css": CSS,
        "head": HEAD,
        "allowed_paths": [str(services.dirs.exports.resolve())],
        "blocked_paths": blocked,
        "root_path": os.environ.get("GRADIO_ROOT_PATH") or None,  # as demo.launch reads it
        # client-side rendering: with SSR (GRADIO_SSR_MODE=true, as some hosts set) a Node server fronts Python and
        # the review-image route would sit behind it; nothing here needs SSR
        "ssr_mode": False,
    }


def build_app(demo: gr.Blocks, services: Services, edge: EdgeLimits | None = None) -> FastAPI:
    """The ASGI app: the review images and ``GET /healthz`` first, then Gradio at ``/``; bodies limited."""
    edge = edge or EdgeLimits()
    app = FastAPI(routes=[*image_routes(services.served), *health_routes(services.store.health)],
                  middleware=[Middleware(BodyLimit, limits=edge)], docs_url=None, redoc_url=None, openapi_url=None)
    return gr.mount_gradio_app(app, demo, path="/", **mount_options(services))


class Server:
    """The app served by uvicorn in a background thread: ``start()``, ``url``, ``wait()``, ``close()``."""

    def __init__(self, demo: gr.Blocks, services: Services, host: str, port: int,
                 edge: EdgeLimits | None = None) -> None:
        self.demo, self.host, self.port = demo, host, port
        config = uvicorn.Config(build_app(demo, services, edge), host=host, port=port, log_level="warning",
                                proxy_headers=False, timeout_graceful_shutdown=GRACE_S, **server_settings(edge))
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        """The local URL, with its trailing slash."""
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 60.0) -> Server:
        """Start serving; returns once the socket listens (RuntimeError if the server stopped or took too long)."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.uvicorn.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port} (see the log above)")
            time.sleep(0.02)
        logger.info("serving on %s", self.url)
        return self

    def wait(self) -> None:
        """Block until the server stops (a KeyboardInterrupt, e.g. from the SIGTERM handler, comes through)."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def close(self) -> None:
        """Stop the Gradio queue, then the server (open connections get ``GRACE_S``)."""
        self.demo.close()
        self.uvicorn.should_exit = True
        self.thread.join(GRACE_S + 5)

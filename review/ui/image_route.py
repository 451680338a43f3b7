"""The HTTP route that serves the review images: ``GET review-image/<opaque name>.png`` (``review.study.served``).

Gradio would copy every returned image file into its cache, check its path against each allowed and blocked
folder, and serve it from its file route; under load that was about a quarter of the server's CPU per review
cycle. This route answers from memory with the per-trial bytes and nothing else: no file name, no metadata, no
``Content-Disposition``, and 404 for every name it did not hand out. A file not in the cache is read in a worker
thread, not in the event loop. URLs are relative to the page, so the app also works under a path prefix when the
page is opened with its trailing slash (``/prefix/``).
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from review.study.served import ROUTE, ServedImages

logger = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "private, max-age=7200, immutable",  # one URL, one byte string, for its whole life
    "X-Content-Type-Options": "nosniff",
}


def image_routes(served: ServedImages) -> list[Route]:
    """Starlette routes for ``FastAPI(routes=...)`` (``demo.launch(app_kwargs=...)``); checked before Gradio's."""

    async def image(request: Request) -> Response:
        name = request.path_params["name"]
        data = served.get(name) if served.is_cached(name) else await run_in_threadpool(served.get, name)
        if data is None:
            return Response("Not found", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/png", headers=HEADERS)

    return [Route(f"/{ROUTE}/{{name}}", image, methods=["GET", "HEAD"])]

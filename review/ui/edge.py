"""Limits at the edge of the server: request bodies, slow headers, idle and concurrent connections, and the
``GET /healthz`` route that says whether the study database can be written.

The app is served by a ``uvicorn.Server`` that ``review.ui.serving`` builds (Gradio mounted on a FastAPI app with
``gr.mount_gradio_app``), so every uvicorn setting is passed through ``uvicorn.Config``'s own parameters
(``server_settings``): ``http`` = an h11 protocol class that closes a connection whose request headers are not
complete ``header_timeout_s`` after the connection (or the previous response), ``timeout_keep_alive`` (idle
keep-alive connections), ``limit_concurrency`` (connections and tasks at once; beyond it uvicorn answers 503) and
``h11_max_incomplete_event_size`` (header bytes). uvicorn has a size limit for headers but no time limit, hence
the protocol subclass (it overrides h11's per-connection hooks, the one place here that leans on uvicorn's own
classes). ``BodyLimit`` (an ASGI middleware) refuses a body over its limit with 413 before it is parsed: by
``Content-Length`` up front, and by counting for chunked bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

HEALTH_ROUTE = "healthz"


@dataclass(frozen=True)
class EdgeLimits:
    """The limits at the server's edge (``BodyLimit``, ``server_settings``)."""

    max_body_bytes: int = 1 * 2**20  # JSON API calls: the largest legitimate one (a vote) is under 1 KB
    max_upload_bytes: int = 21 * 2**20  # /upload bodies: Gradio's max_file_size (20 MB) plus multipart framing
    header_timeout_s: float = 10.0  # a connection must complete its request headers within this
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's default)
    max_concurrency: int = 400  # connections + tasks at once (a 1024-fd process keeps headroom); beyond: 503
    max_header_bytes: int = 16 * 1024  # request line + headers


class BodyLimit:
    """ASGI middleware: 413 for a request body over the limit (uploads get ``max_upload_bytes``)."""

    def __init__(self, app: Any, limits: EdgeLimits | None = None) -> None:
        self.app, self.limits = app, limits or EdgeLimits()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 413 (declared or counted body over the limit)."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_upload_bytes if scope.get("path", "").endswith("/upload") else \
            self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._refuse(send, limit)
        seen, started = 0, False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Any, limit: int) -> None:
        body = json.dumps({"error": f"request body too large (limit {limit // 1024} KiB)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """A counted body went over its limit (caught by ``BodyLimit``)."""


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers stay incomplete (slowloris)."""

    header_timeout_s = 10.0  # set per server by header_timeout_protocol

    def _arm(self) -> None:
        self._armed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        if self.cycle is self._armed_cycle and not self.transport.is_closing():
            logger.info("closing a connection whose request headers took over %.0f s", self.header_timeout_s)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request's headers must arrive within the timeout."""
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        """h11's events: once a new request cycle started (headers complete), the timer goes."""
        super().handle_events()
        if self.cycle is not getattr(self, "_armed_cycle", None):
            self._disarm()

    def on_response_complete(self) -> None:
        """A response sent: the next request's headers get the same time."""
        super().on_response_complete()
        self._disarm()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: no timer left behind."""
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    """The header timeout protocol class for ``uvicorn.Config(http=...)``, with ``header_timeout_s``."""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s})


def server_settings(limits: EdgeLimits | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the header timeout protocol and the connection limits."""
    limits = limits or EdgeLimits()
    return {"http": header_timeout_protocol(limits.header_timeout_s), "timeout_keep_alive": int(limits.keep_alive_s),
            "limit_concurrency": limits.max_concurrency, "h11_max_incomplete_event_size": limits.max_header_bytes}


def health_routes(health: Any) -> list[Route]:
    """``GET /healthz``: 200 with ``{"writable": true, ...}`` when the study can be written, else 503 and why."""

    async def healthz(request: Request) -> Response:
        state = await run_in_threadpool(health)
        return JSONResponse(state, status_code=200 if state.get("writable") else 503,
                            headers={"Cache-Control": "no-store"})

    return [Route(f"/{HEALTH_ROUTE}", healthz, methods=["GET"])]

"""Limits at the edge (review/ui/edge.py): slow request headers are cut off, over-large bodies get 413."""

from __future__ import annotations

import os
import socket
import threading
import time

import httpx
import uvicorn
from fixtures_review import free_port
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from review.ui.edge import BodyLimit, EdgeLimits, header_timeout_protocol


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def serve(limits: EdgeLimits) -> tuple[uvicorn.Server, int]:
    app = Starlette(routes=[Route("/x", echo, methods=["POST"]), Route("/gradio_api/upload", echo, methods=["POST"])],
                    middleware=[Middleware(BodyLimit, limits=limits)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=header_timeout_protocol(limits.header_timeout_s)))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, port


def test_slow_headers_are_cut_off_and_bodies_over_the_limit_get_413():
    limits = EdgeLimits(max_body_bytes=1000, max_upload_bytes=5000, header_timeout_s=0.5)
    server, port = serve(limits)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/x", content=b"a" * 1000).text == "1000"
        assert httpx.post(f"{base}/x", content=b"a" * 1001).status_code == 413
        assert httpx.post(f"{base}/x", content=iter([b"a" * 600, b"a" * 600])).status_code == 413  # chunked
        assert httpx.post(f"{base}/gradio_api/upload", content=b"a" * 4000).text == "4000"
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the headers
            slow.settimeout(5)
            started = time.monotonic()
            assert slow.recv(100) == b""  # closed by the server
            assert time.monotonic() - started < 3
        assert httpx.post(f"{base}/x", content=b"ok").text == "2"  # the server still serves
    finally:
        server.should_exit = True


def test_a_second_app_process_on_one_database_is_refused(tmp_path):
    import pytest

    from review.ui.single_process import AppLockError, hold_app_lock

    first = hold_app_lock(tmp_path / "study.db")
    with pytest.raises(AppLockError, match="another app process already serves"):
        hold_app_lock(tmp_path / "study.db")  # a second open file description: what another process would hold
    first.close()  # the process ends (the kernel drops the lock, also on kill -9)
    hold_app_lock(tmp_path / "study.db").close()


def test_the_served_app_applies_the_limits_through_uvicorns_config(tmp_path):
    """app.py's server (review.ui.serving): Gradio mounted on FastAPI, uvicorn built with the limits as its own
    settings, no proxy-header rewriting; 413 and the header timeout on the real app, the review routes first."""
    from fixtures_review import make_services

    from review.ui.app import build_demo
    from review.ui.edge import HeaderTimeoutH11Protocol
    from review.ui.serving import Server

    limits = EdgeLimits(max_body_bytes=2000, header_timeout_s=0.5, max_concurrency=50, keep_alive_s=3.0)
    services = make_services(tmp_path, seeds=(0,), presets=("fast",))
    server = Server(build_demo(services), services, "127.0.0.1", free_port(), edge=limits).start()
    try:
        config = server.uvicorn.config
        assert issubclass(config.http, HeaderTimeoutH11Protocol) and config.http.header_timeout_s == 0.5
        assert (config.limit_concurrency, config.timeout_keep_alive, config.proxy_headers) == (50, 3, False)
        assert httpx.get(server.url + "healthz").json()["writable"] is True
        assert httpx.get(server.url + "review-image/" + "0" * 32 + ".png").status_code == 404
        big = httpx.post(server.url + "gradio_api/run/predict", content=b"{" + b" " * 3000 + b"}",
                         headers={"content-type": "application/json"})
        assert big.status_code == 413
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            slow.settimeout(5)
            started = time.monotonic()
            assert slow.recv(100) == b"" and time.monotonic() - started < 3
        assert httpx.get(server.url).status_code == 200  # the page still serves
        # nothing of Gradio or uvicorn was replaced, and no undocumented setting was made
        from gradio import state_holder

        assert state_holder.SessionState.__init__.__module__ == "gradio.state_holder"
        assert uvicorn.Config.__init__.__module__ == "uvicorn.config"
        assert not [k for k in os.environ if k.startswith("GRADIO_ANALYTICS_") and k != "GRADIO_ANALYTICS_ENABLED"]
    finally:
        server.close()

"""Benchmark: how much a bad upload raises the app's peak memory. ``python -m tools.loadtest.upload_rss [--json]``

Starts ``app.py`` (tiny stack, no demo pairs, an admin password) on 127.0.0.1 with a fresh database, uploads each
bad file through Gradio's upload route and submits the Generate form with it, once with a wrong password and once
with the right one, and reads the server's peak resident set (``VmHWM`` in ``/proc/<pid>/status``) after each.
Phase 1 (engine not loaded; baseline: the peak after one small upload submitted with a wrong password): every
refused upload. Phase 2 (baseline: the peak once a blank image with the right password loaded the engine): one
accepted large 16-bit image, for comparison (it is decoded, converted and analysed, as it must be). Target: no bad
upload raises the peak by more than 100 MB. A benchmark, not a test: the figure is printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = secrets.token_hex(8)
TARGET_MB = 100.0


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def bad_uploads() -> dict[str, bytes]:
    """The uploads that cost memory before the fix (decoded by Gradio before any check), and a few more."""
    header = _png(Image.new("1", (8, 8)))
    bomb = header[:16] + (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big") + header[24:]  # bad CRC too
    return {
        "grey_13000x13000_png": _png(Image.new("L", (13000, 13000))),  # ~160 KB on disk, 169 MB decoded
        "header_bomb_20000x20000": bomb,
        "not_an_image": b"\x00garbage" * 1000,
    }


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def _submit(http: httpx.Client, fn_index: int, data: list[Any]) -> str:
    """Queue the Generate event as the page does; returns 'ok' or the error message."""
    session = secrets.token_hex(8)
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    http.post("gradio_api/queue/join", json=body).raise_for_status()
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return "ok" if message.get("success") else str(output.get("error"))
    return "no answer"


def run() -> dict[str, Any]:
    """Start app.py, upload growing files through the Generate tab's upload route, and report the server's RSS."""
    with tempfile.TemporaryDirectory() as work, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = {**os.environ, "REVIEW_ADMIN_PASSWORD": PASSWORD, "HF_HUB_OFFLINE": "1"}
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--db", f"{work}/review.db", "--data",
                                   f"{work}/data", "--port", str(port), "--no-demo", "--trust-proxy"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=120, trust_env=False)
            for _ in range(600):
                try:
                    if http.get("").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            config = http.get("config").json()
            fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("backend_fn")}["generate"]

            def submit(data: bytes, password: str) -> str:
                # each submission from its own (proxy-reported) address: the password-attempt limit is per address
                http.headers["X-Forwarded-For"] = f"198.51.100.{secrets.randbelow(250) + 1}"
                uploaded = http.post("gradio_api/upload", files={"files": ("face.png", data, "image/png")})
                if uploaded.status_code != 200:
                    return f"upload refused: HTTP {uploaded.status_code}"
                face = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
                form = [password, face, "a portrait", "", ["fast"], "", "0", 1, 64, 64, 0.8, 0.8, 5.0]
                return _submit(http, fn, form)

            submit(_png(Image.new("RGB", (64, 64))), "wrong")  # warm-up: the handler's imports
            rows = []

            def measure(name: str, data: bytes, baseline: int) -> None:
                for password in ("wrong", PASSWORD):
                    answer = submit(data, password)
                    rows.append({"upload": name, "bytes": len(data), "password": "right" if password == PASSWORD
                                 else "wrong", "answer": answer[:120],
                                 "peak_rise_mb": round((_peak_kib(server.pid) - baseline) / 1024, 1)})

            # phase 1, engine not loaded: every refused upload (nothing masks a rise under the engine's peak)
            baseline = _peak_kib(server.pid)
            for name, data in bad_uploads().items():
                measure(name, data, baseline)
            # phase 2: an accepted, fixed-with-a-note upload (16-bit, 4096x4096) once the engine is loaded
            submit(_png(Image.new("RGB", (64, 64))), PASSWORD)  # loads the engine (then: no face found)
            engine_baseline = _peak_kib(server.pid)
            measure("accepted_grey_16bit_4096x4096", _png(Image.fromarray(np.zeros((4096, 4096), np.uint16))),
                    engine_baseline)
        finally:
            server.terminate()
            server.wait(timeout=60)
    worst = max(r["peak_rise_mb"] for r in rows if not r["upload"].startswith("accepted"))
    return {"baseline_peak_mb": round(baseline / 1024, 1), "engine_baseline_peak_mb": round(engine_baseline / 1024, 1),
            "rows": rows, "worst_peak_rise_mb": worst,
            "target_met": worst <= TARGET_MB, "load_avg": os.getloadavg()[0], "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    """The command line: run the benchmark, print its figures (JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest.upload_rss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"baseline peak RSS {result['baseline_peak_mb']} MB (engine not loaded; "
          f"{result['engine_baseline_peak_mb']} MB once loaded, the baseline of the accepted row)")
    for row in result["rows"]:
        print(f"{row['upload']:>26} ({row['bytes']:>9,} B), {row['password']:>5} password: peak +{row['peak_rise_mb']}"
              f" MB; {row['answer']}")
    print(f"worst rise of a refused upload {result['worst_peak_rise_mb']} MB (target <= {TARGET_MB:g} MB: "
          f"{'met' if result['target_met'] else 'NOT met'}); load average {result['load_avg']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

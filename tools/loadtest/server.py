"""``app.py`` as a child process on 127.0.0.1, for the load and crash test (``tools.loadtest.harness``).

The server gets its own database and data folder, no admin password (the Generate tab disabled), no demo pairs,
``--trust-proxy`` (each simulated reviewer brings its own ``X-Forwarded-For`` address, as behind the Spaces
proxy) and a Gradio cache folder of its own, so nothing is left behind in the system temp folder.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

APP = Path(__file__).resolve().parents[2] / "app.py"
HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class AppServer:
    """start(port) / kill() (SIGKILL) / stop() (SIGTERM, then SIGKILL); one process at a time."""

    def __init__(self, db: Path, data: Path, log: Path, *, trials_per_session: int = 20, profile: bool = False,
                 start_timeout_s: float = 90.0) -> None:
        if not APP.is_file():
            raise FileNotFoundError(f"{APP} not found: run from a source checkout")
        self.db, self.data, self.log = Path(db), Path(data), Path(log)
        self.trials_per_session, self.profile, self.start_timeout_s = trials_per_session, profile, start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base(self) -> str:
        """The server's base URL (trailing slash)."""
        return f"http://{HOST}:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEW_")}
        cache = self.log.parent / "gradio-cache"
        cache.mkdir(parents=True, exist_ok=True)
        env.update(GRADIO_TEMP_DIR=str(cache), HF_HUB_OFFLINE="1",
                   REVIEW_DEMO="0", PYTHONUNBUFFERED="1", NO_PROXY="*")
        if self.profile:
            env["GRADIO_PROFILING"] = "1"  # per-event phase times at /gradio_api/profiling/traces
        else:
            env.pop("GRADIO_PROFILING", None)
        return env

    def start(self, port: int) -> None:
        """Launch and wait until GET / answers 200; raises RuntimeError with the log's tail otherwise."""
        self.stop()
        self.port = port
        command = [sys.executable, str(APP), "--db", str(self.db), "--data", str(self.data), "--host", HOST,
                   "--port", str(port), "--no-demo", "--trust-proxy",
                   "--trials-per-session", str(self.trials_per_session)]
        with self.log.open("ab") as log:
            log.write(f"\n--- start {' '.join(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(command, cwd=APP.parent, env=self._env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    if client.get(self.base).status_code == 200:
                        logger.info("app.py ready on %s (pid %d)", self.base, self.proc.pid)
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"app.py did not answer within {self.start_timeout_s:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """kill -9: no shutdown code runs in the server."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the running server has used so far; None off Linux or when stopped."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)

    def tail(self, lines: int = 30) -> list[str]:
        """The last lines of the server's log."""
        try:
            return self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

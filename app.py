"""The review app: ``python app.py`` serves it on 127.0.0.1:7860 (Hugging Face Spaces: ``app_file: app.py``).

Wiring only (nothing imports this file): flags and environment variables, the store, the engine (the offline tiny
stack when no weights are configured, loaded on first use), demo pairs on an empty database, ``build_demo``,
launch. On Spaces, ``spaces.GPU`` wraps each generation; elsewhere it is a no-op.

Environment (flags win): REVIEW_WEIGHTS, REVIEW_DB, REVIEW_DATA, REVIEW_HOST, REVIEW_PORT, REVIEW_GOLD_RATE,
REVIEW_GOLD_PER_SESSION, REVIEW_TRIALS_PER_SESSION, REVIEW_MODES, REVIEW_ADMIN_PASSWORD (no flag: keep passwords
off command lines), REVIEW_TRUST_PROXY, REVIEW_PROXY_HOPS, REVIEW_DEMO (0 to skip demo pairs); the study settings
REVIEW_REVEAL, REVIEW_IDENTITY, REVIEW_LEADERBOARD_PUBLIC (else the database's, ``python -m review settings``);
REVIEW_HF_ALLOW and REVIEW_HF_ADMINS (comma-separated Hugging Face user names: reviewers with identity=hf, admins).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from review.identity import parse_allow_list
from review.settings import ENV, SettingError, StudySettings
from review.store import Store
from review.study import board_view
from review.trials import StudyConfig
from review.ui.app import build_demo, launch_options
from review.ui.services import TINY_BANNER, AppConfig, DataDirs, GenerateJob, Services

logger = logging.getLogger("app")

ON_SPACES = bool(os.environ.get("SPACE_ID"))
DEMO_PROMPT = "a portrait photo of a person, studio light"
DEMO_PRESETS = ("balanced", "fast")
DEMO_SEEDS = (0, 1)

try:  # ZeroGPU: each decorated call gets a GPU; without the package the decorator does nothing
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:
    def gpu(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn


@gpu
def _generate_on_gpu(engine: Any, request: Any, preset: Any) -> Any:
    return engine.generate(request, preset)


class GpuEngine:
    """The engine with ``generate`` routed through ``spaces.GPU`` (everything else delegated)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def generate(self, request: Any, preset: Any = "full", progress: Any = None) -> Any:
        return _generate_on_gpu(self._engine, request, preset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class Engines:
    """Loads the engine once, on first use (thread-safe)."""

    def __init__(self, weights: str | None) -> None:
        self.stack = weights or "tiny"
        self._engine: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from instantid import load_engine

                logger.info("loading the %s engine ...", self.stack)
                self._engine = GpuEngine(load_engine(self.stack))
                logger.info("engine ready: %s", self._engine.describe())
            return self._engine


def job_runner(engines: Engines, store: Store, dirs: DataDirs) -> Callable[..., list[dict[str, Any]]]:
    """run_job for the Generate tab (and the demo pairs): every seed x preset through PairRunner."""

    def run_job(job: GenerateJob, progress: Callable[[float, str], None]) -> list[dict[str, Any]]:
        from review.conditions import Condition
        from review.jobs import PairRunner

        runner = PairRunner(engines.get(), store, dirs.root)
        total, done, rows = len(job.seeds) * (1 + len(job.presets)), 0, []

        def tick(label: str) -> None:
            nonlocal done
            done += 1
            progress(min(done / total, 1.0), f"{done} of {total} images ({label})")

        for seed in job.seeds:
            condition = Condition(face=Path(job.face_path), prompt=job.prompt, seed=seed,
                                  negative_prompt=job.negative_prompt, steps=job.steps, width=job.width,
                                  height=job.height, ip_weight=job.ip_weight, cn_scale=job.cn_scale,
                                  guidance_scale=job.guidance_scale)
            for pair in runner.run_condition(condition, job.presets, progress=tick):
                note = pair.get("identity_failure") or ""
                rows.append({"pair_id": pair["pair_id"], "preset": pair["preset"], "seed": seed,
                             "layer_count": pair["layer_count"], "ssim": round(float(pair["ssim"]), 4),
                             "note": note})
        return rows

    return run_job


def cached_board(store: Store) -> Callable[[bool], Any]:
    """The leaderboard view, computed once per (pairs, votes) count and filter, shared by every open tab."""
    cache: dict[tuple[Any, bool], Any] = {}
    lock = threading.Lock()

    def board(without_failing: bool) -> Any:
        key = (store.study_version(), bool(without_failing))
        with lock:
            if key not in cache:
                cache.clear()
                cache[key] = board_view(store, without_failing=without_failing)
            return cache[key]

    return board


def demo_face(dirs: DataDirs) -> Path:
    """data/faces/astronaut.jpg when shipped, else scikit-image's astronaut written under the data folder."""
    shipped = Path(__file__).resolve().parent / "data" / "faces" / "astronaut.jpg"
    if shipped.is_file():
        return shipped
    from PIL import Image
    from skimage import data

    path = dirs.root / "demo_face.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def make_demo_pairs(services: Services, tiny: bool) -> None:
    """A few pairs so a newcomer has something to review (console log + the page's status line)."""
    side, steps = (128, 4) if tiny else (1024, 20)
    job = GenerateJob(face_path=str(demo_face(services.dirs)), prompt=DEMO_PROMPT, presets=DEMO_PRESETS,
                      seeds=DEMO_SEEDS, steps=steps, width=side, height=side)
    status = services.status

    def progress(fraction: float, text: str) -> None:
        status.set(f"Preparing demo pairs: {text.split(' (')[0]} ({fraction:.0%}).", busy=True)

    status.set("Preparing demo pairs: loading the engine.", busy=True)
    try:
        assert services.run_job is not None
        with services.generate_lock:
            rows = services.run_job(job, progress)
        status.set(f"Demo pairs ready ({len(rows)}).", busy=False)
    except Exception:
        logger.exception("demo pairs failed")
        status.set("Demo pairs could not be generated (see the server log).", busy=False)


def warm_up() -> None:
    """Gradio asks matplotlib for its backend around every event, and the first ask imports pyplot (~0.4 s on
    the 2-core VM): asked once here, so the first page loads do not queue behind it."""
    try:
        import matplotlib

        matplotlib.get_backend()
    except ImportError:
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weights", default=env("REVIEW_WEIGHTS") or None,
                        help="weights folder or hub id (REVIEW_WEIGHTS); none: the offline tiny stack")
    parser.add_argument("--db", default=env("REVIEW_DB", "var/review.db"), help="SQLite file (REVIEW_DB)")
    parser.add_argument("--data", default=env("REVIEW_DATA", "var/data"), help="image folder root (REVIEW_DATA)")
    parser.add_argument("--host", default=env("REVIEW_HOST", "0.0.0.0" if ON_SPACES else "127.0.0.1"),
                        help="interface to listen on (REVIEW_HOST; 0.0.0.0 on Spaces)")
    parser.add_argument("--port", type=int, default=int(env("REVIEW_PORT", env("PORT", "7860"))),
                        help="port (REVIEW_PORT or PORT)")
    parser.add_argument("--gold-rate", type=float, default=float(env("REVIEW_GOLD_RATE", "0.2")),
                        help="share of conditions reserved for gold checks, 0 for none (REVIEW_GOLD_RATE)")
    parser.add_argument("--gold-per-session", type=int, default=int(env("REVIEW_GOLD_PER_SESSION", "4")),
                        help="gold checks per session, at most one in four trials (REVIEW_GOLD_PER_SESSION)")
    parser.add_argument("--reveal", default=env(ENV["reveal"]), choices=("none", "end", "each"),
                        help="what a reviewer is told after votes (REVIEW_REVEAL; default: the database's, else none)")
    parser.add_argument("--identity", default=env(ENV["identity"]), choices=("open", "invite", "hf"),
                        help="how reviewers are identified (REVIEW_IDENTITY; default: the database's, else open)")
    parser.add_argument("--leaderboard-public", default=env(ENV["leaderboard_public"]), metavar="0|1",
                        help="leaderboard for everyone (1) or the admin only (REVIEW_LEADERBOARD_PUBLIC; default: "
                             "the database's, else 0)")
    parser.add_argument("--trials-per-session", type=int, default=int(env("REVIEW_TRIALS_PER_SESSION", "20")),
                        help="progress target per page load (REVIEW_TRIALS_PER_SESSION)")
    parser.add_argument("--modes", default=env("REVIEW_MODES", "preference,abx"),
                        help="tasks offered to reviewers, first is the default (preference,abx)")
    parser.add_argument("--no-demo", action="store_true", default=env("REVIEW_DEMO", "1") == "0",
                        help="do not generate demo pairs on an empty database")
    parser.add_argument("--trust-proxy", action="store_true", default=ON_SPACES or env("REVIEW_TRUST_PROXY") == "1",
                        help="client address from X-Forwarded-For (on by default on Spaces)")
    parser.add_argument("--proxy-hops", type=int, default=int(env("REVIEW_PROXY_HOPS", "1")),
                        help="with --trust-proxy: trusted proxies in front of the app; the client address is this "
                             "many entries from the right of X-Forwarded-For (REVIEW_PROXY_HOPS)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    overrides = {"reveal": args.reveal, "identity": args.identity, "leaderboard_public": args.leaderboard_public}
    try:  # checked before anything is created or stored
        StudySettings.resolve({}, overrides)
    except SettingError as exc:
        raise SystemExit(f"error: {exc}") from None
    dirs = DataDirs.under(args.data).make()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db)
    engines = Engines(args.weights)
    tiny = engines.stack == "tiny"
    try:
        from instantid import PRESET_NAMES
        choices = tuple(p for p in PRESET_NAMES if p != "full")
    except ImportError:
        choices = DEMO_PRESETS
    try:
        settings = StudySettings.resolve(store.get_settings(), overrides)
    except SettingError as exc:
        raise SystemExit(f"error: {exc}") from None
    study = StudyConfig(gold_rate=args.gold_rate, trials_per_session=args.trials_per_session,
                        gold_per_session=args.gold_per_session, reveal=settings.reveal, identity=settings.identity,
                        leaderboard_public=settings.leaderboard_public,
                        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()))
    config = AppConfig(study=study, admin_password=os.environ.get("REVIEW_ADMIN_PASSWORD") or None,
                       banner=TINY_BANNER if tiny else "", preset_choices=choices, stack=engines.stack,
                       trust_proxy=args.trust_proxy, proxy_hops=args.proxy_hops,
                       hf_allow=parse_allow_list(os.environ.get("REVIEW_HF_ALLOW")),
                       hf_admins=parse_allow_list(os.environ.get("REVIEW_HF_ADMINS")))
    logger.info("study settings: reveal=%s identity=%s leaderboard_public=%s", settings.reveal, settings.identity,
                settings.leaderboard_public)
    services = Services(store=store, dirs=dirs, config=config, run_job=job_runner(engines, store, dirs),
                        board=cached_board(store),
                        board_version=store.study_version)
    if not config.admin_password:
        logger.warning("REVIEW_ADMIN_PASSWORD is not set: the Generate tab is disabled")
    if not store.list_pairs() and not args.no_demo:
        threading.Thread(target=make_demo_pairs, args=(services, tiny), name="demo-pairs", daemon=True).start()
    demo = build_demo(services)
    warm_up()
    logger.info("serving on http://%s:%d (db %s, data %s, stack %s)", args.host, args.port, args.db, dirs.root,
                engines.stack)
    demo.launch(server_name=args.host, server_port=args.port, **launch_options(services))


if __name__ == "__main__":
    main()

"""The review app: ``python app.py`` serves it on 127.0.0.1:7860 (Hugging Face Spaces: ``app_file: app.py``).

Wiring only (nothing imports this file): flags and environment variables, the store, the engine (the offline tiny
stack when no weights are configured, loaded on first use), demo pairs on an empty database, ``build_demo``,
launch. On Spaces, ``spaces.GPU`` wraps each generation; elsewhere it is a no-op.

Environment (flags win): REVIEW_WEIGHTS, REVIEW_DB, REVIEW_DATA, REVIEW_HOST, REVIEW_PORT, REVIEW_GOLD_RATE,
REVIEW_GOLD_PER_SESSION, REVIEW_TRIALS_PER_SESSION, REVIEW_MODES, REVIEW_ADMIN_PASSWORD (no flag: keep passwords
off command lines), REVIEW_TRUST_PROXY, REVIEW_PROXY_HOPS, REVIEW_DEMO (0 to skip demo pairs); the study settings
REVIEW_REVEAL, REVIEW_IDENTITY, REVIEW_LEADERBOARD_PUBLIC (else the database's, ``python -m review settings``);
REVIEW_HF_ALLOW and REVIEW_HF_ADMINS (comma-separated Hugging Face user names: reviewers with identity=hf, admins);
the verdict settings REVIEW_MARGIN, REVIEW_ALPHA, REVIEW_PRIMARY_PRESET, ... (``review.stats.verdict_config``),
REVIEW_ADAPTIVE (1: adaptive allocation); REVIEW_ORT (gpu: onnxruntime-gpu); REVIEW_BACKUP_REPO (a dataset repo id:
scheduled backups of the database and an export; needs HF_TOKEN); REVIEW_INTEGRITY_CHECK (1: full
``integrity_check`` at start instead of ``quick_check``), REVIEW_STOP_GRACE_S (how long SIGTERM waits for a running
generation, default 120).
The database and data go under /data/review when /data (a Space's persistent storage) exists, else under var/.

One app process per database: review sessions, served image names and the rate limits live in the process's
memory, so a second process on the same database is refused at start (a lock file next to the database).
SIGTERM: new generation jobs are refused, the running one stops after its current image (what it stored is kept)
and the admin is told; then the server closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from instantid import GenerationSettings
from review.cli.verdict import add_verdict_options, verdict_config
from review.export.sidecar import save_study_settings
from review.generation.engines import Engines, install_engines
from review.generation.inputs import Submission
from review.spaces_env import ensure_onnxruntime, storage_root
from review.stats.allocation import allocation_from_board
from review.stats.board import board_view
from review.stats.verdict_config import VerdictConfig
from review.stats.verdict_config import from_env as verdict_env
from review.store import Store, StoreError
from review.study.identity import parse_allow_list
from review.study.services import TINY_BANNER, AppConfig, DataDirs, GenerateJob, JobStopped, Services
from review.study.settings import ENV, SettingError, StudySettings
from review.study.trials import StudyConfig
from review.ui.single_process import AppLockError, hold_app_lock

logger = logging.getLogger("app")

ON_SPACES = bool(os.environ.get("SPACE_ID"))
DEMO_PROMPT = "a portrait photo of a person, studio light"
DEMO_PRESETS = ("balanced", "fast")
DEMO_SEEDS = (0, 1)

def job_runner(engines: Engines, store: Store, dirs: DataDirs,
               stopping: threading.Event | None = None) -> Callable[..., list[dict[str, Any]]]:
    """run_job for the Generate tab (and the demo pairs): every seed x preset through PairRunner; once
    ``stopping`` is set (SIGTERM) it stops after the image in progress (JobStopped, what is stored is kept)."""

    def run_job(job: GenerateJob, progress: Callable[[float, str], None]) -> list[dict[str, Any]]:
        from review.generation.conditions import expand_conditions
        from review.generation.jobs import PairRunner

        runner = PairRunner(engines.get(), store, dirs.root)
        plan = job.submission
        total, done, rows = len(plan.seeds) * (1 + len(plan.presets)), 0, []

        def tick(label: str) -> None:
            nonlocal done
            done += 1
            progress(min(done / total, 1.0), f"{done} of {total} images ({label})")
            if stopping is not None and stopping.is_set() and done < total:
                raise JobStopped(f"the app is shutting down: generation stopped after {done} of {total} images "
                                 f"({len(rows)} pair(s) made and kept); run it again after the restart")

        for condition in expand_conditions([Path(job.face_path)], [plan.prompt], plan.seeds, plan.settings):
            for pair in runner.run_condition(condition, plan.presets, progress=tick):
                rows.append({"pair_id": pair["pair_id"], "preset": pair["preset"], "seed": condition.seed,
                             "layer_count": pair["layer_count"], "ssim": round(float(pair["ssim"]), 4),
                             "note": pair.get("identity_failure") or ""})
        return rows

    return run_job


def cached_board(store: Store, config: VerdictConfig | None = None) -> Callable[[bool], Any]:
    """The leaderboard view, computed once per (pairs, votes) count and filter, shared by every open tab."""
    cache: dict[tuple[Any, bool], Any] = {}
    lock = threading.Lock()
    config = config or verdict_env()  # REVIEW_MARGIN, REVIEW_ALPHA, ... (review.stats.verdict_config)

    def board(include_failing: bool) -> Any:
        key = (store.study_version(), bool(include_failing))
        with lock:
            if key not in cache:
                cache.clear()
                cache[key] = board_view(store, include_failing=include_failing, config=config)
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
    demo = Submission(prompt=DEMO_PROMPT, presets=DEMO_PRESETS, seeds=DEMO_SEEDS,
                      settings=GenerationSettings(steps=steps, width=side, height=side))
    job = GenerateJob(face_path=str(demo_face(services.dirs)), submission=demo)
    status = services.status

    def progress(fraction: float, text: str) -> None:
        status.set(f"Preparing demo pairs: {text.split(' (')[0]} ({fraction:.0%}).", busy=True)

    status.set("Preparing demo pairs: loading the engine.", busy=True)
    try:
        assert services.run_job is not None
        with services.generate_lock:
            rows = services.run_job(job, progress)
        logger.info("demo pairs ready (%d)", len(rows))
        status.set("", busy=False)  # the line goes; the pairs show up on the page
    except JobStopped as exc:
        logger.warning("demo pairs: %s", exc)
        status.set("Demo pairs stopped: the app is shutting down.", busy=False)
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


def stop_on_sigterm(services: Services, grace_s: float) -> None:
    """SIGTERM: refuse new jobs, let the running generation stop after its current image (at most ``grace_s``),
    then close the server (a KeyboardInterrupt in the main thread, which ``main`` turns into a close)."""

    def on_sigterm(signum: int, frame: Any) -> None:
        if services.stopping.is_set():
            return
        services.stopping.set()
        logger.warning("SIGTERM: no new generation jobs; waiting up to %.0f s for a running one", grace_s)
        if services.generate_lock.acquire(timeout=grace_s):
            services.generate_lock.release()
        else:
            logger.error("the running generation did not stop within %.0f s; closing anyway", grace_s)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every flag defaults to its environment variable."""
    env = os.environ.get
    root = storage_root()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weights", default=env("REVIEW_WEIGHTS") or None,
                        help="weights folder or hub id (REVIEW_WEIGHTS); none: the offline tiny stack")
    parser.add_argument("--db", default=env("REVIEW_DB", str(root / "review.db")),
                        help="SQLite file (REVIEW_DB; under /data/review when /data exists)")
    parser.add_argument("--data", default=env("REVIEW_DATA", str(root / "data")),
                        help="image folder root (REVIEW_DATA; under /data/review when /data exists)")
    parser.add_argument("--host", default=env("REVIEW_HOST") or env("GRADIO_SERVER_NAME")
                        or ("0.0.0.0" if ON_SPACES else "127.0.0.1"),
                        help="interface to listen on (REVIEW_HOST, else GRADIO_SERVER_NAME; 0.0.0.0 on Spaces)")
    parser.add_argument("--port", type=int,
                        default=int(env("REVIEW_PORT") or env("GRADIO_SERVER_PORT") or env("PORT") or "7860"),
                        help="port (REVIEW_PORT, else GRADIO_SERVER_PORT, else PORT)")
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
    parser.add_argument("--adaptive", action="store_true", default=env("REVIEW_ADAPTIVE") == "1",
                        help="serve only presets without a verdict yet (REVIEW_ADAPTIVE=1; review.stats.allocation)")
    add_verdict_options(parser)  # --margin, --alpha, --primary-preset, ... (defaults: REVIEW_MARGIN, ...)
    parser.add_argument("--integrity-check", action="store_true", default=env("REVIEW_INTEGRITY_CHECK") == "1",
                        help="full PRAGMA integrity_check at start (default: quick_check) (REVIEW_INTEGRITY_CHECK)")
    parser.add_argument("--stop-grace-s", type=float, default=float(env("REVIEW_STOP_GRACE_S", "120")),
                        help="on SIGTERM, how long to wait for a running generation (REVIEW_STOP_GRACE_S)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Open the store, wire the services, build the app and serve it until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one INFO line each
    args = parse_args(argv)
    overrides = {"reveal": args.reveal, "identity": args.identity, "leaderboard_public": args.leaderboard_public}
    try:  # checked before anything is created or stored
        StudySettings.resolve({}, overrides)
    except SettingError as exc:
        raise SystemExit(f"error: {exc}") from None
    ensure_onnxruntime(os.environ.get("REVIEW_ORT"))  # before anything imports onnxruntime
    try:
        dirs = DataDirs.under(args.data).make()
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
        store = Store(args.db, check="full" if args.integrity_check else "quick")  # refuses a foreign file first
        app_lock = hold_app_lock(args.db)  # noqa: F841 (held for the life of the process)
    except (StoreError, AppLockError, OSError) as exc:  # one sentence, no traceback
        logger.error("%s", exc)
        sys.exit(f"error: {exc}")
    engines = install_engines(args.weights)
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
    board = cached_board(store, verdict_config(args))
    stopping = threading.Event()
    services = Services(store=store, dirs=dirs, config=config, run_job=job_runner(engines, store, dirs, stopping),
                        board=board, board_version=store.study_version, stopping=stopping,
                        allocation=allocation_from_board(board) if args.adaptive else None)
    save_study_settings(store.path, {**asdict(study), "stack": engines.stack})  # for the exports' dataset card
    backup_repo = os.environ.get("REVIEW_BACKUP_REPO")
    if backup_repo:
        from review.export.hub import start_backup

        start_backup(store, dirs.root / "backup", backup_repo)
    if not config.admin_password:
        logger.warning("REVIEW_ADMIN_PASSWORD is not set: the Generate tab is disabled")
    if not store.list_pairs() and not args.no_demo:
        threading.Thread(target=make_demo_pairs, args=(services, tiny), name="demo-pairs", daemon=True).start()
    from review.ui.app import build_demo  # Gradio: imported once the flags are read (``--help`` stays quick)
    from review.ui.serving import Server

    warm_up()
    server = Server(build_demo(services), services, args.host, args.port)
    stop_on_sigterm(services, args.stop_grace_s)
    logger.info("serving on http://%s:%d (db %s, data %s, stack %s)", args.host, args.port, args.db, dirs.root,
                engines.stack)
    try:
        server.start().wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM once a running generation stopped (stop_on_sigterm)
        logger.info("closing the server")
    finally:
        server.close()


if __name__ == "__main__":
    main()

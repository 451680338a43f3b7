"""Load and crash test of the review app: ``python -m tools.loadtest --reviewers 50 --votes 20 [--json]``.

Starts ``app.py`` as a subprocess on 127.0.0.1 (``tools.loadtest.server``) with a fresh database of synthetic
tiny-stack-like pairs written through the Store API (one face; per condition a full generation and one selective
generation per preset), then runs N simulated reviewers at once through the page's own protocol
(``tools.loadtest.client``): open the page, fetch the images, then M times think and vote (the vote's answer carries
the next pair, which the page shows without another server call).

Reviewers come from distinct addresses (``X-Forwarded-For``; the server runs with ``--trust-proxy``, as on
Spaces) and by default pace themselves at about one vote per second, the server's sustained per-reviewer vote
limit: the most N legitimate reviewers can send. Latency is request sent -> answer received (for the vote: the
whole server side of a review cycle). Afterwards the
DB is read: ``lost`` = acknowledged but not stored with the choice sent, ``duplicates`` = trials with more than
one vote row plus trials acknowledged twice.

``--kill-after-s S``: SIGKILL the server S seconds into the load, restart it on the same files, check that the
page and one more trial + vote are served, then that every vote acknowledged before the kill is stored and
``PRAGMA integrity_check`` is ok. Exit status 1 when a vote is lost or duplicated, the DB is damaged, (without
a kill) any transport error happened or any vote was not sent, or the restarted app does not serve; the latency
target is reported (``p99_target_met``) with the load average before and after, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from review.generation.metrics import ssim
from review.images import write_image
from review.store import Store
from review.study.services import DataDirs
from tools.loadtest.client import LoadOptions, ProtocolError, Tally, drive, serves_again
from tools.loadtest.server import AppServer, free_port

logger = logging.getLogger(__name__)

PRESETS = ("balanced", "fast", "output_only")
LAYERS = {"full": 70, "balanced": 24, "fast": 12, "output_only": 8}  # synthetic layer counts per arm
P99_TARGET_MS = 100.0


# -- the study ------------------------------------------------------------------------------------------------
def seed_study(store: Store, dirs: DataDirs, *, conditions: int, presets: tuple[str, ...] = PRESETS,
               side: int = 128, seed: int = 0) -> int:
    """Write ``conditions`` x ``len(presets)`` pairs of noise images (selective = full plus small noise, SSIM
    measured) through the Store API; returns the number of pairs."""
    rng = np.random.default_rng(seed)
    face_pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    face_image = write_image(dirs.faces, face_pixels)
    face = store.add_face(sha256=face_image.sha256, file=face_image.file, width=side, height=side,
                          label="loadtest noise")
    pairs = 0
    for c in range(conditions):
        cond = store.upsert_condition(face_id=face["id"], prompt="a portrait photo of a person, studio light",
                                      negative_prompt="", seed=c, steps=4, width=side, height=side,
                                      ip_weight=0.8, cn_scale=0.8, guidance_scale=5.0, stack="tiny")

        def generation(preset: str, pixels: np.ndarray, cond_id: int = cond["id"]) -> dict[str, Any]:
            image = write_image(dirs.images, pixels)
            row = store.add_image(file=image.file, sha256=image.sha256, width=side, height=side)
            count = LAYERS.get(preset, 8)
            times = [0.05] * 4
            return store.add_generation(condition_id=cond_id, preset=preset, layers=[f"l{i}" for i in range(count)],
                                        layer_count=count, image_id=row["id"], total_s=sum(times),
                                        step_times=times, device="cpu", dtype="float32",
                                        versions={"stack": "tiny", "loadtest": 1}, run_id="loadtest")

        full_pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        full = generation("full", full_pixels)
        for preset in presets:
            noise = rng.integers(-12, 13, full_pixels.shape)
            sel_pixels = np.clip(full_pixels.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            sel = generation(preset, sel_pixels)
            store.add_pair(full_generation_id=full["id"], selective_generation_id=sel["id"],
                           ssim=ssim(full_pixels, sel_pixels))
            pairs += 1
    return pairs


# -- checks and figures -----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


def stored_votes(db: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every stored vote row and the integrity problems (empty: ``PRAGMA integrity_check`` ok)."""
    store = Store(db)
    try:
        return store.vote_rows(), store.integrity_check()
    finally:
        store.close()


def compare(rows: list[dict[str, Any]], acked: list[tuple[str, str]]) -> dict[str, int]:
    """lost: acknowledged but not stored with that choice; duplicates: trials with more than one vote row plus
    trials acknowledged twice; unacknowledged_stored: stored without the client seeing the acknowledgement."""
    stored = {r["trial_id"]: r["choice"] for r in rows}
    per_trial, acked_per_trial = Counter(r["trial_id"] for r in rows), Counter(t for t, _ in acked)
    duplicates = sum(1 for n in per_trial.values() if n > 1) + sum(1 for n in acked_per_trial.values() if n > 1)
    return {"stored": len(rows), "lost": sum(1 for t, c in acked if stored.get(t) != c), "duplicates": duplicates,
            "unacknowledged_stored": len(set(stored) - set(acked_per_trial))}


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 2)


def run(opts: LoadOptions, workdir: Path | None = None) -> dict[str, Any]:
    """The whole test; returns the figures. Files go to ``workdir`` (kept) or a temporary folder (removed)."""
    work = Path(tempfile.mkdtemp(prefix="review-load-")) if workdir is None else Path(workdir)
    try:
        return _run(opts, work)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(opts: LoadOptions, work: Path) -> dict[str, Any]:
    dirs, db = DataDirs.under(work / "data").make(), work / "review.db"
    with Store(db) as store:
        pairs = seed_study(store, dirs, conditions=opts.votes + 3,
                           side=opts.image_side, seed=opts.seed)
    server = AppServer(db, dirs.root, work / "server.log", trials_per_session=max(opts.votes, 20),
                       profile=opts.profile)
    tally, facts, cpu = Tally(), {}, {}
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    try:
        server.start(opts.port or free_port())
        began, client_cpu, server_cpu = time.perf_counter(), time.process_time(), server.cpu_s()
        facts = asyncio.run(drive(server.base, opts, tally, server.kill))
        duration = time.perf_counter() - began
        cpu = {"server_cpu_s": _spent(server_cpu, server.cpu_s()),  # during the load only (not the start-up)
               "client_cpu_s": round(time.process_time() - client_cpu, 1)}
        acked_before = list(tally.acked)  # everything the (killed) server acknowledged
        if opts.kill_after_s is not None:
            try:
                server.start(opts.port or free_port())
                served, extra = asyncio.run(serves_again(server.base))
            except (RuntimeError, httpx.HTTPError, ProtocolError) as exc:
                served, extra = False, []
                tally.errors.append(f"after the restart: {type(exc).__name__}: {exc}")
            facts["served_after_restart"] = served
            tally.acked.extend(extra)
    finally:
        server.stop()
    rows, problems = stored_votes(db)
    figures: dict[str, Any] = {
        "sent": tally.sent, "acknowledged": len(tally.acked), **compare(rows, tally.acked),
        "p50_ms": percentile(tally.vote_ms, 50), "p99_ms": percentile(tally.vote_ms, 99),
        "max_ms": percentile(tally.vote_ms, 100), "images_p50_ms": percentile(tally.image_ms, 50),
        "images_p99_ms": percentile(tally.image_ms, 99), "refused": len(tally.refused),
        "errors": len(tally.errors), "integrity": "ok" if not problems else "; ".join(problems), **facts}
    if opts.kill_after_s is not None:
        figures["acknowledged_before_kill"] = len(acked_before)
        figures["lost_after_kill"] = compare(rows, acked_before)["lost"]
    figures.update(reviewers=opts.reviewers, votes_per_reviewer=opts.votes, think_s=opts.think_s, pairs=pairs,
                   image_side=opts.image_side,
                   duration_s=round(duration, 1), votes_per_s=round(len(tally.vote_ms) / duration, 1), **cpu)
    if figures.get("server_cpu_s") is not None and tally.vote_ms:  # a vote is one review cycle (+ its images)
        figures["server_cpu_ms_per_vote"] = round(1000 * figures["server_cpu_s"] / len(tally.vote_ms), 1)
    figures["p99_target_met"] = figures["p99_ms"] is not None and figures["p99_ms"] < P99_TARGET_MS
    figures["refusal_samples"] = [f"{n} x {text}" for text, n in Counter(tally.refused).most_common(5)]
    figures["error_samples"] = tally.errors[:5]
    figures["machine"] = f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    figures["load_avg_before"] = load_before
    figures["load_avg_after"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    figures["expected"] = opts.reviewers * opts.votes
    figures["unsent"] = max(0, figures["expected"] - tally.sent)
    figures["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not passed(figures):
        figures["server_log_tail"] = server.tail()
    return figures


def passed(figures: dict[str, Any]) -> bool:
    """No vote lost or duplicated, the DB healthy; without a kill also no transport error and every vote sent
    (a reviewer aborted by a transport error never sends the rest); after a kill the restarted app serving."""
    ok = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["integrity"] == "ok"
    if "lost_after_kill" in figures:
        ok = ok and bool(figures.get("served_after_restart")) and figures["lost_after_kill"] == 0
    else:
        ok = ok and figures["errors"] == 0 and figures.get("unsent", 0) == 0
    return ok


SHOWN = ("expected", "sent", "unsent", "acknowledged", "stored", "lost", "duplicates", "p50_ms", "p99_ms", "max_ms", "images_p50_ms",
         "images_p99_ms", "refused", "errors", "integrity", "reviewers_active_at_kill", "acknowledged_before_kill",
         "lost_after_kill", "unacknowledged_stored", "served_after_restart", "duration_s", "votes_per_s",
         "server_cpu_s", "server_cpu_ms_per_vote", "client_cpu_s", "image_side", "load_avg_before", "load_avg_after", "machine", "date")


def main(argv: list[str] | None = None) -> int:
    """The command line: run the load (and crash) test, print its figures; 1 when a check failed."""
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviewers", type=int, default=50, help="simulated reviewers at once (50)")
    parser.add_argument("--votes", type=int, default=20, help="votes per reviewer (20)")
    parser.add_argument("--think-s", type=float, default=1.0, help="mean pause before each vote, s (1.0)")
    parser.add_argument("--kill-after-s", type=float, default=None, help="SIGKILL the server after S s, restart")
    parser.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-images", action="store_true", help="do not fetch the served images")
    parser.add_argument("--image-side", type=int, default=128,
                        help="side of the study's square images in pixels (128, the tiny stack's; 1024: SDXL's)")
    parser.add_argument("--profile", action="store_true", help="report Gradio's per-phase server times")
    parser.add_argument("--keep", type=Path, default=None, help="keep DB, images and server log in this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.reviewers < 1 or args.votes < 1 or args.think_s < 0 or not 0 <= args.port < 65536:
        parser.error("reviewers and votes must be >= 1, think time >= 0, port in 0..65535")
    if not 8 <= args.image_side <= 2048:
        parser.error("--image-side must be in 8..2048")
    if args.kill_after_s is not None and args.kill_after_s <= 0:
        parser.error("--kill-after-s must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    opts = LoadOptions(reviewers=args.reviewers, votes=args.votes, think_s=args.think_s,
                       kill_after_s=args.kill_after_s, port=args.port, fetch_images=not args.no_images,
                       profile=args.profile, image_side=args.image_side)
    figures = run(opts, args.keep)
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        for key in SHOWN:
            if key in figures:
                print(f"{key:>26}: {figures[key]}")
        for key in ("server_phases_ms", "refusal_samples", "error_samples", "server_log_tail"):
            if figures.get(key):
                print(f"{key}:", *(figures[key].items() if isinstance(figures[key], dict) else figures[key]),
                      sep="\n  ")
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())

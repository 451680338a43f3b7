"""An adversary against the blinding, through the page's own protocol over HTTP.

36 reviewers, colluding (they pool everything their browsers received), review one session each on the running
app, interleaved, every third in ABX mode. Before each vote the coalition predicts which side shows the full arm
and whether the trial is a gold check, from everything received so far: its own and the others' reveals, the
served bytes (file hashes, IDAT hashes, decoded-pixel hashes, file and IDAT lengths), which images were seen
before and beside which partner, and how long the server took to answer. Each predictor abstains when it has
nothing to go on ("left is full", "not gold"). With blinding that holds, the best predictor is right about the
full side half the time (0.5 +- 0.06 over > 500 trials) and about gold no more often than always saying "not gold".

The predictors use exact matches (hashes, lengths, counts) and revealed text; they do not compare pixels within or
across trials for near-equality (a devtools user can: docs/hardening.md, "What a devtools user can still do").
Run against the code before issue 11 (the same file, copied into a checkout of that commit) this test fails;
the figures of both runs are in docs/hardening.md. ``ADVERSARY_REPORT=path`` writes the figures as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import re
import statistics
import struct
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest
from fixtures_review import launched, make_services
from PIL import Image
from test_app_server import Api

from review.study.trials import StudyConfig

REVIEWERS = 36
CONDITIONS = 40  # seeds; each condition has two presets sharing its full image (as real studies do)
SIDE_TOLERANCE = 0.06
GOLD_TOLERANCE = 0.03


def study_config(**values: Any) -> StudyConfig:
    """A StudyConfig with the values this code knows (the test also runs on older code)."""
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    return StudyConfig(**{k: v for k, v in values.items() if k in known})


def png_features(data: bytes) -> dict[str, Any]:
    """Exact features of one served image: hashes of the file, of its IDAT data and of its decoded pixels; the
    file and IDAT lengths."""
    offset, idat = 8, []
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            idat.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB")).tobytes()
    joined = b"".join(idat)
    return {"file": hashlib.sha256(data).hexdigest(), "idat": hashlib.sha256(joined).hexdigest(),
            "pixels": hashlib.sha256(pixels).hexdigest(), "length": len(data), "idat_length": len(joined)}


REVEAL_LEFT = re.compile(r"Left: (?:\*\*)?(full|selective)")  # the card shows the reveal as plain text
REVEAL_ABX = re.compile(r"A: (full|selective), B: (full|selective)")
REVEAL_GOLD = re.compile(r"(?i)check pair")


class Coalition:
    """Everything the colluding browsers received, and the predictors built on it."""

    def __init__(self) -> None:
        self.arm_of: dict[str, str] = {}  # image hash (any kind) -> arm, from reveals
        self.gold_images: set[str] = set()  # image hashes revealed to be shown in a check pair
        self.seen_by: dict[str, set[str]] = defaultdict(set)  # image hash -> reviewers who were shown it
        self.partners: dict[str, set[str]] = defaultdict(set)  # pixel hash -> pixel hashes shown beside it
        self.left_history: dict[str, Counter] = defaultdict(Counter)  # reviewer -> revealed left arms
        self.serve_ms: list[float] = []

    @staticmethod
    def keys(image: dict[str, Any]) -> list[str]:
        return [image["file"], image["idat"], image["pixels"]]

    # -- side predictors: 'left' / 'right' (the side showing the full arm) or None -------------------------
    def side_predictions(self, reviewer: str, mode: str, left: dict, right: dict, x: dict | None) -> dict:
        out: dict[str, str | None] = {}
        history = self.left_history[reviewer]
        out["balancing"] = None if history["full"] == history["selective"] else \
            ("left" if history["full"] < history["selective"] else "right")
        lookup = None
        for side, image in (("left", left), ("right", right)):
            arm = next((self.arm_of[k] for k in self.keys(image) if k in self.arm_of), None)
            if arm is not None:
                lookup = side if arm == "full" else ("right" if side == "left" else "left")
        out["hash_lookup"] = lookup
        shared = [side for side, image in (("left", left), ("right", right))
                  if self.partners[image["pixels"]] - {right["pixels"] if side == "left" else left["pixels"]}]
        out["shared_image"] = shared[0] if len(shared) == 1 else None
        if mode == "abx" and x is not None:
            match = [side for side, image in (("left", left), ("right", right))
                     if any(a == b for a, b in zip(self.keys(image), self.keys(x), strict=True))]
            out["x_hash_match"] = match[0] if len(match) == 1 else None
            gaps = {side: abs(image["idat_length"] - x["idat_length"]) for side, image in (("left", left),
                                                                                            ("right", right))}
            out["x_length_match"] = None if gaps["left"] == gaps["right"] else min(gaps, key=gaps.__getitem__)
        else:
            out["x_hash_match"] = out["x_length_match"] = None
            out["larger_idat"] = None if left["idat_length"] == right["idat_length"] else \
                ("left" if left["idat_length"] > right["idat_length"] else "right")
        out["any"] = next((v for k, v in out.items() if v is not None and k != "larger_idat"), None)
        return out

    # -- gold predictors: True / False -------------------------------------------------------------------
    def gold_predictions(self, reviewer: str, images: list[dict], serve_ms: float) -> dict[str, bool]:
        keys = [k for image in images for k in self.keys(image)]
        left, right = images[0], images[1]
        median = statistics.median(self.serve_ms) if len(self.serve_ms) >= 10 else None
        out = {
            "seen_by_self": any(reviewer in self.seen_by[k] for k in keys),
            "seen_by_coalition": any(self.seen_by[k] for k in keys),
            "twin_hashes": any(a == b for a, b in zip(self.keys(left), self.keys(right), strict=True)),
            "revealed_gold_image": any(k in self.gold_images for k in keys),
            "slow_serve": median is not None and serve_ms > 1.5 * median,
        }
        out["any"] = any(out.values())
        return out

    # -- learning from what came back --------------------------------------------------------------------
    def saw(self, reviewer: str, images: list[dict], serve_ms: float) -> None:
        for image in images:
            for k in self.keys(image):
                self.seen_by[k].add(reviewer)
        self.partners[images[0]["pixels"]].add(images[1]["pixels"])
        self.partners[images[1]["pixels"]].add(images[0]["pixels"])
        self.serve_ms.append(serve_ms)

    def learn(self, reviewer: str, reveal: str, images: list[dict], mode: str) -> None:
        if REVEAL_GOLD.search(reveal):
            self.gold_images.update(k for image in images for k in self.keys(image))
            return
        arms = None
        if (m := REVEAL_ABX.search(reveal)) and mode == "abx":
            arms = (m.group(1), m.group(2))
        elif m := REVEAL_LEFT.search(reveal):
            arms = (m.group(1), "selective" if m.group(1) == "full" else "full")
        if arms:
            self.left_history[reviewer][arms[0]] += 1
            for image, arm in zip(images[:2], arms, strict=True):
                for k in self.keys(image):
                    self.arm_of[k] = arm


def _urls(card: dict[str, Any]) -> list[str | None]:
    """left, x, right image URLs of a trial card (None where the card has no such image)."""
    by_side = {image["side"]: image["src"] for image in card["images"]}
    return [by_side.get(side) for side in ("left", "x", "right")]


def run_study(base: str, services: Any, seed: int = 0) -> dict[str, Any]:
    api = Api(base)
    rng = random.Random(seed)
    coalition = Coalition()
    reviewers = []
    for i in range(REVIEWERS):
        mode = "abx" if i % 3 == 2 else "preference"
        session = f"adversary{i:03d}{rng.getrandbits(32):08x}"
        started = time.perf_counter()
        card = api.open(session, mode=mode)
        left, x, right = _urls(card)
        reviewers.append({"session": session, "mode": mode, "trial": card["trial"], "urls": (left, right, x),
                          "serve_ms": (time.perf_counter() - started) * 1000})
    records = []
    active = list(reviewers)
    while active:
        for reviewer in list(active):
            if not reviewer["trial"]:
                active.remove(reviewer)
                continue
            who, mode = reviewer["session"], reviewer["mode"]
            left_url, right_url, x_url = reviewer["urls"]
            images = [png_features(api.http.get(u).content) for u in (left_url, right_url) if u]
            x = png_features(api.http.get(x_url).content) if x_url else None
            all_images = images + ([x] if x else [])
            side = coalition.side_predictions(who, mode, images[0], images[1], x)
            gold = coalition.gold_predictions(who, all_images, reviewer["serve_ms"])
            coalition.saw(who, all_images, reviewer["serve_ms"])
            choice = rng.choice(["a", "b"] if mode == "abx" else ["left", "right", "same"])
            started = time.perf_counter()
            ok, answer = api.vote(who, reviewer["trial"], choice, mode)
            assert ok, answer
            elapsed = (time.perf_counter() - started) * 1000
            trial = services.store.get_trial(reviewer["trial"])  # the truth, read only to score
            records.append({"gold": bool(trial["is_gold"]), "mode": mode, "side": side, "gold_pred": gold,
                            "full": None if trial["is_gold"] else ("left" if trial["left_arm"] == "full" else "right")})
            shown = answer["staged"] if answer["next"] else answer  # reveal=each: the next trial is staged
            coalition.learn(who, answer["reveal"], all_images, mode)
            left, x_next, right = _urls(shown)
            reviewer.update(trial=shown["trial"], urls=(left, right, x_next), serve_ms=elapsed)
    return score(records)


def score(records: list[dict]) -> dict[str, Any]:
    real = [r for r in records if not r["gold"]]
    names = sorted({name for r in real for name in r["side"]})
    side = {name: sum((r["side"].get(name) or "left") == r["full"] for r in real) / len(real) for name in names}
    gold_rate = sum(r["gold"] for r in records) / len(records)
    gold = {name: sum(r["gold_pred"][name] == r["gold"] for r in records) / len(records)
            for name in records[0]["gold_pred"]}
    return {"trials": len(records), "real_trials": len(real), "gold_trials": len(records) - len(real),
            "gold_rate": round(gold_rate, 4), "gold_chance": round(max(gold_rate, 1 - gold_rate), 4),
            "side_accuracy": {k: round(v, 4) for k, v in side.items()},
            "gold_accuracy": {k: round(v, 4) for k, v in gold.items()},
            "best_side": round(max(side.values()), 4), "best_gold": round(max(gold.values()), 4)}


@pytest.fixture(scope="module")
def adversary_figures(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("adversary"), seeds=tuple(range(CONDITIONS)),
                             presets=("fast", "balanced"), shared_full=True,
                             study=study_config(gold_rate=0.2, trials_per_session=20, vote_burst=10_000,
                                                vote_per_s=10_000.0, address_burst=100_000, address_per_s=10_000.0,
                                                trial_burst=100_000, trial_per_s=10_000.0))
    with launched(services) as base:
        figures = run_study(base, services)
    if os.environ.get("ADVERSARY_REPORT"):
        with open(os.environ["ADVERSARY_REPORT"], "w") as handle:
            json.dump(figures, handle, indent=2)
    print(json.dumps(figures, indent=2))
    return figures


@pytest.mark.slow
def test_colluding_reviewers_cannot_predict_the_full_side(adversary_figures):
    figures = adversary_figures
    assert figures["trials"] >= 500 and figures["real_trials"] >= 450
    assert abs(figures["best_side"] - 0.5) <= SIDE_TOLERANCE, figures["side_accuracy"]


def test_colluding_reviewers_cannot_recognise_gold_checks(adversary_figures):
    figures = adversary_figures
    assert figures["gold_trials"] >= 0.1 * figures["trials"]  # enough gold that recognising it would show
    assert figures["best_gold"] <= figures["gold_chance"] + GOLD_TOLERANCE, figures["gold_accuracy"]

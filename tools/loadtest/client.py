"""Simulated reviewers for ``tools.loadtest.harness``: the page's own protocol, driven from asyncio + httpx.

Each event goes the way the page sends it, read from the app's config: a queued event is POST
``/gradio_api/queue/join`` (fn_index, data, event data, session hash) and then the SSE stream
``/gradio_api/queue/data?session_hash=...`` read until ``process_completed``; an event with ``queue=False`` (the
review events) is one POST ``/gradio_api/run/predict`` answered with its outputs. The review page's state is one
value, the trial card (``review/ui/review_card.py``). A reviewer opens the page (``open_page``) and fetches the
card's images like a browser would, then M times: looks (think time), votes with a random allowed choice (the
card's ``click`` event, data ``{trial, choice, shown_ms}``). The vote's answer is the next card; with
reveal=each it holds the voted pair, locked, with the next trial staged inside, which the page shows when the
reviewer presses 'Next pair' (in the page, no server call). The reviewer then fetches its images and goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from review.study.trials import CHOICES

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class LoadOptions:
    """How many reviewers, votes and pauses; the kill, profiling and image settings."""

    reviewers: int = 50
    votes: int = 20  # votes per reviewer
    think_s: float = 1.0  # mean pause before each vote (uniform in 0.5x .. 1.5x); 1 vote/s is the server's limit
    kill_after_s: float | None = None  # SIGKILL the server this far into the load, then restart it
    port: int = 0  # 0: a free port
    abx_every: int = 5  # every n-th reviewer works in ABX mode (0: none)
    fetch_images: bool = True  # GET the served images after each trial, as a browser does
    profile: bool = False  # GRADIO_PROFILING=1 on the server; report its per-phase times
    image_side: int = 128  # the demo's tiny-stack size
    seed: int = 0
    timeout_s: float = 600.0  # the whole load phase


@dataclass
class Tally:
    """What the reviewers saw: votes sent, acknowledged, refused, errors, latencies."""

    sent: int = 0
    acked: list[tuple[str, str]] = field(default_factory=list)  # (trial id, choice)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    vote_ms: list[float] = field(default_factory=list)
    image_ms: list[float] = field(default_factory=list)
    active: int = 0  # reviewers still running


class ProtocolError(RuntimeError):
    """The queue stream ended or failed before the event completed."""


CARD = "review-card"  # the trial card's elem_id


@dataclass(frozen=True)
class Endpoints:
    """Where the review events are: fn indices by api name, which skip the queue, and each one's outputs."""

    open: int
    vote: int
    direct: frozenset[int]  # fn indices with queue=False (POST /run, no queue)
    outputs: dict[int, list[str]]  # fn_index -> its outputs' elem_ids (or component types)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Endpoints:
        """The open_page and vote events of the app's config, and every event's outputs by name."""
        names = {c["id"]: (c.get("props") or {}).get("elem_id") or c["type"] for c in config["components"]}
        deps = [d for d in config["dependencies"] if d.get("backend_fn")]
        by_name = {d["api_name"]: d["id"] for d in deps}
        outputs = {d["id"]: [names[o] for o in d["outputs"]] for d in deps}
        return cls(by_name["open_page"], by_name["vote"], frozenset(d["id"] for d in deps if d.get("queue") is False),
                   outputs)

    @classmethod
    async def fetch(cls, client: httpx.AsyncClient) -> Endpoints:
        """The endpoints of the app at ``client``'s base URL."""
        return cls.from_config((await client.get("config")).raise_for_status().json())

    def trial(self, fn: int, data: list[Any]) -> tuple[str, list[str]]:
        """(trial id, image URLs) the page shows after an output of ``fn``: the card's trial, or after a vote with
        reveal=each the staged one ('Next pair')."""
        card = data[self.outputs[fn].index(CARD)]
        if not isinstance(card, dict):
            return "", []
        shown = card.get("staged") if card.get("next") else card
        shown = shown if isinstance(shown, dict) else {}
        trial = shown.get("trial")
        return (trial if isinstance(trial, str) else ""), image_urls(shown)


async def call(client: httpx.AsyncClient, api: Endpoints, fn: int, data: list[Any], session: str,
               headers: dict[str, str], event: dict[str, Any] | None = None) -> tuple[bool, Any]:
    """One event, sent as the page sends it: (success, output data or the error message)."""
    body = {"data": data, "fn_index": fn, "session_hash": session, "event_data": event, "trigger_id": None}
    if fn in api.direct:
        response = await client.post("gradio_api/run/predict", json=body, headers=headers)
        if response.status_code == 200:
            return True, response.json().get("data")
        try:
            return False, str(response.json().get("error") or response.text)
        except ValueError:
            response.raise_for_status()
            return False, response.text
    joined = await client.post("gradio_api/queue/join", json=body, headers=headers)
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    async with client.stream("GET", "gradio_api/queue/data", params={"session_hash": session},
                             headers=headers) as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            kind = message.get("msg")
            if kind == "process_completed" and message.get("event_id") == event_id:
                output = message.get("output") or {}
                if message.get("success"):
                    return True, output.get("data")
                return False, str(output.get("error") or output)
            if kind in ("unexpected_error", "close_stream"):
                raise ProtocolError(f"queue stream: {message}")
    raise ProtocolError("queue stream ended before the event completed")


def image_urls(card: dict[str, Any]) -> list[str]:
    """The image URLs of a trial card: the reference face and the compared images (relative to the page)."""
    images = card.get("images") if isinstance(card.get("images"), list) else []
    urls = [card.get("face"), *(i.get("src") for i in images if isinstance(i, dict))]
    return [u for u in urls if isinstance(u, str) and u]


async def fetch_images(client: httpx.AsyncClient, urls: list[str], seen: set[str], tally: Tally,
                       headers: dict[str, str]) -> None:
    """GET the images a browser has not cached yet (same URL: cached), all at once."""
    fresh = [u for u in urls if u not in seen and "://" not in u and not u.startswith("/")]  # the app's own
    start = time.perf_counter()
    for response in await asyncio.gather(*(client.get(u, headers=headers) for u in fresh)):
        response.raise_for_status()
    if fresh:
        tally.image_ms.append((time.perf_counter() - start) * 1000)
    seen.update(fresh)


async def reviewer(client: httpx.AsyncClient, api: Endpoints, index: int, opts: LoadOptions, tally: Tally) -> None:
    """One simulated reviewer. Stops at a transport error (the server went away) or when no trial is served."""
    rng = random.Random(opts.seed * 100_003 + index)
    mode = "abx" if opts.abx_every and index % opts.abx_every == opts.abx_every - 1 else "preference"
    session = f"load{index:04d}{rng.getrandbits(48):012x}"
    headers = {"x-forwarded-for": f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"}
    cached: set[str] = set()
    tally.active += 1
    try:
        await asyncio.sleep(rng.uniform(0.0, opts.think_s))  # page loads spread over the first think time
        ok, data = await call(client, api, api.open, ["", mode, ""], session, headers)
        trial, urls = api.trial(api.open, data) if ok else ("", [])
        shown_at: float | None = None  # when 'Next pair' showed a staged pair (the page's clock)
        for _ in range(opts.votes):
            if not trial:
                tally.errors.append(f"reviewer {index}: no trial served ({data})")
                return
            if opts.fetch_images:
                await fetch_images(client, urls, cached, tally, headers)
            await asyncio.sleep(opts.think_s * rng.uniform(0.5, 1.5))
            choice = rng.choice(CHOICES[mode])
            shown_ms = -1 if shown_at is None else round((time.perf_counter() - shown_at) * 1000)
            tally.sent += 1
            start = time.perf_counter()
            ok, data = await call(client, api, api.vote, [mode], session, headers,
                                  {"trial": trial, "choice": choice, "shown_ms": shown_ms})
            tally.vote_ms.append((time.perf_counter() - start) * 1000)
            if not ok:  # the page keeps the pair and its answers: the reviewer tries again after a pause
                tally.refused.append(str(data))
                continue
            tally.acked.append((trial, choice))
            trial, urls = api.trial(api.vote, data)  # the next card (or its staged trial, after 'Next pair')
            shown_at = time.perf_counter()
    except (httpx.HTTPError, ProtocolError) as exc:
        tally.errors.append(f"reviewer {index}: {type(exc).__name__}: {exc}")
    finally:
        tally.active -= 1


async def drive(base: str, opts: LoadOptions, tally: Tally, kill: Callable[[], None]) -> dict[str, Any]:
    """Run every reviewer at once; with ``kill_after_s``, call ``kill`` that far in. Returns facts about the
    kill, or the server's per-phase profile when ``opts.profile``."""
    limits = httpx.Limits(max_connections=4 * opts.reviewers + 10, max_keepalive_connections=3 * opts.reviewers)
    facts: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits, trust_env=False) as client:
        api = await Endpoints.fetch(client)
        tasks = [asyncio.create_task(reviewer(client, api, i, opts, tally)) for i in range(opts.reviewers)]
        if opts.kill_after_s is not None:
            await asyncio.sleep(opts.kill_after_s)
            facts = {"reviewers_active_at_kill": tally.active}
            kill()
            logger.info("server killed (SIGKILL) after %.1f s with %d reviewers active", opts.kill_after_s,
                        tally.active)
        done, pending = await asyncio.wait(tasks, timeout=opts.timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            tally.errors.append(f"{len(pending)} reviewers still running after {opts.timeout_s:.0f} s: cancelled")
            await asyncio.gather(*pending, return_exceptions=True)
        if opts.profile and opts.kill_after_s is None:
            traces = (await client.get("gradio_api/profiling/traces")).raise_for_status().json()
            facts["server_phases_ms"] = phases(traces)
    return facts


def phases(traces: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Gradio's per-event traces -> per handler (vote_1 .. counted as vote) and phase: 'p50/p99' in ms."""
    by_fn: dict[str, dict[str, list[float]]] = {}
    for trace in traces:
        fn = by_fn.setdefault(re.sub(r"_\d+$", "", str(trace.get("fn_name"))), {})
        for phase in ("queue_wait", "preprocess", "fn_call", "postprocess", "total"):
            fn.setdefault(phase, []).append(float(trace.get(f"{phase}_ms") or 0.0))

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {fn: {phase: f"{p(v, 0.5)}/{p(v, 0.99)}" for phase, v in table.items()} for fn, table in by_fn.items()}


async def serves_again(base: str) -> tuple[bool, list[tuple[str, str]]]:
    """GET / and one fresh session's trial (images fetched) + vote on the restarted app; (ok, acknowledged)."""
    async with httpx.AsyncClient(base_url=base, timeout=30.0, trust_env=False) as client:
        if (await client.get("")).status_code != 200:
            return False, []
        api = await Endpoints.fetch(client)
        session, headers = f"restart{random.getrandbits(48):012x}", {"x-forwarded-for": "10.255.255.254"}
        ok, data = await call(client, api, api.open, ["", "preference", ""], session, headers)
        trial, urls = api.trial(api.open, data) if ok else ("", [])
        if not trial:
            return False, []
        await fetch_images(client, urls, set(), Tally(), headers)
        ok, _ = await call(client, api, api.vote, ["preference"], session, headers,
                           {"trial": trial, "choice": "left", "shown_ms": -1})
        return ok, [(trial, "left")] if ok else []

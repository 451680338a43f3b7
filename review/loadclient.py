"""Simulated reviewers for ``review.loadtest``: the page's own protocol, driven from asyncio + httpx.

One event = POST ``/gradio_api/queue/join`` (fn_index, data, session hash) and then the SSE stream
``/gradio_api/queue/data?session_hash=...`` read until ``process_completed`` for that event, as the browser does.
A reviewer opens the page (``open_page``), fetches the served images like a browser would, then M times: looks
(think time), votes with a random allowed choice through the fn of the matching button, asks for the next pair.
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

from review.trials import CHOICES

logger = logging.getLogger(__name__)

IMAGE_SLOTS = slice(2, 6)  # face, left, x, right in an open_page / next_pair output


@dataclass(frozen=True)
class LoadOptions:
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
    sent: int = 0
    acked: list[tuple[str, str]] = field(default_factory=list)  # (trial id, choice)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    vote_ms: list[float] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    image_ms: list[float] = field(default_factory=list)
    active: int = 0  # reviewers still running


class ProtocolError(RuntimeError):
    """The queue stream ended or failed before the event completed."""


@dataclass(frozen=True)
class Endpoints:
    open: int
    next: int
    vote: dict[str, int]  # choice -> fn_index of its button

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Endpoints:
        """fn indices by api name (open_page, next_pair) and, for votes, by the clicked button's elem_id."""
        elem = {c["id"]: (c.get("props") or {}).get("elem_id") for c in config["components"]}
        fns = {d["api_name"]: d["id"] for d in config["dependencies"]}
        votes = {}
        for dep in config["dependencies"]:
            for target, _ in dep.get("targets") or []:
                name = elem.get(target) or ""
                if dep["api_name"].startswith("vote") and name.startswith("vote-"):
                    votes[name.removeprefix("vote-")] = dep["id"]
        return cls(fns["open_page"], fns["next_pair"], votes)

    @classmethod
    async def fetch(cls, client: httpx.AsyncClient) -> Endpoints:
        return cls.from_config((await client.get("config")).raise_for_status().json())


async def call(client: httpx.AsyncClient, fn: int, data: list[Any], session: str,
               headers: dict[str, str]) -> tuple[bool, Any]:
    """One event: (success, output data or the error message)."""
    body = {"data": data, "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
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


def image_urls(data: list[Any]) -> list[str]:
    """Image URLs in an output, whether sent as component updates ({"value": FileData}) or as plain FileData."""
    urls = []
    for item in data[IMAGE_SLOTS]:
        file = item.get("value") if isinstance(item, dict) and "__type__" in item else item
        if isinstance(file, dict) and isinstance(file.get("url"), str):
            urls.append(file["url"])
    return urls


async def fetch_images(client: httpx.AsyncClient, urls: list[str], seen: set[str], tally: Tally,
                       headers: dict[str, str]) -> None:
    """GET the images a browser has not cached yet (same URL: cached), all at once."""
    fresh = [u for u in urls if u not in seen and u.startswith(str(client.base_url))]
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
        ok, data = await call(client, api.open, ["", mode], session, headers)
        for _ in range(opts.votes):
            trial = data[1] if ok else None
            if not trial:
                tally.errors.append(f"reviewer {index}: no trial served ({data})")
                return
            if opts.fetch_images:
                await fetch_images(client, image_urls(data), cached, tally, headers)
            await asyncio.sleep(opts.think_s * rng.uniform(0.5, 1.5))
            choice = rng.choice(CHOICES[mode])
            tally.sent += 1
            start = time.perf_counter()
            ok, out = await call(client, api.vote[choice], [trial, choice, mode], session, headers)
            tally.vote_ms.append((time.perf_counter() - start) * 1000)
            if ok:
                tally.acked.append((trial, choice))
            else:
                tally.refused.append(str(out))
            start = time.perf_counter()
            ok, data = await call(client, api.next, [mode], session, headers)
            tally.next_ms.append((time.perf_counter() - start) * 1000)
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
        ok, data = await call(client, api.open, ["", "preference"], session, headers)
        if not ok or not data[1]:
            return False, []
        await fetch_images(client, image_urls(data), set(), Tally(), headers)
        ok, _ = await call(client, api.vote["left"], [data[1], "left", "preference"], session, headers)
        return ok, [(data[1], "left")] if ok else []

"""A reviewer in Debian's Chromium (Playwright): votes on 5 pairs with the mouse and the keyboard, then one ABX
trial. Before each vote the visible page, its image URLs and every API/SSE/JSON response body seen since the
last vote name no preset and no arm; the vote's own answer names them only in the reveal text (the next pair
comes staged in the same answer); afterwards the votes in SQLite match the sides the page really showed.
Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fixtures_review import ALL_NAMES, launched, make_services
from PIL import Image

from review.study.trials import StudyConfig, outcome_for

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic"]
LEAK = re.compile(r"(?i)(?<![a-z0-9])(" + "|".join(ALL_NAMES) + r")(?![a-z0-9])")
# Gradio's own enum-valued settings in its config/updates ("show_progress": "full", "show_search": "none")
GRADIO_ENUM_KEYS = {"show_progress", "show_search", "deep_link_state"}
# (how the vote is given, choice): mouse clicks a button, keyboard presses a shortcut
PLAN = [("mouse", "left"), ("keyboard", "right"), ("mouse", "same"), ("keyboard", "left"), ("keyboard", "same")]
KEYS = {"left": "1", "right": "ArrowRight", "same": "ArrowDown", "a": "a", "b": "b"}
REVEAL = re.compile(r"^(Left: |X was |That was a check pair)")  # the reveal texts (ReviewDesk._reveal)


def strings(value: Any, key: str = "") -> list[str]:
    """Every string value in a JSON document, skipping Gradio's enum-valued settings."""
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in GRADIO_ENUM_KEYS for s in strings(v, k)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v, key)]
    return [value] if isinstance(value, str) else []


def sse_strings(payload: str) -> list[str]:
    """String values of one SSE data payload: JSON, or the raw text (heartbeats send 'ALIVE')."""
    try:
        return strings(json.loads(payload))
    except json.JSONDecodeError:
        return [payload]


def body_strings(content_type: str, text: str) -> list[str]:
    """The string values of a JSON body, an SSE stream (data: lines) or the page's embedded gradio_config."""
    if "event-stream" in content_type:
        return [s for line in text.splitlines() if line.startswith("data:") for s in sse_strings(line[5:])]
    if "json" in content_type:
        return strings(json.loads(text)) if text.strip() else []
    match = re.search(r"window\.gradio_config\s*=\s*(\{.*?\});\s*</script>", text, re.S)
    return strings(json.loads(match.group(1))) if match else [text]


# The page's fetch() is wrapped so every Gradio API body (queue/data is a fetch()-read SSE stream that Chromium
# does not keep; the review events are plain POSTs to /run/) is also read into window.__bodies as it arrives.
FETCH_TEE = """
(() => {
  window.__bodies = [];
  window.__marks = [];
  const original = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await original(input, init);
    const url = typeof input === "string" ? input : (input.url || String(input));
    if (url.includes("/gradio_api/") && !url.includes("/gradio_api/file=")) {
      const entry = {url, type: response.headers.get("content-type") || "", text: ""};
      window.__bodies.push(entry);
      const reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        try {
          for (;;) {
            const {done, value} = await reader.read();
            if (done) break;
            entry.text += decoder.decode(value, {stream: true});
          }
        } catch (e) {}
        entry.done = true;
      })();
    }
    return response;
  };
})();
"""


class Recorder:
    """Bodies of the API/SSE/JSON/HTML responses since the last ``clear`` (not Gradio's JS/CSS bundle)."""

    def __init__(self, page) -> None:
        self.page = page
        self.documents: list[tuple[str, str, str]] = []  # (url, content type, text) via Playwright
        page.add_init_script(FETCH_TEE)
        page.on("response", self._response)

    def _response(self, response) -> None:
        kind = response.headers.get("content-type", "")
        if "text/html" in kind or ("json" in kind and "/gradio_api/" not in response.url):
            from playwright.sync_api import Error as PlaywrightError

            try:
                self.documents.append((response.url, kind, response.text()))
            except PlaywrightError:  # a body the browser already dropped (navigation)
                pass

    def bodies(self, since_clear: bool = True) -> list[tuple[str, str, str]]:
        fetched = self.page.evaluate(
            "since => window.__bodies.map((e, i) => [e.url, e.type, e.text.slice(since ? window.__marks[i] || 0 : 0)])",
            since_clear)
        return [*self.documents, *(tuple(b) for b in fetched)]

    def leaks(self, allow: re.Pattern[str] | None = None) -> list[str]:
        """Strings naming a condition in the bodies since the last ``clear`` (those matching ``allow`` aside)."""
        found = []
        for url, kind, text in self.bodies():
            found += [f"{url}: {s[:120]!r}" for s in body_strings(kind, text)
                      if LEAK.search(s) and not (allow and allow.search(s))]
            found += [f"url {url}"] if LEAK.search(url) else []
        answered = sum(t.count('"process_completed"') + ("/run/" in u) for u, _, t in self.bodies(False))
        assert answered, "no API response was recorded: the fetch hook is not working"
        return found

    def settle(self) -> None:
        """Wait until every event sent so far has its answer recorded (the tee may trail the page's own reader
        by a moment): each queue join its completion, each direct /run/ POST its whole body."""
        self.page.wait_for_function("""() => {
            const joins = window.__bodies.filter(e => e.url.includes("/queue/join")).length;
            const runs = window.__bodies.filter(e => e.url.includes("/run/"));
            const done = window.__bodies.map(e => e.text.split('"process_completed"').length - 1)
                                        .reduce((a, b) => a + b, 0);
            return joins + runs.length > 0 && done >= joins && runs.every(e => e.done);
        }""", timeout=10000)

    def clear(self) -> None:
        """Start a new window once every answer so far is recorded."""
        self.settle()
        self.documents.clear()
        self.page.evaluate("() => { window.__marks = window.__bodies.map(e => e.text.length); }")


def trial_value(page) -> str:
    return page.eval_on_selector("#review-card .review-card", "e => e.dataset.trial")


def wait_for_trial(page, previous: str) -> str:
    page.wait_for_function(
        """prev => {
            const box = document.querySelector('#review-card .review-card');
            const imgs = [...document.querySelectorAll('#review-left img, #review-right img')];
            const vote = document.querySelector('#vote-left, #vote-a');
            return box && box.dataset.trial && box.dataset.trial !== prev && imgs.length === 2
                && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", arg=previous, timeout=15000)
    page.wait_for_selector("#vote-left:not([disabled]), #vote-a:not([disabled])", timeout=5000)
    return trial_value(page)


def check_no_leak(page, recorder: Recorder) -> dict[str, str]:
    """Visible text, image URLs and response bodies name nothing; returns the side -> image URL map."""
    text = page.inner_text("body")
    assert not LEAK.search(text), f"visible text names a condition: {LEAK.search(text)}"
    fields = page.eval_on_selector_all(
        "input, textarea, [alt], [title], [aria-label]",
        "els => els.flatMap(e => [e.value, e.alt, e.title, e.getAttribute('aria-label')].filter(v => v))")
    assert not [f for f in fields if LEAK.search(f)], fields
    srcs = [s for s in page.eval_on_selector_all("img", "els => els.map(e => e.src)")
            if not s.startswith("data:")]  # Gradio's inline SVG icons
    assert srcs and not any(LEAK.search(s) for s in srcs), srcs
    assert recorder.leaks() == []
    face = page.query_selector("#review-face img")  # the reference face stays on the page between pairs
    assert face is not None and face.is_visible() and face.evaluate("e => e.complete && e.naturalWidth > 0")
    urls = {}
    for side in ("left", "right", "x"):
        found = page.query_selector(f"#review-{side} img")
        if found is not None and found.is_visible():
            urls[side] = found.evaluate("e => e.src")  # resolved against the page (the src is relative)
    return urls


def vote(page, how: str, choice: str) -> None:
    if how == "mouse":
        page.click(f"#vote-{choice}")
    else:
        page.keyboard.press(KEYS[choice])
    page.wait_for_function("() => document.querySelector('#review-reveal')?.innerText.trim().length > 0",
                           timeout=10000)
    # answers locked until 'Next pair' (page-only steps after the vote's answer)
    page.wait_for_selector("#next-pair", state="visible", timeout=5000)
    states = page.eval_on_selector_all("[id^=vote-]", "els => els.map(e => e.tagName === 'BUTTON' ? e : "
                                       "e.querySelector('button')).filter(b => b).map(b => b.disabled)")
    assert len(states) >= 2 and all(states), states


def pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(httpx.get(url, timeout=10).content)).convert("RGB"))


@pytest.mark.slow
def test_reviewer_votes_with_mouse_and_keyboard_and_nothing_leaks(tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # 9 pairs: 5 voted, the one staged with the 5th vote (never shown: the ABX switch drops it), one after the reload
    services = make_services(tmp_path / "study", study=StudyConfig(gold_rate=0.0, reveal="each"), seeds=(0, 1, 2))
    store, shown = services.store, []  # shown: (trial id, choice, side -> URL)
    with launched(services) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            recorder = Recorder(page)
            page.goto(base)
            trial_id = wait_for_trial(page, "")
            for number, (how, choice) in enumerate(PLAN, 1):
                urls = check_no_leak(page, recorder)
                page.screenshot(path=str(ARTIFACTS / f"review-{number}-before-vote.png"), full_page=True)
                vote(page, how, choice)
                shown.append((trial_id, choice, urls))
                page.screenshot(path=str(ARTIFACTS / f"review-{number}-revealed.png"), full_page=True)
                recorder.settle()  # the vote's answer is in: the reveal, and the next pair staged
                assert recorder.leaks(allow=REVEAL) == []  # nothing but the reveal text names a condition
                recorder.clear()  # the next window starts here
                if number == len(PLAN):
                    break
                if how == "mouse":
                    page.click("#next-pair")
                else:
                    page.keyboard.press("n")
                trial_id = wait_for_trial(page, trial_id)
            # one discrimination (ABX) trial: X is the full image; answered with the keyboard
            page.get_by_label("Spot the match (ABX)").check()
            trial_id = wait_for_trial(page, trial_id)
            page.wait_for_selector("#review-x img", timeout=5000)
            urls = check_no_leak(page, recorder)
            page.screenshot(path=str(ARTIFACTS / "review-abx-before-vote.png"), full_page=True)
            vote(page, "keyboard", "a")
            shown.append((trial_id, "a", urls))
            # a reload keeps the pseudonymous reviewer id (BrowserState) and opens a new session
            page.reload()
            wait_for_trial(page, "")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()

        votes = {v["trial_id"]: v for v in store.vote_rows()}
        assert len(votes) == len(PLAN) + 1 and len({v["reviewer_id"] for v in votes.values()}) == 1
        reviewer = next(iter(votes.values()))["reviewer_id"]
        assert {t["reviewer_id"] for t in store.trial_rows()} == {reviewer}
        assert len({t["session"] for t in store.trial_rows()}) == 2
        for trial_id, choice, urls in shown:
            trial, stored = store.get_trial(trial_id), votes[trial_id]
            assert stored["choice"] == choice
            assert (stored["outcome"], bool(stored["correct"]) if stored["correct"] is not None else None) \
                == outcome_for(trial, choice)
            pair = store.get_pair(trial["pair_id"])
            original = {arm: np.asarray(Image.open(services.dirs.images / pair[key]).convert("RGB"))
                        for arm, key in (("full", "full_file"), ("selective", "sel_file"))}
            right_arm = "selective" if trial["left_arm"] == "full" else "full"
            assert Path(urls["left"]).name == trial["left_image"]
            def close(url: str, arm: str, original: dict = original) -> bool:  # served copies are dithered by ±1
                return np.abs(pixels(url).astype(int) - original[arm]).max() <= 1

            assert close(urls["left"], trial["left_arm"]) and close(urls["right"], right_arm)
            if trial["mode"] == "abx":
                assert close(urls["x"], trial["x_arm"])

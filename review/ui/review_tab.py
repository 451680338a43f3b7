"""The Review tab: the reference face and a blinded pair (or A, X, B), the question, keyboard shortcuts.

Every event is ``api_visibility="private"`` and still checked on the server (``ReviewDesk``): private endpoints
stay callable over HTTP. The page holds only the opaque trial id; images are per-trial copies given as file
paths (Gradio serves them as they are, no re-encoding, under a URL named after their bytes).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from review.trials import VoteRefused
from review.ui.review_desk import ReviewDesk, TrialView
from review.ui.services import Services, client_address

logger = logging.getLogger(__name__)

QUESTIONS = {
    "preference": "Which image is better: closer to the reference face, and a better picture?",
    "abx": "X is the same image as A or as B. Which one?",
}
MODE_LABELS = {"preference": "Which is better", "abx": "Spot the match (ABX)"}
VOTE_BUTTONS = (  # choice, label, elem_id
    ("left", "Left is better  [1 / ←]", "vote-left"),
    ("right", "Right is better  [2 / →]", "vote-right"),
    ("same", "No visible difference  [3 / ↓]", "vote-same"),
    ("a", "X is A  [A]", "vote-a"),
    ("b", "X is B  [B]", "vote-b"),
)
PREFERENCE_CHOICES = ("left", "right", "same")

# Keyboard shortcuts: a key clicks the matching visible, enabled button (typing in a text field is left alone).
KEYS_JS = """
() => {
  if (window.__reviewKeys) return;
  window.__reviewKeys = true;
  const keys = {"1": "vote-left", "ArrowLeft": "vote-left", "2": "vote-right", "ArrowRight": "vote-right",
                "3": "vote-same", "0": "vote-same", "ArrowDown": "vote-same", "a": "vote-a", "b": "vote-b",
                "n": "next-pair", "Enter": "next-pair", " ": "next-pair"};
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const field = t && t.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(t.type);
    if (t && (field || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    if (t && t.tagName === "INPUT" && e.key.startsWith("Arrow")) return;  // arrows move a focused radio
    if (t && t.tagName === "BUTTON" && (e.key === "Enter" || e.key === " ")) return;
    const id = keys[e.key.length === 1 ? e.key.toLowerCase() : e.key];
    const el = id && document.getElementById(id);
    const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    if (!button || button.disabled || button.offsetParent === null) return;
    e.preventDefault();
    button.click();
  });
}
"""


def request_address(request: gr.Request | None, services: Services) -> str:
    if request is None:
        return "unknown"
    host = request.client.host if request.client else None
    return client_address(request.headers, host, services.config.trust_proxy)


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or ""


def render(view: TrialView) -> list[Any]:
    """Updates for OUTPUTS (see build_review_tab) that show ``view``."""
    abx, open_ = view.mode == "abx", view.trial_id is not None
    progress = f"**Pair {view.number} of {view.target}**" if open_ else view.message
    buttons = [gr.Button(visible=open_ and (choice in PREFERENCE_CHOICES) != abx, interactive=open_)
               for choice, _, _ in VOTE_BUTTONS]
    return [
        view.reviewer_id, view.trial_id or "",
        gr.Image(value=view.face, visible=open_),
        gr.Image(value=view.left, label="A" if abx else "Left", visible=open_),
        gr.Image(value=view.x, visible=open_ and abx),
        gr.Image(value=view.right, label="B" if abx else "Right", visible=open_),
        QUESTIONS[view.mode] if open_ else "", progress, "",
        *buttons, gr.Button(visible=not open_),
    ]


def after_vote(receipt_reveal: str, voted: int, target: int) -> list[Any]:
    """Updates for OUTPUTS once a vote is in: images stay, answers lock, the reveal and 'Next' appear."""
    buttons = [gr.Button(interactive=False) for _ in VOTE_BUTTONS]
    return [gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
            f"**{voted} of {target} done.**", receipt_reveal, *buttons, gr.Button(visible=True)]


def handlers(services: Services, desk: ReviewDesk) -> dict[str, Any]:
    """The tab's event functions (plain functions of the desk; gr.Error carries refusals to the page)."""

    def refuse(exc: VoteRefused) -> gr.Error:
        logger.info("refused: %s", exc)
        return gr.Error(str(exc), print_exception=False)

    def open_page(reviewer_id: Any, mode: Any, request: gr.Request) -> list[Any]:
        try:
            return render(desk.open(_session(request), reviewer_id, mode, request_address(request, services)))
        except VoteRefused as exc:
            raise refuse(exc) from None

    def next_pair(mode: Any, request: gr.Request) -> list[Any]:
        try:
            return render(desk.next(_session(request), mode, request_address(request, services)))
        except VoteRefused as exc:
            raise refuse(exc) from None

    def vote(trial_id: Any, choice: Any, mode: Any, request: gr.Request) -> list[Any]:
        session, address = _session(request), request_address(request, services)
        try:
            receipt = desk.vote(session, trial_id, choice, address)
            if services.config.study.reveal:
                return after_vote(receipt.reveal, receipt.voted, receipt.target)
            return render(desk.next(session, mode, address))
        except VoteRefused as exc:
            raise refuse(exc) from None

    def tick(trial_id: Any, mode: Any, request: gr.Request) -> list[Any]:
        """Poll the status line (demo pairs being made); once idle, fetch a pair if the page has none."""
        text, busy = services.status.get()
        updates: list[Any] = [gr.skip()] * len(OUTPUT_NAMES)
        if not busy and not trial_id:
            try:
                updates = render(desk.next(_session(request), mode, request_address(request, services)))
            except VoteRefused:
                pass
        return [*updates, text, gr.Timer(active=busy)]

    return {"open": open_page, "next": next_pair, "vote": vote, "tick": tick}


OUTPUT_NAMES = ("reviewer", "trial", "face", "left", "x", "right", "question", "progress", "reveal",
                *(elem for _, _, elem in VOTE_BUTTONS), "next")


def build_review_tab(demo: gr.Blocks, services: Services, desk: ReviewDesk) -> None:
    """The Review tab; registers the page-load event on ``demo``. Call inside ``gr.Tabs()``."""
    study, fns = services.config.study, handlers(services, desk)
    with gr.Tab("Review", id="review"):
        reviewer = gr.BrowserState("", storage_key="instantid-review-reviewer",
                                   secret=services.config.browser_secret)
        status = gr.Markdown("", elem_id="review-status")
        mode = gr.Radio([(MODE_LABELS[m], m) for m in study.modes], value=study.modes[0], label="Task",
                        visible=len(study.modes) > 1, elem_id="review-mode")
        trial = gr.Textbox("", visible="hidden", elem_id="review-trial", show_label=False)
        choice = gr.Textbox("", visible="hidden", elem_id="review-choice", show_label=False)
        image = dict(type="filepath", interactive=False, buttons=["fullscreen"], show_label=True, height=420)
        with gr.Row():
            face = gr.Image(label="Reference face", elem_id="review-face", scale=1, min_width=200,
                            **{**image, "height": 200})
            with gr.Column(scale=3):
                progress = gr.Markdown("", elem_id="review-progress")
                question = gr.Markdown("", elem_id="review-question")
        with gr.Row(equal_height=True):
            left = gr.Image(label="Left", elem_id="review-left", **image)
            x = gr.Image(label="X", elem_id="review-x", visible=False, **image)
            right = gr.Image(label="Right", elem_id="review-right", **image)
        with gr.Row():
            buttons = [gr.Button(label, elem_id=elem, variant="primary", interactive=False,
                                 visible=c in PREFERENCE_CHOICES) for c, label, elem in VOTE_BUTTONS]
        reveal = gr.Markdown("", elem_id="review-reveal")
        next_button = gr.Button("Next pair  [N / Enter]", elem_id="next-pair", visible=False)
        timer = gr.Timer(2.0, active=True)
        gr.Markdown("You are pseudonymous: a random id kept in this browser, no personal data. "
                    "Keys: 1 / ← left, 2 / → right, 3 / ↓ no difference, A / B for ABX, N or Enter for next.")

    outputs = [reviewer, trial, face, left, x, right, question, progress, reveal, *buttons, next_button]
    private: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")
    demo.load(fns["open"], [reviewer, mode], outputs, **private)
    next_button.click(fns["next"], [mode], outputs, **private)
    mode.input(fns["next"], [mode], outputs, **private)
    for (value, _, _), button in zip(VOTE_BUTTONS, buttons, strict=True):
        # the page sends (trial id, choice, mode); the server checks all three against the session's trial
        button.click(fns["vote"], [trial, choice, mode], outputs, js=f"(t, c, m) => [t, '{value}', m]",
                     **private)
    timer.tick(fns["tick"], [trial, mode], [*outputs, status, timer], **private)

"""The Review tab: the reference face and a blinded pair (or A, X, B), the question, keyboard shortcuts.

Every event is ``api_visibility="private"`` and still checked on the server (``ReviewDesk``): private endpoints
stay callable over HTTP. The page holds only the opaque trial id; images are shown by ``gr.HTML`` from per-trial
URLs (``review/ui/image_route.py``: same pixels, new name and bytes per trial, answered from memory), so Gradio
copies no file per event.

One server event per review cycle: the vote returns the reveal and the next trial, staged in hidden components;
locking the answers, showing the staged pair and the layout (which images and answers show) run in the page
(``review_js``). The review events skip Gradio's queue (``queue=False``: one POST each, no SSE stream) and return
plain values, never component updates (each update makes Gradio build a component and its config: ~0.5-3 ms of
CPU per output on the 2-core VM; a gr.skip() is such an update too).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from review.store import StoreError
from review.study.review_desk import ReviewDesk, TrialView
from review.study.services import Services, client_address, storage_message
from review.study.trials import VoteRefused
from review.ui.review_js import INVITE_JS, layout_js, lock_js, swap_js, vote_js

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
DIRECT = dict(queue=False)  # the review events: a plain POST to /gradio_api/run, no queue and no SSE stream


def request_address(request: gr.Request | None, services: Services) -> str:
    if request is None:
        return "unknown"
    host = request.client.host if request.client else None
    return client_address(request.headers, host, services.config.trust_proxy, services.config.proxy_hops)


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or ""


PICTURE = ('<figure class="review-figure">{{#if value.src}}<figcaption>{{value.label}}</figcaption>'
           '<a href="{{value.src}}" target="_blank" rel="noopener" title="Open this image in a new tab">'
           '<img src="{{value.src}}" alt="{{value.label}}"></a>{{/if}}</figure>')  # Handlebars escapes values


def picture(url: str | None, label: str) -> dict[str, Any]:
    """An image's value: {"src": URL relative to the page or None, "label"} (rendered by PICTURE)."""
    return {"src": url, "label": label if url else ""}


def pictures(view: TrialView, face: str | None) -> list[dict[str, Any]]:
    """The values of the face, left (A), X and right (B) pictures of ``view``."""
    abx = view.mode == "abx"
    return [picture(face, "Reference face"), picture(view.left, "A" if abx else "Left"), picture(view.x, "X"),
            picture(view.right, "B" if abx else "Right")]


def progress_text(view: TrialView) -> str:
    return f"**Pair {view.number} of {view.target}**" if view.trial_id else view.message


def render(view: TrialView) -> list[Any]:
    """Plain values for PAGE (see build_review_tab) that show ``view``: page load, mode change, 'Next pair' from
    the server. Which images and answers show follows in the page (``layout_js``), from the trial id and mode.
    The first value is the signed reviewer token the page keeps."""
    open_ = view.trial_id is not None
    return [view.token, view.trial_id or "", *pictures(view, view.face),
            QUESTIONS[view.mode] if open_ else "", progress_text(view), ""]


def staged(view: TrialView, shown_face: str | None) -> list[Any]:
    """Plain values for STAGED: the next trial, shown by the page when the reviewer asks (``swap_js``). When its
    reference face is the one on the page, the face value says ``keep`` instead of a URL (one image less to send
    and reload); a trial without a face gets an empty picture, never the previous trial's face."""
    values = pictures(view, view.face)
    if view.trial_id and view.face and view.face == shown_face:
        values[0] = {**picture(None, ""), "keep": True}
    return [view.trial_id or "", *values, progress_text(view)]


def handlers(services: Services, desk: ReviewDesk) -> dict[str, Any]:
    """The tab's event functions (plain functions of the desk; gr.Error carries refusals to the page)."""

    def refuse(exc: VoteRefused | StoreError, consequence: str = "Please try again in a moment.") -> gr.Error:
        if isinstance(exc, StoreError):  # a storage fault: said in words, never a bare error
            logger.error("storage fault: %s", exc)
            return gr.Error(storage_message(exc, consequence), print_exception=False)
        logger.info("refused: %s", exc)
        return gr.Error(str(exc), print_exception=False)

    def status() -> list[Any]:
        text, busy = services.status.get()
        return [text, gr.Timer(active=True) if busy else gr.skip()]

    def open_page(token: Any, mode: Any, invite: Any, request: gr.Request,
                  profile: gr.OAuthProfile | None = None) -> list[Any]:
        """A page load: the kept reviewer token, the task, the invite token of the page's URL (``?invite=``)."""
        user = getattr(profile, "username", None) if services.config.study.identity == "hf" else None
        try:
            view = desk.open(_session(request), token, mode, request_address(request, services), invite=invite,
                             hf_user=user)
        except (VoteRefused, StoreError) as exc:
            raise refuse(exc) from None
        return [*render(view), *status()]

    def next_pair(mode: Any, request: gr.Request) -> list[Any]:
        try:
            return render(desk.next(_session(request), mode, request_address(request, services)))
        except (VoteRefused, StoreError) as exc:
            raise refuse(exc) from None

    def vote(trial_id: Any, choice: Any, mode: Any, shown_ms: Any, request: gr.Request) -> list[Any]:
        """The vote and the next trial (staged), in one request."""
        try:
            receipt, view = desk.cycle(_session(request), trial_id, choice, mode,
                                       request_address(request, services), shown_ms)
        except VoteRefused as exc:
            raise refuse(exc) from None
        except StoreError as exc:
            raise refuse(exc, "Your vote was not saved: please vote again in a moment.") from None
        return [receipt.reveal, f"**{receipt.voted} of {receipt.target} done.**", *staged(view, receipt.face)]

    def tick(trial_id: Any, mode: Any, request: gr.Request) -> list[Any]:
        """Poll the status line while demo pairs are made; once idle, fetch a pair if the page has none."""
        text, busy = services.status.get()
        updates: list[Any] = [gr.skip()] * len(PAGE_NAMES)
        if not busy and not trial_id:
            try:
                updates = render(desk.next(_session(request), mode, request_address(request, services)))
            except VoteRefused:
                pass
        return [*updates, text, gr.Timer(active=busy)]

    return {"open": open_page, "next": next_pair, "vote": vote, "tick": tick}


PAGE_NAMES = ("reviewer", "trial", "face", "left", "x", "right", "question", "progress", "reveal")


def build_review_tab(demo: gr.Blocks, services: Services, desk: ReviewDesk) -> None:
    """The Review tab; registers the page-load event on ``demo``. Call inside ``gr.Tabs()``."""
    study, fns = services.config.study, handlers(services, desk)
    with gr.Tab("Review", id="review"):
        reviewer = gr.BrowserState("", storage_key="instantid-review-reviewer",
                                   secret=desk.signer.browser_secret())
        invite = gr.Textbox("", visible=False, elem_id="review-invite")  # filled from ?invite= by the page
        if study.identity == "hf":
            gr.LoginButton()
        status = gr.Markdown("", elem_id="review-status")
        mode = gr.Radio([(MODE_LABELS[m], m) for m in study.modes], value=study.modes[0], label="Task",
                        show_label=False, container=False,
                        visible=len(study.modes) > 1, elem_id="review-mode")
        trial = gr.Textbox("", visible="hidden", elem_id="review-trial", show_label=False)
        choice = gr.Textbox("", visible="hidden", elem_id="review-choice", show_label=False)
        shown = gr.Number(None, visible=False, elem_id="review-shown")  # ms the pair was on screen (vote_js)
        image = dict(value=picture(None, ""), html_template=PICTURE, js_on_load=None)
        # layout (CSS in review.ui.app): a small reference face beside the question, then the compared images
        # side by side at the largest size that leaves the answers on screen, then the answers in one row
        with gr.Row(elem_id="review-head"):
            face = gr.HTML(elem_id="review-face", scale=0, min_width=0, **image)
            with gr.Column(scale=1, min_width=0, elem_id="review-text"):
                progress = gr.Markdown("", elem_id="review-progress")
                question = gr.Markdown("", elem_id="review-question")
        with gr.Row(equal_height=True, elem_id="review-images"):
            left = gr.HTML(elem_id="review-left", min_width=0, **image)
            x = gr.HTML(elem_id="review-x", visible=False, min_width=0, **image)
            right = gr.HTML(elem_id="review-right", min_width=0, **image)
        with gr.Row(elem_id="review-answers"):
            buttons = [gr.Button(label, elem_id=elem, variant="primary", interactive=False, min_width=0,
                                 visible=c in PREFERENCE_CHOICES) for c, label, elem in VOTE_BUTTONS]
        reveal = gr.Markdown("", elem_id="review-reveal")
        next_button = gr.Button("Next pair  [N / Enter]", elem_id="next-pair", visible=False)
        more_button = gr.Button("Next pair  [N / Enter]", elem_id="more-pairs", visible=False)
        staged_trial = gr.Textbox("", visible=False, elem_id="staged-trial")
        staged_images = [gr.HTML(visible=False, elem_id=f"staged-{name}", **image)
                         for name in ("face", "left", "x", "right")]
        staged_progress = gr.Textbox("", visible=False, elem_id="staged-progress")
        timer = gr.Timer(2.0, active=False)  # started by the page load only while demo pairs are being made
        gr.Markdown("You are pseudonymous: a random id signed by this server and kept in this browser, no personal "
                    "data. "
                    "Keys: 1 / ← left, 2 / → right, 3 / ↓ no difference, A / B for ABX, N or Enter for next.")

    page = [reviewer, trial, face, left, x, right, question, progress, reveal]
    stage = [staged_trial, *staged_images, staged_progress]
    private: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")
    abx_only = [c not in PREFERENCE_CHOICES for c, _, _ in VOTE_BUTTONS]
    layout = dict(fn=None, inputs=[trial, mode, progress], outputs=[face, left, x, right, *buttons, next_button, more_button],
                  js=layout_js(abx_only), **private)
    demo.load(fns["open"], [reviewer, mode, invite], [*page, status, timer], js=INVITE_JS, **private,
              **DIRECT).success(**layout)
    more_button.click(fns["next"], [mode], page, **private, **DIRECT).success(**layout)
    mode.input(fns["next"], [mode], page, **private, **DIRECT).success(**layout)
    swap = dict(fn=None, inputs=stage, outputs=[*page[1:], *buttons, next_button, more_button],
                js=swap_js(len(buttons)))
    for (value, _, _), button in zip(VOTE_BUTTONS, buttons, strict=True):
        # the page sends (trial id, choice, mode, ms on screen); the server checks them against the session's trial
        voted = button.click(fns["vote"], [trial, choice, mode, shown], [reveal, progress, *stage],
                             js=vote_js(value), **private, **DIRECT)
        if study.reveal == "each":  # answers locked, reveal shown; 'Next pair' shows the staged trial
            voted.success(None, None, [*buttons, next_button], js=lock_js(len(buttons)), **private)
        else:
            voted.success(**swap, **private)
    next_button.click(**swap, **private)
    polled = timer.tick(fns["tick"], [trial, mode], [*page, status, timer], **private, **DIRECT)
    polled.success(**{**layout, "js": layout_js(abx_only, if_new_trial=True)})

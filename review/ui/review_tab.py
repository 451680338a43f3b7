"""The Review tab: one trial card (``review_card``: the reference face, a blinded pair or A, X, B, the question,
the answers), the task, the status line, keyboard shortcuts.

Every event is ``api_visibility="private"`` and still checked on the server (``ReviewDesk``): private endpoints
stay callable over HTTP. The page holds only the opaque trial id; images are per-trial URLs
(``review/ui/image_route.py``: same pixels, new name and bytes per trial, answered from memory), so Gradio copies
no file per event.

One server event per review cycle: the vote (the card's ``click`` event, data ``{trial, choice, shown_ms}``)
returns the next card: with reveal=each the voted pair locked with the reveal and the next trial staged inside it
('Next pair' shows it in the page). Every handler returns a dict keyed by component (Gradio's documented form)
with a plain value for each output, never a component update. The review events skip Gradio's queue
(``queue=False``: one POST each, no SSE stream).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from review.store import StoreError
from review.study.review_desk import ReviewDesk
from review.study.services import Services, client_address, storage_message
from review.study.trials import VoteRefused
from review.ui.review_card import CARD_JS, EMPTY, TEMPLATE, after_vote, card
from review.ui.review_js import INVITE_JS

logger = logging.getLogger(__name__)

MODE_LABELS = {"preference": "Which is better", "abx": "Spot the match (ABX)"}
DIRECT = dict(queue=False)  # the review events: a plain POST to /gradio_api/run, no queue and no SSE stream
PRIVATE: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")


def request_address(request: gr.Request | None, services: Services) -> str:
    """The client address of ``request`` (``services.client_address``: X-Forwarded-For only behind a trusted proxy)."""
    if request is None:
        return "unknown"
    host = request.client.host if request.client else None
    return client_address(request.headers, host, services.config.trust_proxy, services.config.proxy_hops)


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or ""


def event_value(event: gr.EventData | None, name: str) -> Any:
    """One field of an event's data (None when absent or when the page sent no data object)."""
    try:
        return getattr(event, name, None)
    except TypeError:  # the event's data is not a mapping (a hand-made request)
        return None


def refuse(exc: VoteRefused | StoreError, consequence: str = "Please try again in a moment.") -> gr.Error:
    """A refusal for the page: the desk's message, or a storage fault said in words (never a bare error)."""
    if isinstance(exc, StoreError):
        logger.error("storage fault: %s", exc)
        return gr.Error(storage_message(exc, consequence), print_exception=False)
    logger.info("refused: %s", exc)
    return gr.Error(str(exc), print_exception=False)


class ReviewPage:
    """The tab's components and event functions (plain functions of the desk; gr.Error carries refusals)."""

    def __init__(self, services: Services, desk: ReviewDesk) -> None:
        self.services, self.desk = services, desk
        self.reveal_each = services.config.study.reveal == "each"
        self.reviewer: Any = None  # the components, set by build_review_tab
        self.card: Any = None
        self.status: Any = None
        self.timer: Any = None

    def _address(self, request: gr.Request | None) -> str:
        return request_address(request, self.services)

    def _status(self) -> dict[Any, Any]:
        text, busy = self.services.status.get()
        return {self.status: text, self.timer: gr.Timer(active=True) if busy else gr.skip()}

    def open_page(self, token: Any, mode: Any, invite: Any, request: gr.Request,
                  profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
        """A page load: the kept reviewer token, the task, the invite token of the page's URL (``?invite=``)."""
        hf = self.services.config.study.identity == "hf"
        user = getattr(profile, "username", None) if hf else None
        try:
            view = self.desk.open(_session(request), token, mode, self._address(request), invite=invite,
                                  hf_user=user)
        except (VoteRefused, StoreError) as exc:
            raise refuse(exc) from None
        return {self.reviewer: view.token, self.card: card(view), **self._status()}

    def next_pair(self, mode: Any, request: gr.Request) -> dict[Any, Any]:
        """The session's open trial, else a new one (mode change, 'Next pair' after a message)."""
        try:
            return {self.card: card(self.desk.next(_session(request), mode, self._address(request)))}
        except (VoteRefused, StoreError) as exc:
            raise refuse(exc) from None

    def vote(self, mode: Any, event: gr.EventData, request: gr.Request) -> dict[Any, Any]:
        """The vote (the card's click: trial, choice, ms on screen) and the next trial, in one request."""
        try:
            receipt, following = self.desk.cycle(
                _session(request), event_value(event, "trial"), event_value(event, "choice"), mode,
                self._address(request), event_value(event, "shown_ms"))
        except VoteRefused as exc:
            raise refuse(exc) from None
        except StoreError as exc:
            raise refuse(exc, "Your vote was not saved: please vote again in a moment.") from None
        return {self.card: after_vote(receipt, following, self.reveal_each)}

    def tick(self, shown: Any, mode: Any, request: gr.Request) -> dict[Any, Any]:
        """Poll the status line while demo pairs are made; once idle, fetch a pair if the page has none."""
        text, busy = self.services.status.get()
        has_trial = isinstance(shown, dict) and bool(shown.get("trial"))
        updates: dict[Any, Any] = {self.status: text, self.timer: gr.Timer(active=busy)}
        if not busy and not has_trial:
            try:
                updates[self.card] = card(self.desk.next(_session(request), mode, self._address(request)))
            except VoteRefused:
                pass
        return updates


def build_review_tab(demo: gr.Blocks, services: Services, desk: ReviewDesk) -> ReviewPage:
    """The Review tab; registers the page-load event on ``demo``. Call inside ``gr.Tabs()``."""
    study, page = services.config.study, ReviewPage(services, desk)
    with gr.Tab("Review", id="review"):
        page.reviewer = gr.BrowserState("", storage_key="instantid-review-reviewer",
                                        secret=desk.signer.browser_secret())
        invite = gr.Textbox("", visible=False, elem_id="review-invite")  # filled from ?invite= by the page
        if study.identity == "hf":
            gr.LoginButton()
        page.status = gr.Markdown("", elem_id="review-status")
        mode = gr.Radio([(MODE_LABELS[m], m) for m in study.modes], value=study.modes[0], label="Task",
                        show_label=False, container=False,
                        visible=len(study.modes) > 1, elem_id="review-mode")
        # layout (CSS in review.ui.app): a small reference face beside the question, then the compared images
        # side by side at the largest size that leaves the answers on screen, then the answers in one row
        page.card = gr.HTML(EMPTY, html_template=TEMPLATE, js_on_load=CARD_JS, elem_id="review-card")
        page.timer = gr.Timer(2.0, active=False)  # started by the page load only while demo pairs are being made
        gr.Markdown("You are pseudonymous: a random id signed by this server and kept in this browser, no personal "
                    "data. "
                    "Keys: 1 / ← left, 2 / → right, 3 / ↓ no difference, A / B for ABX, N or Enter for next.")

    direct = {**PRIVATE, **DIRECT}
    demo.load(page.open_page, [page.reviewer, mode, invite], [page.reviewer, page.card, page.status, page.timer],
              js=INVITE_JS, **direct)
    page.card.submit(page.next_pair, [mode], [page.card], **direct)  # 'Next pair' after a message
    mode.input(page.next_pair, [mode], [page.card], **direct)
    page.card.click(page.vote, [mode], [page.card], **direct)  # a vote: data {trial, choice, shown_ms}
    page.timer.tick(page.tick, [page.card, mode], [page.card, page.status, page.timer], **direct)
    return page

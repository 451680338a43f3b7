"""The review page's trial card: one ``gr.HTML`` whose value is one dict per trial (``card``).

Python sends the whole card (reference face, the compared images, question, progress, answers, reveal, the
staged next trial); the Handlebars template (``TEMPLATE``, values escaped) decides what shows, so adding one
thing to the page is one key in ``card`` and one line in the template. The card's own JavaScript (``CARD_JS``,
Gradio's documented ``js_on_load`` with ``trigger`` and ``props``) sends a vote as the card's ``click`` event
with ``{trial, choice, shown_ms}``, shows the staged trial when the reviewer asks ('Next pair', no server
call), and asks the server for a pair again with the card's ``submit`` event. Nothing in a card names an arm,
a preset or a condition: opaque trial ids and per-trial image URLs only (``review.study.served``).
"""

from __future__ import annotations

import json
from typing import Any

from review.study.review_desk import DONE_MARK
from review.study.views import TrialView

QUESTIONS = {
    "preference": "Which image is better: closer to the reference face, and a better picture?",
    "abx": "X is the same image as A or as B. Which one?",
}
ANSWERS = {  # mode -> (choice, label); each button's element id is vote-<choice> (keyboard shortcuts, tests)
    "preference": (("left", "Left is better  [1 / ←]"), ("right", "Right is better  [2 / →]"),
                   ("same", "No visible difference  [3 / ↓]")),
    "abx": (("a", "X is A  [A]"), ("b", "X is B  [B]")),
}
EMPTY: dict[str, Any] = {"trial": "", "images": [], "answers": [], "face": None}  # before the first answer

# Handlebars (Gradio's gr.HTML): {{...}} escapes every value; no value is ever inserted as HTML
TEMPLATE = """<div class="review-card" data-trial="{{value.trial}}" data-mode="{{value.mode}}">
<div id="review-head">
  <figure id="review-face" class="review-figure">{{#if value.face}}<figcaption>Reference face</figcaption>
    <img src="{{value.face}}" alt="Reference face">{{/if}}</figure>
  <div id="review-text">
    <p id="review-progress"><strong>{{value.progress}}</strong></p>
    <p id="review-question">{{value.question}}</p>
  </div>
</div>
{{#if value.trial}}<div id="review-images">{{#each value.images}}
  <figure id="review-{{side}}" class="review-figure"><figcaption>{{label}}</figcaption>
    <a href="{{src}}" target="_blank" rel="noopener" title="Open this image in a new tab">
      <img src="{{src}}" alt="{{label}}"></a></figure>{{/each}}
</div>{{/if}}
<div id="review-answers">{{#each value.answers}}
  <button id="vote-{{choice}}" data-choice="{{choice}}" {{#if locked}}disabled{{/if}}>{{label}}</button>{{/each}}
</div>
<p id="review-reveal">{{value.reveal}}</p>
{{#if value.next}}<button id="next-pair" data-action="next">Next pair  [N / Enter]</button>{{/if}}
{{#if value.more}}<button id="more-pairs" data-action="more">Next pair  [N / Enter]</button>{{/if}}
</div>"""

# Runs once per card (re-renders replace the card's inner HTML, not ``element``, so one delegated listener serves
# every render). window.__reviewShownAt: when the page showed the current trial (the vote's shown_ms).
CARD_JS = """
if (element.__reviewCard) return;
element.__reviewCard = true;
let shown = null;
const mark = () => {
  const trial = (props.value || {}).trial;
  if (trial && trial !== shown) { shown = trial; window.__reviewShownAt = Date.now(); }
};
watch("value", mark);
element.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || button.disabled || !element.contains(button)) return;
  const value = props.value || {};
  if (button.dataset.choice) {
    const shownMs = window.__reviewShownAt ? Math.round(Date.now() - window.__reviewShownAt) : -1;
    trigger("click", {trial: value.trial || "", choice: button.dataset.choice, shown_ms: shownMs});
  } else if (button.dataset.action === "next") {
    props.value = value.staged || EMPTY;
    mark();
  } else if (button.dataset.action === "more") {
    trigger("submit");
  }
});
""".replace("EMPTY", json.dumps(EMPTY))


def plain(text: str) -> str:
    """Markdown emphasis dropped (the card shows text, never HTML): ``**x**`` and backticks."""
    return text.replace("**", "").replace("`", "")


def card(view: TrialView, *, reveal: str = "", progress: str | None = None, locked: bool = False,
         staged: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's value for ``view``; ``locked`` answers (after a vote, reveal=each) come with 'Next pair' and
    the ``staged`` next card, shown by the page when the reviewer asks."""
    open_ = view.trial_id is not None
    abx = view.mode == "abx"
    sides = (("left", view.left, "A" if abx else "Left"), ("x", view.x if abx else None, "X"),
             ("right", view.right, "B" if abx else "Right"))
    default_progress = f"Pair {view.number} of {view.target}" if open_ else view.message
    return {
        "trial": view.trial_id or "",
        "mode": view.mode,
        "face": view.face if open_ else None,
        "images": [{"side": s, "src": src, "label": label} for s, src, label in sides if src] if open_ else [],
        "question": QUESTIONS[view.mode] if open_ else "",
        "progress": plain(progress if progress is not None else default_progress),
        "answers": [{"choice": c, "label": label, "locked": locked} for c, label in ANSWERS[view.mode]]
        if open_ else [],
        "reveal": plain(reveal),
        "next": staged is not None,
        "more": not open_ and DONE_MARK not in view.message,  # asking again can help (not after the end)
        "staged": staged,
    }


def after_vote(receipt: Any, following: TrialView, reveal_each: bool) -> dict[str, Any]:
    """The card after a stored vote: with ``reveal_each`` the voted pair stays, answers locked, the reveal and
    'Next pair' shown and the next trial staged; otherwise the next trial at once (the reveal, e.g. the
    session summary of reveal=end, stays only when no trial follows)."""
    following_card = card(following)
    if reveal_each and receipt.shown is not None:
        return card(receipt.shown, reveal=receipt.reveal, locked=True, staged=following_card,
                    progress=f"{receipt.voted} of {receipt.target} done.")
    if following.trial_id is None:
        return {**following_card, "reveal": plain(receipt.reveal)}
    return following_card

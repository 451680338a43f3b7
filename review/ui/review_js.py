"""The review page's own JavaScript: keyboard shortcuts, and the steps that need no server call.

A review cycle is one server event: the vote comes back with the reveal and the next trial, which waits in hidden
components ("staged") until the reviewer asks for it. Locking the answers after the vote and showing the staged
trial ("Next pair") happen in the page only; so does the clock that says how long the pair was on screen.
"""

from __future__ import annotations

import json

from review.study.review_desk import DONE_MARK

# JS: true when the page has no trial and the server's message is not the end of the session ('Next pair' helps)
_RETRY = "(open, p) => !open && !String(p || '').includes(" + json.dumps(DONE_MARK) + ")"

# Keyboard shortcuts: a key clicks the first matching visible, enabled button (typing in a text field is left alone).
KEYS_JS = """
() => {
  if (window.__reviewKeys) return;
  window.__reviewKeys = true;
  const next = ["next-pair", "more-pairs"];
  const keys = {"1": ["vote-left"], "ArrowLeft": ["vote-left"], "2": ["vote-right"], "ArrowRight": ["vote-right"],
                "3": ["vote-same"], "0": ["vote-same"], "ArrowDown": ["vote-same"], "a": ["vote-a"], "b": ["vote-b"],
                "n": next, "Enter": next, " ": next};
  const usable = (id) => {
    const el = document.getElementById(id);
    const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    return button && !button.disabled && button.offsetParent !== null ? button : null;
  };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const field = t && t.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(t.type);
    if (t && (field || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    if (t && t.tagName === "INPUT" && e.key.startsWith("Arrow")) return;  // arrows move a focused radio
    if (t && t.tagName === "BUTTON" && (e.key === "Enter" || e.key === " ")) return;
    const ids = keys[e.key.length === 1 ? e.key.toLowerCase() : e.key] || [];
    const button = ids.map(usable).find((b) => b);
    if (!button) return;
    e.preventDefault();
    button.click();
  });
}
"""


# The page load's inputs (reviewer token, mode, invite): the invite token comes from the page's own URL.
INVITE_JS = "(r, m, i) => [r, m, new URLSearchParams(window.location.search).get('invite') || '']"


def vote_js(choice: str) -> str:
    """The vote button's inputs (trial, choice, mode, shown): its own choice, and the milliseconds since the page
    showed a staged pair (-1 before the first one; the server then uses its own clock)."""
    return (f"(t, c, m, s) => [t, '{choice}', m, "
            "window.__reviewShownAt ? Math.round(Date.now() - window.__reviewShownAt) : -1]")


def lock_js(buttons: int) -> str:
    """After a stored vote (reveal step): answers locked, 'Next pair' shown. Outputs: the vote buttons, Next."""
    return ("() => [" + "{__type__: 'update', interactive: false}, " * buttons
            + "{__type__: 'update', visible: true}]")


def swap_js(buttons: int) -> str:
    """Show the staged trial. Inputs: staged trial id, face, left, x, right, progress. Outputs: trial, face, left, x,
    right, question, progress, reveal, the vote buttons, Next (page-only), 'Next pair' (server). Without a staged
    trial the images and answers go; the server button appears only when asking again can help (not after a
    message that ends the session: no dead-end button)."""
    return f"""
(t, f, l, x, r, p) => {{
  const u = (props) => ({{__type__: "update", ...props}});
  const open = Boolean(t);
  window.__reviewShownAt = Date.now();
  window.__reviewLaidOut = t;
  const image = (v) => open ? v : u({{value: {{src: null, label: ""}}, visible: false}});
  const answer = open ? u({{interactive: true}}) : u({{interactive: false, visible: false}});
  const retry = ({_RETRY})(open, p);
  // "keep": the staged trial's face is the one on the page, which stays
  // the reveal stays when no trial follows (the session summary of reveal=end)
  return [t || "", open && f && f.keep ? undefined : image(f), image(l), open ? x : image(x), image(r), open ? undefined : "", p, open ? "" : undefined,
          ...Array({buttons}).fill(answer), u({{visible: false}}), u({{visible: retry}})];
}}
"""


def layout_js(abx_only: list[bool], *, if_new_trial: bool = False) -> str:
    """Which images and answers show, after the server sent a page (load, mode change, 'Next pair', status poll).
    Inputs: trial id, mode, progress text. Outputs: face, left, x, right, the vote buttons (``abx_only``: ABX's answers), Next
    (page-only), 'Next pair' (server). ``if_new_trial`` (the status poll): nothing changes unless the trial did,
    so a poll during the reveal step leaves the locked answers and 'Next pair' alone."""
    outputs = 4 + len(abx_only) + 2
    return f"""
(t, m, p) => {{
  if ({json.dumps(if_new_trial)} && t === window.__reviewLaidOut) return Array({outputs}).fill(undefined);
  window.__reviewLaidOut = t;
  const u = (props) => ({{__type__: "update", ...props}});
  const open = Boolean(t), abx = m === "abx";
  const answers = {json.dumps(abx_only)}.map((a) => u({{visible: open && a === abx, interactive: open}}));
  return [u({{visible: open}}), u({{visible: open}}), u({{visible: open && abx}}), u({{visible: open}}),
          ...answers, u({{visible: false}}), u({{visible: ({_RETRY})(open, p)}})];
}}
"""

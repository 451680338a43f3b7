"""The review page's JavaScript outside the trial card (``review_card.CARD_JS``): keyboard shortcuts, and the
page load's inputs (the invite token from the page's URL)."""

from __future__ import annotations

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


"""What a reviewer is told after a vote, by the study's ``reveal`` setting (``review.study.settings``).

- ``none`` (the default for studies): the same words after every vote, whatever was shown and answered;
- ``end``: those words until the session's last vote, then a summary of counts (check pairs answered as expected,
  ABX matches): nothing shown during the session depends on an answer's correctness, and the summary never says
  which side showed which arm;
- ``each`` (training, demos): after every vote, which side showed which arm and the preset. Per-trial reveals let
  colluding reviewers learn images (the full image of a condition is shared by its pairs), so votes of trials
  served with ``each`` (``trials.reveal``) are for practice, not for a study's verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

THANKS = "Thank you, your vote is in."


def other(arm: str) -> str:
    """The other arm of a pair."""
    return "selective" if arm == "full" else "full"


def summary(voted: int, tally: Mapping[str, list[int]]) -> str:
    """The session summary of ``reveal=end``: counts only."""
    lines = [f"Session complete: {voted} answers, thank you!"]
    if gold := tally.get("gold"):
        lines.append(f"Check pairs answered as expected: {gold[0]} of {gold[1]}.")
    if abx := tally.get("abx"):
        lines.append(f"ABX: X matched {abx[0]} of {abx[1]} times.")
    return " ".join(lines)


def reveal_text(setting: str, trial: Mapping[str, Any], outcome: str, pair: Mapping[str, Any] | None, *,
                voted: int, target: int, tally: Mapping[str, list[int]]) -> str:
    """The text after a vote on ``trial`` (its outcome; ``pair`` for ``each``), the ``voted``-th of ``target``."""
    if setting == "none" or (setting == "end" and voted < target):
        return THANKS
    if setting == "end":
        return summary(voted, tally)
    pair = pair or {}
    preset = f"selective preset `{pair.get('preset', '?')}`, {pair.get('layer_count', '?')} layers"
    if trial["is_gold"]:
        verdict = "well spotted" if outcome in ("same", "correct") else \
            f"the expected answer was '{trial.get('expected') or 'same'}'"
        what = "one side was deliberately degraded" if trial.get("gold_kind") == "degraded" else \
            "both sides showed the same image"
        return f"That was a check pair: {what} ({verdict})."
    left, right = trial["left_arm"], other(trial["left_arm"])
    if trial["mode"] == "abx":
        answer = "A" if left == trial["x_arm"] else "B"
        return (f"X was **{answer}** ({'correct' if outcome == 'correct' else 'not this time'}). "
                f"A: {left}, B: {right} ({preset}).")
    return f"Left: **{left}** attention, right: **{right}** ({preset})."

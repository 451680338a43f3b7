"""The review page's trial card (review/ui/review_card.py): what a card holds for each step of a review cycle."""

from __future__ import annotations

import json

from review.study.review_desk import DONE_MARK
from review.study.views import TrialView, VoteReceipt
from review.ui.review_card import EMPTY, TEMPLATE, after_vote, card

OPEN = TrialView("r", "preference", "t1", face="review-image/f.png", left="review-image/a.png",
                 right="review-image/b.png", number=3, target=20)
ABX = TrialView("r", "abx", "t2", face="review-image/f.png", left="review-image/a.png", right="review-image/b.png",
                x="review-image/x.png", number=4, target=20)
DONE = TrialView("r", "preference", number=20, target=20, message=f"That was 20 of 20: {DONE_MARK}")
NO_PAIRS = TrialView("r", "preference", message="No pairs to review yet. Please come back in a moment.")


def test_a_card_shows_the_modes_images_and_answers_and_nothing_else():
    shown = card(OPEN)
    assert [i["side"] for i in shown["images"]] == ["left", "right"] and shown["progress"] == "Pair 3 of 20"
    assert [a["choice"] for a in shown["answers"]] == ["left", "right", "same"]
    assert not any(a["locked"] for a in shown["answers"]) and not shown["next"] and not shown["more"]
    abx = card(ABX)
    assert [(i["side"], i["label"]) for i in abx["images"]] == [("left", "A"), ("x", "X"), ("right", "B")]
    assert [a["choice"] for a in abx["answers"]] == ["a", "b"]
    assert set(EMPTY) <= set(shown) and set(card(DONE)) == set(shown)  # one shape for every card
    for key in ("trial", "face", "progress", "question", "reveal", "next", "more", "images", "answers"):
        assert "value." + key in TEMPLATE  # every key is rendered by the template


def test_without_a_trial_the_card_says_why_and_offers_next_only_when_it_can_help():
    done, waiting = card(DONE), card(NO_PAIRS)
    assert done["images"] == done["answers"] == [] and done["face"] is None and not done["more"]
    assert waiting["more"] and "No pairs" in waiting["progress"]


def test_after_a_vote_reveal_each_locks_the_pair_and_stages_the_next_else_the_next_shows_at_once():
    receipt = VoteReceipt("Left: **full** attention, right: **selective** (selective preset `fast`).", 3, 20, OPEN)
    locked = after_vote(receipt, ABX, reveal_each=True)
    assert locked["trial"] == "t1" and all(a["locked"] for a in locked["answers"]) and locked["next"]
    assert locked["reveal"] == "Left: full attention, right: selective (selective preset fast)."  # text, no markup
    assert locked["progress"] == "3 of 20 done." and locked["staged"] == card(ABX)
    plain = after_vote(VoteReceipt("Thank you, your vote is in.", 3, 20, OPEN), ABX, reveal_each=False)
    assert plain == card(ABX) and plain["reveal"] == ""  # the next pair at once; the words only at the end
    last = after_vote(VoteReceipt("Session complete: 20 answers, thank you!", 20, 20, OPEN), DONE, reveal_each=False)
    assert last["trial"] == "" and last["reveal"].startswith("Session complete") and not last["more"]
    retry = after_vote(VoteReceipt("Left: **full**", 3, 20, None), ABX, reveal_each=True)  # an acknowledged retry
    assert retry["trial"] == "t2" and not retry["next"]


def test_a_card_names_no_arm_or_preset_of_its_own():
    text = json.dumps([card(OPEN), card(ABX), card(DONE), card(NO_PAIRS)])
    for word in ("full", "selective", "fast", "balanced", "preset", "arm", "gold"):
        assert word not in text

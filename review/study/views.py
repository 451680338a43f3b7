"""What the review desk hands the page and keeps per page load: ``TrialView``, ``VoteReceipt``, ``Seat``.

Nothing here names an arm or a preset: a view holds opaque trial ids and per-trial image URLs only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from review.study.identity import Reviewer


@dataclass
class TrialView:
    """What the page shows: per-trial image URLs (relative) and progress; never an arm or a preset."""

    reviewer_id: str
    mode: str
    trial_id: str | None = None
    face: str | None = None
    left: str | None = None
    right: str | None = None
    x: str | None = None
    number: int = 0  # this pair's place in the session (1-based)
    target: int = 0
    message: str = ""  # when there is no trial: why
    token: str = ""  # the signed reviewer token the page keeps (BrowserState)


@dataclass
class VoteReceipt:
    """A stored vote's acknowledgement: what the reviewer is told, progress, and the pair that was voted on."""

    reveal: str
    voted: int
    target: int
    shown: TrialView | None = None  # the voted pair as the page showed it (None: a retry, the page may differ)


@dataclass
class Seat:
    """One page load (Gradio session): its bound reviewer, open trial, progress and gold plan."""

    reviewer: Reviewer
    token: str
    mode: str
    last_seen: float
    trial_id: str | None = None
    view: TrialView | None = None
    served_at: float = 0.0
    voted: int = 0
    target: int = 0  # the progress total, fixed when the seat gets its first pair (so a gold trial can't show)
    parked: dict = field(default_factory=dict)  # mode -> (trial id, view, served_at) left by a mode switch
    gold: dict[int, str] = field(default_factory=dict)  # trial number -> gold kind, drawn with the target
    tally: dict[str, list[int]] = field(default_factory=dict)  # 'gold'/'abx' -> [answered as expected, asked]
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def reviewer_id(self) -> str:
        """The bound reviewer's pseudonymous id."""
        return self.reviewer.id

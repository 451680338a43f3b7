"""The review tab's server side, without Gradio: one seat per page load (Gradio session), the trial it holds,
and the checks every vote passes.

A seat binds a session to a reviewer id when the page opens; later calls of that session use the bound id, not
whatever the client sends. The page only ever holds the opaque trial id and the per-trial image URLs; arms,
preset and condition stay in the store until the vote is in (then ``VoteReceipt.reveal`` may say them).

Per review cycle the desk reads the trial and its vote, writes the vote and the next trial, and reads which pairs
the reviewer has seen; the pair list (re-read when the pairs change) and the balancing counts (``TrialLoad``) are
kept in memory, and the images are served from memory (``review.served``), so a cycle writes no files.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from review.store import DuplicateVote, StoreIntegrityError
from review.trials import (
    ARMS,
    TRIAL_ID_RE,
    RateLimiter,
    TrialLoad,
    VoteRefused,
    assign_left_arm,
    choose_gold,
    other,
    outcome_for,
    pick_pair,
    plan_trial,
    serve_trial_images,
    valid_trial_id,
    validate_vote,
)
from review.ui.image_route import image_url
from review.ui.reference_faces import ReferenceFaces
from review.ui.services import Services

logger = logging.getLogger(__name__)

DONE_MARK = "thank you!"  # in the messages that end a session: the page then offers no 'Next pair' (review_js)


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


@dataclass
class VoteReceipt:
    reveal: str
    voted: int
    target: int
    face: str | None = None  # the reference face shown with the voted pair


@dataclass
class Seat:
    reviewer_id: str
    mode: str
    last_seen: float
    trial_id: str | None = None
    view: TrialView | None = None
    served_at: float = 0.0
    voted: int = 0
    target: int = 0  # the progress total, fixed when the seat gets its first pair (so a gold trial can't show)
    gold_left: int = 0  # gold checks still budgeted inside that total
    parked: dict = field(default_factory=dict)  # mode -> (trial id, view, served_at) left by a mode switch
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReviewDesk:
    def __init__(self, services: Services, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, seat_ttl_s: float = 4 * 3600,
                 allocation: Callable[[str], Mapping[str, float]] | None = None) -> None:
        # allocation(mode) -> preset weights for pick_pair (0: verdict reached, not served); review.allocation
        self.allocation = allocation
        self.services, self.store, self.dirs = services, services.store, services.dirs
        self.config = services.config.study
        self.rng = rng or random.SystemRandom()
        self.clock, self.seat_ttl_s = clock, seat_ttl_s
        self.vote_limiter = RateLimiter(self.config.vote_burst, self.config.vote_per_s, clock=clock)
        self.address_limiter = RateLimiter(self.config.address_burst, self.config.address_per_s, clock=clock)
        self.trial_limiter = RateLimiter(self.config.trial_burst, self.config.trial_per_s, clock=clock)
        self._seats: dict[str, Seat] = {}
        self._history: dict[tuple[str, str], list[str]] = {}  # (reviewer, mode) -> left arms served
        self._lock = threading.Lock()
        assert services.served is not None
        self.served = services.served
        self.faces = ReferenceFaces(self.store, self.dirs, self.served)
        self.load = TrialLoad(lambda mode: self.store.vote_counts("pair", mode=mode), clock=clock)
        self._pairs: tuple[tuple[int, int], list[dict], dict[int, dict]] = ((-1, -1), [], {})

    # -- seats --------------------------------------------------------------------------------------------------
    def open(self, session: str, claimed_id: object, mode: object, address: str) -> TrialView:
        """A page load: bind the session to the claimed reviewer id (or a fresh random one), serve a trial."""
        self.address_limiter.check(address)
        session = self._session(session)
        reviewer = claimed_id if isinstance(claimed_id, str) and TRIAL_ID_RE.fullmatch(claimed_id) else None
        with self._lock:
            self._drop_idle()
            seat = self._seats.get(session)
            if seat is None:
                seat = Seat(reviewer or secrets.token_hex(16), self._mode(mode), self.clock())
                self._seats[session] = seat
        self.store.get_or_create_reviewer(seat.reviewer_id)
        return self.next(session, mode, address, _checked=True)

    def _seat(self, session: str) -> Seat:
        with self._lock:
            seat = self._seats.get(self._session(session))
        if seat is None:
            raise VoteRefused("No review session: open the review page first.")
        seat.last_seen = self.clock()
        return seat

    def _drop_idle(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._seats.items() if now - s.last_seen > self.seat_ttl_s]:
            del self._seats[key]

    def _mode(self, mode: object) -> str:
        return mode if isinstance(mode, str) and mode in self.config.modes else self.config.modes[0]

    @staticmethod
    def _session(session: object) -> str:
        if not isinstance(session, str) or not 0 < len(session) <= 128:
            raise VoteRefused("No review session: open the review page first.")
        return session

    def reviewer_of(self, session: str) -> str:
        return self._seat(session).reviewer_id

    # -- trials -------------------------------------------------------------------------------------------------
    def next(self, session: str, mode: object, address: str, *, _checked: bool = False) -> TrialView:
        """The session's open trial (same mode), else a new one; a message when nothing is left."""
        if not _checked:
            self.address_limiter.check(address)
        seat = self._seat(session)
        mode = self._mode(mode)
        with seat.lock:
            if seat.trial_id and seat.view and seat.mode == mode and self.store.get_vote(seat.trial_id) is None:
                return seat.view
            if seat.trial_id and seat.view and seat.mode != mode:  # a mode switch keeps the open trial for later
                seat.parked[seat.mode] = (seat.trial_id, seat.view, seat.served_at)
            seat.mode, seat.trial_id, seat.view = mode, None, None
            target = seat.target or self.config.trials_per_session
            if seat.voted >= target:
                return TrialView(seat.reviewer_id, mode, number=seat.voted, target=target,
                                 message=f"That was {seat.voted} of {target}: {DONE_MARK} "
                                         "Reload the page to review more.")
            parked = seat.parked.pop(mode, None)
            if parked and self.store.get_vote(parked[0]) is None:  # back to a mode: its trial, not a new one
                seat.trial_id, seat.view, seat.served_at = parked
                seat.view.number = seat.voted + 1
                return seat.view
            view = self._new_trial(session, seat, address)
            seat.view, seat.trial_id, seat.served_at = view, view.trial_id, self.clock()
            return view

    def _pair_list(self) -> list[dict]:
        """Every pair (``Store.list_pairs``), read again only when the pairs changed."""
        version = self.store.pairs_version()
        if version != self._pairs[0]:
            pairs = self.store.list_pairs()
            self._pairs = (version, pairs, {p["pair_id"]: p for p in pairs})
        return self._pairs[1]

    def _new_trial(self, session: str, seat: Seat, address: str) -> TrialView:
        store, mode, reviewer = self.store, seat.mode, seat.reviewer_id
        pairs = self._pair_list()
        if not pairs:
            return TrialView(reviewer, mode, message="No pairs to review yet. Please come back in a moment.")
        self.trial_limiter.check(address, "new pairs")
        seen = store.pairs_seen_by(reviewer)  # any mode: a pair seen in ABX is seen
        open_conditions = len({p["condition_id"] for p in pairs}
                              - {p["condition_id"] for p in pairs if p["pair_id"] in seen})
        if not seat.target:  # fixed once: the pairs this reviewer can still get plus their budgeted gold checks
            seat.gold_left = round(open_conditions * self.config.gold_rate) if mode == "preference" else 0
            seat.target = min(self.config.trials_per_session, seat.voted + max(open_conditions + seat.gold_left, 1))
        # gold at the configured rate; and whenever the budgeted checks need every slot left (or no pair is left),
        # so a finished session has had all of them
        due = mode == "preference" and bool(seen) and (open_conditions == 0
                                                       or seat.gold_left >= seat.target - seat.voted)
        gold = seat.gold_left > 0 and (choose_gold(self.rng, self.config.gold_rate, mode, seen) or due)
        if gold:
            seat.gold_left -= 1
            pair = self.rng.choice([p for p in pairs if p["pair_id"] in seen])
            plan = plan_trial(mode, self.rng.choice(ARMS), gold=True)
        else:
            weights = self.allocation(mode) if self.allocation else None
            # adaptive: a reviewer gives each preset at most its even share of a session (spread, not piled)
            cap = -(-self.config.trials_per_session // max(len(weights), 1)) if weights else None
            pair = pick_pair(pairs, seen, *self.load.loads(mode, pairs), self.rng, preset_weights=weights,
                             max_per_preset=cap)
            if pair is None:
                return TrialView(reviewer, mode, number=seat.voted, target=seat.voted,
                                 message=f"You have reviewed every pair: {DONE_MARK}")
            history = self._arm_history(reviewer, mode)
            plan = plan_trial(mode, assign_left_arm(history, self.rng))
            history.append(plan.left_arm)
        face = self.faces.url(pair["face_id"])  # before the trial row: a failure here leaves no orphan trial
        names = serve_trial_images(plan, pair, self.dirs.images, self.served)
        trial = store.create_trial(reviewer_id=reviewer, session=session, pair_id=pair["pair_id"], mode=mode,
                                   left_arm=plan.left_arm, x_arm=plan.x_arm, is_gold=plan.is_gold, **names)
        if not plan.is_gold:
            self.load.served(mode, pair["pair_id"])
        logger.info("trial %s served to reviewer %s", trial["id"], reviewer[:8])
        return TrialView(reviewer, mode, trial["id"], face, image_url(names["left_image"]),
                         image_url(names["right_image"]), image_url(names["x_image"]),
                         number=seat.voted + 1, target=max(seat.target, seat.voted + 1))

    def _arm_history(self, reviewer: str, mode: str) -> list[str]:
        with self._lock:
            if (reviewer, mode) not in self._history:
                arms = self.store.left_arms(reviewer)
                for m in self.config.modes:
                    self._history[(reviewer, m)] = arms.get(m, [])
            return self._history.setdefault((reviewer, mode), [])

    # -- votes --------------------------------------------------------------------------------------------------
    def vote(self, session: str, trial_id: object, choice: object, address: str,
             shown_ms: object = None) -> VoteReceipt:
        """Check and store one vote: rate limits, the trial belongs to this session and reviewer and is the one
        open, not yet voted, a choice of its mode. Raises VoteRefused with a message safe for the page.
        ``latency_ms``: since the trial was served, or the page's ``shown_ms`` when lower (a staged pair is
        shown only when the reviewer asks for it)."""
        self.address_limiter.check(address)
        seat = self._seat(session)
        trial_id = valid_trial_id(trial_id)
        if shown_ms is not None and (isinstance(shown_ms, bool) or not isinstance(shown_ms, (int, float))):
            raise VoteRefused("The page sent a bad display time: reload the page.")
        with seat.lock:
            self.vote_limiter.check(seat.reviewer_id, "votes")
            trial = self.store.get_trial(trial_id)
            stored = self.store.get_vote(trial_id) if trial is not None else None
            if stored is not None and self._same_vote(trial, stored, session, seat, choice):
                return self._acknowledge_again(seat, trial, stored)  # a retry (e.g. after a client time-out)
            choice = validate_vote(trial, session=session, reviewer_id=seat.reviewer_id, choice=choice,
                                   voted=stored is not None)
            assert trial is not None
            if trial_id != seat.trial_id:
                raise VoteRefused("This pair is no longer open.")
            outcome, correct = outcome_for(trial, choice)
            latency_ms = max(0, int((self.clock() - seat.served_at) * 1000))
            if shown_ms is not None and 0 <= shown_ms < latency_ms:
                latency_ms = int(shown_ms)
            try:
                self.store.record_vote(trial_id=trial_id, reviewer_id=seat.reviewer_id, choice=choice,
                                       outcome=outcome, correct=correct, latency_ms=latency_ms,
                                       client=self.services.client_tag(address))
            except DuplicateVote:
                stored = self.store.get_vote(trial_id)
                if stored is not None and self._same_vote(trial, stored, session, seat, choice):
                    return self._acknowledge_again(seat, trial, stored)
                raise VoteRefused("This pair already has your vote.") from None
            except StoreIntegrityError:
                logger.exception("vote on trial %s refused by the store", trial_id)
                raise VoteRefused("This vote does not fit its pair.") from None
            seat.voted += 1
            seat.trial_id = None
            target, face = (seat.view.target, seat.view.face) if seat.view else (seat.voted, None)
            return VoteReceipt(self._reveal(trial, choice, outcome), seat.voted, max(target, seat.voted), face)

    @staticmethod
    def _same_vote(trial: dict, stored: dict, session: str, seat: Seat, choice: object) -> bool:
        """The stored vote is this one again: same trial, session, reviewer and choice."""
        return (trial["session"] == session and trial["reviewer_id"] == seat.reviewer_id == stored["reviewer_id"]
                and stored["choice"] == choice)

    def _acknowledge_again(self, seat: Seat, trial: dict, stored: dict) -> VoteReceipt:
        """The acknowledgement of an already stored vote (counted once); no face: the page's may be another."""
        logger.info("vote on trial %s retried: acknowledged again", trial["id"])
        target = seat.view.target if seat.view else seat.voted
        return VoteReceipt(self._reveal(trial, stored["choice"], stored["outcome"]), seat.voted,
                           max(target, seat.voted), None)

    def cycle(self, session: str, trial_id: object, choice: object, mode: object, address: str,
              shown_ms: object = None) -> tuple[VoteReceipt, TrialView]:
        """One review cycle, one request (one against the address limit): the vote (refusals raise), then the
        next trial; once the vote is stored, a next pair refused or failed is a view saying why, never an error."""
        receipt = self.vote(session, trial_id, choice, address, shown_ms)
        try:
            return receipt, self.next(session, mode, address, _checked=True)
        except VoteRefused as exc:
            message = str(exc)
        except Exception:  # the vote is stored: it must be acknowledged; the page offers 'Next pair' again
            logger.exception("next trial after a vote failed")
            message = "The next pair could not be prepared: please try 'Next pair'."
        return receipt, TrialView(self.reviewer_of(session), self._mode(mode), number=receipt.voted,
                                  target=receipt.target, message=message)

    def _reveal(self, trial: dict, choice: str, outcome: str) -> str:
        """Said after the vote only: which side showed which arm (and the preset)."""
        if not self.config.reveal:
            return "Thank you, your vote is in."
        pair = self._pairs[2].get(trial["pair_id"]) or self.store.get_pair(trial["pair_id"]) or {}
        preset = f"selective preset `{pair.get('preset', '?')}`, {pair.get('layer_count', '?')} layers"
        if trial["is_gold"]:
            verdict = "well spotted" if choice == "same" else "the expected answer was 'no visible difference'"
            return f"That was a check pair: both sides showed the same image ({verdict})."
        left, right = trial["left_arm"], other(trial["left_arm"])
        if trial["mode"] == "abx":
            answer = "A" if left == trial["x_arm"] else "B"
            return (f"X was **{answer}** ({'correct' if outcome == 'correct' else 'not this time'}). "
                    f"A: {left}, B: {right} ({preset}).")
        return f"Left: **{left}** attention, right: **{right}** ({preset})."

"""The review tab's server side, without Gradio: one seat per page load (Gradio session), the trial it holds,
and the checks every vote passes.

A seat binds a session to a reviewer when the page opens: the reviewer comes from a token the server signed
(``review.study.identity``), an invite link, or a Hugging Face login, as the study's ``identity`` setting asks; later
calls of that session use the bound reviewer, not whatever the client sends. The page only ever holds the opaque
trial id and the per-trial image URLs; arms, preset, condition and gold stay in the store.

Every choice of a trial is drawn on the server (``review.study.design``): the pair (``pick_pair``, among conditions
not reserved for gold), the sides and ABX's X (a hidden block schedule shared by all reviewers), the session's
gold slots and kinds. Latency is the server's: from serving the trial to the vote's arrival. What the reviewer is
told after a vote follows the ``reveal`` setting: nothing (``none``), a summary after the session's last vote
(``end``), or which side was which after every vote (``each``, for training).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping

from cachetools import TTLCache

from review.store import DuplicateVote, StoreIntegrityError
from review.study.design import SideSchedule, gold_count, gold_plan, reserved_conditions
from review.study.identity import Reviewer, Signer, identify
from review.study.reference_faces import ReferenceFaces
from review.study.reveals import reveal_text
from review.study.served import image_url
from review.study.services import Services
from review.study.trials import (
    ARMS,
    RateLimiter,
    TrialLoad,
    VoteRefused,
    outcome_for,
    pick_pair,
    plan_trial,
    serve_trial_images,
    valid_trial_id,
    validate_vote,
)
from review.study.views import Seat, TrialView, VoteReceipt

logger = logging.getLogger(__name__)

DONE_MARK = "thank you!"  # in the messages that end a session: the page then offers no 'Next pair' (review_js)


class ReviewDesk:
    """The review tab's server side: seats, trials served from the design, votes checked and stored."""

    def __init__(self, services: Services, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, seat_ttl_s: float = 4 * 3600,
                 allocation: Callable[[str], Mapping[str, float]] | None = None) -> None:
        # allocation(mode) -> preset weights for pick_pair (0: verdict reached, not served); review.stats.allocation
        self.allocation = allocation
        self.services, self.store, self.dirs = services, services.store, services.dirs
        self.config = services.config.study
        self.rng = rng or random.SystemRandom()
        self.clock, self.seat_ttl_s = clock, seat_ttl_s
        self.vote_limiter = RateLimiter(self.config.vote_burst, self.config.vote_per_s, clock=clock)
        self.address_limiter = RateLimiter(self.config.address_burst, self.config.address_per_s, clock=clock)
        self.trial_limiter = RateLimiter(self.config.trial_burst, self.config.trial_per_s, clock=clock)
        # session -> seat; a seat idle for seat_ttl_s expires (each use re-inserts it: the idle time restarts)
        self._seats: TTLCache[str, Seat] = TTLCache(math.inf, ttl=seat_ttl_s, timer=clock)
        self._lock = threading.Lock()
        self._secret = self.store.install_secret()
        self.signer = Signer(self._secret)
        self.sides = SideSchedule(0 if self.config.reveal == "each" else self.config.side_block, self.rng)
        self._reserved: tuple[tuple[int, int], set[int]] = ((-1, -1), set())
        assert services.served is not None
        self.served = services.served
        self.faces = ReferenceFaces(self.store, self.dirs, self.served)
        self.load = TrialLoad(lambda mode: self.store.vote_counts("pair", mode=mode), clock=clock)
        self._pairs: tuple[tuple[int, int], list[dict], dict[int, dict]] = ((-1, -1), [], {})

    # -- seats --------------------------------------------------------------------------------------------------
    def open(self, session: str, token: object, mode: object, address: str, *, invite: object = None,
             hf_user: str | None = None) -> TrialView:
        """A page load: bind the session to its reviewer (``identify``), serve a trial."""
        self.address_limiter.check(address)
        session = self._session(session)
        with self._lock:
            seat = self._seats.get(session)
        if seat is None:
            reviewer = self.identify(token, invite, hf_user)
            with self._lock:
                seat = self._seats.setdefault(session, Seat(reviewer, self.signer.token(reviewer), self._mode(mode),
                                                            self.clock()))
        return self.next(session, mode, address, _checked=True)

    def identify(self, token: object, invite: object = None, hf_user: str | None = None) -> Reviewer:
        """The reviewer of a page load, as the study's identity setting asks (``review.study.identity.identify``)."""
        return identify(self.signer, self.store, self.config.identity, token, invite, hf_user,
                        allowed=self.services.config.hf_allow)

    def _seat(self, session: str) -> Seat:
        key = self._session(session)
        with self._lock:
            seat = self._seats.get(key)
            if seat is not None:
                self._seats[key] = seat  # in use: its idle time starts again
        if seat is None:
            raise VoteRefused("No review session: open the review page first.")
        seat.last_seen = self.clock()
        return seat

    def _mode(self, mode: object) -> str:
        return mode if isinstance(mode, str) and mode in self.config.modes else self.config.modes[0]

    @staticmethod
    def _session(session: object) -> str:
        if not isinstance(session, str) or not 0 < len(session) <= 128:
            raise VoteRefused("No review session: open the review page first.")
        return session

    def reviewer_of(self, session: str) -> str:
        """The reviewer id bound to ``session``."""
        return self._seat(session).reviewer_id

    def token_of(self, session: str) -> str:
        """The signed reviewer token of ``session`` (what the page keeps)."""
        return self._seat(session).token

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
                return TrialView(seat.reviewer_id, mode, token=seat.token, number=seat.voted, target=target,
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

    def _reserved_conditions(self) -> set[int]:
        """Conditions kept for gold checks (``design.reserved_conditions``), recomputed when the pairs change."""
        version = self.store.pairs_version()
        if version != self._reserved[0]:
            share = self.config.gold_rate if self.config.gold_per_session else 0.0
            ids = [p["condition_id"] for p in self._pair_list()]
            self._reserved = (version, reserved_conditions(ids, self._secret, share))
        return self._reserved[1]

    def _new_trial(self, session: str, seat: Seat, address: str) -> TrialView:
        store, mode, reviewer = self.store, seat.mode, seat.reviewer_id
        pairs = self._pair_list()
        if not pairs:
            return TrialView(reviewer, mode, token=seat.token,
                             message="No pairs to review yet. Please come back in a moment.")
        self.trial_limiter.check(address, "new pairs")
        seen = store.pairs_seen_by(reviewer)  # any mode, gold included: a condition is shown to a reviewer once
        by_id = self._pairs[2]
        seen_conditions = {by_id[p]["condition_id"] for p in seen if p in by_id}
        reserved = self._reserved_conditions()
        real = [p for p in pairs if p["condition_id"] not in reserved]
        gold_open = sorted({p["condition_id"] for p in pairs if p["condition_id"] in reserved} - seen_conditions)
        open_real = len({p["condition_id"] for p in real} - seen_conditions)
        if not seat.target:  # fixed once, with the gold slots: nothing later depends on the reviewer's answers
            limit = self.config.trials_per_session - seat.voted
            golds = min(gold_count(self.config.trials_per_session, self.config.gold_per_session), len(gold_open))
            total = min(limit, open_real + golds)
            golds = min(golds, gold_count(total, self.config.gold_per_session))
            seat.target = seat.voted + max(min(limit, open_real + golds), 1)
            seat.gold = gold_plan(self.rng, seat.target, seat.voted + 1, golds)
        number = seat.voted + 1
        kind = seat.gold.get(number)
        if kind and gold_open:
            condition = self.rng.choice(gold_open)
            pair = self.rng.choice([p for p in pairs if p["condition_id"] == condition])
            kind = "degraded" if mode == "abx" else kind
            plan = plan_trial(mode, self.rng.choice(ARMS), gold=kind, degraded_side=self.rng.choice(("left", "right")),
                              x_degraded=self.rng.random() < 0.5)
        else:
            weights = self.allocation(mode) if self.allocation else None
            # adaptive: a reviewer gives each preset at most its even share of a session (spread, not piled)
            cap = -(-self.config.trials_per_session // max(len(weights), 1)) if weights else None
            pair = pick_pair(real, seen, *self.load.loads(mode, real), self.rng, preset_weights=weights,
                             max_per_preset=cap)
            if pair is None:
                return TrialView(reviewer, mode, token=seat.token, number=seat.voted, target=seat.voted,
                                 message=f"You have reviewed every pair: {DONE_MARK}")
            x_arm = self.sides.draw(("x", pair["preset"])) if mode == "abx" else None
            plan = plan_trial(mode, self.sides.draw((mode, pair["preset"])), x_arm=x_arm)
        face = self.faces.url(pair["face_id"])  # before the trial row: a failure here leaves no orphan trial
        names = serve_trial_images(plan, pair, self.dirs.images, self.served)
        trial = store.create_trial(reviewer_id=reviewer, session=session, pair_id=pair["pair_id"], mode=mode,
                                   left_arm=plan.left_arm, x_arm=plan.x_arm, is_gold=plan.is_gold,
                                   gold_kind=plan.gold_kind, expected=plan.expected,
                                   identity_kind=seat.reviewer.kind, reveal=self.config.reveal, **names)
        if not plan.is_gold:
            self.load.served(mode, pair["pair_id"])
        logger.info("trial %s served to reviewer %s", trial["id"], reviewer[:8])
        return TrialView(reviewer, mode, trial["id"], face, image_url(names["left_image"]),
                         image_url(names["right_image"]), image_url(names["x_image"]), token=seat.token,
                         number=number, target=max(seat.target, number))

    # -- votes --------------------------------------------------------------------------------------------------
    def vote(self, session: str, trial_id: object, choice: object, address: str,
             shown_ms: object = None) -> VoteReceipt:
        """Check and store one vote: rate limits, the trial belongs to this session and reviewer and is the one
        open, not yet voted, a choice of its mode. Raises VoteRefused with a message safe for the page.
        ``latency_ms`` is the server's: from serving the trial to this call. The page's ``shown_ms`` must be a
        number or absent and is not used (a client can send anything)."""
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
            tally = "gold" if trial["is_gold"] else "abx" if trial["mode"] == "abx" else None
            if tally and correct is not None:
                counts = seat.tally.setdefault(tally, [0, 0])
                counts[0], counts[1] = counts[0] + int(bool(correct)), counts[1] + 1
            target = max(seat.view.target if seat.view else seat.voted, seat.voted)
            return VoteReceipt(self._reveal(trial, choice, outcome, seat, target), seat.voted, target, seat.view)

    @staticmethod
    def _same_vote(trial: dict, stored: dict, session: str, seat: Seat, choice: object) -> bool:
        """The stored vote is this one again: same trial, session, reviewer and choice."""
        return (trial["session"] == session and trial["reviewer_id"] == seat.reviewer_id == stored["reviewer_id"]
                and stored["choice"] == choice)

    def _acknowledge_again(self, seat: Seat, trial: dict, stored: dict) -> VoteReceipt:
        """The acknowledgement of an already stored vote (counted once); no view: the page's may be another."""
        logger.info("vote on trial %s retried: acknowledged again", trial["id"])
        target = max(seat.view.target if seat.view else seat.voted, seat.voted)
        return VoteReceipt(self._reveal(trial, stored["choice"], stored["outcome"], seat, target), seat.voted,
                           target, None)

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
        return receipt, TrialView(self.reviewer_of(session), self._mode(mode), token=self.token_of(session),
                                  number=receipt.voted, target=receipt.target, message=message)

    def _reveal(self, trial: dict, choice: str, outcome: str, seat: Seat, target: int) -> str:
        """What the reviewer is told after a vote (``review.study.reveals``, the ``reveal`` setting)."""
        pair = None
        if self.config.reveal == "each":
            pair = self._pairs[2].get(trial["pair_id"]) or self.store.get_pair(trial["pair_id"])
        return reveal_text(self.config.reveal, trial, outcome, pair, voted=seat.voted, target=target,
                           tally=seat.tally)

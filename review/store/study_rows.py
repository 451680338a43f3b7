"""The study side of the store: reviewers, trials, votes, and the reads behind the picker, statistics and exports."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlite_utils import Database

from . import queries as q
from .rows import Row, RowsBase

CountBy = Literal["pair", "preset", "condition"]
IdentityKind = Literal["legacy", "anonymous", "invite", "hf"]


class StudyRows(RowsBase):
    """Reviewers, trials, votes and the study's flat reads (a mixin of ``Store``)."""

    def get_or_create_reviewer(self, reviewer_id: str, identity_kind: IdentityKind = "legacy") -> Row:
        """The reviewer row, created on first sight (with ``identity_kind``); last_seen is updated to now."""
        self._conn.write(lambda db: db.execute(q.UPSERT_REVIEWER, {"id": reviewer_id, "now": self._clock(),
                                                                   "kind": identity_kind}))
        return self._get("reviewers", "id = ?", [reviewer_id])  # type: ignore[return-value]

    def get_reviewer(self, reviewer_id: str) -> Row | None:
        """The reviewer row, or None."""
        return self._get("reviewers", "id = ?", [reviewer_id])

    def create_trial(self, *, reviewer_id: str, session: str, pair_id: int,
                     mode: Literal["preference", "abx"], left_arm: Literal["full", "selective"],
                     left_image: str, right_image: str, x_arm: Literal["full", "selective"] | None = None,
                     x_image: str | None = None, is_gold: bool = False, trial_id: str | None = None,
                     gold_kind: Literal["identical", "degraded"] | None = None, expected: str | None = None,
                     identity_kind: IdentityKind = "legacy", reveal: str | None = None) -> Row:
        """Record a served trial (the answer key stays server-side). Image names are the per-trial copies.
        Gold trials made since v3 carry ``gold_kind`` and the ``expected`` choice (their votes are then
        'correct'/'wrong'); ``identity_kind`` and ``reveal`` record how the reviewer was identified and which reveal
        setting the trial was served under."""
        row = {"id": trial_id or uuid.uuid4().hex, "reviewer_id": reviewer_id, "session": session,
               "pair_id": pair_id, "mode": mode, "left_arm": left_arm, "x_arm": x_arm,
               "left_image": left_image, "right_image": right_image, "x_image": x_image,
               "is_gold": int(bool(is_gold)), "created_at": self._clock(), "gold_kind": gold_kind,
               "expected": expected, "identity_kind": identity_kind, "reveal": reveal}
        self._conn.write(lambda db: db["trials"].insert(row))
        return self.get_trial(row["id"])  # type: ignore[return-value]

    def get_trial(self, trial_id: str) -> Row | None:
        """The trial row (its answer key included: server-side only), or None."""
        return self._get("trials", "id = ?", [trial_id])

    def record_vote(self, *, trial_id: str, reviewer_id: str, choice: str, outcome: str,
                    correct: bool | None = None, latency_ms: int | None = None,
                    client: str | None = None) -> Row:
        """Store the one vote of a trial and touch the reviewer's last_seen, atomically.

        Raises DuplicateVote when the trial already has a vote, StoreIntegrityError when the vote does not fit
        the trial (unknown trial, other reviewer, choice/outcome not matching the trial's mode and arms)."""
        now = self._clock()
        row = {"trial_id": trial_id, "reviewer_id": reviewer_id, "choice": choice, "outcome": outcome,
               "correct": None if correct is None else int(bool(correct)),
               "latency_ms": None if latency_ms is None else int(latency_ms), "client": client,
               "created_at": now}

        def write(db: Database) -> Row:
            stored = db["votes"].get(db["votes"].insert(row).last_pk)
            db.execute(q.TOUCH_REVIEWER, {"id": reviewer_id, "now": now})
            return stored

        return self._conn.write(write)

    def get_vote(self, trial_id: str) -> Row | None:
        """The trial's vote row, or None."""
        return self._get("votes", "trial_id = ?", [trial_id])

    # -- reads for the picker, statistics and exports ---------------------------------------------------------
    def vote_counts(self, by: CountBy = "pair", *, mode: str | None = None,
                    include_gold: bool = False) -> list[Row]:
        """Per pair / preset / condition: pairs, trials served and votes stored (zero rows included)."""
        if by not in q.COUNTS:
            raise ValueError(f"by must be one of {sorted(q.COUNTS)}, not {by!r}")
        return self._conn.rows(q.COUNTS[by], {"mode": mode, "gold": int(include_gold)})

    def pairs_seen_by(self, reviewer_id: str, *, mode: str | None = None) -> dict[int, int]:
        """pair_id -> number of trials of that pair already served to this reviewer."""
        rows = self._conn.rows(q.PAIRS_SEEN, {"reviewer": reviewer_id, "mode": mode})
        return {r["pair_id"]: r["trials"] for r in rows}

    def study_version(self) -> tuple[int, int]:
        """(pairs, votes) stored: changes whenever the leaderboard's inputs change."""
        row = self._conn.rows(q.STUDY_VERSION)[0]
        return row["pairs"], row["votes"]

    def vote_rows(self) -> list[Row]:
        """One flat dict per vote: vote, trial (mode, arms, gold), pair metrics and condition columns."""
        return self._conn.rows(q.VOTE_ROWS)

    def trial_rows(self) -> list[Row]:
        """One flat dict per served trial with its vote columns (None when unanswered)."""
        return self._conn.rows(q.TRIAL_ROWS)

"""Study logic of the review tab: picking, counterbalancing, gold, ABX, outcomes, vote checks, rate limits,
served images; and the server-side desk on a small store (no Gradio)."""

from __future__ import annotations

import random
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fixtures_review import make_services
from PIL import Image

from review.images import png_has_metadata, read_image
from review.trials import (
    RateLimiter,
    StudyConfig,
    TokenBucket,
    TrialLoad,
    VoteRefused,
    assign_left_arm,
    choose_gold,
    outcome_for,
    pick_pair,
    plan_trial,
    validate_vote,
)
from review.ui.review_desk import ReviewDesk
from review.ui.services import clean_presets

PAIRS = [{"pair_id": i, "preset": preset, "condition_id": cond}
         for i, (preset, cond) in enumerate(((p, c) for c in (1, 2) for p in ("balanced", "fast", "none")), 1)]


def served(desk: ReviewDesk, url_or_name: str) -> bytes:
    """The bytes the image route answers for a page URL or a trial's image column."""
    data = desk.served.get(Path(url_or_name).name)
    assert data is not None, url_or_name
    return data


def served_pixels(desk: ReviewDesk, url_or_name: str) -> np.ndarray:
    with Image.open(BytesIO(served(desk, url_or_name))) as image:
        return np.asarray(image.convert("RGB"))


def trial(**kw) -> dict:
    row = {"id": "a" * 32, "session": "s1", "reviewer_id": "r1", "mode": "preference", "left_arm": "full",
           "x_arm": None, "is_gold": 0}
    row.update(kw)
    return row


# -- picking --------------------------------------------------------------------------------------------------
def test_pick_pair_skips_pairs_the_reviewer_has_seen():
    rng = random.Random(0)
    seen = {p["pair_id"]: 1 for p in PAIRS if p["condition_id"] == 1 and p["preset"] != "none"}
    assert pick_pair(PAIRS, seen, {}, {}, {}, rng)["condition_id"] == 2
    assert pick_pair(PAIRS, {p["pair_id"]: 1 for p in PAIRS}, {}, {}, {}, rng) is None


def test_a_reviewer_gets_one_pair_per_condition():
    """Pairs of one condition share the full image: a second one would expose the full arm by repetition."""
    rng, seen, conditions = random.Random(3), {}, []
    while (pair := pick_pair(PAIRS, seen, {}, {}, {}, rng)) is not None:
        seen[pair["pair_id"]] = 1
        conditions.append(pair["condition_id"])
    assert sorted(conditions) == [1, 2]


def test_pick_pair_prefers_the_least_served_preset_then_condition():
    rng = random.Random(0)
    preset_load, condition_load = {"balanced": 5, "fast": 5, "none": 2}, {1: 3, 2: 0}
    chosen = pick_pair(PAIRS, {}, preset_load, condition_load, {}, rng)
    assert (chosen["preset"], chosen["condition_id"]) == ("none", 2)


def test_picking_and_serving_spreads_trials_evenly_over_presets_and_conditions():
    rng, load_p, load_c, load_pair = random.Random(1), Counter(), Counter(), Counter()
    for _reviewer in range(12):
        seen: dict[int, int] = {}
        for _ in range(2):
            pair = pick_pair(PAIRS, seen, load_p, load_c, load_pair, rng)
            seen[pair["pair_id"]] = 1
            load_p[pair["preset"]] += 1
            load_c[pair["condition_id"]] += 1
            load_pair[pair["pair_id"]] += 1
    assert set(load_p.values()) == {8} and set(load_c.values()) == {12} and set(load_pair.values()) == {4}


def test_ties_are_broken_at_random():
    picks = {pick_pair(PAIRS, {}, {}, {}, {}, random.Random(seed))["pair_id"] for seed in range(30)}
    assert len(picks) > 3


# -- sides, gold, ABX -----------------------------------------------------------------------------------------
def test_each_reviewer_sees_the_full_arm_on_the_left_half_the_time():
    rng = random.Random(7)
    for n in (10, 11, 40):
        history: list[str] = []
        for _ in range(n):
            history.append(assign_left_arm(history, rng))
        assert abs(history.count("full") - n / 2) <= 0.5
    firsts = Counter(assign_left_arm([], random.Random(s)) for s in range(200))
    assert 70 < firsts["full"] < 130  # the first of each block is a coin flip


def test_gold_trials_come_at_the_configured_rate_and_only_after_a_seen_pair():
    rng = random.Random(3)
    golds = sum(choose_gold(rng, 0.2, "preference", {1: 1}) for _ in range(5000))
    assert 0.18 < golds / 5000 < 0.22
    assert not any(choose_gold(rng, 0.9, "preference", {}) for _ in range(100))
    assert not any(choose_gold(rng, 0.9, "abx", {1: 1}) for _ in range(100))


def test_trial_plans_put_the_right_image_on_each_side():
    plain = plan_trial("preference", "selective")
    assert (plain.left_source, plain.right_source, plain.x_source) == ("selective", "full", None)
    gold = plan_trial("preference", "full", gold=True)
    assert (gold.is_gold, gold.left_source, gold.right_source) == (True, "full", "full")
    abx = plan_trial("abx", "selective")
    assert (abx.left_source, abx.right_source, abx.x_source, abx.x_arm) == ("selective", "full", "full", "full")
    with pytest.raises(ValueError):
        plan_trial("abx", "full", gold=True)


@pytest.mark.parametrize("row, choice, expected", [
    (trial(left_arm="full"), "left", ("full", None)),
    (trial(left_arm="full"), "right", ("selective", None)),
    (trial(left_arm="selective"), "same", ("same", None)),
    (trial(is_gold=1), "same", ("same", True)),
    (trial(is_gold=1), "right", ("selective", False)),
    (trial(mode="abx", left_arm="full", x_arm="full"), "a", ("correct", True)),
    (trial(mode="abx", left_arm="full", x_arm="full"), "b", ("wrong", False)),
    (trial(mode="abx", left_arm="selective", x_arm="full"), "b", ("correct", True)),
])
def test_a_choice_maps_to_an_outcome(row, choice, expected):
    assert outcome_for(row, choice) == expected


# -- vote checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, kw, message", [
    (None, {}, "Unknown trial"),
    (trial(session="other"), {}, "not given to this session"),
    (trial(reviewer_id="r2"), {}, "not given to this session"),
    (trial(), {"voted": True}, "already has your vote"),
    (trial(), {"choice": "a"}, "Choice must be one of left, right, same"),
    (trial(mode="abx", x_arm="full"), {"choice": "same"}, "Choice must be one of a, b"),
    (trial(), {"choice": ["left"]}, "Choice must be"),
])
def test_votes_that_do_not_fit_are_refused(row, kw, message):
    args = {"session": "s1", "reviewer_id": "r1", "choice": "left", "voted": False, **kw}
    with pytest.raises(VoteRefused, match=message):
        validate_vote(row, **args)


def test_a_fitting_vote_passes():
    assert validate_vote(trial(), session="s1", reviewer_id="r1", choice="same", voted=False) == "same"


# -- rate limits ----------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills():
    clock = Clock()
    bucket = TokenBucket(3, 0.5, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 1.9
    assert not bucket.take()
    clock.now = 2.0
    assert bucket.take() and not bucket.take()


def test_rate_limiter_keeps_keys_apart_and_bounded():
    clock = Clock()
    limiter = RateLimiter(1, 0.0, max_keys=2, clock=clock)
    assert limiter.allow("a") and limiter.allow("b") and not limiter.allow("a")
    limiter.allow("c")  # evicts the least recently used key
    assert len(limiter._buckets) == 2
    with pytest.raises(VoteRefused, match="slow down"):
        limiter.check("c")


# -- form parsing ---------------------------------------------------------------------------------------------
def test_preset_fields_are_parsed_or_refused():
    assert clean_presets(["fast", "full"], "output:0-2, fast") == ("fast", "output:0-2")
    with pytest.raises(VoteRefused):
        clean_presets(["full"], "")


# -- the desk on a small store --------------------------------------------------------------------------------
@pytest.fixture
def desk(tmp_path: Path) -> ReviewDesk:
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.0, vote_per_s=100.0, vote_burst=100,
                                                         address_burst=1000, reveal=True))
    return ReviewDesk(services, rng=random.Random(5))


def test_desk_serves_unseen_pairs_under_fresh_urls_and_records_votes(desk: ReviewDesk):
    view = desk.open("sess-1", None, "preference", "10.0.0.1")
    reviewer, pairs = view.reviewer_id, []
    for _ in range(6):
        trial_row = desk.store.get_trial(view.trial_id)
        pairs.append(trial_row["pair_id"])
        assert png_has_metadata(served(desk, view.left)) == [] and png_has_metadata(served(desk, view.right)) == []
        assert Path(view.left).name == trial_row["left_image"]
        desk.vote("sess-1", view.trial_id, "left", "10.0.0.1")
        view = desk.next("sess-1", "preference", "10.0.0.1")
    assert sorted(pairs) == list(range(1, 7)) and view.trial_id is None and "thank you" in view.message
    votes = desk.store.vote_rows()
    assert [v["outcome"] for v in votes] == [v["left_arm"] for v in votes]
    assert Counter(v["left_arm"] for v in votes) == {"full": 3, "selective": 3}
    assert {v["reviewer_id"] for v in votes} == {reviewer}


def test_desk_refuses_foreign_double_stale_and_bad_votes(desk: ReviewDesk):
    mine = desk.open("sess-1", None, "preference", "a1")
    other = desk.open("sess-2", None, "preference", "a2")
    with pytest.raises(VoteRefused, match="not given to this session"):
        desk.vote("sess-2", mine.trial_id, "left", "a2")
    with pytest.raises(VoteRefused, match="open the review page"):
        desk.vote("sess-3", mine.trial_id, "left", "a3")
    with pytest.raises(VoteRefused, match="Choice must be"):
        desk.vote("sess-1", mine.trial_id, "a", "a1")
    with pytest.raises(VoteRefused, match="Unknown trial"):
        desk.vote("sess-1", "../../etc/passwd", "left", "a1")
    receipt = desk.vote("sess-1", mine.trial_id, "same", "a1")
    assert "Left:" in receipt.reveal and receipt.voted == 1
    with pytest.raises(VoteRefused, match="already has your vote"):
        desk.vote("sess-1", mine.trial_id, "left", "a1")
    assert desk.store.get_vote(other.trial_id) is None and len(desk.store.vote_rows()) == 1


def test_reloading_keeps_the_reviewer_id_but_a_claimed_id_cannot_take_over_a_session(desk: ReviewDesk):
    first = desk.open("sess-1", None, "preference", "a1")
    again = desk.open("sess-2", first.reviewer_id, "preference", "a1")
    assert again.reviewer_id == first.reviewer_id and again.trial_id != first.trial_id
    assert desk.open("sess-2", "f" * 32, "preference", "a1").reviewer_id == first.reviewer_id
    assert desk.open("sess-3", "Robert'); DROP TABLE", "abx", "a1").reviewer_id != first.reviewer_id


def test_abx_trials_show_x_as_the_full_image(desk: ReviewDesk):
    view = desk.open("sess-1", None, "abx", "a1")
    row = desk.store.get_trial(view.trial_id)
    pair = desk.store.get_pair(row["pair_id"])
    full = read_image(desk.dirs.images, pair["full_file"])
    assert (served_pixels(desk, view.x) == full).all()
    side = "a" if row["left_arm"] == "full" else "b"
    desk.vote("sess-1", view.trial_id, side, "a1")
    assert desk.store.get_vote(view.trial_id)["outcome"] == "correct"


def test_gold_trials_show_one_image_twice_and_are_recorded(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.5, vote_burst=100, vote_per_s=100.0))
    desk = ReviewDesk(services, rng=random.Random(2))
    view = desk.open("s", None, "preference", "a")
    golds = 0
    while view.trial_id:
        row = desk.store.get_trial(view.trial_id)
        if row["is_gold"]:
            golds += 1
            assert (served_pixels(desk, row["left_image"]) == served_pixels(desk, row["right_image"])).all()
            assert row["left_image"] != row["right_image"]
        desk.vote("s", view.trial_id, "same", "a")
        view = desk.next("s", "preference", "a")
    gold_votes = [v for v in desk.store.vote_rows() if v["is_gold"]]
    assert golds == len(gold_votes) > 0 and all(v["correct"] == 1 for v in gold_votes)


def test_votes_are_rate_limited_per_reviewer(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.0, vote_burst=2, vote_per_s=0.0))
    desk = ReviewDesk(services, rng=random.Random(0))
    view = desk.open("s", None, "preference", "a")
    for _ in range(2):
        desk.vote("s", view.trial_id, "left", "a")
        view = desk.next("s", "preference", "a")
    with pytest.raises(VoteRefused, match="Too many votes"):
        desk.vote("s", view.trial_id, "left", "a")


def test_new_trials_are_rate_limited_per_address(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(trial_burst=2, trial_per_s=0.0))
    desk = ReviewDesk(services, rng=random.Random(0))
    desk.open("s1", None, "preference", "10.0.0.9")
    desk.open("s2", None, "preference", "10.0.0.9")
    with pytest.raises(VoteRefused, match="Too many new pairs"):
        desk.open("s3", None, "preference", "10.0.0.9")
    assert desk.open("s4", None, "preference", "10.0.0.10").trial_id  # another address is not affected


def test_the_balancing_counts_kept_in_memory_match_the_store(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.3, vote_burst=100, vote_per_s=100.0,
                                                         address_burst=1000, trial_burst=1000))
    desk = ReviewDesk(services, rng=random.Random(4))
    for session in range(8):  # several reviewers, some votes, gold trials among them
        view = desk.open(f"s{session}", None, ("preference", "abx")[session % 2], "a")
        if session % 3:
            desk.vote(f"s{session}", view.trial_id, "same" if view.mode == "preference" else "a", "a")
            desk.next(f"s{session}", view.mode, "a")
    pairs = desk.store.list_pairs()
    for mode in ("preference", "abx"):
        stored = {r["pair_id"]: r["trials"] for r in desk.store.vote_counts("pair", mode=mode)}
        per_preset = Counter()
        for r in desk.store.vote_counts("preset", mode=mode):
            per_preset[r["preset"]] = r["trials"]
        preset_load, condition_load, pair_load = desk.load.loads(mode, pairs)
        assert {k: v for k, v in pair_load.items() if v} == {k: v for k, v in stored.items() if v}
        assert {k: v for k, v in preset_load.items() if v} == {k: v for k, v in per_preset.items() if v}
        assert sum(condition_load.values()) == sum(stored.values()) > 0


def test_trial_load_reads_the_store_again_after_refresh_s():
    reads, now = [], [0.0]

    def read(mode: str) -> list[dict]:
        reads.append(mode)
        return [{"pair_id": 1, "trials": 5}]

    load = TrialLoad(read, refresh_s=30.0, clock=lambda: now[0])
    load.served("abx", 1)
    assert load.loads("abx", PAIRS)[2][1] == 6 and reads == ["abx"]
    now[0] = 31.0  # another process may have served trials: the store's count wins
    assert load.loads("abx", PAIRS)[2][1] == 5 and reads == ["abx", "abx"]


def test_desk_never_shows_a_reviewer_two_pairs_of_one_condition(tmp_path: Path):
    """Pairs of a condition share the full image; seeing it twice would reveal the full arm."""
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.0, vote_per_s=100.0, vote_burst=100,
                                                         address_burst=1000), shared_full=True)
    desk = ReviewDesk(services, rng=random.Random(2))
    view, conditions = desk.open("sess-1", None, "preference", "10.0.0.1"), []
    while view.trial_id is not None:
        conditions.append(desk.store.get_pair(desk.store.get_trial(view.trial_id)["pair_id"])["condition_id"])
        desk.vote("sess-1", view.trial_id, "left", "10.0.0.1")
        view = desk.next("sess-1", "preference", "10.0.0.1")
    assert len(conditions) == len(set(conditions)) == 2


def test_progress_total_does_not_reveal_gold_trials(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.5, vote_per_s=100.0, vote_burst=100,
                                                         address_burst=1000))
    desk = ReviewDesk(services, rng=random.Random(4))
    view, targets, golds = desk.open("sess-1", None, "preference", "10.0.0.1"), set(), 0
    while view.trial_id is not None:
        targets.add(view.target)
        golds += desk.store.get_trial(view.trial_id)["is_gold"]
        choice = "same" if desk.store.get_trial(view.trial_id)["is_gold"] else "left"
        desk.vote("sess-1", view.trial_id, choice, "10.0.0.1")
        view = desk.next("sess-1", "preference", "10.0.0.1")
    assert golds > 0 and len(targets) == 1


def test_the_default_gold_rate_gives_a_session_enough_gold_for_the_leaderboards_screen(tmp_path: Path):
    """The two defaults belong together: a full session (20 pairs) of the review app budgets at least the gold
    trials a reviewer needs to pass the leaderboard's screen (``review.screening``: beat chance on the gold)."""
    from review.screening import passes
    defaults = StudyConfig()
    assert defaults.gold_rate == 0.15
    study = StudyConfig(vote_burst=100, vote_per_s=100.0)  # the defaults, but no pause between votes in a test
    assert (study.gold_rate, study.trials_per_session) == (defaults.gold_rate, defaults.trials_per_session)
    services = make_services(tmp_path, seeds=tuple(range(20)), presets=("fast",), study=study)
    desk = ReviewDesk(services, rng=random.Random(0))
    view = desk.open("s", None, "preference", "a")
    seat = desk._seat("s")
    assert view.target == StudyConfig().trials_per_session == 20
    assert seat.gold_left == 3 and passes(3, 3) and not passes(2, 3)  # all right passes, a guess usually not
    golds = 0
    for number in range(1, 21):  # the whole session: the budget is spent, not just planned
        assert view.trial_id and view.number == number
        golds += desk.store.get_trial(view.trial_id)["is_gold"]
        desk.vote("s", view.trial_id, "same", "a")
        view = desk.next("s", "preference", "a")
    assert view.trial_id is None and golds == 3


@pytest.mark.parametrize("seed", range(12))
def test_every_finished_session_has_had_its_gold_checks(tmp_path: Path, seed: int):
    # more pairs than the session's 12 slots: the session ends before the pairs do, so the checks must be fitted in
    services = make_services(tmp_path, seeds=tuple(range(20)), presets=("fast",),
                             study=StudyConfig(gold_rate=0.15, trials_per_session=12, vote_burst=100,
                                               vote_per_s=100.0))
    desk = ReviewDesk(services, rng=random.Random(seed))
    view, golds = desk.open("s", None, "preference", "a"), 0
    budget = desk._seat("s").gold_left
    while view.trial_id:
        golds += desk.store.get_trial(view.trial_id)["is_gold"]
        desk.vote("s", view.trial_id, "left", "a")
        view = desk.next("s", "preference", "a")
    assert budget == 3 and golds == budget and "thank you" in view.message and view.number == 12


def test_an_unreadable_reference_face_shows_the_pair_without_it_and_leaves_no_orphan_trial(tmp_path: Path):
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.0))
    face = services.store.get_face(1)
    (services.dirs.faces / face["file"]).write_bytes(b"this is not an image")  # corrupted on disk
    desk = ReviewDesk(services, rng=random.Random(0))
    view = desk.open("s", None, "preference", "a")
    assert view.trial_id and view.face is None and view.left and view.right
    assert [t["trial_id"] for t in desk.store.trial_rows()] == [view.trial_id]


def test_switching_the_task_keeps_each_mode_s_open_trial(desk: ReviewDesk):
    """A mode switch parks the open trial; switching back brings the same trial (nothing is used up), and a
    vote in the other mode does not disturb it."""
    first = desk.open("sess-1", None, "preference", "a1")
    abx = desk.next("sess-1", "abx", "a1")
    assert abx.trial_id and abx.trial_id != first.trial_id and abx.mode == "abx"
    back = desk.next("sess-1", "preference", "a1")
    assert back.trial_id == first.trial_id
    assert desk.next("sess-1", "abx", "a1").trial_id == abx.trial_id  # and ABX's is kept too
    desk.vote("sess-1", abx.trial_id, "a", "a1")
    again = desk.next("sess-1", "preference", "a1")
    assert again.trial_id == first.trial_id and again.number == 2  # numbered after the vote in between
    with pytest.raises(VoteRefused):  # a parked trial is not the open one: no vote on it until it is back
        desk.next("sess-1", "abx", "a1")
        desk.vote("sess-1", first.trial_id, "left", "a1")
    assert len(desk.store.trial_rows()) == 3  # two served, plus the new ABX one after the vote

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
from review.study.design import SideSchedule, gold_count, gold_plan, reserved_conditions
from review.study.identity import Reviewer, Signer
from review.study.review_desk import ReviewDesk
from review.study.token_bucket import TokenBucket
from review.study.trials import (
    RateLimiter,
    StudyConfig,
    TrialLoad,
    VoteRefused,
    outcome_for,
    pick_pair,
    plan_trial,
    validate_vote,
)
from review.study.trials import other as other_arm

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
def test_the_side_schedule_balances_each_block_and_is_shared_by_all_reviewers():
    schedule = SideSchedule(8, random.Random(7))
    draws = [schedule.draw(("preference", "fast")) for _ in range(80)]
    for block in range(10):  # every block of 8 holds each arm on the left 4 times, in a shuffled order
        assert Counter(draws[block * 8:(block + 1) * 8]) == {"full": 4, "selective": 4}
    assert len({tuple(draws[i:i + 8]) for i in range(0, 80, 8)}) > 5
    other_key = [schedule.draw(("abx", "fast")) for _ in range(8)]  # another (mode, preset): its own blocks
    assert Counter(other_key) == {"full": 4, "selective": 4}
    coin = SideSchedule(0, random.Random(1))  # reveal=each: a fair coin, no block to count down
    flips = Counter(coin.draw("k") for _ in range(2000))
    assert 900 < flips["full"] < 1100
    with pytest.raises(ValueError):
        SideSchedule(7)
    assert isinstance(SideSchedule().rng, random.SystemRandom)  # the app's default: the OS's CSPRNG


@pytest.mark.parametrize("trials, count", [(20, 4), (16, 4), (15, 3), (12, 3), (8, 2), (3, 0), (40, 4)])
def test_a_session_has_a_fixed_gold_count_capped_by_its_length(trials, count):
    assert gold_count(trials) == count
    assert gold_count(trials, per_session=5) == min(5, trials // 4)


def test_gold_slots_are_random_and_mix_identical_and_degraded_checks():
    rng = random.Random(2)
    plans = [gold_plan(rng, 20, 1, 4) for _ in range(300)]
    assert all(len(p) == 4 and set(p) <= set(range(1, 21)) for p in plans)
    assert all(Counter(p.values()) == {"identical": 1, "degraded": 3} for p in plans)
    assert Counter(slot for p in plans for slot in p)[1] > 20 and len({slot for p in plans for slot in p}) == 20
    assert gold_plan(rng, 20, 18, 4).keys() == {18, 19, 20}  # never more slots than are left


def test_reserved_conditions_are_a_stable_keyed_share_and_never_all():
    secret = "ab" * 32
    ids = list(range(1, 201))
    reserved = reserved_conditions(ids, secret, 0.2)
    assert 20 < len(reserved) < 60
    assert reserved_conditions(ids + list(range(201, 400)), secret, 0.2) >= reserved  # adding keeps the old ones
    assert reserved != reserved_conditions(ids, "cd" * 32, 0.2)  # another install, another choice
    assert len(reserved_conditions([1, 2], secret, 0.2)) == 1 and reserved_conditions([1], secret, 0.5) == set()
    assert reserved_conditions(ids, secret, 0.0) == set()


def test_trial_plans_put_the_right_image_on_each_side():
    plain = plan_trial("preference", "selective")
    assert (plain.left_source, plain.right_source, plain.x_source, plain.expected) == ("selective", "full", None,
                                                                                       None)
    gold = plan_trial("preference", "full", gold="identical")
    assert (gold.is_gold, gold.left_source, gold.right_source, gold.expected) == (True, "full", "full", "same")
    catch = plan_trial("preference", "selective", gold="degraded", degraded_side="left")
    assert (catch.left_source, catch.right_source, catch.degraded, catch.expected) == (
        "selective", "selective", (True, False, False), "right")
    abx = plan_trial("abx", "selective", x_arm="selective")
    assert (abx.left_source, abx.right_source, abx.x_source, abx.x_arm) == ("selective", "full", "selective",
                                                                           "selective")
    abx_catch = plan_trial("abx", "full", gold="degraded", degraded_side="right", x_degraded=True)
    assert (abx_catch.degraded, abx_catch.expected, abx_catch.x_arm) == ((False, True, True), "b", "full")
    with pytest.raises(ValueError):
        plan_trial("abx", "full", gold="identical")
    with pytest.raises(ValueError):
        plan_trial("preference", "left")


@pytest.mark.parametrize("row, choice, expected", [
    (trial(left_arm="full"), "left", ("full", None)),
    (trial(left_arm="full"), "right", ("selective", None)),
    (trial(left_arm="selective"), "same", ("same", None)),
    (trial(is_gold=1), "same", ("same", True)),
    (trial(is_gold=1), "right", ("selective", False)),
    (trial(mode="abx", left_arm="full", x_arm="full"), "a", ("correct", True)),
    (trial(mode="abx", left_arm="full", x_arm="full"), "b", ("wrong", False)),
    (trial(mode="abx", left_arm="selective", x_arm="full"), "b", ("correct", True)),
    (trial(is_gold=1, gold_kind="degraded", expected="left"), "left", ("correct", True)),
    (trial(is_gold=1, gold_kind="degraded", expected="left"), "same", ("wrong", False)),
    (trial(is_gold=1, gold_kind="identical", expected="same"), "same", ("correct", True)),
    (trial(mode="abx", is_gold=1, gold_kind="degraded", expected="b", x_arm="full"), "a", ("wrong", False)),
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
    assert bucket.take() and not bucket.take()  # refilled continuously: a window limiter still refuses here
    budget = TokenBucket(2, 0.0, clock)  # per_s=0: a fixed budget, never refilled
    clock.now = 1e9
    assert [budget.take() for _ in range(3)] == [True, True, False]


def test_rate_limiter_keeps_keys_apart_and_bounded():
    clock = Clock()
    limiter = RateLimiter(1, 0.0, max_keys=2, clock=clock)
    assert limiter.allow("a") and limiter.allow("b") and not limiter.allow("a")
    limiter.allow("c")  # evicts the least recently used key: "b" ("a" was asked for after it)
    assert len(limiter._buckets) == 2 and "b" not in limiter._buckets
    assert not limiter.allow("a")  # "a" kept its spent bucket
    with pytest.raises(VoteRefused, match="slow down"):
        limiter.check("c")


# -- form parsing ---------------------------------------------------------------------------------------------
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


def test_a_reload_keeps_the_signed_reviewer_but_no_other_id_can_be_claimed(desk: ReviewDesk):
    first = desk.open("sess-1", None, "preference", "a1")
    assert first.token.startswith("r1.") and first.reviewer_id in first.token
    again = desk.open("sess-2", first.token, "preference", "a1")  # a reload hands back the token it was given
    assert again.reviewer_id == first.reviewer_id and again.trial_id != first.trial_id
    assert desk.open("sess-2", "f" * 32, "preference", "a1").reviewer_id == first.reviewer_id  # bound session
    # a bare id (as the page used to send) or another installation's token: a new anonymous reviewer
    assert desk.open("sess-3", first.reviewer_id, "abx", "a1").reviewer_id != first.reviewer_id
    foreign = Signer("cd" * 32).token(Reviewer(first.reviewer_id, "anonymous"))
    assert desk.open("sess-4", foreign, "preference", "a1").reviewer_id != first.reviewer_id
    assert desk.open("sess-5", "Robert'); DROP TABLE", "abx", "a1").reviewer_id != first.reviewer_id
    # this installation's token with another reviewer's id (or any change): refused, nothing stored
    other = desk.open("sess-6", None, "preference", "a1")
    tampered = first.token.replace(first.reviewer_id, other.reviewer_id)
    before = (len(desk.store.trial_rows()), desk.store.db["reviewers"].count)
    for bad in (tampered, first.token[:-1] + ("0" if first.token[-1] != "0" else "1")):
        with pytest.raises(VoteRefused, match="not valid"):
            desk.open("sess-7", bad, "preference", "a1")
    assert (len(desk.store.trial_rows()), desk.store.db["reviewers"].count) == before
    assert desk.store.get_reviewer(first.reviewer_id)["identity_kind"] == "anonymous"
    assert {t["identity_kind"] for t in desk.store.trial_rows()} == {"anonymous"}


def test_abx_trials_draw_x_from_both_arms(tmp_path: Path):
    services = make_services(tmp_path, seeds=tuple(range(8)), presets=("fast",),
                             study=StudyConfig(gold_rate=0.0, vote_per_s=100.0, vote_burst=100, address_burst=1000))
    desk = ReviewDesk(services, rng=random.Random(5))
    x_arms = []
    for reviewer in range(3):
        view = desk.open(f"s{reviewer}", None, "abx", "a1")
        while view.trial_id:
            row = desk.store.get_trial(view.trial_id)
            pair = desk.store.get_pair(row["pair_id"])
            x_pixels = served_pixels(desk, view.x).astype(int)
            for arm, side in ((row["left_arm"], view.left), (other_arm(row["left_arm"]), view.right)):
                original = read_image(desk.dirs.images, pair["full_file" if arm == "full" else "sel_file"])
                assert np.abs(served_pixels(desk, side).astype(int) - original).max() <= 1
                if arm == row["x_arm"]:
                    assert np.abs(x_pixels - original).max() <= 1  # X is that arm's image, in its own copy
            x_arms.append(row["x_arm"])
            side = "a" if row["left_arm"] == row["x_arm"] else "b"
            desk.vote(f"s{reviewer}", view.trial_id, side, "a1")
            assert desk.store.get_vote(view.trial_id)["outcome"] == "correct"
            view = desk.next(f"s{reviewer}", "abx", "a1")
    assert len(x_arms) == 24 and 6 <= x_arms.count("full") <= 18  # blocks of 8: 12 of 24, give or take


def play_session(desk: ReviewDesk, session: str, mode: str = "preference", answer=None) -> list[dict]:
    """Vote through a whole session (the expected answer on gold unless ``answer`` says otherwise); the trials."""
    view, rows = desk.open(session, None, mode, "a"), []
    while view.trial_id:
        row = desk.store.get_trial(view.trial_id)
        rows.append(row)
        choice = answer(row) if answer else (row["expected"] or ("left" if mode == "preference" else "a"))
        desk.vote(session, view.trial_id, choice, "a")
        view = desk.next(session, mode, "a")
    return rows


def gold_desk(tmp_path: Path, seed: int = 2, conditions: int = 30, **study) -> ReviewDesk:
    config = dict(gold_rate=0.2, vote_burst=1000, vote_per_s=100.0, address_burst=10_000, trial_burst=10_000)
    services = make_services(tmp_path, seeds=tuple(range(conditions)), presets=("fast",),
                             study=StudyConfig(**{**config, **study}))
    return ReviewDesk(services, rng=random.Random(seed))


def test_gold_trials_use_reserved_conditions_only_and_record_kind_and_answer(tmp_path: Path):
    # 60 conditions: the reserved share (a keyed hash with the install's random secret) is then large enough that
    # every session gets its full gold count, identical kind included (with 30 it was sometimes 0 identical)
    desk = gold_desk(tmp_path, conditions=60)
    reserved = desk._reserved_conditions()
    rows = [r for i in range(4) for r in play_session(desk, f"s{i}")]
    rows += [r for i in range(2) for r in play_session(desk, f"x{i}", mode="abx")]
    golds = [r for r in rows if r["is_gold"]]
    condition = {p["pair_id"]: p["condition_id"] for p in desk.store.list_pairs()}
    assert 0 < len(reserved) < 60 and golds
    assert all((condition[r["pair_id"]] in reserved) == bool(r["is_gold"]) for r in rows)  # gold-only conditions
    kinds = Counter((r["mode"], r["gold_kind"]) for r in golds)
    assert set(kinds) <= {("preference", "identical"), ("preference", "degraded"), ("abx", "degraded")}
    assert kinds[("preference", "degraded")] > kinds[("preference", "identical")] > 0 and kinds[("abx", "degraded")]
    for r in golds:
        left, right = (served_pixels(desk, r[k]).astype(int) for k in ("left_image", "right_image"))
        gap = np.abs(left - right).mean()
        assert (gap < 1) if r["gold_kind"] == "identical" else (gap > 20)
        if r["gold_kind"] == "degraded" and r["mode"] == "preference":  # the expected side is the intact one
            intact = read_image(desk.dirs.images, desk.store.get_pair(r["pair_id"])[
                "full_file" if r["left_arm"] == "full" else "sel_file"]).astype(int)
            assert np.abs((left if r["expected"] == "left" else right) - intact).max() <= 1
    votes = [v for v in desk.store.vote_rows() if v["is_gold"]]
    assert len(votes) == len(golds) and all(v["correct"] == 1 and v["outcome"] == "correct" for v in votes)
    per_reviewer = Counter(r["reviewer_id"] for r in rows)
    assert all(len({condition[r["pair_id"]] for r in rows if r["reviewer_id"] == who}) == n  # never a repeat
               for who, n in per_reviewer.items())


def test_an_always_same_clicker_fails_most_checks(tmp_path: Path):
    desk = gold_desk(tmp_path, seed=3)
    rows = [r for i in range(5) for r in play_session(desk, f"s{i}", answer=lambda row: "same")]
    gold_votes = [v for v in desk.store.vote_rows() if v["is_gold"]]
    assert len(gold_votes) == sum(r["is_gold"] for r in rows) > 0
    assert sum(v["correct"] for v in gold_votes) <= len(gold_votes) / 2  # only the identical checks pass


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


def test_an_idle_seat_expires_and_each_use_restarts_its_idle_time(tmp_path: Path):
    now = [0.0]
    services = make_services(tmp_path, study=StudyConfig(gold_rate=0.0))
    desk = ReviewDesk(services, rng=random.Random(0), clock=lambda: now[0], seat_ttl_s=100.0)
    desk.open("s", None, "preference", "a")
    for now[0] in (60.0, 120.0, 180.0):  # used every 60 s: kept, though opened 180 s ago
        assert desk.next("s", "preference", "a").trial_id
    now[0] = 280.0  # idle for 100 s
    with pytest.raises(VoteRefused, match="No review session"):
        desk.next("s", "preference", "a")
    assert desk.open("s", None, "preference", "a").trial_id  # a page load seats it again


def test_an_admin_page_stays_unlocked_for_admin_ttl_s(tmp_path: Path):
    import dataclasses
    import time

    services = dataclasses.replace(make_services(tmp_path), admin_ttl_s=0.3)
    assert services.grant_admin("page-1") and services.is_admin("page-1") and not services.is_admin("page-2")
    time.sleep(0.35)
    assert not services.is_admin("page-1")


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
    desk = gold_desk(tmp_path, seed=4)
    view, targets, golds = desk.open("sess-1", None, "preference", "10.0.0.1"), set(), 0
    while view.trial_id is not None:
        targets.add(view.target)
        row = desk.store.get_trial(view.trial_id)
        golds += row["is_gold"]
        desk.vote("sess-1", view.trial_id, row["expected"] or "left", "10.0.0.1")
        view = desk.next("sess-1", "preference", "10.0.0.1")
    assert golds > 0 and len(targets) == 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_session", [12, 20])
def test_every_finished_session_has_its_fixed_gold_count(tmp_path: Path, seed: int, per_session: int):
    """A session of T trials has min(4, T // 4) gold checks (fewer only when a study has fewer reserved conditions
    left for this reviewer), at random slots fixed when the session starts."""
    desk = gold_desk(tmp_path, seed=seed, trials_per_session=per_session)
    reserved = desk._reserved_conditions()
    rows = play_session(desk, "s", answer=lambda row: "left")
    golds = sum(r["is_gold"] for r in rows)
    assert len(rows) == per_session and golds == min(gold_count(per_session), len(reserved))
    assert StudyConfig().gold_per_session == 4 and gold_count(StudyConfig().trials_per_session) == 4


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


def test_the_leaderboards_gold_screen_scores_catch_trials_by_their_expected_answer(tmp_path: Path):
    from review.stats.leaderboard import leaderboard

    desk = gold_desk(tmp_path, seed=5, conditions=60)  # enough reserved conditions for 3+ gold in each session
    rows = play_session(desk, "right-answers") + play_session(desk, "always-same", answer=lambda row: "same")
    assert sum(r["is_gold"] for r in rows) >= 6
    result = leaderboard(desk.store.list_pairs(), desk.store.vote_rows(), n_boot=20, n_boot_cluster=10,
                         n_boot_bt=5)
    by_session = {r["session"]: r["reviewer_id"] for r in rows}
    gold = result["gold"]  # screening units: reviewer|session
    assert gold[f"{by_session['right-answers']}|right-answers"]["accuracy"] == 1.0
    assert gold[f"{by_session['always-same']}|always-same"]["accuracy"] <= 0.5
    assert by_session["always-same"] in result["failing_reviewers"]

"""Every case of the bad-input corpus (``tests/bad_input_corpus.py``) through every entry point that takes it:
``read_upload`` and ``instantid.load_image`` (libraries), the app's Generate handler (``make_job``), ``review
generate`` (faces, settings, --db), ``instantid generate``, ``Store`` (the app's start), ``review leaderboard`` / ``export``, the engine's
own types (``GenerationSettings`` and ``GenerationRequest``, which check themselves) and the review ``Condition``.

Each attempt is classified: a clear error (our own error type with a message, or a CLI exit code >= 1 with an
``error:`` line and no traceback), a traceback (any other exception), or accepted (a bad input let through); and
anything written by it (a file under the case's folder, a row in the study) is a partial write. The test prints
"N bad inputs, N clear errors, 0 tracebacks, 0 partial writes" (recorded in docs/hardening.md) and fails
otherwise. None of these needs the engine: every refusal happens before it loads."""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bad_input_corpus import (
    BAD_DATABASES,
    BAD_PRESETS,
    BAD_SEEDS,
    BAD_SETTINGS,
    BAD_STATS_OPTIONS,
    bad_images,
    make_bad_database,
)
from fixtures_review import make_services, make_study
from PIL import Image

from instantid import FaceError, GenerationRequest, GenerationSettings, PresetError, RequestError, load_image
from review.errors import InputError
from review.generation.conditions import Condition
from review.generation.uploads import read_upload
from review.store import Store, StoreError
from review.study.trials import VoteRefused
from review.ui.generate_tab import make_job

CLEAR_ERRORS = (InputError, VoteRefused, StoreError, RequestError, PresetError, FaceError)
GOOD_FORM = dict(prompt="a portrait", negative="", presets=["balanced"], custom="", seeds="0", steps=4, width=128,
                 height=128, ip_weight=0.8, cn_scale=0.8, guidance=5.0)


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size; SQLite's -shm/-wal side files of a read-only open are not data
    (a mode=ro reader of a WAL-mode file needs its shared-memory index)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.partial: list[str] = []
        self.failures: list[str] = []
        self.tests_run = 0  # corpus tests that ran in this process (test_summary needs all three)

    def attempt(self, label: str, fn: Callable[[], object], watch: Path) -> None:
        """Run one bad input; classify the outcome and look for anything it wrote under ``watch``."""
        before = snapshot(watch)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                result = fn()
        except CLEAR_ERRORS as exc:
            outcome = "clear" if str(exc).strip() else "unclear"
        except SystemExit as exc:  # argparse: exit 2 with "error: argument ...: ..."
            outcome = "clear" if exc.code == 2 and "error:" in err.getvalue() else "unclear"
        except Exception as exc:  # noqa: BLE001 - anything else is a traceback for the user
            outcome = "traceback"
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
        else:
            text = err.getvalue()
            if isinstance(result, int) and result >= 1:
                outcome = "clear" if "error:" in text and "Traceback" not in text else "unclear"
            else:
                outcome = "accepted"
        if outcome in ("unclear", "accepted"):
            self.failures.append(f"{label}: {outcome} {err.getvalue()[-200:]!r}")
        self.outcomes[outcome] += 1
        after = snapshot(watch)
        new = sorted(set(after) - set(before)) + sorted(k for k in before if k in after and after[k] != before[k])
        if new:
            self.partial.append(f"{label}: {new[:3]}")

    def check_since(self, mark: tuple[int, int, int]) -> None:
        """Every attempt since ``mark`` (``self.mark()``) gave a clear error and wrote nothing."""
        failures, partial = self.failures[mark[0]:], self.partial[mark[1]:]
        assert sum(self.outcomes.values()) > mark[2], "no bad input was tried"
        assert not failures, failures[:10]
        assert not partial, partial[:10]

    def mark(self) -> tuple[int, int, int]:
        """Where the lists and the count stand now (for ``check_since``)."""
        return len(self.failures), len(self.partial), sum(self.outcomes.values())

    def summary(self) -> str:
        total = sum(self.outcomes.values())
        return (f"{total} bad inputs, {self.outcomes['clear']} clear errors, {self.outcomes['traceback']} tracebacks,"
                f" {len(self.partial)} partial writes")


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture
def cwd(tmp_path: Path):
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def test_bad_images_through_every_entry_point(tally: Tally, tmp_path: Path, cwd: Path) -> None:
    mark = tally.mark()  # each test fails on its own bad inputs (also when its neighbours run elsewhere)
    from instantid.cli.generate import main_generate as instantid_generate
    from review.cli.generate import main_generate as review_generate

    services = make_services(tmp_path / "app", seeds=(0,), presets=("fast",))
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, data in bad_images().items():
        path = folder / f"{name}.png"
        path.write_bytes(data)
        tally.attempt(f"read_upload({name})", lambda p=path: read_upload(p), tmp_path)
        tally.attempt(f"read_upload(bytes {name})", lambda d=data: read_upload(d), tmp_path)
        tally.attempt(f"load_image({name})", lambda p=path: load_image(p), tmp_path)
        tally.attempt(f"make_job({name})", lambda p=path: make_job(services, str(p), **GOOD_FORM), tmp_path)
        tally.attempt(f"review generate --faces {name}", lambda p=path: review_generate(
            ["--db", str(tmp_path / "cli" / "study.db"), "--faces", str(p), "--prompts", "a portrait"]), tmp_path)
        tally.attempt(f"instantid generate --face {name}", lambda p=path: instantid_generate(
            ["--face", str(p), "--prompt", "a portrait", "--out", str(tmp_path / "out.png")]), tmp_path)
    assert not (tmp_path / "cli" / "study.db").exists()
    assert not any((tmp_path / "app" / "uploads").glob("*")) if (tmp_path / "app" / "uploads").exists() else True
    tally.check_since(mark)
    tally.tests_run += 1


def test_bad_settings_through_every_entry_point(tally: Tally, tmp_path: Path, cwd: Path) -> None:
    mark = tally.mark()  # each test fails on its own bad inputs (also when its neighbours run elsewhere)
    from instantid.cli.generate import main_generate as instantid_generate
    from review.cli.generate import main_generate as review_generate

    services = make_services(tmp_path / "app", seeds=(0,), presets=("fast",))
    face = tmp_path / "face.png"
    Image.new("RGB", (96, 96), (200, 160, 140)).save(face)  # decodable: the settings are what is wrong
    request = dict(prompt="a portrait", seed=0)
    settings = dict(negative_prompt="", steps=4, width=128, height=128, ip_weight=0.8, cn_scale=0.8,
                    guidance_scale=5.0)

    def build(lib: dict, make: type) -> object:  # GenerationRequest or review's Condition, at these settings
        given = {**request, **settings, **lib}
        face_arg = {"face": face} if make is Condition else {"face_image": None}
        return make(**face_arg, prompt=given.pop("prompt"), seed=given.pop("seed"),
                    settings=GenerationSettings(**given))

    form_key = {"negative_prompt": "negative", "guidance": "guidance"}
    for what, flag, value in BAD_SETTINGS:
        label = f"{flag} {value!r}"[:60]
        size = value if what == "width" else None
        if size is not None:
            w, h = (int(v) for v in str(size).split("x"))
            lib = {"width": w, "height": h}
            form = {"width": w, "height": h}
        else:
            key = {"guidance": "guidance_scale"}.get(what, what)
            lib = {key: value}
            form = {form_key.get(what, what): value}
        tally.attempt(f"GenerationRequest {label}", lambda lib=lib: build(lib, GenerationRequest), tmp_path)
        tally.attempt(f"Condition {label}", lambda lib=lib: build(lib, Condition), tmp_path)
        tally.attempt(f"make_job {label}", lambda form=form: make_job(services, str(face), **{**GOOD_FORM, **form}),
                      tmp_path)
        argv = [flag, str(value)] if flag != "--prompt" else []
        prompt = str(value) if flag == "--prompt" else "a portrait"
        if "\x00" not in prompt and "\x00" not in str(value):  # a real NUL cannot pass through argv: library only
            tally.attempt(f"review generate {label}", lambda a=argv, p=prompt: review_generate(
                ["--db", str(tmp_path / "cli" / "study.db"), "--faces", str(face), "--prompts", p, *a]), tmp_path)
            tally.attempt(f"instantid generate {label}", lambda a=argv, p=prompt: instantid_generate(
                ["--face", str(face), "--prompt", p, "--out", str(tmp_path / "out.png"), *a]), tmp_path)
    for seeds in BAD_SEEDS:
        tally.attempt(f"make_job seeds {seeds}", lambda s=seeds: make_job(services, str(face), **{**GOOD_FORM,
                                                                                             "seeds": s}), tmp_path)
        tally.attempt(f"review generate --seeds {seeds}", lambda s=seeds: review_generate(
            ["--db", str(tmp_path / "cli" / "study.db"), "--faces", str(face), "--prompts", "p", "--seeds", s]),
            tmp_path)
        if seeds.lstrip("-").isdigit():
            tally.attempt(f"instantid generate --seed {seeds}", lambda s=seeds: instantid_generate(
                ["--face", str(face), "--prompt", "p", "--out", str(tmp_path / "out.png"), "--seed", s]), tmp_path)
    for spec in BAD_PRESETS:
        tally.attempt(f"make_job preset {spec[:20]}", lambda s=spec: make_job(
            services, str(face), **{**GOOD_FORM, "presets": [], "custom": s}), tmp_path)
        tally.attempt(f"review generate --presets {spec[:20]}", lambda s=spec: review_generate(
            ["--db", str(tmp_path / "cli" / "study.db"), "--faces", str(face), "--prompts", "p", "--presets", s]),
            tmp_path)
    for prompts in ["", "   ", "does-not-exist.txt", str(tmp_path)]:  # text vs file (and never OSError 36)
        tally.attempt(f"review generate --prompts {prompts[:20]!r}", lambda p=prompts: review_generate(
            ["--db", str(tmp_path / "cli" / "study.db"), "--faces", str(face), "--prompts", p]), tmp_path)
    for out in ["", str(tmp_path), str(tmp_path / "missing" / "x.png"), str(tmp_path / "x.jpg")]:
        tally.attempt(f"instantid generate --out {out[-20:]!r}", lambda o=out: instantid_generate(
            ["--face", str(face), "--prompt", "p", "--out", o]), tmp_path)
    assert not (tmp_path / "cli").exists() and not (tmp_path / "out.png").exists()
    tally.check_since(mark)
    tally.tests_run += 1


def test_bad_databases_and_statistics_options(tally: Tally, tmp_path: Path, cwd: Path) -> None:
    mark = tally.mark()  # each test fails on its own bad inputs (also when its neighbours run elsewhere)
    from review.cli.export import main_export
    from review.cli.generate import main_generate as review_generate
    from review.cli.leaderboard import main_leaderboard

    face = tmp_path / "face.png"
    Image.new("RGB", (96, 96), (200, 160, 140)).save(face)
    intact, _ = make_study(tmp_path / "intact", seeds=(0, 1, 2), presets=("fast", "balanced"))
    intact.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    intact.close()
    for kind in BAD_DATABASES:
        case = tmp_path / kind
        case.mkdir()
        path = case / "study.db"
        if kind != "missing":
            make_bad_database(path, kind, tmp_path / "intact" / "study.db")
        if kind != "empty":  # the app initialises an empty file as a new study (as SQLite itself does)
            tally.attempt(f"Store({kind})", lambda p=path: Store(p) if p.exists() else Store(p, read_only=True),
                          case)
        if kind not in ("empty", "missing"):  # for `review generate` those are a new study
            tally.attempt(f"review generate --db {kind}", lambda p=path: review_generate(
                ["--db", str(p), "--faces", str(face), "--prompts", "a portrait"]), case)
        tally.attempt(f"review leaderboard --db {kind}", lambda p=path: main_leaderboard(["--db", str(p)]), case)
        tally.attempt(f"review export --db {kind}", lambda p=path, c=case: main_export(
            ["--db", str(p), "--format", "csv", "--out", str(c / "out")]), case)
    good = tmp_path / "intact" / "study.db"
    for options in BAD_STATS_OPTIONS:
        tally.attempt(f"review leaderboard {options}", lambda o=options: main_leaderboard(["--db", str(good), *o]),
                      tmp_path / "intact")
    tally.attempt("review export --out ''", lambda: main_export(["--db", str(good), "--format", "csv", "--out", ""]),
                  tmp_path / "intact")
    tally.check_since(mark)
    tally.tests_run += 1


def test_summary(tally: Tally, capsys) -> None:
    if tally.tests_run < 3:  # the three corpus tests ran in another worker; each checked its own inputs there
        pytest.skip(f"the corpus tests ran in another process ({tally.tests_run} of 3 here)")
    line = tally.summary()
    with capsys.disabled():
        print(f"\n{line}")
    total = sum(tally.outcomes.values())
    assert total > 200, line
    assert tally.outcomes["clear"] == total, (line, tally.failures[:10])
    assert not tally.partial, (line, tally.partial[:10])
    assert line == f"{total} bad inputs, {total} clear errors, 0 tracebacks, 0 partial writes"

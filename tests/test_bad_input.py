"""Issue 7 item 5: every bad generation input is refused with a clear message or made usable with a note."""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from instantid import PRESET_NAMES, GenerationError, GenerationRequest, GenerationSettings
from review.generation.inputs import (
    InputError,
    Limits,
    Submission,
    check_faces,
    parse_seeds,
    read_upload,
    validate_settings,
)

SKIN = (224, 172, 140)  # a colour the tiny face detector takes for a face
GOOD = dict(prompt="a portrait", negative_prompt="", presets=["balanced"], seeds="0", steps=30, width=1024,
            height=1024, ip_weight=0.8, cn_scale=0.8)


def encode(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height (1-bit grey), a tiny IDAT and IEND: ~60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def settings_with(**changes: object) -> Submission:
    return validate_settings(**{**GOOD, **changes})  # type: ignore[arg-type]


def blobs(size: tuple[int, int], ellipses: list[tuple[tuple[int, int], tuple[int, int]]]) -> Image.Image:
    image = np.full((size[1], size[0], 3), 128, np.uint8)
    for centre, axes in ellipses:
        cv2.ellipse(image, centre, axes, 0, 0, 360, SKIN, -1)
    return Image.fromarray(image)


# --- uploads -------------------------------------------------------------------------------------------------


def test_non_image_upload_is_refused_as_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an image file"):
        read_upload(b"%PDF-1.4 this is a document, not a photo")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="not an image file: notes.txt"):
        read_upload(notes)
    with pytest.raises(InputError, match="no such file"):
        read_upload(tmp_path / "missing.png")
    with pytest.raises(InputError, match="empty"):
        read_upload(b"")


def test_truncated_file_is_refused_as_truncated() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_upload(data[: len(data) // 2])


def test_decompression_bomb_is_refused_unread_and_pil_state_is_restored() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our local filter must not leak either
        with pytest.raises(InputError, match="decompression bomb"):
            read_upload(png_header_only(30000, 30000))
    with pytest.raises(InputError, match=r"12000x12000 pixels; the longest"):  # PIL's limit loose: the header check
        read_upload(png_header_only(12000, 12000), max_pixels=10**9)  # refuses it before any decoding
    assert Image.MAX_IMAGE_PIXELS == limit


def test_huge_dimensions_are_refused_with_the_size() -> None:
    with pytest.raises(InputError, match=r"5000x16 pixels; the longest accepted side is 4096 px"):
        read_upload(encode(Image.new("1", (5000, 16))))
    assert read_upload(encode(Image.new("1", (5000, 16))), max_side=5000).image.size == (5000, 16)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_uses_the_first_frame_with_a_note(fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    upload = read_upload(encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **extra))
    assert "animated image (3 frames): the first frame is used" in upload.notes
    r, g, b = upload.image.getpixel((16, 16))
    assert r > 200 and g < 50 and b < 50


def test_cmyk_image_is_converted_to_rgb_with_a_note() -> None:
    upload = read_upload(encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"))  # red in CMYK
    assert upload.image.mode == "RGB" and any("CMYK" in n for n in upload.notes)
    r, g, b = upload.image.getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_image_is_scaled_to_8_bits_not_clipped() -> None:
    array = np.array([[0, 32768, 65535]], np.uint16).repeat(8, axis=0)
    upload = read_upload(encode(Image.fromarray(array)))  # a 16-bit greyscale PNG
    assert upload.image.mode == "RGB" and any("8 bits" in n for n in upload.notes)
    assert [upload.image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_rgba_image_is_composited_on_white_with_a_note() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    upload = read_upload(encode(rgba))
    assert upload.image.mode == "RGB" and "transparent areas composited onto white" in upload.notes
    assert upload.image.getpixel((0, 0)) == (255, 0, 0) and upload.image.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1"])
def test_grayscale_and_palette_images_are_converted_to_rgb(mode: str) -> None:
    upload = read_upload(encode(Image.new("L", (8, 8), 200).convert(mode)))
    assert upload.image.mode == "RGB" and upload.notes
    assert len(set(upload.image.getpixel((4, 4)))) == 1  # still grey


def test_exif_rotated_photo_is_turned_upright(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: red left half, blue right half
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, "JPEG", exif=exif, quality=95)
    upload = read_upload(str(path))
    assert upload.image.size == (20, 40) and any("EXIF orientation (6)" in n for n in upload.notes)
    top, bottom = upload.image.getpixel((10, 5)), upload.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # the left half is now on top


# --- the reference face (tiny engine's face models) ----------------------------------------------------------


def test_no_face_is_refused(tiny_engine) -> None:
    with pytest.raises(InputError, match=r"no face found in the reference image \(160x120\)"):
        check_faces(tiny_engine, Image.new("RGB", (160, 120)))


def test_several_faces_use_the_largest_with_a_note(tiny_engine) -> None:
    face, notes = check_faces(tiny_engine, blobs((640, 480), [((160, 240), (30, 38)), ((440, 230), (90, 112))]))
    assert notes == ["2 faces found; the largest is used"]
    x1, y1, x2, y2 = face.bbox
    assert x1 <= 440 <= x2 and y1 <= 230 <= y2


def test_tiny_face_is_refused_with_its_size(tiny_engine) -> None:
    with pytest.raises(InputError, match=r"the face is too small: \d+x\d+ px"):
        check_faces(tiny_engine, blobs((128, 128), [((64, 64), (8, 10))]))


# --- settings ------------------------------------------------------------------------------------------------


def test_good_settings_are_returned_clean() -> None:
    got = settings_with(prompt="  a portrait ", presets="balanced, Fast,balanced", seeds="1-3, 7", steps="30",
                        negative_prompt=" blurry ", guidance_scale="7.5")
    assert (got.prompt, got.presets, got.seeds) == ("a portrait", ("balanced", "fast"), (1, 2, 3, 7))
    assert got.settings == GenerationSettings(negative_prompt="blurry", steps=30, guidance_scale=7.5)
    assert isinstance(got.settings.steps, int) and isinstance(got.settings.width, int)
    assert settings_with(presets=["output:0-2 + middle", "auto-5"]).presets == ("output:0-2+middle", "auto-5")


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt_is_refused(prompt: object) -> None:
    with pytest.raises(InputError, match="the prompt is empty"):
        settings_with(prompt=prompt)


def test_over_long_prompt_is_refused_beyond_the_character_limit() -> None:
    with pytest.raises(InputError, match="the prompt is 2,001 characters; at most 2,000"):
        settings_with(prompt="a" * 2001)


def test_prompt_over_77_tokens_is_allowed_and_truncation_reported(tiny_engine) -> None:
    long = "a very detailed portrait " * 30
    got = validate_settings(**{**GOOD, "prompt": long}, engine=tiny_engine)
    assert any("CLIP tokens" in n and "truncated" in n for n in got.notes)


def test_full_is_refused_as_a_selective_preset_unless_allowed() -> None:
    with pytest.raises(InputError, match="'full' is the reference arm"):
        settings_with(presets="full,fast")
    assert validate_settings(**{**GOOD, "presets": "full"}, selective_only=False).presets == ("full",)


def test_unknown_preset_is_refused_with_the_accepted_forms() -> None:
    with pytest.raises(InputError, match="accepted preset forms") as info:
        settings_with(presets=["balanced", "turbo"])
    assert "preset 'turbo'" in str(info.value) and "balanced" not in info.value.problems[0]


@pytest.mark.parametrize("spec", ["output:99", "input:8:4-0", "balanced@0.7-0.2", "mid_block.nothing", "output:0-2+"])
def test_bad_selector_is_refused_with_the_accepted_forms(spec: str, tiny_engine) -> None:
    for engine in (None, tiny_engine):
        with pytest.raises(InputError, match="accepted preset forms"):
            validate_settings(**{**GOOD, "presets": [spec]}, engine=engine)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps", 0, "steps must be between 1 and 100"), ("steps", 101, "between 1 and 100"),
    ("steps", 2.5, "whole number"), ("steps", float("nan"), "finite"), ("steps", True, "must be a number"),
    ("width", 2056, "between 64 and 2048"), ("height", 32, "between 64 and 2048"),
    ("width", 1000 + 4, "not a multiple of 8 \\(try 1008\\)"), ("height", float("inf"), "finite"),
    ("ip_weight", -0.1, "ip_weight must be between 0 and 2"), ("ip_weight", float("nan"), "finite"),
    ("cn_scale", 2.01, "cn_scale must be between 0 and 2"), ("cn_scale", "-inf", "finite"),
    ("cn_scale", "strong", "must be a number"), ("guidance_scale", 31, "guidance scale must be between 0 and 30"),
    ("negative_prompt", "no\x00pe", "NUL"), ("negative_prompt", 5, "must be text"),
])
def test_steps_size_and_weights_out_of_range_or_nan_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        settings_with(**{field: value})


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InputError) as info:
        settings_with(prompt="", steps=0, width=13, presets=[])
    assert len(info.value.problems) == 4


@pytest.mark.parametrize(("text", "seeds"), [("1,2,3", [1, 2, 3]), ("1-4", [1, 2, 3, 4]), (" 5 , 1 - 2 ", [5, 1, 2]),
                                             (7, [7]), ([3.0, "8-9"], [3, 8, 9]), ("2,2,2", [2])])
def test_seeds_parse_from_lists_and_ranges(text: object, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "message"), [("", "no seed"), ("1-4000000000", "at most 16"), ("4-1", "backwards"),
                                               ("-3", "not a whole number"), ("x", "not a whole number"),
                                               ("4294967296", "above the largest"), (1.5, "whole number")])
def test_bad_seeds_are_refused(text: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_seeds(text)  # type: ignore[arg-type]


# --- generation failures (engine) ----------------------------------------------------------------------------


class StubPipe:
    """The engine's pipeline with its ``__call__`` replaced; everything else (tokenizer...) is the real one."""

    def __init__(self, real: object, call: object) -> None:
        self._real, self._call = real, call

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._call(*args, **kwargs)  # type: ignore[operator]


@pytest.fixture(scope="module")
def face_request() -> GenerationRequest:
    from skimage.data import astronaut

    return GenerationRequest(face_image=Image.fromarray(astronaut()), prompt="a portrait",
                             settings=GenerationSettings(steps=1, width=128, height=128))


def output(latents: torch.Tensor, image: Image.Image) -> SimpleNamespace:
    return SimpleNamespace(latents=latents, images=[image], step_times_s=[0.0])


@pytest.mark.parametrize(("latents", "image", "message"), [
    (torch.full((1, 4, 16, 16), math.nan), Image.new("RGB", (128, 128), "grey"), "NaN or infinite"),
    (torch.zeros(1, 4, 16, 16), Image.new("RGB", (128, 128)), "all-black image"),
])
def test_nan_or_black_output_is_detected_and_reported(tiny_engine, face_request, monkeypatch, latents, image,
                                                      message) -> None:
    monkeypatch.setattr(tiny_engine, "pipe", StubPipe(tiny_engine.pipe, lambda *a, **k: output(latents, image)))
    with pytest.raises(GenerationError, match=message):
        tiny_engine.generate(face_request, "fast")


def test_out_of_memory_is_reported_and_the_engine_still_works(tiny_engine, face_request, monkeypatch) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny_engine, "pipe", StubPipe(tiny_engine.pipe, oom))
    with pytest.raises(GenerationError, match="out of memory at 128x128"):
        tiny_engine.generate(face_request, "fast")
    monkeypatch.undo()
    result = tiny_engine.generate(face_request, "fast")
    assert result.image.size == (128, 128) and result.layer_count == 20


# --- properties: only InputError or a valid result -----------------------------------------------------------

LIMITS = Limits()
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=60)
NUMBERS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(),
                    st.text("0123456789.-+eEinfa ", max_size=8), ANY_TEXT)
PRESET_TEXT = st.one_of(st.sampled_from(PRESET_NAMES + ("output:0-2", "input:8:0-4", "middle", "balanced@0-0.5",
                                                        "up_blocks.0.attentions.1", "auto-5")),
                        st.text("inputmdleoacfsb_:.+@-,0123456789 ", max_size=24), ANY_TEXT)


def mostly(good: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` 4 times in 5, so that whole submissions are often valid and the accepted path is exercised."""
    return st.integers(0, 4).flatmap(lambda k: good if k else wild)


SETTINGS = dict(
    prompt=mostly(st.text(min_size=1, max_size=80).filter(str.strip),
                  st.one_of(ANY_TEXT, st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 2100)),
                            st.integers())),
    negative_prompt=mostly(st.text(max_size=40), st.one_of(st.none(), ANY_TEXT)),
    presets=mostly(st.lists(st.sampled_from(PRESET_NAMES[1:] + ("output:0-2", "Input:8:0-4 + middle@0-0.5")),
                            min_size=1, max_size=4),
                   st.one_of(st.none(), st.integers(), PRESET_TEXT, st.lists(st.one_of(PRESET_TEXT, st.none()),
                                                                              max_size=12))),
    seeds=mostly(st.one_of(st.integers(0, 2**32 - 1), st.just("1-4, 9"), st.lists(st.integers(0, 99), min_size=1)),
                 st.one_of(NUMBERS, st.text("0123456789-, ", max_size=20),
                           st.lists(st.one_of(st.integers(-2, 2**33), st.text("0123456789-", max_size=6)),
                                    max_size=20))),
    steps=mostly(st.integers(1, 100), NUMBERS),
    width=mostly(st.integers(8, 256).map(lambda k: 8 * k), st.one_of(NUMBERS, st.integers(0, 3000))),
    height=mostly(st.integers(8, 256).map(lambda k: 8 * k), st.one_of(NUMBERS, st.integers(0, 3000))),
    ip_weight=mostly(st.floats(0, 2), NUMBERS),
    cn_scale=mostly(st.floats(0, 2), NUMBERS),
    guidance_scale=mostly(st.floats(0, 30), NUMBERS),
)


def assert_valid(got: Submission) -> None:
    assert got.prompt and got.prompt == got.prompt.strip() and len(got.prompt) <= LIMITS.max_prompt_chars
    assert isinstance(got.settings, GenerationSettings)  # checked again by instantid when it was made
    assert 1 <= len(got.presets) <= LIMITS.max_presets and len(set(got.presets)) == len(got.presets)
    assert "full" not in got.presets and all(p == "".join(p.split()).lower() for p in got.presets)
    assert 1 <= len(got.seeds) <= LIMITS.max_seeds and len(set(got.seeds)) == len(got.seeds)
    assert all(isinstance(s, int) and 0 <= s <= LIMITS.max_seed for s in got.seeds)
    settings = got.settings
    assert isinstance(settings.steps, int) and LIMITS.min_steps <= settings.steps <= LIMITS.max_steps
    for side in (settings.width, settings.height):
        assert isinstance(side, int) and LIMITS.min_size <= side <= LIMITS.max_size and side % 8 == 0
    assert 0 <= settings.ip_weight <= 2 and 0 <= settings.cn_scale <= 2
    assert 0 <= settings.guidance_scale <= 30 and settings.negative_prompt == settings.negative_prompt.strip()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**SETTINGS)
def test_validate_settings_returns_valid_settings_or_input_error(**kwargs: object) -> None:
    try:
        got = validate_settings(**kwargs)  # type: ignore[arg-type]
    except InputError as exc:
        assert str(exc).strip()
        event("refused")
        return
    event("accepted")
    assert_valid(got)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**SETTINGS)
def test_validate_settings_on_the_engine_returns_valid_settings_or_input_error(tiny_engine, **kwargs: object) -> None:
    try:
        got = validate_settings(**kwargs, engine=tiny_engine)  # type: ignore[arg-type]
    except InputError:
        event("refused")
        return
    event("accepted")
    assert_valid(got)


def _seed_images() -> list[bytes]:
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 16, 3), np.uint8))
    two = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return [encode(rgb), encode(rgb, "JPEG"), encode(rgb, "BMP"), encode(rgb, "TIFF"), encode(rgb, "WEBP"),
            encode(rgb.convert("P"), "GIF", save_all=True, append_images=two[1:]), encode(rgb, "ICO"),
            encode(rgb, "PPM"), encode(rgb.convert("RGBA"), "PNG"), encode(rgb.convert("CMYK"), "JPEG")]


SEED_IMAGES = _seed_images()


@st.composite
def mangled_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(mostly(st.just(len(data)), st.integers(0, len(data))))])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=512), mangled_images(),
                 st.builds(lambda magic, tail: magic + tail,
                           st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM", b"II*\x00",
                                            b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"P6\n"]),
                           st.binary(max_size=256))))
def test_read_upload_of_any_bytes_is_an_rgb_image_or_input_error(data: bytes) -> None:
    try:
        upload = read_upload(data)
    except InputError as exc:
        assert str(exc).strip()
        event(f"refused: {str(exc).split('(')[0][-40:]}")
        return
    event("decoded")
    assert upload.image.mode == "RGB" and min(upload.image.size) >= 1


# --- the vote handler (review/study/trials.py): only VoteRefused or an accepted vote -------------------------------

HEX_ID = st.text("0123456789abcdef", min_size=32, max_size=32)
TRIAL_ROWS = st.fixed_dictionaries({
    "session": st.sampled_from(["s1", "s2"]), "reviewer_id": st.sampled_from(["r1", "r2"]),
    "mode": st.sampled_from(["preference", "abx"]), "left_arm": st.sampled_from(["full", "selective"]),
    "x_arm": st.sampled_from(["full", None]), "is_gold": st.booleans()})


@st.composite
def vote_attempts(draw: st.DrawFn) -> dict:
    """A vote as a page could send it: mostly well-formed and fitting its trial, sometimes anything at all."""
    trial = draw(mostly(TRIAL_ROWS, st.none()))
    fits = trial or {"session": "s1", "reviewer_id": "r1", "mode": "preference"}
    wild_choice = st.one_of(st.sampled_from(["left", "right", "same", "a", "b", "A", " left", ""]),
                            st.text(max_size=8), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))
    return {
        "trial_id": draw(mostly(HEX_ID, st.one_of(HEX_ID.map(str.upper), HEX_ID.map(lambda h: h + "\n"),
                                                  st.text(max_size=40), st.integers(), st.none(),
                                                  st.binary(max_size=32)))),
        "trial": trial, "voted": draw(mostly(st.just(False), st.booleans())),
        "session": draw(mostly(st.just(fits["session"]), st.sampled_from(["s1", "s2", ""]))),
        "reviewer": draw(mostly(st.just(fits["reviewer_id"]), st.sampled_from(["r1", "r2"]))),
        "choice": draw(mostly(st.sampled_from(["left", "right", "same"] if fits["mode"] == "preference" else
                                              ["a", "b"]), wild_choice)),
    }


@settings(max_examples=200, deadline=None)
@given(vote_attempts())
def test_vote_handler_accepts_valid_votes_and_refuses_the_rest_with_its_own_error(attempt: dict) -> None:
    from review.study.trials import CHOICES, VoteRefused, outcome_for, valid_trial_id, validate_vote

    trial, choice, session, reviewer = attempt["trial"], attempt["choice"], attempt["session"], attempt["reviewer"]
    try:
        accepted_id = valid_trial_id(attempt["trial_id"])
        accepted = validate_vote(trial, session=session, reviewer_id=reviewer, choice=choice, voted=attempt["voted"])
    except VoteRefused as exc:
        assert str(exc).strip()
        event("refused")
        return
    event("accepted")
    assert isinstance(accepted_id, str) and len(accepted_id) == 32 and set(accepted_id) <= set("0123456789abcdef")
    assert trial is not None and not attempt["voted"] and (trial["session"], trial["reviewer_id"]) == (session, reviewer)
    assert accepted == choice and accepted in CHOICES[trial["mode"]]
    outcome, _ = outcome_for(trial, accepted)
    assert outcome in ({"full", "selective", "same"} if trial["mode"] == "preference" else {"correct", "wrong"})

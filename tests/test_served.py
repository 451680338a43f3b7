"""Served images: per-URL nonces over stored bytes, expiry, pinned faces, the LRU of files, and the HTTP route."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from review.images import png_chunks, png_has_metadata, write_image
from review.study.dither import DITHER_BYTES
from review.study.served import ROUTE, ServedImages, image_url
from review.ui.image_route import image_routes


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pixels = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    return tmp_path / write_image(tmp_path, pixels).file, pixels


def pixels_of(data: bytes) -> np.ndarray:
    with Image.open(BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_each_name_serves_the_same_pixels_in_its_own_bytes(stored: tuple[Path, np.ndarray]):
    path, pixels = stored
    served = ServedImages()
    names = [served.add(path) for _ in range(20)]
    answers = [served.get(n) for n in names]
    assert len(set(names)) == 20 and all(len(n) == 36 and n.endswith(".png") for n in names)
    assert len(set(answers)) == 20 and path.read_bytes() not in answers
    assert served.get(names[3]) == answers[3]  # one URL, one byte string
    for data in answers[:3]:
        np.testing.assert_array_equal(pixels_of(data), pixels)
        assert png_has_metadata(data) == [] and png_chunks(data).count("rnDm") == 1


@pytest.mark.parametrize("name", [None, 7, "", "../x.png", "A" * 32 + ".png", "a" * 32 + ".png", "a" * 32])
def test_unknown_or_malformed_names_get_nothing(stored: tuple[Path, np.ndarray], name: object):
    served = ServedImages()
    served.add(stored[0])
    assert served.get(name) is None and name not in served


def test_names_expire_by_age_and_count_but_pinned_ones_stay(stored: tuple[Path, np.ndarray]):
    now = [0.0]
    served = ServedImages(max_age_s=100.0, max_entries=3, clock=lambda: now[0])
    face = served.add(stored[0], pinned=True)
    first = served.add(stored[0])
    now[0] = 50.0
    later = [served.add(stored[0]) for _ in range(3)]
    assert first not in served and all(n in served for n in later)  # the oldest went past max_entries
    now[0] = 151.0
    assert served.get(later[0]) is None and face in served  # expired by age at read time
    served.add(stored[0])  # adding drops the expired entries
    assert len(served) == 2 and served.get(face) is not None


def test_a_missing_source_file_answers_nothing(stored: tuple[Path, np.ndarray]):
    served = ServedImages()
    name = served.add(stored[0].with_name("f" * 32 + ".png"))
    assert served.get(name) is None


def test_the_file_cache_is_bounded_and_reads_each_file_once(tmp_path: Path):
    paths = [tmp_path / write_image(tmp_path, np.full((8, 8, 3), i, np.uint8)).file for i in range(4)]
    size = paths[0].stat().st_size
    served = ServedImages(cache_bytes=2 * size + 10)
    names = [served.add(p) for p in paths]
    first = served.get(names[0])
    paths[0].unlink()  # cached: still served
    assert served.get(names[0]) == first
    for name in names[1:]:
        assert served.get(name) is not None
    assert served._files.currsize <= 2 * size + 10
    assert served.get(names[0]) is None  # pushed out of the cache, and the file is gone


def test_the_route_serves_png_bytes_with_no_name_and_404_otherwise(stored: tuple[Path, np.ndarray]):
    served = ServedImages()
    name = served.add(stored[0])
    client = TestClient(Starlette(routes=image_routes(served)))
    url = "/" + image_url(name)
    assert url == f"/{ROUTE}/{name}" and image_url(None) is None
    response = client.get(url)
    assert response.status_code == 200 and response.content == served.get(name)
    assert response.headers["content-type"] == "image/png" and "content-disposition" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    np.testing.assert_array_equal(pixels_of(response.content), stored[1])
    for bad in ("f" * 32 + ".png", "..%2F..%2Fetc%2Fpasswd", stored[0].name, "x"):
        assert client.get(f"/{ROUTE}/{bad}").status_code == 404
    assert client.head(url).status_code == 200


def idat_length(data: bytes) -> int:
    """The total length of a PNG's IDAT chunks."""
    offset, total = 8, 0
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        total += length if kind == b"IDAT" else 0
        offset += 12 + length
    return total


def test_a_trials_images_all_have_one_byte_length_and_differ_in_pixels(tmp_path: Path):
    """Sizes are what a browser's network panel shows first: they must not match ABX's X to A or B, nor mark a
    gold twin; across trials the length varies. Every copy differs from every other in bytes and pixels (±1)."""
    rng = np.random.default_rng(3)
    full = tmp_path / write_image(tmp_path, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).file
    sel = tmp_path / write_image(tmp_path, np.zeros((40, 40, 3), np.uint8)).file  # compresses far smaller
    assert abs(full.stat().st_size - sel.stat().st_size) > 1000
    served = ServedImages()
    copies: dict[Path, list[np.ndarray]] = {full: [], sel: []}
    for group in ([full, sel, full], [sel, sel], [full, sel]):  # ABX, a gold twin, a preference pair
        names = served.add_group(group)
        answers = [served.get(n) for n in names]
        assert len({len(a) for a in answers}) == 1 and len(set(answers)) == len(answers)
        idats = [idat_length(a) for a in answers]
        assert max(idats) - min(idats) <= 4  # the image data's length says nothing either
        for path, data in zip(group, answers, strict=True):
            pixels, original = pixels_of(data).astype(int), pixels_of(path.read_bytes()).astype(int)
            assert 0 < int((pixels != original).sum()) <= DITHER_BYTES and np.abs(pixels - original).max() == 1
            assert png_chunks(data).count("rnDm") == 1 and png_has_metadata(data) == []
            copies[path].append(pixels)
    for arrays in copies.values():  # no two served copies of one image share their pixels
        assert len({a.tobytes() for a in arrays}) == len(arrays) >= 3
    lengths = {len(served.get(served.add_group([full, sel])[0])) for _ in range(10)}
    assert len(lengths) > 1  # a random 0-32 bytes of padding: the length says nothing across trials either


def test_a_dropped_copy_is_made_again_byte_for_byte(tmp_path: Path):
    pixels = np.random.default_rng(4).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path = tmp_path / write_image(tmp_path, pixels).file
    served = ServedImages(encoded_bytes=1)  # keeps (almost) nothing: every answer is made again
    name = served.add_group([path, path])[0]
    first = served.get(name)
    assert first is not None and served.get(name) == first


def test_a_degraded_copy_is_visibly_different(tmp_path: Path):
    pixels = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    path = tmp_path / write_image(tmp_path, pixels).file
    served = ServedImages()
    intact, degraded = (pixels_of(served.get(n)).astype(int) for n in served.add_group([path, path], [False, True]))
    assert np.abs(intact - pixels).max() <= 1 and np.abs(degraded - pixels).mean() > 20


def test_uncached_sources_are_read_in_a_worker_and_broken_ones_refused(tmp_path: Path,
                                                                       stored: tuple[Path, np.ndarray]):
    served = ServedImages(cache_bytes=0)  # nothing is cached: every answer reads its file
    name = served.add(stored[0])
    assert not served.is_cached(name) and served.is_cached("f" * 32 + ".png")  # unknown names read nothing
    client = TestClient(Starlette(routes=image_routes(served)))
    response = client.get(f"/{ROUTE}/{name}")
    assert response.status_code == 200 and response.content == served.get(name)
    broken = tmp_path / ("e" * 32 + ".png")
    broken.write_bytes(b"not a png at all")
    assert client.get(f"/{ROUTE}/{served.add(broken)}").status_code == 404  # not a 500


def test_bytes_made_in_memory_are_served_pinned(stored: tuple[Path, np.ndarray]):
    now = [0.0]
    served = ServedImages(max_age_s=10.0, clock=lambda: now[0])
    name = served.add_bytes(stored[0].read_bytes())
    now[0] = 1e6
    assert served.is_cached(name) and served.get(name) is not None
    np.testing.assert_array_equal(pixels_of(served.get(name)), stored[1])

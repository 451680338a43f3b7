"""Image files: metadata-free PNGs from pixels, opaque names, folder confinement, the per-trial nonce splice."""

from __future__ import annotations

import hashlib
import re
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from review.images import (
    ImageNameError,
    StoredImage,
    image_path,
    png_chunks,
    png_has_metadata,
    read_image,
    with_nonce,
    write_image,
)

NAME = re.compile(r"^[0-9a-f]{32}\.png$")


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def leaky_png(path: Path, pixels: np.ndarray) -> Path:
    """A PNG carrying everything that could identify an arm: text, EXIF and an ICC profile."""
    image = Image.fromarray(pixels)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "preset=fast seed=3")
    info.add_itxt("Comment", "selective arm")
    exif = Image.Exif()
    exif[0x010E] = "full arm"  # ImageDescription
    image.save(path, pnginfo=info, exif=exif, icc_profile=b"\0" * 128, dpi=(72, 72))
    assert {"tEXt", "iTXt", "eXIf", "iCCP", "pHYs"} <= set(png_chunks(path))
    return path


def test_written_png_has_only_image_chunks_and_an_opaque_name(tmp_path: Path, pixels: np.ndarray):
    source = Image.open(leaky_png(tmp_path / "full_seed3.png", pixels))
    stored = write_image(tmp_path / "data", source)
    assert isinstance(stored, StoredImage) and NAME.match(stored.file)
    path = tmp_path / "data" / stored.file
    assert (stored.width, stored.height) == (32, 24)
    assert stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert png_has_metadata(path) == []
    assert set(png_chunks(path)) == {"IHDR", "IDAT", "IEND"}
    assert b"seed" not in path.read_bytes() and b"arm" not in path.read_bytes()
    np.testing.assert_array_equal(read_image(tmp_path / "data", stored.file), pixels)


def test_same_pixels_get_unrelated_names(tmp_path: Path, pixels: np.ndarray):
    names = {write_image(tmp_path, pixels).file for _ in range(5)}
    assert len(names) == 5 and all(NAME.match(n) for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files left behind


def test_png_has_metadata_lists_metadata_chunks(tmp_path: Path, pixels: np.ndarray):
    assert set(png_has_metadata(leaky_png(tmp_path / "x.png", pixels))) == {"tEXt", "iTXt", "eXIf", "iCCP", "pHYs"}


@pytest.mark.parametrize("name", [
    "../" + "a" * 32 + ".png", "/etc/passwd", "A" * 32 + ".png", "a" * 31 + ".png", "a" * 32 + ".png/..",
    "a" * 32 + ".png\0", "a" * 32 + ".PNG", "full_seed3.png", "", "a" * 32 + ".png\n",
])
def test_names_from_outside_cannot_escape_the_folder(tmp_path: Path, pixels: np.ndarray, name: str):
    stored = write_image(tmp_path / "data", pixels)
    with pytest.raises(ImageNameError):
        read_image(tmp_path / "data", name)
    with pytest.raises(ImageNameError):
        image_path(tmp_path / "data", name)
    assert read_image(tmp_path / "data", stored.file).shape == (24, 32, 3)


def test_a_spliced_nonce_changes_the_bytes_but_not_the_pixels(tmp_path: Path, pixels: np.ndarray):
    src = write_image(tmp_path, pixels)
    data = (tmp_path / src.file).read_bytes()
    a, b = with_nonce(data, b"0123456789abcdef"), with_nonce(data, b"fedcba98765432100")
    assert len({data, a, b}) == 3 and len(a) == len(data) + 12 + 16
    for copy in (a, b):
        assert png_chunks(copy) == ["IHDR", "rnDm", "IDAT", "IEND"]  # the nonce right after IHDR, nothing else
        assert png_has_metadata(copy) == []
        with Image.open(BytesIO(copy)) as image:
            image.load()  # PIL checks every chunk's CRC while reading
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), pixels)
    assert hashlib.sha256(a).hexdigest() != src.sha256


@pytest.mark.parametrize(("data", "nonce"), [(b"GIF89a" + b"\0" * 40, b"abc"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"ab"),
                                             (None, b""), (None, b"a\0b")])
def test_with_nonce_refuses_what_is_not_a_png_or_a_clean_nonce(tmp_path: Path, pixels: np.ndarray,
                                                                data: bytes | None, nonce: bytes):
    if data is None:
        data = (tmp_path / write_image(tmp_path, pixels).file).read_bytes()
    with pytest.raises(ValueError):
        with_nonce(data, nonce)


def test_non_rgb_input_is_refused_or_converted(tmp_path: Path, pixels: np.ndarray):
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_image(tmp_path, pixels.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_image(tmp_path, pixels[..., 0])
    rgba = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)]), "RGBA")
    stored = write_image(tmp_path, rgba)
    np.testing.assert_array_equal(read_image(tmp_path, stored.file), pixels)

"""Image files: metadata-free PNGs from pixels, opaque names, folder confinement, distinct per-trial copies."""

from __future__ import annotations

import hashlib
import re
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
    serve_copy,
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
    with pytest.raises(ImageNameError):
        serve_copy(tmp_path / "data", name, tmp_path / "served")
    assert read_image(tmp_path / "data", stored.file).shape == (24, 32, 3)


def test_serve_copies_differ_in_bytes_and_name_but_not_pixels(tmp_path: Path, pixels: np.ndarray):
    src = write_image(tmp_path / "data", pixels)
    a = serve_copy(tmp_path / "data", src.file, tmp_path / "served")
    b = serve_copy(tmp_path / "data", src.file, tmp_path / "served")
    assert len({src.file, a.file, b.file}) == 3 and NAME.match(a.file) and NAME.match(b.file)
    assert len({src.sha256, a.sha256, b.sha256}) == 3
    bytes_a = (tmp_path / "served" / a.file).read_bytes()
    bytes_b = (tmp_path / "served" / b.file).read_bytes()
    assert bytes_a != bytes_b and hashlib.sha256(bytes_a).hexdigest() == a.sha256
    np.testing.assert_array_equal(read_image(tmp_path / "served", a.file), pixels)
    np.testing.assert_array_equal(read_image(tmp_path / "served", b.file), pixels)
    for copy in (a, b):
        path = tmp_path / "served" / copy.file
        assert png_has_metadata(path) == []
        assert png_chunks(path).count("rnDm") == 1  # the only extra: a random nonce
        assert (copy.width, copy.height) == (32, 24)


def test_non_rgb_input_is_refused_or_converted(tmp_path: Path, pixels: np.ndarray):
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_image(tmp_path, pixels.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_image(tmp_path, pixels[..., 0])
    rgba = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)]), "RGBA")
    stored = write_image(tmp_path, rgba)
    np.testing.assert_array_equal(read_image(tmp_path, stored.file), pixels)

"""Face input: insightface loads the tiny stand-in models through its own router, the largest face and its RAW
embedding are used, unreadable images and missing model packs give clear errors, and draw_kps matches InstantID."""

from __future__ import annotations

import io
import math
import socket
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnx
import pytest
from insightface.app.common import Face as InsightFace
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from PIL import Image
from skimage import data

from instantid import face as face_mod
from instantid.face import (
    Face,
    FaceAnalyzer,
    FaceError,
    FaceModelError,
    ImageReadError,
    NoFaceError,
    draw_kps,
    load_image,
    sort_largest_first,
)
from instantid.tiny_face_models import DETECTOR_FILE, RECOGNIZER_FILE, build_tiny_face_models

T1_JPG = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
SKIN = (224, 172, 140)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_face_models(tmp_path_factory.mktemp("tiny-face"))


@pytest.fixture(scope="module")
def analyzer(tiny_dir: Path) -> FaceAnalyzer:
    return FaceAnalyzer(name=str(tiny_dir))


def two_blobs(background: int = 128) -> np.ndarray:
    """RGB 640x480: a small and a large skin-coloured ellipse ("faces") on a flat background."""
    image = np.full((480, 640, 3), background, np.uint8)
    cv2.ellipse(image, (160, 240), (30, 38), 0, 0, 360, SKIN, -1)
    cv2.ellipse(image, (440, 230), (90, 112), 0, 0, 360, SKIN, -1)
    return image


def contains(bbox: np.ndarray, point: tuple[float, float]) -> bool:
    return bool(bbox[0] <= point[0] <= bbox[2] and bbox[1] <= point[1] <= bbox[3])


def fake_face(size: float, norm: float = 23.0, seed: int = 0) -> InsightFace:
    vec = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    x1, y1 = 10.0 * seed, 5.0
    kps = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32) * size + (x1, y1)
    return InsightFace(bbox=np.array([x1, y1, x1 + size, y1 + size], np.float32), kps=kps,
                       det_score=np.float32(0.9), embedding=vec / np.linalg.norm(vec) * norm)


# --- tiny models through insightface's own loading code -------------------------------------------------


def test_insightface_router_loads_tiny_models_as_scrfd_and_arcface(tiny_dir: Path, analyzer: FaceAnalyzer) -> None:
    for name in (DETECTOR_FILE, RECOGNIZER_FILE):
        onnx.checker.check_model(onnx.load(str(tiny_dir / name)))
    assert isinstance(get_model(str(tiny_dir / DETECTOR_FILE), providers=["CPUExecutionProvider"]), SCRFD)
    assert isinstance(get_model(str(tiny_dir / RECOGNIZER_FILE), providers=["CPUExecutionProvider"]), ArcFaceONNX)
    assert {k: type(v) for k, v in analyzer.app.models.items()} == {"detection": SCRFD, "recognition": ArcFaceONNX}
    det = analyzer.app.models["detection"]
    assert (det.fmc, det._num_anchors, det.use_kps) == (3, 2, True)  # det_10g layout: 9 outputs
    rec = analyzer.app.models["recognition"]
    assert (rec.input_size, rec.input_mean, rec.input_std) == ((112, 112), 127.5, 127.5)
    assert analyzer.ctx_id == -1 and analyzer.providers == ["CPUExecutionProvider"]


def test_tiny_models_are_deterministic_and_written_only_when_changed(tmp_path: Path, tiny_dir: Path) -> None:
    folder = build_tiny_face_models(tmp_path / "a")
    for name in (DETECTOR_FILE, RECOGNIZER_FILE):
        assert (folder / name).read_bytes() == (tiny_dir / name).read_bytes()
    (folder / RECOGNIZER_FILE).write_bytes(b"stale")
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}  # a rewrite replaces the file (new inode)
    assert build_tiny_face_models(folder) == folder
    assert (folder / DETECTOR_FILE).stat().st_ino == inodes[DETECTOR_FILE]  # same content: untouched
    assert (folder / RECOGNIZER_FILE).stat().st_ino != inodes[RECOGNIZER_FILE]
    assert (folder / RECOGNIZER_FILE).read_bytes() == (tiny_dir / RECOGNIZER_FILE).read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == sorted([DETECTOR_FILE, RECOGNIZER_FILE])  # no temp files


def test_tiny_detector_finds_faces_in_photos_and_none_in_flat_images(analyzer: FaceAnalyzer) -> None:
    astronaut = analyzer.detect(Image.fromarray(data.astronaut()))
    centres = [((f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2) for f in astronaut]
    assert centres and all(contains(np.array([170, 70, 260, 190]), c) for c in centres)  # her face only
    assert len(analyzer.detect(T1_JPG)) >= 1
    for value in (0, 128, 255):
        assert analyzer.detect(np.full((480, 640, 3), value, np.uint8)) == []


def test_real_path_returns_all_faces_largest_first(analyzer: FaceAnalyzer) -> None:
    for background in (128, 0):
        faces = analyzer.detect(two_blobs(background))
        assert len(faces) >= 2
        assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
        big = analyzer.largest(two_blobs(background))
        assert contains(big.bbox, (440, 230)) and not contains(big.bbox, (160, 240))
        assert any(contains(f.bbox, (160, 240)) for f in faces[1:])
        assert big.embedding.shape == (512,) and big.kps.shape == (5, 2) and 0.5 <= big.det_score <= 1.0


def test_tiny_recognizer_gives_distinct_raw_embeddings(analyzer: FaceAnalyzer) -> None:
    rec = analyzer.app.models["recognition"]
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2)]
    a, b, a2 = (rec.get_feat(c).ravel() for c in (crops[0], crops[1], crops[0].copy()))
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert a.shape == (512,) and np.array_equal(a, a2) and cos < 0.9
    face = analyzer.largest(two_blobs())
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) > 0.1  # raw, not normalised


def test_no_face_raises_clear_error(analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    with pytest.raises(NoFaceError, match=r"No face found in <image array> \(320x200\)"):
        analyzer.largest(np.zeros((200, 320, 3), np.uint8))
    path = tmp_path / "blank.png"
    Image.new("RGB", (64, 48)).save(path)
    with pytest.raises(NoFaceError, match="blank.png"):
        analyzer.largest(path)
    assert issubclass(NoFaceError, FaceError) and issubclass(FaceError, ValueError)


# --- selection logic and raw embedding (fake insightface faces) ------------------------------------------


def test_sort_largest_first_orders_by_bbox_area_and_keeps_ties_stable() -> None:
    def box(x1: float, y1: float, x2: float, y2: float, tag: float) -> Face:
        return Face(np.array([x1, y1, x2, y2]), np.zeros((5, 2)), np.full(512, tag), det_score=tag)

    faces = [box(0, 0, 10, 10, 1), box(0, 0, 30, 5, 2), box(5, 5, 25, 25, 3), box(0, 0, 50, 2, 4)]
    assert [f.det_score for f in sort_largest_first(faces)] == [3, 2, 1, 4]  # areas 400, 150, 100, 100
    assert box(10, 10, 5, 5, 0).area == 0.0


def test_detect_wraps_insightface_faces_largest_first_with_raw_embedding(
        analyzer: FaceAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [fake_face(40, seed=1), fake_face(120, norm=31.5, seed=2), fake_face(80, seed=3)]
    seen: list[np.ndarray] = []
    monkeypatch.setattr(analyzer.app, "get", lambda img, *a, **k: seen.append(img) or raw)
    faces = analyzer.detect(Image.new("RGB", (300, 200), (10, 20, 30)))
    assert [f.area for f in faces] == [120 * 120, 80 * 80, 40 * 40]
    assert seen[0].shape == (200, 300, 3) and tuple(seen[0][0, 0]) == (30, 20, 10)  # BGR for insightface
    best = analyzer.largest(np.zeros((200, 300, 3), np.uint8))
    assert np.array_equal(best.embedding, raw[1].embedding) and best.embedding.dtype == raw[1].embedding.dtype
    assert np.isclose(np.linalg.norm(best.embedding), 31.5)  # not normed_embedding
    assert np.allclose(best.kps, raw[1].kps) and np.allclose(best.bbox, raw[1].bbox)
    assert isinstance(best.det_score, float)


# --- image loading --------------------------------------------------------------------------------------


def test_unreadable_and_truncated_images_raise_read_error_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png"):
        load_image(text)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_image(truncated)
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(buf.getvalue()[:-200])
    with pytest.raises(ImageReadError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="empty"):
        load_image(b"")


def test_exif_rotated_jpeg_is_transposed_and_result_is_rgb(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall: left half red, right half blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    for source in (path, path.read_bytes(), Image.open(path)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (20, 40)
        top, bottom = np.asarray(image)[5, 10], np.asarray(image)[34, 10]
        assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(rgba)).min() == 255  # transparency composited on white


# --- keypoint image -------------------------------------------------------------------------------------

KPS = np.array([[60.4, 40.9], [140.0, 40.0], [100.0, 70.0], [70.0, 100.0], [130.0, 100.0]])
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def test_draw_kps_matches_instantid_drawing() -> None:
    image = draw_kps((200, 120), KPS)
    assert image.size == (200, 120) and image.mode == "RGB"
    arr = np.asarray(image)
    for (x, y), color in zip(KPS, COLORS, strict=True):
        assert tuple(arr[int(y), int(x)]) == color  # filled circle at the (truncated) point
        assert tuple(arr[int(y), int(x) + 9]) == color  # radius 10
    # limbs (point -> nose) in the first point's colour scaled by 0.6, outside the circles
    for (a, b) in ((0, 2), (1, 2), (3, 2), (4, 2)):
        mid = (KPS[a] + KPS[b]) / 2
        assert tuple(arr[int(mid[1]), int(mid[0])]) == tuple(int(c * 0.6) for c in COLORS[a])
    # black except near the keypoints and the limbs
    ys, xs = np.nonzero(arr.any(axis=2))
    pts = np.stack([xs, ys], axis=1).astype(float)
    near_point = np.min(np.linalg.norm(pts[:, None] - KPS[None], axis=2), axis=1) <= 11.5
    seg_a, seg_b = KPS[[0, 1, 3, 4]], KPS[[2, 2, 2, 2]]
    t = np.clip(np.einsum("pkd,kd->pk", pts[:, None] - seg_a, seg_b - seg_a)
                / np.sum((seg_b - seg_a) ** 2, axis=1), 0, 1)
    dist = np.linalg.norm(pts[:, None] - (seg_a + t[..., None] * (seg_b - seg_a)), axis=2).min(axis=1)
    assert np.all(near_point | (dist <= 5.5))
    assert arr[:, :30].max() == 0 and arr[:, 170:].max() == 0
    with pytest.raises(ValueError, match="5 finite"):
        draw_kps((200, 120), KPS[:4])


def official_draw_kps(size: tuple[int, int], kps: np.ndarray) -> np.ndarray:
    """InstantID's draw_kps (instantX-research/InstantID, pipeline_stable_diffusion_xl_instantid.py), as reference."""
    colors, limbs, (w, h) = COLORS, np.array([[0, 2], [1, 2], [3, 2], [4, 2]]), size
    out = np.zeros([h, w, 3])
    for index in limbs:
        x, y = kps[index][:, 0], kps[index][:, 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), 4), int(angle), 0, 360, 1)
        out = cv2.fillConvexPoly(out.copy(), polygon, colors[index[0]])
    out = (out * 0.6).astype(np.uint8)
    for idx, (x, y) in enumerate(kps):
        out = cv2.circle(out.copy(), (int(x), int(y)), 10, colors[idx], -1)
    return out.astype(np.uint8)


def test_draw_kps_is_pixel_identical_to_the_official_code() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(16, 400, 2))
        kps = rng.uniform(-20, max(w, h) + 20, (5, 2)).astype(np.float32)  # insightface gives float32
        assert np.array_equal(np.asarray(draw_kps((w, h), kps)), official_draw_kps((w, h), kps))


# --- model folder errors --------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(repr(args[:2]))
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("insightface.utils.storage.download_file", refuse)
    return calls


def test_missing_or_empty_model_folder_gives_clear_error_without_download(
        tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(face_mod.ROOT_ENV, raising=False)
    folder = tmp_path / "models" / "antelopev2"
    with pytest.raises(FaceModelError, match="does not exist") as missing:
        FaceAnalyzer(root=tmp_path)
    assert str(folder) in str(missing.value) and "antelopev2.zip" in str(missing.value)
    folder.mkdir(parents=True)
    with pytest.raises(FaceModelError, match="contains no .onnx files") as empty:
        FaceAnalyzer(name="antelopev2", root=tmp_path)
    assert str(folder) in str(empty.value)
    build_tiny_face_models(folder / "antelopev2")  # the zip's own folder, unpacked one level too deep
    with pytest.raises(FaceModelError, match="one level down"):
        FaceAnalyzer(root=tmp_path)
    with pytest.raises(FileNotFoundError):  # FaceModelError is also a FileNotFoundError
        FaceAnalyzer(name=str(tmp_path / "nowhere"))
    assert no_network == []


def test_pack_without_detector_or_recognizer_is_rejected_clearly(tmp_path: Path, tiny_dir: Path) -> None:
    only_rec = tmp_path / "only_rec"
    only_rec.mkdir()
    (only_rec / RECOGNIZER_FILE).write_bytes((tiny_dir / RECOGNIZER_FILE).read_bytes())
    with pytest.raises(FaceModelError, match="No face detection model"):
        FaceAnalyzer(name=str(only_rec))
    only_det = tmp_path / "only_det"
    only_det.mkdir()
    (only_det / DETECTOR_FILE).write_bytes((tiny_dir / DETECTOR_FILE).read_bytes())
    with pytest.raises(FaceModelError, match="No face recognition"):
        FaceAnalyzer(name=str(only_det))


def test_pack_name_under_root_loads_like_users_do(
        tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    build_tiny_face_models(tmp_path / "models" / "antelopev2")
    calls: list[dict] = []
    real = insightface.app.FaceAnalysis

    def spy(**kwargs: object) -> object:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(insightface.app, "FaceAnalysis", spy)
    monkeypatch.setenv(face_mod.ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    analyzer = FaceAnalyzer()  # default name, root from the environment
    assert calls[-1]["name"] == "antelopev2" and calls[-1]["root"] == str(tmp_path)
    assert calls[-1]["allowed_modules"] == ["detection", "recognition"]
    assert analyzer.model_dir == (tmp_path / "models" / "antelopev2").resolve()
    assert analyzer.largest(two_blobs()).area > 0
    assert no_network == []


def test_default_providers_prefer_cuda_only_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert face_mod._default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert face_mod._default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_fit_kps_keeps_geometry_when_the_output_aspect_differs():
    from instantid.face import fit_kps

    kps = np.array([[50.0, 100.0], [0.0, 0.0], [100.0, 200.0]])
    fitted = fit_kps(kps, (100, 200), (200, 200))  # scale 2 (cover), centred vertically: offset y -100
    np.testing.assert_allclose(fitted, [[100.0, 100.0], [0.0, -100.0], [200.0, 300.0]])
    assert np.allclose(fit_kps(kps, (100, 200), (100, 200)), kps)


def test_a_malformed_exif_orientation_leaves_the_photo_readable_as_stored(tmp_path: Path) -> None:
    import struct

    from instantid.image_input import read_reference_image

    # one IFD entry: Orientation (0x0112) stored as the ASCII text "six" instead of a SHORT
    exif = b"Exif\0\0II*\0" + struct.pack("<IHHHI4sI", 8, 1, 0x0112, 2, 4, b"six\0", 0)
    path = tmp_path / "odd-exif.jpg"
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif, quality=95)
    image, notes = read_reference_image(path)[:2]
    assert image.size == (40, 20) and image.mode == "RGB"
    assert any("EXIF orientation could not be read" in note for note in notes)

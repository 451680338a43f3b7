"""Tiny ONNX stand-ins for antelopev2 (SCRFD detector + ArcFace recogniser) for offline tests and the tiny stack.

These models are **analytic / random stand-ins, not face detectors or face recognisers**. They exist so that
insightface's own loading code (``FaceAnalysis`` -> ``model_zoo`` router -> ``SCRFD`` / ``ArcFaceONNX``) can run
end to end without the real antelopev2 pack, which cannot be downloaded offline.

Detector (``tiny_scrfd.onnx``, det_10g layout: 9 outputs = scores, bboxes, kps for strides 8/16/32, 2 anchors):
a centre-surround "skin blob" detector.

* Per pixel, ``feature = skin + 0.5 * luma``, with ``skin`` a soft skin-colour mask (R-G, R-B and R thresholds).
* Per stride ``s`` and anchor (box 4s x 5s or 8s x 10s), it averages the feature over an inner window about the
  box's width and over a surround twice that, and scores
  ``logit = 12 * (inner - surround) + 3 * skin(inner) + 6 * (valid(inner) - 1) - 2``.
  ``valid`` excludes insightface's black letterbox (trailing all-black rows / columns), so the padding edge
  is no "contrast".
* Only local maxima (5x5) within 1.5 logits of the image's best candidate keep their score (CenterNet-style
  peak picking); everything else scores 0, so a blob gives one or a few boxes rather than hundreds.

Consequences: flat images (black, grey, white, noise) give no face (``sigmoid(-2) < 0.5``); a skin-coloured blob
on any background gives a box around it; natural photos give a few boxes, usually on faces (e.g. the
astronaut's) but also on skin-coloured walls, arms or cats. Grey-scale tight crops (insightface's
``Tom_Hanks_54745.png``) give none. Box and keypoint distances are constants in stride units (keypoints
placed like ArcFace's canonical 112x112 template inside the box), so boxes are face-sized for their stride
and alignment crops the box.

Recogniser (``tiny_arcface.onnx``, 1 output ``[N, 512]``): average-pool the 112x112 aligned crop to 14x14,
flatten, subtract the per-image mean, and multiply by a fixed random Gaussian matrix (seeded ``RandomState``).
Different crops give different vectors and near-identical crops give near-identical ones; cosine
similarity between them carries no notion of identity.

Both graphs are built deterministically with ``onnx.helper`` (same bytes on every call for the same
onnx/numpy versions), and ``build_tiny_face_models`` only writes a file when its content hash differs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

DETECTOR_FILE = "tiny_scrfd.onnx"  # sorted before the recogniser; the router decides by outputs anyway
RECOGNIZER_FILE = "tiny_arcface.onnx"
STRIDES = (8, 16, 32)  # SCRFD det_10g feature strides
NUM_ANCHORS = 2  # det_10g uses 2 anchors per location
OPSET = 13  # opset / IR version pinned so the bytes do not depend on onnx's defaults
IR_VERSION = 8
EMBED_DIM = 512  # ArcFace embedding width (antelopev2 glintr100 and buffalo_l w600k_r50 are 512-d)
RECOG_SIZE = 112  # ArcFace input side
RECOG_POOL = 8  # 112 / 8 = 14x14 pooled grid -> 588 features
RECOG_SEED = 20240131  # seed of the fixed random projection

# Detector score. insightface feeds RGB normalised as (x - 127.5) / 128; thresholds below are in x / 255 units.
SKIN_SHARPNESS = 25.0  # slope of the soft skin-colour thresholds below
SKIN_RG = (0.03, 0.22)  # skin: R - G in this range ...
SKIN_RB_MIN = 0.08  # ... R - B at least this ...
SKIN_R_MIN = 0.35  # ... and R at least this
LUMA_W = (0.299, 0.587, 0.114)  # Rec. 601 luma
LUMA_WEIGHT = 0.5  # feature = skin + 0.5 * luma: blobs may stand out by colour or by brightness
BLACK_LEVEL = -0.99  # channel values at or below this are pure black (0); trailing black rows/cols = letterbox
CONTRAST = 12.0  # logit weight of feature(inner window) - feature(surround window)
SKIN_WEIGHT = 3.0  # logit weight of the skin fraction of the inner window
VALID_WEIGHT = 6.0  # logit weight of the inner window's non-letterbox fraction (minus 1): no boxes on padding
SCORE_BIAS = -2.0  # so a flat, skin-free region (any uniform grey, black, white) scores sigmoid(-2) = 0.12
PEAK_WINDOW = 5  # a candidate must be the maximum of its 5x5 neighbourhood (per stride and anchor) ...
PEAK_MARGIN = 1.5  # ... and within 1.5 logits of the strongest candidate in the image (any stride)
ANCHOR_BOX = ((4, 5), (8, 10))  # (width, height) of each anchor's box in stride units (SCRFD has 2 anchors)
EPS = 1e-3  # guards masked means of all-padding windows (they become 0)
# ArcFace canonical 5-point template (insightface face_align.arcface_dst) in a 112x112 crop.
ARCFACE_DST = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
DOC = "Tiny analytic/random stand-in built by instantid.tiny_face_models; NOT a face model."


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name=name)


def _anchor_geometry(anchor: int) -> tuple[np.ndarray, np.ndarray]:
    """Box distances [4] (left, top, right, bottom) and keypoint offsets [10] in stride units for one anchor.

    The box is centred on the middle of the anchor's cell (anchor point + 0.5 stride), where the pooling
    windows are centred, and the keypoints sit where ArcFace's 112x112 template puts them in that box.
    """
    half_w, half_h = ANCHOR_BOX[anchor][0] / 2.0, ANCHOR_BOX[anchor][1] / 2.0
    box = np.array([half_w - 0.5, half_h - 0.5, half_w + 0.5, half_h + 0.5])
    x0, y0 = 0.5 - half_w, 0.5 - half_h
    kps = np.array([(x0 + 2 * half_w * x / 112.0, y0 + 2 * half_h * y / 112.0) for x, y in ARCFACE_DST])
    return box, kps.reshape(-1)


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="instantid.tiny_face_models", doc_string=DOC)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def _node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def _pool(op: str, x: str, out: str, kernel: int, stride: int = 1) -> onnx.NodeProto:
    pad = (kernel - 1) // 2 if stride == 1 else 0
    extra = {"count_include_pad": 0} if op == "AveragePool" else {}
    return _node(op, [x], out, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, **extra)


def _constants() -> list[TensorProto]:
    geoms = [_anchor_geometry(a) for a in range(NUM_ANCHORS)]
    k = SKIN_SHARPNESS / 2.0  # channels are about 2 * (x / 255) - 1
    skin_w = k * np.array([[1, -1, 0], [-1, 1, 0], [1, 0, -1], [1, 0, 0]]).reshape(4, 3, 1, 1)
    skin_b = SKIN_SHARPNESS * np.array([-SKIN_RG[0], SKIN_RG[1], -SKIN_RB_MIN, 0.5 - SKIN_R_MIN])
    # Per stride the window channels are [inner_a (skin, luma)] + [outer_a (skin, luma)] + [inner_a valid].
    logit_w = np.zeros((NUM_ANCHORS, 5 * NUM_ANCHORS, 1, 1))
    for a in range(NUM_ANCHORS):
        inner, outer = 2 * a, 2 * (NUM_ANCHORS + a)
        logit_w[a, inner:inner + 2, 0, 0] = CONTRAST * np.array([1.0, LUMA_WEIGHT])
        logit_w[a, outer:outer + 2, 0, 0] = -CONTRAST * np.array([1.0, LUMA_WEIGHT])
        logit_w[a, inner, 0, 0] += SKIN_WEIGHT
        logit_w[a, 4 * NUM_ANCHORS + a, 0, 0] = VALID_WEIGHT
    consts = {
        "skin_w": skin_w, "skin_b": skin_b, "luma_w": np.array(LUMA_W).reshape(1, 3, 1, 1) / 2.0,
        "luma_b": np.array([0.5]), "black_level": np.array(BLACK_LEVEL), "eps": np.array(EPS),
        "logit_w": logit_w, "logit_b": np.full(NUM_ANCHORS, SCORE_BIAS - VALID_WEIGHT), "peak_margin": np.array(PEAK_MARGIN),
        "bbox_w": np.zeros((NUM_ANCHORS * 4, 3, 1, 1)), "bbox_b": np.concatenate([g[0] for g in geoms]),
        "kps_w": np.zeros((NUM_ANCHORS * 10, 3, 1, 1)), "kps_b": np.concatenate([g[1] for g in geoms]),
    }
    tensors = [_init(name, value) for name, value in consts.items()]
    tensors.append(_init("zero", np.array(0.0)))
    tensors += [numpy_helper.from_array(np.array(axis, np.int64), name=name) for name, axis in
                (("axis_h", 2), ("axis_w", 3))]
    tensors.append(numpy_helper.from_array(np.array([2, 1], np.int64), name="split_2_1"))
    tensors += [numpy_helper.from_array(np.array([-1, c], np.int64), name=f"rows_{c}") for c in (1, 4, 10)]
    return tensors


def _pixel_nodes() -> list[onnx.NodeProto]:
    """input -> "cells_8": per 8x8 block means of (skin * valid, luma * valid, valid)."""
    return [
        # Soft skin mask: product of sigmoids of R-G within SKIN_RG, R-B >= SKIN_RB_MIN, R >= SKIN_R_MIN.
        _node("Conv", ["input.1", "skin_w", "skin_b"], "skin_terms", kernel_shape=[1, 1]),
        _node("Sigmoid", ["skin_terms"], "skin_soft"),
        _node("ReduceProd", ["skin_soft"], "skin", axes=[1], keepdims=1),
        _node("Conv", ["input.1", "luma_w", "luma_b"], "luma", kernel_shape=[1, 1]),
        # valid = not in the letterbox: insightface pads the resized image with black at the bottom / right,
        # so rows (columns) with only pure-black pixels from there to the bottom (right) edge are padding.
        _node("ReduceMax", ["input.1"], "brightest", axes=[1], keepdims=1),
        _node("Greater", ["brightest", "black_level"], "lit_bool"),
        _node("Cast", ["lit_bool"], "lit", to=TensorProto.FLOAT),
        _node("ReduceMax", ["lit"], "lit_rows", axes=[3], keepdims=1),
        _node("CumSum", ["lit_rows", "axis_h"], "lit_rows_below", reverse=1),
        _node("ReduceMax", ["lit"], "lit_cols", axes=[2], keepdims=1),
        _node("CumSum", ["lit_cols", "axis_w"], "lit_cols_right", reverse=1),
        _node("Greater", ["lit_rows_below", "zero"], "row_valid"),
        _node("Greater", ["lit_cols_right", "zero"], "col_valid"),
        _node("And", ["row_valid", "col_valid"], "valid_bool"),
        _node("Cast", ["valid_bool"], "valid", to=TensorProto.FLOAT),
        _node("Concat", ["skin", "luma"], "features", axis=1),
        _node("Mul", ["features", "valid"], "features_valid"),
        _node("Concat", ["features_valid", "valid"], "pixels", axis=1),
        _pool("AveragePool", "pixels", "cells_8", STRIDES[0], STRIDES[0]),
    ]


def _window(cells: str, out: str, kernel: int) -> list[onnx.NodeProto]:
    """Masked mean of (skin, luma) over a kernel x kernel window of cells -> [1, 2, H, W]."""
    return [
        _pool("AveragePool", cells, f"{out}_sum", kernel),
        helper.make_node("Split", [f"{out}_sum", "split_2_1"], [f"{out}_num", f"{out}_num_valid"],
                         name=f"{out}_split", axis=1),
        _node("Add", [f"{out}_num_valid", "eps"], f"{out}_den"),
        _node("Div", [f"{out}_num", f"{out}_den"], out),
    ]


def _logit_nodes(s: int) -> list[onnx.NodeProto]:
    """cells_s -> logit_s [1, A, H, W] and its per-image maximum logit_s_top [1, 1, 1, 1]."""
    cells, logit = f"cells_{s}", f"logit_{s}"
    nodes, windows = [], []
    for kind, grow in (("inner", 1), ("outer", 2)):  # inner window = box, surround = twice the box
        for a in range(NUM_ANCHORS):
            windows.append(f"{kind}{a}_{s}")
            nodes += _window(cells, windows[-1], grow * ANCHOR_BOX[a][0] + 1)
    windows += [f"inner{a}_{s}_num_valid" for a in range(NUM_ANCHORS)]
    return nodes + [
        _node("Concat", windows, f"windows_{s}", axis=1),
        # logit_a = CONTRAST * (f(inner_a) - f(outer_a)) + SKIN_WEIGHT * skin(inner_a)
        #           + VALID_WEIGHT * (valid(inner_a) - 1) + SCORE_BIAS,   with f = skin + LUMA_WEIGHT * luma.
        _node("Conv", [f"windows_{s}", "logit_w", "logit_b"], logit, kernel_shape=[1, 1]),
        _node("ReduceMax", [logit], f"{logit}_top", axes=[1, 2, 3], keepdims=1),
    ]


def _head_nodes(s: int) -> list[onnx.NodeProto]:
    """logit_s and the global floor -> the three SCRFD outputs of stride s."""
    cells, logit, peak = f"cells_{s}", f"logit_{s}", f"peak_{s}"
    nodes = [
        # Keep local maxima (CenterNet-style peak picking: one candidate per blob) ...
        _pool("MaxPool", logit, f"{logit}_max", PEAK_WINDOW),
        _node("Equal", [logit, f"{logit}_max"], f"{peak}_local"),
        # ... that come within PEAK_MARGIN logits of the strongest candidate in the image (drops clutter).
        _node("GreaterOrEqual", [logit, "logit_floor"], f"{peak}_strong"),
        _node("And", [f"{peak}_local", f"{peak}_strong"], f"{peak}_bool"),
        _node("Cast", [f"{peak}_bool"], peak, to=TensorProto.FLOAT),
        _node("Sigmoid", [logit], f"{logit}_sig"),
        _node("Mul", [f"{logit}_sig", peak], f"score_map_{s}"),
        # Constant box / keypoint distances: zero-weight 1x1 convs over the cell map give [1, A*C, H, W].
        _node("Conv", [cells, "bbox_w", "bbox_b"], f"bbox_map_{s}", kernel_shape=[1, 1]),
        _node("Conv", [cells, "kps_w", "kps_b"], f"kps_map_{s}", kernel_shape=[1, 1]),
    ]
    for head, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        # [1, A*C, H, W] -> [1, H, W, A*C] -> [H*W*A, C]: the anchors of one location are consecutive.
        nodes += [_node("Transpose", [f"{head}_map_{s}"], f"{head}_hwc_{s}", perm=[0, 2, 3, 1]),
                  _node("Reshape", [f"{head}_hwc_{s}", f"rows_{width}"], f"{head}_{s}")]
    return nodes


def detector_bytes() -> bytes:
    """Serialized tiny SCRFD graph (9 outputs, det_10g order: scores x3, bboxes x3, kps x3)."""
    nodes = _pixel_nodes()
    for prev, s in zip(STRIDES, STRIDES[1:], strict=False):  # 16x16 and 32x32 block means by 2x2 pooling
        nodes.append(_pool("AveragePool", f"cells_{prev}", f"cells_{s}", s // prev, s // prev))
    for s in STRIDES:
        nodes += _logit_nodes(s)
    nodes += [_node("Max", [f"logit_{s}_top" for s in STRIDES], "logit_top"),
              _node("Sub", ["logit_top", "peak_margin"], "logit_floor")]
    for s in STRIDES:
        nodes += _head_nodes(s)
    outputs = [helper.make_tensor_value_info(f"{head}_{s}", TensorProto.FLOAT, [f"n{s}", width])
               for head, width in (("score", 1), ("bbox", 4), ("kps", 10)) for s in STRIDES]
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs, initializer=_constants())
    return _model(graph)


def recognizer_bytes() -> bytes:
    """Serialized tiny ArcFace graph: pool 8x8 -> flatten -> centre -> fixed random projection to 512."""
    feats = 3 * (RECOG_SIZE // RECOG_POOL) ** 2
    proj = np.random.RandomState(RECOG_SEED).standard_normal((feats, EMBED_DIM)) / np.sqrt(feats) * 4.0
    # Node names must not start with "Sub"/"Mul": ArcFaceONNX would then assume mxnet-style in-graph norm.
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool",
                         kernel_shape=[RECOG_POOL, RECOG_POOL], strides=[RECOG_POOL, RECOG_POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("ReduceMean", ["flat"], ["flat_mean"], name="reduce_mean", axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "flat_mean"], ["centred"], name="centre"),
        helper.make_node("MatMul", ["centred", "projection"], ["embedding"], name="project"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, RECOG_SIZE, RECOG_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED_DIM])],
        initializer=[_init("projection", proj)])
    return _model(graph)


def _write_if_changed(path: Path, data: bytes) -> bool:
    digest = hashlib.sha256(data).hexdigest()
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees a half-written model
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def build_tiny_face_models(folder: str | Path) -> Path:
    """Write the tiny detector and recogniser into ``folder`` (created if needed) and return it.

    Idempotent: files whose content already matches are left untouched. ``FaceAnalyzer(name=str(folder))``
    (or ``FaceAnalysis(name=str(folder))``) then loads them through insightface's normal router.
    """
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = [name for name, data in ((DETECTOR_FILE, detector_bytes()), (RECOGNIZER_FILE, recognizer_bytes()))
               if _write_if_changed(folder / name, data)]
    if written:
        logger.info("wrote tiny face models %s to %s", ", ".join(written), folder)
    else:
        logger.debug("tiny face models in %s are up to date", folder)
    return folder

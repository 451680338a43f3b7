"""Work model: per-layer FLOPs/bytes against hand formulas and performance-model.md, preset shares, K/V caching."""

from __future__ import annotations

import itertools
import random

import pytest

from instantid.bench.work_model import kv_projection_work, layer_tokens, layer_work, preset_work, total_work
from instantid.layers import SD15_LAYERS, SDXL_LAYERS, layers_by_name
from instantid.presets import resolve_preset

B, T, D, E = 2, 16, 2048, 2  # CFG batch, face tokens, context dim, bytes per element
L32 = layers_by_name(SDXL_LAYERS)["mid_block.attentions.0.transformer_blocks.0.attn2"]  # 32^2, C=1280
L64 = layers_by_name(SDXL_LAYERS)["down_blocks.1.attentions.0.transformer_blocks.0.attn2"]  # 64^2, C=640


def hand_flops(n: int, c: int, cached: bool = False) -> int:
    projections = 0 if cached else 2 * (2 * B * T * D * c)
    return projections + 2 * (2 * B * n * T * c) + 2 * B * n * c


def hand_bytes(n: int, c: int, cached: bool = False) -> int:
    s = B * n * c * E
    kv = 2 * B * T * c * E
    projections = 0 if cached else 2 * D * c * E + 2 * B * T * D * E + kv
    return 9 * s + kv + projections


def test_layer_flops_match_the_hand_formula_and_the_notes() -> None:
    assert layer_work(L32).flops == hand_flops(1024, 1280)
    assert layer_work(L64).flops == hand_flops(4096, 640)
    assert layer_work(L32).flops == pytest.approx(509e6, rel=0.002)  # performance-model.md: 509 MFLOP
    assert layer_work(L64).flops == pytest.approx(514e6, rel=0.002)  # 514 MFLOP
    assert total_work(None, SDXL_LAYERS).flops == pytest.approx(35.7e9, rel=0.002)  # 35.7 GFLOP per UNet call


def test_layer_bytes_match_the_hand_formula_and_the_notes() -> None:
    assert layer_work(L32).bytes == hand_bytes(1024, 1280)
    assert layer_work(L64).bytes == hand_bytes(4096, 640)
    # notes count 9S + weights only (57.7 / 99.6 MB, 4.46 GB); the face-token terms add ~1 %
    assert layer_work(L32).bytes == pytest.approx(57.7e6, rel=0.015)
    assert layer_work(L64).bytes == pytest.approx(99.6e6, rel=0.015)
    assert total_work(None, SDXL_LAYERS).bytes == pytest.approx(4.46e9, rel=0.015)


def test_kv_cache_drops_the_projections() -> None:
    cached, plain = layer_work(L32, kv_cache=True), layer_work(L32)
    assert cached.flops == hand_flops(1024, 1280, cached=True)
    assert cached.bytes == hand_bytes(1024, 1280, cached=True)
    once = kv_projection_work(L32)
    assert plain.flops == cached.flops + once.flops
    assert plain.bytes == pytest.approx(cached.bytes + once.bytes)


def test_work_scales_with_batch_dtype_and_size() -> None:
    assert layer_work(L32, batch=1).flops == pytest.approx(layer_work(L32).flops / 2)
    assert layer_work(L64, dtype_bytes=4).bytes == pytest.approx(2 * layer_work(L64).bytes)
    assert layer_work(L32, 2048, 2048, kv_cache=True).flops == pytest.approx(
        4 * layer_work(L32, kv_cache=True).flops
    )


@pytest.mark.parametrize(
    ("width", "height"), [(1024, 1024), (512, 512), (1000, 1000), (1344, 768), (160, 96)]
)
def test_layer_tokens_round_up_per_level(width: int, height: int) -> None:
    for layer in (*SDXL_LAYERS, *SD15_LAYERS):
        level = {16384: 0, 4096: 1, 1024: 2, 256: 3}[layer.tokens_1024]
        w, h = -(-width // 8), -(-height // 8)
        for _ in range(level):
            w, h = -(-w // 2), -(-h // 2)
        assert layer_tokens(layer, width, height) == w * h
    assert layer_tokens(L32) == 1024 and layer_tokens(L64) == 4096
    assert layer_tokens(L32, 1000, 1000) == 32 * 32  # 125 -> 63 -> 32


def test_none_is_zero_and_full_is_one() -> None:
    for kv_cache in (False, True):
        none = preset_work(resolve_preset("none"), SDXL_LAYERS, kv_cache=kv_cache)
        full = preset_work(resolve_preset("full"), SDXL_LAYERS, kv_cache=kv_cache)
        assert none == {"flops": 0.0, "bytes": 0.0, "flops_share": 0.0, "bytes_share": 0.0}
        assert full["flops_share"] == pytest.approx(1.0) and full["bytes_share"] == pytest.approx(1.0)
    sd15 = preset_work(resolve_preset("full", SD15_LAYERS), SD15_LAYERS, 512, 512)
    assert sd15["bytes_share"] == pytest.approx(1.0)


def test_shares_grow_monotonically_with_layers() -> None:
    order = [layer.name for layer in SDXL_LAYERS]
    random.Random(0).shuffle(order)
    chosen: set[str] = set()
    last = preset_work(chosen, SDXL_LAYERS)
    for name in order:
        chosen.add(name)
        now = preset_work(chosen, SDXL_LAYERS)
        assert now["flops_share"] > last["flops_share"] and now["bytes_share"] > last["bytes_share"]
        last = now


def _hand_shares(n64: int, n32: int) -> tuple[float, float]:
    f64, f32 = hand_flops(4096, 640), hand_flops(1024, 1280)
    b64, b32 = hand_bytes(4096, 640), hand_bytes(1024, 1280)
    return (n64 * f64 + n32 * f32) / (10 * f64 + 60 * f32), (n64 * b64 + n32 * b32) / (10 * b64 + 60 * b32)


@pytest.mark.parametrize(
    ("spec", "n64", "n32", "notes_flops", "notes_bytes"),
    [
        ("output_only", 6, 30, 0.514, 0.522),  # decoder
        ("fast", 0, 20, 0.285, 0.259),
        ("balanced", 0, 55, None, None),
        ("up_blocks.0.attentions.1", 0, 10, 0.143, 0.129),  # style block
        ("input+middle", 4, 30, 0.486, 0.478),  # encoder + mid
        ("down_blocks.1+up_blocks.1", 10, 0, 0.144, 0.223),  # 64^2 only
        ("down_blocks.2+mid_block+up_blocks.0", 0, 60, 0.856, 0.777),  # 32^2 only
    ],
)
def test_preset_shares_match_hand_calc_and_the_notes(
    spec: str, n64: int, n32: int, notes_flops: float | None, notes_bytes: float | None
) -> None:
    work = preset_work(resolve_preset(spec), SDXL_LAYERS)
    flops_share, bytes_share = _hand_shares(n64, n32)
    assert work["flops_share"] == pytest.approx(flops_share)
    assert work["bytes_share"] == pytest.approx(bytes_share)
    if notes_flops is not None:
        assert work["flops_share"] == pytest.approx(notes_flops, abs=0.001)
        assert work["bytes_share"] == pytest.approx(notes_bytes, abs=0.001)


def test_preset_work_accepts_name_sets_and_rejects_unknown_names() -> None:
    names = resolve_preset("fast").layers
    assert preset_work(names, SDXL_LAYERS) == preset_work(resolve_preset("fast"), SDXL_LAYERS)
    assert (
        preset_work(list(names), SDXL_LAYERS, kv_cache=True)["bytes"]
        < preset_work(names, SDXL_LAYERS)["bytes"]
    )
    with pytest.raises(ValueError, match="not in this map"):
        preset_work({"nope.attn2"}, SDXL_LAYERS)


def test_every_pair_of_named_presets_orders_by_inclusion() -> None:
    presets = {name: resolve_preset(name) for name in ("full", "balanced", "fast", "output_only", "none")}
    for a, b in itertools.permutations(presets, 2):
        if presets[a].layers < presets[b].layers:
            wa, wb = preset_work(presets[a], SDXL_LAYERS), preset_work(presets[b], SDXL_LAYERS)
            assert wa["flops_share"] < wb["flops_share"] and wa["bytes_share"] < wb["bytes_share"]


def test_cached_projection_is_spread_over_the_steps() -> None:
    once = kv_projection_work(L32)
    cached = layer_work(L32, kv_cache=True)
    for steps in (1, 2, 10):
        spread = layer_work(L32, kv_cache=True, steps=steps)
        assert spread.flops == pytest.approx(cached.flops + once.flops / steps)
        assert spread.bytes == pytest.approx(cached.bytes + once.bytes / steps)
    assert layer_work(L32, kv_cache=True, steps=1) == layer_work(L32)  # one step: the cache saves nothing
    assert layer_work(L32, steps=10) == layer_work(L32)  # without the cache every call projects
    with pytest.raises(ValueError, match="steps"):
        layer_work(L32, kv_cache=True, steps=0)


def _full_work(cached: bool, steps: int | None) -> tuple[float, float]:
    """All 70 layers by the hand formulas: 10 at 64^2 (C=640), 60 at 32^2 (C=1280)."""
    def one(n: int, c: int) -> tuple[float, float]:
        flops, traffic = hand_flops(n, c, cached), hand_bytes(n, c, cached)
        if cached and steps is not None:
            flops += (hand_flops(n, c) - hand_flops(n, c, True)) / steps
            traffic += (hand_bytes(n, c) - hand_bytes(n, c, True)) / steps
        return flops, traffic

    (f64, b64), (f32, b32) = one(4096, 640), one(1024, 1280)
    return 10 * f64 + 60 * f32, 10 * b64 + 60 * b32


@pytest.mark.parametrize("steps", [None, 2, 10, 30])
def test_nocache_share_is_against_cached_full_and_above_one(steps: int | None) -> None:
    """The benchmark's arms against full as it runs (K/V once per generation): none 0, full 1, full-nocache > 1."""
    def share(spec: str, kv_cache: bool) -> dict[str, float]:
        return preset_work(resolve_preset(spec), SDXL_LAYERS, kv_cache=kv_cache, reference_kv_cache=True,
                           steps=steps)

    full, nocache, none = share("full", True), share("full", False), share("none", True)
    assert full["flops_share"] == pytest.approx(1.0) and full["bytes_share"] == pytest.approx(1.0)
    assert none["flops_share"] == 0.0 and none["bytes_share"] == 0.0
    (ref_flops, ref_bytes), (nc_flops, nc_bytes) = _full_work(True, steps), _full_work(False, None)
    assert nocache["flops_share"] == pytest.approx(nc_flops / ref_flops)
    assert nocache["bytes_share"] == pytest.approx(nc_bytes / ref_bytes)
    assert nocache["flops_share"] > 1.0 and nocache["bytes_share"] > 1.0
    assert nocache["flops"] == pytest.approx(total_work(None, SDXL_LAYERS).flops)
    for spec in ("balanced", "fast", "output_only"):
        kept, recomputed = share(spec, True), share(spec, False)
        assert 0.0 < kept["flops_share"] < 1.0 and 0.0 < kept["bytes_share"] < 1.0
        assert recomputed["flops_share"] > kept["flops_share"] and recomputed["bytes_share"] > kept["bytes_share"]


def test_nocache_share_grows_with_steps_and_is_one_for_one_step() -> None:
    def nocache(steps: int) -> float:
        return preset_work(resolve_preset("full"), SDXL_LAYERS, kv_cache=False, reference_kv_cache=True,
                           steps=steps)["flops_share"]

    assert nocache(1) == pytest.approx(1.0)
    shares = [nocache(steps) for steps in (1, 2, 5, 10, 30)]
    assert shares == sorted(shares) and len(set(shares)) == len(shares)
    assert nocache(10) == pytest.approx(2.225, abs=0.001)  # docs/benchmark.md, 1024^2 fp16, 10 steps
    assert preset_work(resolve_preset("full"), SDXL_LAYERS, kv_cache=False, reference_kv_cache=True)[
        "flops_share"] == pytest.approx(2.576, abs=0.001)  # projections not counted in the reference at all
    # the reference defaults to the preset's own caching (what `python -m instantid presets` prints)
    assert preset_work(resolve_preset("full"), SDXL_LAYERS, kv_cache=False)["flops_share"] == pytest.approx(1.0)

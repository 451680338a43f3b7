"""Presets: named counts, adaptive rule, selector grammar, step windows, SD1.5 roles, errors, select_layers."""

from __future__ import annotations

import pytest

from instantid.layers import SD15_LAYERS, SDXL_LAYERS, layers_by_name
from instantid.presets import (
    ACCEPTED_FORMS,
    PRESET_NAMES,
    Preset,
    PresetError,
    describe_presets,
    resolve_preset,
    select_layers,
)

BY_NAME = layers_by_name(SDXL_LAYERS)


def names_where(pred) -> frozenset[str]:
    return frozenset(layer.name for layer in SDXL_LAYERS if pred(layer.comfy_key))


def test_preset_names_are_the_contracts() -> None:
    assert PRESET_NAMES == ("full", "balanced", "fast", "output_only", "none", "adaptive")


@pytest.mark.parametrize(
    ("name", "count"), [("full", 70), ("balanced", 55), ("fast", 20), ("output_only", 36), ("none", 0)]
)
def test_named_presets_have_the_exact_counts(name: str, count: int) -> None:
    preset = resolve_preset(name)
    assert isinstance(preset, Preset)
    assert preset.name == name and len(preset.layers) == count
    assert (preset.start, preset.end) == (0.0, 1.0)
    assert preset.layers <= set(BY_NAME)


def test_named_presets_select_the_proposals_blocks() -> None:
    balanced = names_where(
        lambda k: (
            (k[0] == "output" and k[1] <= 2)
            or (k[0] == "middle" and k[2] <= 4)
            or k[:2] in {("input", 7), ("input", 8)}
        )
    )
    assert resolve_preset("balanced").layers == balanced
    assert "35" in resolve_preset("balanced").description  # the proposal's slip is called out
    fast = {n for n in BY_NAME if n.startswith(("up_blocks.0.attentions.0.", "up_blocks.0.attentions.1."))}
    assert resolve_preset("fast").layers == fast
    assert resolve_preset("output_only").layers == {n for n in BY_NAME if n.startswith("up_blocks.")}
    assert resolve_preset("full").layers == set(BY_NAME)


# SDXL multiplier groups: output 0-2 (30 layers) 1.0, output 3-5 (6) 0.7, middle 0-4 (5) 0.9, middle 5-9 (5) 0.5,
# input 7-8 (20) 0.8, input 4-5 (4) 0.4.
@pytest.mark.parametrize(
    ("ip_weight", "threshold", "count"),
    [
        (0.8, 0.1, 70),  # every product >= 0.32
        (0.2, 0.1, 66),  # input 4-5: 0.08 dropped; middle 5-9: 0.2*0.5 = 0.1 kept (boundary)
        (0.15, 0.1, 61),  # middle 5-9 0.075 and input 4-5 0.06 dropped
        (0.1, 0.1, 30),  # only output 0-2 (0.1) survives
        (0.8, 0.5, 61),  # 0.8, 0.56, 0.72, 0.4 x, 0.64, 0.32 x
        (0.8, 0.6, 55),  # 0.56 x too -> the balanced set
        (0.35, 0.3, 35),  # 0.35, 0.245 x, 0.315, 0.175 x, 0.28 x, 0.14 x
        (0.0, 0.1, 0),
        (1.0, 0.0, 70),
    ],
)
def test_adaptive_counts_by_hand(ip_weight: float, threshold: float, count: int) -> None:
    preset = resolve_preset("adaptive", ip_weight=ip_weight, threshold=threshold)
    assert len(preset.layers) == count


def test_adaptive_sets_and_threshold_in_the_spec() -> None:
    assert (
        resolve_preset("adaptive", ip_weight=0.8, threshold=0.6).layers == resolve_preset("balanced").layers
    )
    out02_mid04 = names_where(lambda k: (k[0] == "output" and k[1] <= 2) or (k[0] == "middle" and k[2] <= 4))
    assert resolve_preset("adaptive", ip_weight=0.35, threshold=0.3).layers == out02_mid04
    in_spec = resolve_preset("adaptive:0.6", ip_weight=0.8, threshold=0.01)
    assert len(in_spec.layers) == 55 and in_spec.name == "adaptive:0.6"


@pytest.mark.parametrize(
    ("spec", "count"),
    [
        ("output:0-2", 30),
        ("output:3", 2),
        ("output", 36),
        ("input", 24),
        ("middle", 10),
        ("input:8:0-4", 5),
        ("middle:0-4", 5),
        ("middle:0:0-4", 5),
        ("middle:7", 1),
        ("output:0-2+middle:0-4", 35),
        ("output:0-2+up_blocks.0", 30),  # overlapping terms
        ("fast+input:8", 30),  # a named preset inside a combination
        ("up_blocks.0.attentions.1", 10),
        ("up_blocks.0.attentions", 30),
        ("mid_block", 10),
        ("down_blocks", 24),
        ("down_blocks.2.attentions.1.transformer_blocks.3", 1),
        ("down_blocks.2.attentions.1.transformer_blocks.3.attn2", 1),
        ("down_blocks.2.attentions.1.transformer_blocks.3.attn2.processor", 1),
        (" Output:0-2 + MIDDLE:0-4 ", 35),
    ],
)
def test_selectors_parse(spec: str, count: int) -> None:
    assert len(resolve_preset(spec).layers) == count


def test_selectors_pick_the_right_layers() -> None:
    assert resolve_preset("input:8:0-4").layers == {
        f"down_blocks.2.attentions.1.transformer_blocks.{i}.attn2" for i in range(5)
    }
    assert sorted(BY_NAME[n].weight_key for n in resolve_preset("up_blocks.0.attentions.1").layers) == list(
        range(69, 88, 2)
    )
    assert resolve_preset("middle:0-4").layers == resolve_preset(
        "mid_block.attentions.0.transformer_blocks.0"
    ).layers | {f"mid_block.attentions.0.transformer_blocks.{i}.attn2" for i in range(1, 5)}
    preset = resolve_preset(" Output:0-2 + MIDDLE:0-4 ")
    assert preset.name == "output:0-2+middle:0-4" and "output:0-2" in preset.description


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "output:0,1",
        "balanced,fast",
        "output:2-0",
        "output:9",
        "middle:2:0-4",  # middle:1:... is ComfyUI_InstantID's key for the one middle block (accepted)
        "input:3",
        "input:8:0-4:1",
        "inputs:8",
        "foo",
        "up_blocks.5",
        "up_blocks.0.attention",
        "up_blocks.0.attentions.10",
        "output:0-2+",
        "+output",
        "adaptive:x",
        "adaptive:inf",
        "balanced@0.5-0.2",
        "balanced@0-1.5",
        "balanced@0.5",
        "balanced@",
        "balanced@0-0.5@0-1",
        "@0-0.5",
        "balanced@0.3-0.3",
    ],
)
def test_bad_specs_raise_with_the_accepted_forms(spec: str) -> None:
    with pytest.raises(PresetError) as info:
        resolve_preset(spec)
    message = str(info.value)
    assert ACCEPTED_FORMS in message
    for example in (
        "output:0-2",
        "input:8:0-4",
        "middle:0-4",
        "up_blocks.0.attentions.1",
        "@START-END",
        "balanced",
    ):
        assert example in message
    assert isinstance(info.value, ValueError)


def test_bad_weights_raise() -> None:
    with pytest.raises(PresetError):
        resolve_preset("adaptive", ip_weight=float("nan"))
    with pytest.raises(PresetError):
        resolve_preset("full", threshold="x")  # type: ignore[arg-type]
    with pytest.raises(PresetError):
        resolve_preset(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "start", "end", "count"),
    [
        ("balanced@0-0.5", 0.0, 0.5, 55),
        ("output:0-2@0.25-0.75", 0.25, 0.75, 30),
        ("fast@.5-1", 0.5, 1.0, 20),
        ("adaptive:0.6@0-1", 0.0, 1.0, 55),
        ("none@0.1-0.9", 0.1, 0.9, 0),
    ],
)
def test_step_windows(spec: str, start: float, end: float, count: int) -> None:
    preset = resolve_preset(spec)
    assert (preset.start, preset.end, len(preset.layers)) == (start, end, count)
    assert preset.name == spec


def test_window_is_described() -> None:
    assert "0-0.5" in resolve_preset("balanced@0-0.5").description


@pytest.mark.parametrize(
    ("name", "count"),
    [("full", 16), ("balanced", 6), ("fast", 2), ("output_only", 9), ("none", 0), ("adaptive", 16)],
)
def test_sd15_presets_resolve_by_role(name: str, count: int) -> None:
    assert len(resolve_preset(name, SD15_LAYERS).layers) == count


def test_sd15_roles_and_adaptive() -> None:
    fast = resolve_preset("fast", SD15_LAYERS).layers
    assert fast == {f"up_blocks.1.attentions.{a}.transformer_blocks.0.attn2" for a in (0, 1)}
    # output 3-5 0.15, output 6-11 0.105, middle 0.135, input 7-8 0.12, input 1-5 0.06 (dropped)
    assert len(resolve_preset("adaptive", SD15_LAYERS, ip_weight=0.15).layers) == 3 + 6 + 1 + 2
    assert len(resolve_preset("middle:0-4", SD15_LAYERS).layers) == 1
    assert len(resolve_preset("output:2-3", SD15_LAYERS).layers) == 1  # partial ranges are fine
    with pytest.raises(PresetError, match="output:0-2"):
        resolve_preset("output:0-2+output:3", SD15_LAYERS)  # but every term must match something


def test_role_presets_on_an_unknown_map_raise_when_empty() -> None:
    encoder_only = SDXL_LAYERS[:24]
    assert len(resolve_preset("full", encoder_only).layers) == 24
    assert len(resolve_preset("none", encoder_only).layers) == 0
    assert len(resolve_preset("balanced", encoder_only).layers) == 20  # input 7-8 only
    with pytest.raises(PresetError, match="fast"):
        resolve_preset("fast", encoder_only)


def test_describe_presets_lists_every_name_in_map_order() -> None:
    table = describe_presets()
    assert list(table) == list(PRESET_NAMES)
    assert {k: v["count"] for k, v in table.items()} == {
        "full": 70,
        "balanced": 55,
        "fast": 20,
        "output_only": 36,
        "none": 0,
        "adaptive": 70,
    }
    assert table["full"]["layers"] == [layer.name for layer in SDXL_LAYERS]
    assert all(row["description"] for row in table.values())
    assert describe_presets(ip_weight=0.15)["adaptive"]["count"] == 61
    assert describe_presets(SD15_LAYERS)["balanced"]["count"] == 6


def test_select_layers_resolves_specs_on_a_known_map() -> None:
    layers, warnings = select_layers("fast", SDXL_LAYERS)
    assert len(layers) == 20 and warnings == []
    layers, warnings = select_layers("adaptive", SDXL_LAYERS, ip_weight=0.15)
    assert len(layers) == 61 and warnings == []
    preset = resolve_preset("balanced")
    assert select_layers(preset, SDXL_LAYERS) == (preset.layers, [])


def test_select_layers_runs_full_with_a_warning_when_no_map_matches() -> None:
    available = [f"block.{i}.attn2" for i in range(5)]
    layers, warnings = select_layers("balanced", None, available=available)
    assert layers == set(available)
    assert len(warnings) == 1 and "full" in warnings[0] and "balanced" in warnings[0]
    assert select_layers("full", None, available=available) == (frozenset(available), [])
    assert select_layers("none@0-0.5", None, available=available) == (frozenset(), [])
    layers, warnings = select_layers(resolve_preset("fast"), None, available=available)
    assert layers == set(available) and warnings


def test_select_layers_re_resolves_a_preset_from_another_map() -> None:
    layers, warnings = select_layers(
        resolve_preset("fast"), SD15_LAYERS
    )  # up_blocks.0 has no attention in SD1.5
    assert layers == resolve_preset("fast", SD15_LAYERS).layers
    assert warnings and "re-resolved" in warnings[0]


def test_one_normal_form_for_specs_and_lists_of_them() -> None:
    from instantid.presets import preset_key, split_presets

    assert preset_key(" Output:0-2 + MIDDLE:0-4 @0-0.5") == "output:0-2+middle:0-4@0-0.5"
    assert resolve_preset(" Fast ").name == preset_key(" Fast ") == "fast"  # the name results carry is the key
    assert split_presets("balanced, Fast,balanced") == ["balanced", "fast"]
    assert split_presets(["fast", None, " ", "Output:0-2 , fast", "auto-5"]) == ["fast", "output:0-2", "auto-5"]
    assert split_presets(None) == [] and split_presets("") == []
    for bad in (5, b"fast", ["fast", 3]):
        with pytest.raises(PresetError, match="text"):
            split_presets(bad)

"""The preset spec grammar: selectors, step windows, a spec's normal form and comma-separated lists of specs.

A spec is a preset name or selectors joined by ``+``, optionally followed by a step window ``@START-END`` (see
``ACCEPTED_FORMS``). ``preset_key`` is the one normal form of a spec (no whitespace, lower case): the name a
resolved preset carries and the key the study stores pairs under; ``split_presets`` reads the comma-separated
lists the command lines and the Generate tab take. Named presets live in ``instantid/presets.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from instantid.layers import SDXL_LAYERS, LayerInfo

logger = logging.getLogger(__name__)

ACCEPTED_FORMS = """accepted preset forms:
  preset name      full | balanced | fast | output_only | none | adaptive | adaptive:THRESHOLD (adaptive:0.3)
  ComfyUI style    output:0-2 (output blocks 0-2, all layers)   input:8:0-4 (input block 8, layers 0-4)
                   middle:0-4 (middle layers 0-4)   middle:0:0-4 = middle:1:0-4 (ComfyUI_InstantID's key)
                   output (whole section)
                   numbers are single integers or ranges A-B (no commas)
  diffusers style  a layer-name prefix: up_blocks.0.attentions.1   mid_block
                   down_blocks.2.attentions.1.transformer_blocks.3
  combined         terms joined by '+': output:0-2+middle:0-4   fast+input:8
  step window      suffix @START-END, fractions of denoising with 0 <= START < END <= 1: balanced@0-0.5
commas separate presets on command lines (--presets balanced,fast) and never appear inside one spec"""


class PresetError(ValueError):
    """A preset spec that cannot be parsed or selects nothing; the message lists the accepted forms."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}\n{ACCEPTED_FORMS}")
        self.problem = problem


def preset_key(spec: str) -> str:
    """The normal form of a spec: whitespace removed, lower case (``" Output:0-2 "`` -> ``"output:0-2"``)."""
    return "".join(spec.split()).lower()


def split_presets(presets: Any) -> list[str]:
    """Specs from ``"balanced, fast"`` or a list of such texts (commas split there too): each ``preset_key``-ed,
    distinct, in order; blanks and None skipped. PresetError when ``presets`` is not text or a list of texts."""
    items = [presets] if isinstance(presets, str | None) else presets
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise PresetError(f"presets must be text like 'balanced,fast', got {type(presets).__name__}")
    if not all(isinstance(item, str | None) for item in items):
        raise PresetError("every preset must be text like 'balanced' or 'output:0-2'")
    return list(dict.fromkeys(preset_key(spec) for item in items if item for spec in item.split(",")
                              if spec.strip()))


_RANGE = r"\d+(?:-\d+)?"
_COMFY_RE = re.compile(rf"^(input|middle|output)(?::({_RANGE}))?(?::({_RANGE}))?$")
_DIFFUSERS_RE = re.compile(r"^(down_blocks|up_blocks|mid_block)(\.[a-z0-9_]+)*$")
_FRACTION = r"(\d+(?:\.\d*)?|\.\d+)"
_WINDOW_RE = re.compile(rf"^{_FRACTION}-{_FRACTION}$")


def parse_range(text: str | None, term: str) -> range | None:
    """``"2"`` or ``"0-4"`` as a range (None stays None); PresetError when it runs backwards."""
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if a > b:
        raise PresetError(f"range {text!r} in {term!r} runs backwards")
    return range(a, b + 1)


def select_term(term: str, layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Layers matched by one ComfyUI- or diffusers-style selector (may be empty); PresetError if malformed."""
    m = _COMFY_RE.match(term)
    if m:
        section = m.group(1)
        first, second = parse_range(m.group(2), term), parse_range(m.group(3), term)
        if section == "middle" and second is None:  # middle:0-4 means layers 0-4 of the single middle block
            first, second = None, first
        elif section == "middle" and first is not None and set(first) & {0, 1}:
            # the single middle block is ("middle", 0, i) here and in ComfyUI's own numbering; ComfyUI_InstantID's
            # ApplyInstantID patches ("middle", 1, i): both name the same block
            first = range(0, 1)
        return [
            layer
            for layer in layers
            if layer.comfy_key[0] == section
            and (first is None or layer.comfy_key[1] in first)
            and (second is None or layer.comfy_key[2] in second)
        ]
    if _DIFFUSERS_RE.match(term):
        prefix = term.removesuffix(".processor")
        return [layer for layer in layers if layer.name == prefix or layer.name.startswith(prefix + ".")]
    raise PresetError(f"cannot parse {term!r}")


def check_indices(term: str, layers: Sequence[LayerInfo]) -> None:
    """A user's selector may not name block/layer indices beyond every known map (``output:0-99`` is refused,
    not silently clamped to the existing blocks); ranges valid on SDXL stay valid on smaller maps (SD1.5)."""
    m = _COMFY_RE.match(term)
    if not m:
        return
    section = m.group(1)
    keys = [layer.comfy_key for layer in (*layers, *SDXL_LAYERS) if layer.comfy_key[0] == section]
    first, second = parse_range(m.group(2), term), parse_range(m.group(3), term)
    if section == "middle" and second is None:
        first, second = None, first
    elif section == "middle" and first is not None and first[-1] <= 1:
        first = None  # middle block 1 is ComfyUI_InstantID's name for the single middle block 0 (see select_term)
    for position, wanted in ((1, first), (2, second)):
        if wanted is None or not keys:
            continue
        top = max(key[position] for key in keys)
        if wanted[-1] > top:
            what = "block" if position == 1 else "layer"
            raise PresetError(f"selector {term!r} names {what} {wanted[-1]}, but {section} has {what}s 0-{top} "
                              "at most")


def select_spec(spec: str, layers: Sequence[LayerInfo]) -> set[str]:
    """Union of the ``+``-joined selectors in ``spec`` (named-preset data: empty matches are allowed)."""
    return {layer.name for term in spec.split("+") if term for layer in select_term(term, layers)}


def parse_window(text: str) -> tuple[float, float]:
    """A step window's ``START-END`` (the text after ``@``) as fractions; PresetError unless 0 <= START < END <= 1."""
    m = _WINDOW_RE.match(text)
    if not m:
        raise PresetError(f"cannot parse step window {'@' + text!r}")
    start, end = float(m.group(1)), float(m.group(2))
    if not 0.0 <= start < end <= 1.0:
        raise PresetError(f"step window @{text} needs 0 <= START < END <= 1")
    return start, end


def preset_window(spec: str) -> tuple[float, float]:
    """The step window of a spec (``"fast@0-0.5"`` -> (0.0, 0.5)); (0, 1) when it has none."""
    _, at, window = preset_key(spec).partition("@")
    return parse_window(window) if at else (0.0, 1.0)


def in_window(window: tuple[float, float], step: int, steps: int) -> bool:
    """Whether denoising step ``step`` of ``steps`` runs the face branch: START <= step/steps < END (half-open,
    so adjacent windows tile without overlap). The pipeline and the benchmark both ask this."""
    start, end = window
    return start <= step / steps < end

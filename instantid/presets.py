"""Layer presets: which cross-attention layers keep InstantID's face (IP) branch, and when.

A spec is a preset name or selectors joined by ``+``, optionally followed by a step window ``@START-END``
(see ``ACCEPTED_FORMS``). Named presets are data (``_NAMED``, ``_ADAPTIVE``), written as selector specs per layer
map, and go through the same parser as user selectors.

SD1.5: the SDXL presets name blocks by role. SDXL's output 0-2 are its deepest (1280-wide) decoder blocks; in SD1.5
those are output 3-5 (SD1.5's output 0-2 have no attention), so ``balanced`` / ``fast`` / ``adaptive`` use the same
roles shifted there; input 7-8 (deepest encoder) and the middle block keep their numbers. Any other layer map uses
the SDXL definitions, and a role-based preset that selects nothing there raises PresetError.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from instantid.layers import SDXL_LAYERS, LayerInfo, map_name

logger = logging.getLogger(__name__)

PRESET_NAMES: tuple[str, ...] = ("full", "balanced", "fast", "output_only", "none", "adaptive")

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

_ADAPTIVE_THRESHOLD = 0.1  # default: keep a layer when ip_weight * multiplier >= 0.1
_EPS = 1e-9  # tolerance for the adaptive comparison (0.2 * 0.5 >= 0.1 must hold)


class PresetError(ValueError):
    """A preset spec that cannot be parsed or selects nothing; the message lists the accepted forms."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}\n{ACCEPTED_FORMS}")
        self.problem = problem


@dataclass(frozen=True)
class Preset:
    name: str  # "full", "balanced", "fast", "output_only", "none", "adaptive", or the spec text
    layers: frozenset[str]  # LayerInfo.name of patched layers
    start: float = 0.0  # face branch active while denoising fraction in [start, end) (in_window)
    end: float = 1.0
    description: str = ""


@dataclass(frozen=True)
class _Named:
    description: str  # shown by `python -m instantid presets`
    sdxl: str  # selector spec on SDXL_LAYERS (also used for unknown maps)
    sd15: str  # the same roles on SD15_LAYERS


# The named presets, in one place. "" selects no layer.
_NAMED: dict[str, _Named] = {
    "full": _Named("every cross-attention layer (70 on SDXL)", "input+middle+output", "input+middle+output"),
    "balanced": _Named(
        "proposal option 1 'critical blocks': output 0-2, middle layers 0-4, input 7-8 = 55 layers on SDXL "
        "(the proposal's '~35' is an arithmetic slip; its block list is kept)",
        "output:0-2+middle:0-4+input:7-8",
        "output:3-5+middle:0-4+input:7-8",
    ),
    "fast": _Named(
        "proposal option 3 'fast': output blocks 0 and 1 (20 layers on SDXL)", "output:0-1", "output:3-4"
    ),
    "output_only": _Named("every output (decoder) layer (36 on SDXL)", "output", "output"),
    "none": _Named("face branch off in every layer (IdentityNet still runs)", "", ""),
}

# Proposal option 2: first matching rule gives the layer's multiplier; kept when ip_weight * multiplier >= threshold.
_ADAPTIVE: dict[str, tuple[tuple[str, float], ...]] = {
    "sdxl": (
        ("output:0-2", 1.0),
        ("output:3-5", 0.7),
        ("middle:0-4", 0.9),
        ("middle:5-9", 0.5),
        ("input:7-8", 0.8),
        ("input:4-5", 0.4),
    ),
    "sd15": (
        ("output:3-5", 1.0),
        ("output:6-11", 0.7),
        ("middle:0-4", 0.9),
        ("input:7-8", 0.8),
        ("input:1-5", 0.4),
    ),
}
_ADAPTIVE_DESCRIPTION = (
    "proposal option 2: keep a layer when ip_weight x block multiplier >= threshold; multipliers output 0-2 1.0, "
    "output 3-5 0.7, middle 0-4 0.9, middle 5-9 0.5, input 7-8 0.8, input 4-5 0.4"
)

_RANGE = r"\d+(?:-\d+)?"
_COMFY_RE = re.compile(rf"^(input|middle|output)(?::({_RANGE}))?(?::({_RANGE}))?$")
_DIFFUSERS_RE = re.compile(r"^(down_blocks|up_blocks|mid_block)(\.[a-z0-9_]+)*$")
_FRACTION = r"(\d+(?:\.\d*)?|\.\d+)"
_WINDOW_RE = re.compile(rf"^{_FRACTION}-{_FRACTION}$")


def _parse_range(text: str | None, term: str) -> range | None:
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if a > b:
        raise PresetError(f"range {text!r} in {term!r} runs backwards")
    return range(a, b + 1)


def _select(term: str, layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Layers matched by one ComfyUI- or diffusers-style selector (may be empty); PresetError if malformed."""
    m = _COMFY_RE.match(term)
    if m:
        section = m.group(1)
        first, second = _parse_range(m.group(2), term), _parse_range(m.group(3), term)
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


def _check_indices(term: str, layers: Sequence[LayerInfo]) -> None:
    """A user's selector may not name block/layer indices beyond every known map (``output:0-99`` is refused,
    not silently clamped to the existing blocks); ranges valid on SDXL stay valid on smaller maps (SD1.5)."""
    m = _COMFY_RE.match(term)
    if not m:
        return
    section = m.group(1)
    keys = [layer.comfy_key for layer in (*layers, *SDXL_LAYERS) if layer.comfy_key[0] == section]
    first, second = _parse_range(m.group(2), term), _parse_range(m.group(3), term)
    if section == "middle" and second is None:
        first, second = None, first
    elif section == "middle" and first is not None and first[-1] <= 1:
        first = None  # middle block 1 is ComfyUI_InstantID's name for the single middle block 0 (see _select)
    for position, wanted in ((1, first), (2, second)):
        if wanted is None or not keys:
            continue
        top = max(key[position] for key in keys)
        if wanted[-1] > top:
            what = "block" if position == 1 else "layer"
            raise PresetError(f"selector {term!r} names {what} {wanted[-1]}, but {section} has {what}s 0-{top} "
                              "at most")


def _select_spec(spec: str, layers: Sequence[LayerInfo]) -> set[str]:
    """Union of the ``+``-joined selectors in ``spec`` (named-preset data: empty matches are allowed)."""
    return {layer.name for term in spec.split("+") if term for layer in _select(term, layers)}


def _map_key(layers: Sequence[LayerInfo]) -> str:
    return map_name(layers) or "sdxl"


def _finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PresetError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise PresetError(f"{what} {value!r} is not finite")
    return number


def adaptive_layers(
    layers: Sequence[LayerInfo], ip_weight: float, threshold: float = _ADAPTIVE_THRESHOLD
) -> set[str]:
    """Names kept by the adaptive rule: ip_weight x (first matching multiplier, else 0) >= threshold."""
    multiplier: dict[str, float] = {}
    for spec, mult in _ADAPTIVE[_map_key(layers)]:
        for name in _select_spec(spec, layers):
            multiplier.setdefault(name, mult)
    return {
        layer.name
        for layer in layers
        if layer.name in multiplier and ip_weight * multiplier[layer.name] >= threshold - _EPS
    }


def _parse_window(text: str) -> tuple[float, float]:
    m = _WINDOW_RE.match(text)
    if not m:
        raise PresetError(f"cannot parse step window {'@' + text!r}")
    start, end = float(m.group(1)), float(m.group(2))
    if not 0.0 <= start < end <= 1.0:
        raise PresetError(f"step window @{text} needs 0 <= START < END <= 1")
    return start, end


def preset_window(spec: str) -> tuple[float, float]:
    """The step window of a spec (``"fast@0-0.5"`` -> (0.0, 0.5)); (0, 1) when it has none."""
    _, at, window = "".join(spec.split()).partition("@")
    return _parse_window(window) if at else (0.0, 1.0)


def in_window(window: tuple[float, float], step: int, steps: int) -> bool:
    """Whether denoising step ``step`` of ``steps`` runs the face branch: START <= step/steps < END (half-open,
    so adjacent windows tile without overlap). The pipeline and the benchmark both ask this."""
    start, end = window
    return start <= step / steps < end


def _named_term(
    term: str, layers: Sequence[LayerInfo], ip_weight: float, threshold: float
) -> set[str] | None:
    """Layers of a named preset term (``fast``, ``adaptive:0.3``), or None when ``term`` is not a name."""
    if term in _NAMED:
        chosen = _select_spec(getattr(_NAMED[term], _map_key(layers)), layers)
        if not chosen and term != "none":
            raise PresetError(
                f"preset {term!r} selects no layer of this {len(layers)}-layer map; use selectors"
            )
        return chosen
    head, sep, tail = term.partition(":")
    if head == "adaptive":
        if sep:
            threshold = _finite(tail, "adaptive threshold")
        return adaptive_layers(layers, ip_weight, threshold)
    return None


def _describe_named(term: str, layers: Sequence[LayerInfo], ip_weight: float, threshold: float) -> str:
    if term.startswith("adaptive"):
        _, sep, tail = term.partition(":")
        used = float(tail) if sep else threshold
        text = f"{_ADAPTIVE_DESCRIPTION} (ip_weight {ip_weight:g}, threshold {used:g})"
        extra = ", ".join(f"{spec} {mult:g}" for spec, mult in _ADAPTIVE["sd15"])
    else:
        text, extra = _NAMED[term].description, _NAMED[term].sd15
    if map_name(layers) == "sd15":
        text += f" [SD1.5 by role: {extra or 'no layer'}]"
    return text


def resolve_preset(
    spec: str,
    layers: Sequence[LayerInfo] = SDXL_LAYERS,
    *,
    ip_weight: float = 0.8,
    threshold: float = _ADAPTIVE_THRESHOLD,
) -> Preset:
    """Resolve a preset spec against a layer map; raises PresetError (message lists the accepted forms)."""
    if not isinstance(spec, str):
        raise PresetError(f"preset spec must be a string, got {type(spec).__name__}")
    ip_weight, threshold = _finite(ip_weight, "ip_weight"), _finite(threshold, "threshold")
    text = "".join(spec.split()).lower()
    if not text:
        raise PresetError("empty preset spec")
    if "," in text:
        raise PresetError(f"{spec!r} contains a comma; commas separate presets, use '+' inside one spec")
    body, _, window_text = text.partition("@")
    start, end = _parse_window(window_text) if "@" in text else (0.0, 1.0)
    if not body:
        raise PresetError(f"{spec!r} has a step window but no layers")

    chosen: set[str] = set()
    descriptions: list[str] = []
    for term in body.split("+"):
        if not term:
            raise PresetError(f"empty term in {spec!r}")
        named = _named_term(term, layers, ip_weight, threshold)
        if named is not None:
            chosen |= named
            descriptions.append(_describe_named(term, layers, ip_weight, threshold))
            continue
        matched = _select(term, layers)
        if not matched:
            raise PresetError(f"selector {term!r} matches no layer of this {len(layers)}-layer map")
        _check_indices(term, layers)
        chosen.update(layer.name for layer in matched)
        descriptions.append(f"selector {term}")

    description = "; ".join(descriptions)
    if (start, end) != (0.0, 1.0):
        description += f"; face branch active for denoising fraction {start:g}-{end:g}"
    logger.debug("preset %r -> %d layers, window %s-%s", text, len(chosen), start, end)
    return Preset(name=text, layers=frozenset(chosen), start=start, end=end, description=description)


def describe_presets(
    layers: Sequence[LayerInfo] = SDXL_LAYERS,
    *,
    ip_weight: float = 0.8,
    threshold: float = _ADAPTIVE_THRESHOLD,
) -> dict[str, dict[str, object]]:
    """``{name: {"count", "layers" (names in map order), "description"}}`` for every named preset."""
    out: dict[str, dict[str, object]] = {}
    for name in PRESET_NAMES:
        preset = resolve_preset(name, layers, ip_weight=ip_weight, threshold=threshold)
        ordered = [layer.name for layer in layers if layer.name in preset.layers]
        out[name] = {"count": len(ordered), "layers": ordered, "description": preset.description}
    return out


def select_layers(
    preset: Preset | str,
    layers: Sequence[LayerInfo] | None,
    *,
    available: Iterable[str] | None = None,
    ip_weight: float = 0.8,
    threshold: float = _ADAPTIVE_THRESHOLD,
) -> tuple[frozenset[str], list[str]]:
    """The layer names to patch for ``preset`` on a model, and warnings.

    ``layers`` is ``layer_map_for(unet)``. When it is None (the model matches no map) every layer in
    ``available`` (pass ``attn2_layer_names(unet)``) is patched, as "full", with a warning, unless the preset is
    "full" or "none", which need no map. A ``Preset`` naming layers outside ``layers`` was resolved against
    another map and is re-resolved by its name (with a warning); the maps share some names (e.g.
    ``up_blocks.1.attentions.0...``), so pass the spec string when the map may differ.
    """
    name = preset if isinstance(preset, str) else preset.name
    warnings: list[str] = []
    if layers is None:
        everything = frozenset(available or ())
        body = "".join(name.split()).lower().partition("@")[0]
        if body == "none":
            return frozenset(), warnings
        if body != "full":
            warnings.append(
                f"model matches no known layer map; preset {name!r} ignored, the face branch runs in all "
                f"{len(everything)} cross-attention layers (full)"
            )
            logger.warning(warnings[-1])
        return everything, warnings
    if isinstance(preset, str):
        return resolve_preset(preset, layers, ip_weight=ip_weight, threshold=threshold).layers, warnings
    known = {layer.name for layer in layers}
    if preset.layers <= known:
        return preset.layers, warnings
    warnings.append(f"preset {name!r} was resolved against another layer map; re-resolved for this model")
    logger.warning(warnings[-1])
    return resolve_preset(name, layers, ip_weight=ip_weight, threshold=threshold).layers, warnings

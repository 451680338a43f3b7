"""Layer presets: which cross-attention layers keep InstantID's face (IP) branch, and when.

A spec is a preset name or selectors joined by ``+``, optionally followed by a step window ``@START-END``
(the grammar, ``ACCEPTED_FORMS`` and a spec's normal form ``preset_key`` are in ``instantid/selectors.py``). Named
presets are data (``_NAMED``, ``_ADAPTIVE``), written as selector specs per layer map, and go through the same
parser as user selectors.

SD1.5: the SDXL presets name blocks by role. SDXL's output 0-2 are its deepest (1280-wide) decoder blocks; in SD1.5
those are output 3-5 (SD1.5's output 0-2 have no attention), so ``balanced`` / ``fast`` / ``adaptive`` use the same
roles shifted there; input 7-8 (deepest encoder) and the middle block keep their numbers. Any other layer map uses
the SDXL definitions, and a role-based preset that selects nothing there raises PresetError.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from instantid.layers import SDXL_LAYERS, LayerInfo, map_name
from instantid.selectors import (
    ACCEPTED_FORMS,
    PresetError,
    check_indices,
    in_window,
    parse_window,
    preset_key,
    preset_window,
    select_spec,
    select_term,
    split_presets,
)

__all__ = [  # the grammar's names are re-exported: the engine, the denoising step and the benchmark import them here
    "ACCEPTED_FORMS", "PRESET_NAMES", "Preset", "PresetError", "adaptive_layers", "describe_presets", "in_window",
    "preset_key", "preset_window", "resolve_preset", "select_layers", "split_presets",
]

logger = logging.getLogger(__name__)

PRESET_NAMES: tuple[str, ...] = ("full", "balanced", "fast", "output_only", "none", "adaptive")

_ADAPTIVE_THRESHOLD = 0.1  # default: keep a layer when ip_weight * multiplier >= 0.1
_EPS = 1e-9  # tolerance for the adaptive comparison (0.2 * 0.5 >= 0.1 must hold)


@dataclass(frozen=True)
class Preset:
    """A resolved preset: the layers that keep the face branch and the part of denoising it runs in."""

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
        for name in select_spec(spec, layers):
            multiplier.setdefault(name, mult)
    return {
        layer.name
        for layer in layers
        if layer.name in multiplier and ip_weight * multiplier[layer.name] >= threshold - _EPS
    }


def _named_term(
    term: str, layers: Sequence[LayerInfo], ip_weight: float, threshold: float
) -> set[str] | None:
    """Layers of a named preset term (``fast``, ``adaptive:0.3``), or None when ``term`` is not a name."""
    if term in _NAMED:
        chosen = select_spec(getattr(_NAMED[term], _map_key(layers)), layers)
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
    text = preset_key(spec)
    if not text:
        raise PresetError("empty preset spec")
    if "," in text:
        raise PresetError(f"{spec!r} contains a comma; commas separate presets, use '+' inside one spec")
    body, _, window_text = text.partition("@")
    start, end = parse_window(window_text) if "@" in text else (0.0, 1.0)
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
        matched = select_term(term, layers)
        if not matched:
            raise PresetError(f"selector {term!r} matches no layer of this {len(layers)}-layer map")
        check_indices(term, layers)
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
        body = preset_key(name).partition("@")[0]
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

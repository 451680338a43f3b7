"""Per-layer face-branch telemetry and the ``auto-K`` preset built from it.

Telemetry is ``norm(scale * face_out) / norm(text_out)`` per patched layer and denoising step, collected by the
face processors when ``FaceBranchState.telemetry`` is a dict. :func:`record_contributions` runs a generation's
denoising loop with every layer patched and returns each layer's mean ratio over the steps; ``auto-K`` keeps the
K layers with the largest mean ratio on the loaded model (``Engine.load_telemetry(path)`` then ``"auto-20"``).

The ratio measures how much the face branch adds to a layer's attention output relative to the text branch; it is
a proxy for the layer's influence on identity, not a measurement of identity itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .presets import Preset, PresetError, preset_key

logger = logging.getLogger(__name__)

AUTO_RE = re.compile(r"auto-(\d+)")  # the auto-K spec: "auto-20"
TELEMETRY_VERSION = 1  # bump when the JSON layout changes


def is_auto_spec(spec: object) -> re.Match[str] | None:
    """The match for an ``auto-K`` spec (whitespace and case ignored), else None."""
    if not isinstance(spec, str):
        return None
    return AUTO_RE.fullmatch(preset_key(spec))


def auto_preset(contributions: dict[str, float], k: int) -> Preset:
    """The ``k`` layers with the largest mean contribution (ties broken by layer name)."""
    if not contributions:
        raise PresetError("auto-K needs recorded telemetry; none was loaded (record it with "
                          "`python -m instantid.bench --telemetry` and load it with --telemetry-file or Engine.load_telemetry)")
    if k < 0 or k > len(contributions):
        raise PresetError(f"auto-{k}: K must be between 0 and {len(contributions)} (layers with telemetry)")
    ranked = sorted(contributions, key=lambda name: (-contributions[name], name))
    chosen = frozenset(ranked[:k])
    floor = contributions[ranked[k - 1]] if k else float("nan")
    return Preset(name=f"auto-{k}", layers=chosen,
                  description=f"the {k} layers with the largest measured face/text ratio (>= {floor:.4g})")


def contributions_from_telemetry(telemetry: dict[tuple[str, int], float]) -> dict[str, float]:
    """``{(layer, step): ratio}`` -> ``{layer: mean ratio over the recorded steps}``."""
    per_layer: dict[str, list[float]] = defaultdict(list)
    for (layer, _step), ratio in telemetry.items():
        per_layer[layer].append(float(ratio))
    return {layer: sum(values) / len(values) for layer, values in per_layer.items()}


def per_step(telemetry: dict[tuple[str, int], float]) -> dict[str, list[float]]:
    """``{layer: [ratio at step 0, 1, ...]}`` (steps in order)."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (layer, step), ratio in telemetry.items():
        out[layer].append((step, float(ratio)))
    return {layer: [r for _, r in sorted(values)] for layer, values in out.items()}


def record_telemetry(target: Any, *, steps: int = 30, width: int = 1024, height: int = 1024, seed: int = 0,
                     prompt: str | None = None, layers: frozenset[str] | None = None) -> dict[tuple[str, int], float]:
    """Run the denoising loop once and return the raw ``{(layer, step): ratio}`` telemetry.

    ``target`` is an :class:`~instantid.engine.Engine` (or anything with ``.pipe`` and ``.patcher``) or a pipeline
    with a face adapter attached. With an engine, ``layers`` (default: every face layer) are patched for the run
    and the previous set is restored; with a bare pipeline the layers patched now are used. The face embedding
    is random unless the stack is used through ``Engine.generate`` instead; the text is ``prompt`` when the stack
    has text encoders, else random."""
    from .step import build_step_inputs, denoise

    pipe = getattr(target, "pipe", target)
    patcher = getattr(target, "patcher", None)
    state = pipe.face_state
    if state is None:
        raise RuntimeError("no face adapter attached: telemetry needs the face processors")
    previous = patcher.patched if patcher is not None else None
    if patcher is not None:
        patcher.apply(frozenset(patcher.face) if layers is None else layers)
        patcher.clear_cache()
    state.telemetry = {}
    try:
        inputs = build_step_inputs(pipe, width, height, steps, prompt=prompt, seed=seed)
        denoise(pipe, inputs, state)
        return dict(state.telemetry)
    finally:
        state.telemetry = None
        if patcher is not None:
            patcher.clear_cache()
            patcher.apply(previous)


def record_contributions(target: Any, **kwargs: Any) -> dict[str, float]:
    """``{layer: mean face/text ratio}`` over one denoising run (see :func:`record_telemetry` for arguments)."""
    return contributions_from_telemetry(record_telemetry(target, **kwargs))


def save_telemetry(path: str | Path, telemetry: dict[tuple[str, int], float], meta: dict | None = None) -> Path:
    """Write contributions, per-step ratios and ``meta`` (stack, size, steps, versions) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contributions = contributions_from_telemetry(telemetry)
    payload = {"version": TELEMETRY_VERSION, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "meta": meta or {}, "contributions": dict(sorted(contributions.items())),
               "per_step": dict(sorted(per_step(telemetry).items()))}
    path.write_text(json.dumps(payload, indent=2))
    logger.info("telemetry for %d layers written to %s", len(contributions), path)
    return path


def load_telemetry(path: str | Path) -> dict[str, float]:
    """The ``{layer: mean ratio}`` contributions saved by :func:`save_telemetry`."""
    try:
        payload = json.loads(Path(path).read_text())
        contributions = payload["contributions"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read telemetry from {path}: {exc}") from exc
    if not isinstance(contributions, dict) or not contributions:
        raise ValueError(f"telemetry file {path} has no per-layer contributions")
    return {str(name): float(value) for name, value in contributions.items()}


__all__ = ["auto_preset", "contributions_from_telemetry", "is_auto_spec", "load_telemetry", "record_contributions",
           "record_telemetry", "save_telemetry"]

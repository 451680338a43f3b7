"""The study's verdict settings in one place: margin, alpha, primary preset, gold screening (``VerdictConfig``).

Read from the environment by :func:`from_env` (``REVIEW_MARGIN``, ``REVIEW_ALPHA``, ``REVIEW_PRIMARY_PRESET``,
``REVIEW_GOLD_ALPHA``, ``REVIEW_SCREEN_BY``, ``REVIEW_DESIGN_VOTES``) and set by the CLI flags of
``python -m review leaderboard`` / ``python -m review simulate``. docs/statistics.md explains every default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

logger = logging.getLogger(__name__)

SCREEN_UNITS = ("session", "reviewer")


@dataclass(frozen=True)
class VerdictConfig:
    """Declared with the study, before its votes are read."""

    # ABX accuracy at which the images count as distinguishable: 0.55 = 10 % identification (2 * 0.55 - 1),
    # the proposal's "< 10 % of people can identify the selective image"
    margin: float = 0.55
    alpha: float = 0.05  # one-sided error rate of each verdict, for the family of presets (Holm)
    power: float = 0.8  # design power of the prospective vote plan (``planned_votes``)
    # effective votes per preset at which the anytime-valid bounds are tightest (the mixture's tuning point);
    # the bounds stay valid at every other look, they are only a little wider there
    design_votes: int = 800
    primary_preset: str | None = None  # None: Holm over all presets; a name: that preset gets the whole alpha
    gold_alpha: float = 0.35  # screening: pass when chance would score this well on the gold at most this often
    gold_chance: float = 0.5  # chance of answering a gold/catch trial right by guessing (upper bound: 2 options)
    screen_by: str = "session"  # unit of gold screening: 'session' (reviewer_id, session) or 'reviewer'

    def __post_init__(self) -> None:
        if not 0.5 < self.margin < 1.0:
            raise ValueError(f"margin is an ABX accuracy in (0.5, 1), not {self.margin}")
        for name in ("alpha", "gold_alpha", "gold_chance", "power"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), not {getattr(self, name)}")
        if self.design_votes < 1:
            raise ValueError("design_votes must be at least 1")
        if self.screen_by not in SCREEN_UNITS:
            raise ValueError(f"screen_by must be one of {SCREEN_UNITS}, not {self.screen_by!r}")

    @property
    def identification_margin(self) -> float:
        """The margin as the guessing-corrected share of people who can identify the image (2 * acc - 1)."""
        return 2 * self.margin - 1


ENV: dict[str, str] = {"margin": "REVIEW_MARGIN", "alpha": "REVIEW_ALPHA", "primary_preset": "REVIEW_PRIMARY_PRESET",
                       "gold_alpha": "REVIEW_GOLD_ALPHA", "screen_by": "REVIEW_SCREEN_BY",
                       "design_votes": "REVIEW_DESIGN_VOTES"}


def from_env(environ: Mapping[str, str] | None = None, base: VerdictConfig | None = None) -> VerdictConfig:
    """``base`` (default ``VerdictConfig()``) with the fields set in the environment; a bad value raises ValueError
    naming the variable."""
    environ = os.environ if environ is None else environ
    config = base or VerdictConfig()
    types = {f.name: f.type for f in fields(VerdictConfig)}
    changes: dict[str, object] = {}
    for name, var in ENV.items():
        text = environ.get(var)
        if text is None or text == "":
            continue
        try:
            kind = types[name]
            changes[name] = (float(text) if kind == "float" else int(text) if kind == "int" else text)
        except ValueError:
            raise ValueError(f"{var}={text!r} is not a valid {name}") from None
    try:
        return replace(config, **changes)
    except ValueError as exc:
        raise ValueError(f"verdict settings from the environment: {exc}") from None

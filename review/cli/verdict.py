"""Command-line flags for ``VerdictConfig`` (shared by ``review leaderboard``, ``review export``, ``review simulate``).

Defaults come from the environment (``REVIEW_MARGIN`` ...; ``review.stats.verdict_config.from_env``), then the flags.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from review.stats.verdict_config import SCREEN_UNITS, VerdictConfig, from_env

logger = logging.getLogger(__name__)


def _open_interval(low: float, high: float, what: str):
    """An argparse type: a float strictly between ``low`` and ``high`` (the error message says ``what``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"{what} ({low:g}, {high:g}), not {value}")
        return value

    return parse


_margin = _open_interval(0.5, 1.0, "the margin is an ABX accuracy in")
_unit = _open_interval(0.0, 1.0, "must be in")


def add_verdict_options(parser: argparse.ArgumentParser) -> None:
    """--margin, --alpha, --primary-preset, --gold-alpha, --screen-by (None: the environment's or the default)."""
    add = parser.add_argument
    add("--margin", type=_margin, default=None,
        help="ABX accuracy counted as distinguishable; 0.55 = 10%% identification (default 0.55, env REVIEW_MARGIN)")
    add("--alpha", type=_unit, default=None, help="family-wise error rate of each verdict (default 0.05)")
    add("--primary-preset", default=None, help="the one preset tested at the whole alpha (default: Holm over all)")
    add("--gold-alpha", type=_unit, default=None,
        help="gold screening: pass when guessing would do this well at most this often (default 0.35)")
    add("--screen-by", choices=SCREEN_UNITS, default=None, help="gold screening unit (default session)")


def verdict_config(args: argparse.Namespace) -> VerdictConfig:
    """The environment's ``VerdictConfig`` with the flags given on the command line."""
    config = from_env()
    changes = {name: getattr(args, name) for name in ("margin", "alpha", "primary_preset", "gold_alpha",
                                                       "screen_by") if getattr(args, name, None) is not None}
    return replace(config, **changes) if changes else config


def default_config() -> VerdictConfig:
    """``VerdictConfig`` from the environment (the app's settings)."""
    return from_env()

"""Study settings kept with the database: how much a reviewer is told, how reviewers are identified, who sees the
leaderboard.

| key | values | default | meaning |
|---|---|---|---|
| ``reveal`` | ``none`` / ``end`` / ``each`` | ``none`` | after each vote nothing is said (``none``); a session summary after the last vote (``end``: counts only, never which side was which); which side was which after every vote (``each``: training and demos, not for measured studies) |
| ``identity`` | ``open`` / ``invite`` / ``hf`` | ``open`` | anonymous server-signed reviewers (``open``); only holders of an invite link (``invite``, ``python -m review invites``); Hugging Face login on Spaces, optionally an allow-list (``hf``) |
| ``leaderboard_public`` | ``0`` / ``1`` | ``0`` | the leaderboard for everyone (``1``, e.g. after the study) or the admin only |

Effective value: the app's flag, else its environment variable (``REVIEW_REVEAL``, ``REVIEW_IDENTITY``,
``REVIEW_LEADERBOARD_PUBLIC``), else the database (``python -m review settings --db F key=value``), else the default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

REVEALS = ("none", "end", "each")
IDENTITIES = ("open", "invite", "hf")
CHOICES: dict[str, tuple[str, ...]] = {"reveal": REVEALS, "identity": IDENTITIES, "leaderboard_public": ("0", "1")}
DEFAULTS = {"reveal": "none", "identity": "open", "leaderboard_public": "0"}
ENV = {"reveal": "REVIEW_REVEAL", "identity": "REVIEW_IDENTITY", "leaderboard_public": "REVIEW_LEADERBOARD_PUBLIC"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting name or value that is not allowed; the message says what is."""


def check_setting(key: object, value: object) -> str:
    """The normalised value of ``key`` (lower case; booleans as '0'/'1'), or SettingError."""
    if not isinstance(key, str) or key not in CHOICES:
        raise SettingError(f"unknown setting {key!r}; settings are: {', '.join(CHOICES)}")
    text = str(value).strip().lower() if isinstance(value, (str, bool, int)) else None
    if key == "leaderboard_public" and text is not None:
        text = "1" if text in _TRUE else "0" if text in _FALSE else text
    if text not in CHOICES[key]:
        raise SettingError(f"{key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    return text


@dataclass(frozen=True)
class StudySettings:
    """The study's settings, stored in the database (python -m review settings changes them)."""
    reveal: str = "none"  # none | end | each (see the module table)
    identity: str = "open"  # open | invite | hf
    leaderboard_public: bool = False  # False: the leaderboard answers the admin only

    @classmethod
    def resolve(cls, stored: Mapping[str, str], *overrides: Mapping[str, object | None]) -> StudySettings:
        """Defaults, then the stored values, then each mapping of ``overrides`` in turn (None: not given);
        every value checked (SettingError names the bad one)."""
        values = dict(DEFAULTS)
        for source in (stored, *overrides):
            for key, value in source.items():
                if value is not None and key in CHOICES:
                    values[key] = check_setting(key, value)
        return cls(values["reveal"], values["identity"], values["leaderboard_public"] == "1")

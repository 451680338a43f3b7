"""The one error type for input a user gave that cannot be used (CLI, admin tab, uploads)."""

from __future__ import annotations


class InputError(ValueError):
    """Input the generation cannot use; ``str(error)`` is the message for the user (one problem per line)."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(problems))

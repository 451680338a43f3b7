"""What every ``python -m review`` command shares: logging set-up, the error exit, opening an existing study."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from review.store import Store

logger = logging.getLogger(__name__)


def setup_logging(verbose: bool) -> None:
    """Log to stderr: INFO with --verbose, else WARNING."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def error(message: str) -> int:
    """Print ``message`` for the user and return the bad-input exit code (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def open_existing_study(db: str, *, writable: bool = False) -> Store | None:
    """The study at ``db`` (read-only unless ``writable``), or None after printing why it cannot be opened
    (never creates a database)."""
    from review.stats.board import StudyDatabaseError, open_study

    try:
        return open_study(db, writable=writable)
    except StudyDatabaseError as exc:
        error(str(exc))
        return None

"""The study's leaderboard from the store: store rows mapped to ``review.stats.leaderboard``'s input rows.

``Store.list_pairs()`` and ``Store.vote_rows()`` already carry every key the leaderboard reads under the same names,
so the mapping is a projection onto the documented keys (extra columns such as prompts, image files and client
hashes are dropped) with ``is_gold`` turned into a bool. A store row lacking one of the keys is a contract break
and raises :class:`StudyInputError` naming the missing keys, instead of being silently read as ``None``.

Also here: ``open_study(path)`` (an existing database only, for the CLIs) and ``board_view(store)`` / ``board(store)``
(the leaderboard tab's table, plots and verdict text from one computation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from review.stats.leaderboard import leaderboard
from review.store import LATEST, Store, StoreError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

Row = dict[str, Any]
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every non-empty SQLite database file

# keys of a pair row as review.stats.leaderboard documents them (all present in Store.list_pairs())
PAIR_KEYS: tuple[str, ...] = (
    "pair_id", "preset", "layer_count", "condition_id", "ssim",
    "id_cos_sel_full", "id_cos_sel_ref", "id_cos_full_ref", "identity_failure",
    "full_step_median_s", "sel_step_median_s", "full_run_id", "sel_run_id", "full_device", "sel_device",
)
# keys of a vote row as review.stats.leaderboard documents them (all present in Store.vote_rows())
VOTE_KEYS: tuple[str, ...] = (
    "trial_id", "pair_id", "preset", "condition_id", "reviewer_id", "session", "mode", "is_gold", "left_arm",
    "x_arm", "choice", "outcome", "correct",
)


class StudyInputError(KeyError):
    """A store row lacks a key the leaderboard needs (the store and the leaderboard contracts disagree)."""


class StudyDatabaseError(StoreError):
    """The database file to read is missing or is not a study database."""


def open_study(db: str | Path, *, writable: bool = False) -> Store:
    """Open an existing study database read-only (``mode=ro``: no WAL switch, no migration, nothing written);
    ``writable`` (the commands that change settings or add invites): read-write, migrated to this code's schema.
    Never creates a file. Raises StudyDatabaseError (one sentence) for a missing, non-SQLite, damaged or foreign
    file, or one whose schema is older or newer than this code."""
    path = Path(db).expanduser()
    if not path.is_file():
        raise StudyDatabaseError(f"no study database at {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StudyDatabaseError(f"cannot read {path}: {exc}") from exc
    if header != SQLITE_MAGIC:  # checked here: the store wraps only its own errors, and SQL stays in the store
        raise StudyDatabaseError(f"{path} is not an SQLite database")
    try:
        store = Store(path, migrate=writable, read_only=not writable)
    except StoreError as exc:
        raise StudyDatabaseError(str(exc)) from exc
    try:
        version = store.schema_version()
        if version == 0:
            raise StudyDatabaseError(f"{path} is not a study database (no migrations recorded)")
        if version != LATEST:
            older = version < LATEST
            raise StudyDatabaseError(
                f"{path} has schema v{version}, {'older' if older else 'newer'} than this code's v{LATEST}; "
                + ("open it once with the app or `review generate` to migrate it (read-only commands never write)"
                   if older else "update the code"))
    except BaseException:
        store.close()
        raise
    return store


def _project(rows: Iterable[Mapping[str, Any]], keys: tuple[str, ...], what: str) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise StudyInputError(f"{what} row lacks {', '.join(missing)} (has {', '.join(sorted(row))})")
        out.append({k: row[k] for k in keys})
    return out


def pair_inputs(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """``Store.list_pairs()`` rows -> leaderboard pair rows."""
    return _project(rows, PAIR_KEYS, "pair")


def vote_inputs(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """``Store.vote_rows()`` rows -> leaderboard vote rows (``is_gold`` as bool; SQLite stores 0/1)."""
    out = _project(rows, VOTE_KEYS, "vote")
    for row in out:
        row["is_gold"] = bool(row["is_gold"])
    return out


def leaderboard_inputs(store: Store) -> tuple[list[Row], list[Row]]:
    """(pairs, votes) in the input format of ``review.stats.leaderboard.leaderboard``."""
    pairs, votes = pair_inputs(store.list_pairs()), vote_inputs(store.vote_rows())
    logger.debug("leaderboard inputs: %d pairs, %d votes", len(pairs), len(votes))
    return pairs, votes


def compute_leaderboard(store: Store, **kw: Any) -> dict[str, Any]:
    """``review.stats.leaderboard.leaderboard`` over the whole store; ``kw`` are its options (config, margin, alpha,
    power, seed, n_boot, n_boot_cluster, n_boot_bt, exclude_reviewers)."""
    pairs, votes = leaderboard_inputs(store)
    return leaderboard(pairs, votes, **kw)  # type: ignore[return-value]


class BoardView(NamedTuple):
    """Everything the leaderboard tab shows, from one computation."""

    table: dict[str, list]  # {"headers": [...], "data": [[...], ...]}: a gr.Dataframe value
    ssim_plot: Figure  # step-time ratio vs SSIM
    identity_plot: Figure  # step-time ratio vs identity cosine
    markdown: str  # verdicts, side bias, reviewers, Bradley-Terry, rules
    result: dict[str, Any]  # the raw leaderboard (JSON-ready)


def board_view(store: Store, *, include_failing: bool = False, **kw: Any) -> BoardView:
    """The leaderboard tab's content: ``compute_leaderboard(store, **kw)`` rendered by ``review.stats.leaderboard_view``
    (by default without the reviewers failing the gold screening; ``include_failing``: with them)."""
    from review.stats.leaderboard_view import speed_quality_plot, table, verdicts_markdown

    result = compute_leaderboard(store, **kw)
    headers, rows = table(result, include_failing)
    return BoardView({"headers": headers, "data": rows}, speed_quality_plot(result, "ssim", include_failing),
                     speed_quality_plot(result, "identity", include_failing),
                     verdicts_markdown(result, include_failing), result)


def board(store: Store, **kw: Any) -> tuple[dict[str, list], Figure]:
    """(table, SSIM plot): the ``BoardFn`` shape of ``review.study.services`` (bind the store with a lambda/partial)."""
    view = board_view(store, **kw)
    return view.table, view.ssim_plot

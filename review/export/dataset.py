"""The one export of a study: a folder that is a Hugging Face dataset (Parquet + card), with CSV and JSON beside.

``export_dataset(store, out_dir)`` writes::

    README.md                 dataset card: YAML ``configs`` (votes, pairs, trials), provenance, study settings,
                              the leaderboard's verdicts, column docs (review.export.card)
    votes/votes.parquet       one folder per table, Parquet only, so ``load_dataset("parquet", data_dir=...)``
    pairs/pairs.parquet       reads a table's folder and ``load_dataset(out_dir, "votes")`` the card's configs
    trials/trials.parquet
    csv/{votes,pairs,trials}.csv
    json/{votes,pairs,trials}.json     {"provenance": {...}, "rows": [...]}
    leaderboard.json          {"provenance": {...}, <the leaderboard result>}
    leaderboard.csv           the readable table of review.stats.leaderboard_view

The Export tab and ``python -m review export`` both call it: same study, same options, same clock -> same bytes.
Reviewer ids are always pseudonymised with the study's salt (``review.export.sidecar``), in the tables and in the
leaderboard. ``full=False`` (a public export) also drops unanswered trials and the private columns (session,
client hash). Every file is written under a temporary name in its folder and renamed into place.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from review.export.sidecar import load_study_settings, pseudonym, study_salt
from review.stats.board import compute_leaderboard
from review.stats.leaderboard_view import table
from review.store import Store, utc_now

logger = logging.getLogger(__name__)

Row = dict[str, Any]
TABLE_KINDS: tuple[str, ...] = ("votes", "pairs", "trials")
FORMATS: tuple[str, ...] = ("parquet", "csv", "json")
PRIVATE_COLUMNS: tuple[str, ...] = ("session", "client")  # dropped when full=False
REVIEWER_COLUMNS: tuple[str, ...] = ("reviewer_id",)  # pseudonymised in every export


class ExportError(ValueError):
    """A bad export request (unknown format, output path that is not a directory, no hub token)."""


@functools.lru_cache(maxsize=1)
def app_sha() -> str | None:
    """The git commit of this code (``git rev-parse HEAD`` in its folder), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def provenance(store: Store, kind: str, exported_at: str, **extra: Any) -> Row:
    """Where an export came from: app commit, export time, schema version, database file name, what it holds."""
    database = store.path.name if isinstance(store.path, Path) else str(store.path)
    return {"app_sha": app_sha(), "exported_at": exported_at, "schema_version": store.schema_version(),
            "database": database, "kind": kind, **extra}


class Pseudonymiser:
    """Reviewer id -> HMAC pseudonym with the study's salt (review.export.sidecar); other values pass through."""

    def __init__(self, store: Store) -> None:
        self.salt = study_salt(store.path)
        self.known: dict[str, str] = {}

    def __call__(self, reviewer_id: Any) -> Any:
        """The pseudonym of a reviewer id (other values pass through unchanged)."""
        if not isinstance(reviewer_id, str) or not reviewer_id:
            return reviewer_id
        if reviewer_id not in self.known:
            self.known[reviewer_id] = pseudonym(self.salt, reviewer_id)
        return self.known[reviewer_id]

    def rows(self, rows: list[Row]) -> list[Row]:
        """The rows with every reviewer column replaced by its pseudonym."""
        return [{k: self(v) if k in REVIEWER_COLUMNS else v for k, v in row.items()} for row in rows]

    def deep(self, value: Any) -> Any:
        """Any reviewer id already seen in the tables, replaced anywhere in a JSON-like value (keys too)."""
        if isinstance(value, dict):
            return {self.known.get(k, k) if isinstance(k, str) else k: self.deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return self.known.get(value, value) if isinstance(value, str) else value


def table_rows(store: Store, kind: str, *, full: bool = True) -> list[Row]:
    """The flat store rows of one table kind ('votes', 'pairs', 'trials'); reviewer ids NOT yet pseudonymised."""
    fetch: dict[str, Callable[[], list[Row]]] = {"votes": store.vote_rows, "pairs": store.list_pairs,
                                                 "trials": store.trial_rows}
    rows = fetch[_check(kind, TABLE_KINDS, "kind")]()
    if not full:
        if kind == "trials":
            rows = [r for r in rows if r.get("vote_id") is not None]
        rows = [{k: v for k, v in r.items() if k not in PRIVATE_COLUMNS} for r in rows]
    return rows


def _check(value: object, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ExportError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = False) -> Path:
    """Write through ``write(handle)`` into a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = {} if binary else {"newline": "", "encoding": "utf-8"}
    handle = tempfile.NamedTemporaryFile("wb" if binary else "w", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False, **text)
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A CSV with a header line (none when ``headers`` is empty: an empty table has no known columns)."""

    def write(handle: Any) -> None:
        writer = csv.writer(handle)
        if headers:
            writer.writerow(headers)
        writer.writerows(rows)

    return _atomic_write(path, write)


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temporary file, then rename); returns the path."""
    return _atomic_write(path, lambda h: (json.dump(data, h, indent=1, default=str, allow_nan=False),
                                          h.write("\n")))


def write_parquet(path: Path, rows: Sequence[Row], columns: Sequence[str]) -> Path:
    """Rows as a Parquet table (pyarrow infers each column's type; a column mixing types is stored as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for name in columns:
        values = [row.get(name) for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    data = pa.table(arrays, names=list(columns))
    return _atomic_write(path, lambda h: pq.write_table(data, h, compression="zstd"), binary=True)


def columns_of(rows: Sequence[Row]) -> list[str]:
    """Every key of the rows, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


def export_dataset(store: Store, out_dir: str | Path, *, full: bool = True, formats: Sequence[str] = FORMATS,
                   exported_at: str | None = None, include_failing: bool = False,
                   **leaderboard_kw: Any) -> list[Path]:
    """Write the study as a dataset folder (see the module doc) into ``out_dir`` (created when missing; must not
    be an existing non-directory); returns the paths written, README.md last. ``formats``: which of parquet, csv,
    json to write for the tables (the leaderboard and the card are always written). ``leaderboard_kw`` go to
    ``review.stats.leaderboard.leaderboard`` (margin, seed, n_boot, ...); ``include_failing``: leaderboard.csv with the
    reviewers failing the gold screening (leaderboard.json always has both views)."""
    from review.export.card import render_card

    formats = [_check(f, FORMATS, "format") for f in formats]
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    when = exported_at or utc_now()
    ids = Pseudonymiser(store)
    written: list[Path] = []
    tables: dict[str, tuple[list[Row], list[str]]] = {}
    for kind in TABLE_KINDS:
        rows = ids.rows(table_rows(store, kind, full=full))
        columns = columns_of(rows)
        tables[kind] = (rows, columns)
        if "parquet" in formats and columns:  # an empty table has no columns: nothing a dataset could load
            written.append(write_parquet(out / kind / f"{kind}.parquet", rows, columns))
        if "csv" in formats:
            written.append(write_csv(out / "csv" / f"{kind}.csv", columns, [[r.get(c) for c in columns] for r in rows]))
        if "json" in formats:
            written.append(write_json(out / "json" / f"{kind}.json",
                                      {"provenance": provenance(store, kind, when, n_rows=len(rows), full=full),
                                       "rows": rows}))
    result = ids.deep(compute_leaderboard(store, **leaderboard_kw))
    written.append(write_json(out / "leaderboard.json", {"provenance": provenance(store, "leaderboard", when),
                                                          **result}))
    headers, board_rows = table(result, include_failing)
    written.append(write_csv(out / "leaderboard.csv", headers, board_rows))
    card = render_card(provenance=provenance(store, "dataset", when, full=full), tables=tables,
                       parquet="parquet" in formats, settings=load_study_settings(store.path), leaderboard=result)
    written.append(_atomic_write(out / "README.md", lambda h: h.write(card)))
    logger.info("exported %d files to %s", len(written), out)
    return written

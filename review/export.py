"""Exports of the study: votes, pairs, trials (flat store rows) and the leaderboard, as CSV or JSON.

- ``export_all(store, out_dir, fmt)``: the CLI's export into any directory the user names (created when missing).
- ``export_file(store, kind, fmt, folder)``: one file with a fixed name (``votes.csv``, ``leaderboard.json``, ...)
  in a folder the caller owns; ``kind`` and ``fmt`` are validated against fixed sets, so no user-controlled text
  ever becomes a path component (for the UI).
JSON files are ``{"provenance": {...}, "rows": [...]}`` (the leaderboard: its whole result beside provenance);
CSV files hold the rows only (the leaderboard CSV holds the readable table of ``review.leaderboard_view``).
Files are written to a temporary name in the same folder and renamed, so a reader never sees half a file.
``full=False`` drops unanswered trials and the private columns (session, client hash), as a public export must.
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

from review.leaderboard_view import table
from review.store import Store, utc_now
from review.study import compute_leaderboard

logger = logging.getLogger(__name__)

Row = dict[str, Any]
TABLE_KINDS: tuple[str, ...] = ("votes", "pairs", "trials")
KINDS: tuple[str, ...] = (*TABLE_KINDS, "leaderboard")
FORMATS: tuple[str, ...] = ("csv", "json")
PRIVATE_COLUMNS: tuple[str, ...] = ("session", "client")  # dropped when full=False


class ExportError(ValueError):
    """A bad export request (unknown kind/format, output path that is not a directory)."""


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


def provenance(store: Store, kind: str, **extra: Any) -> Row:
    """Where an export came from: app commit, export time, schema version, database file, what it holds."""
    return {"app_sha": app_sha(), "exported_at": utc_now(), "schema_version": store.schema_version(),
            "database": str(store.path), "kind": kind, **extra}


def table_rows(store: Store, kind: str, *, full: bool = True) -> list[Row]:
    """The flat store rows of one table kind ('votes', 'pairs', 'trials')."""
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


def _atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Write through ``write(handle)`` into a temporary file beside ``path``, then rename it into place."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False, newline="", encoding="utf-8")
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
    return _atomic_write(path, lambda h: (json.dump(data, h, indent=1, default=str, allow_nan=False),
                                          h.write("\n")))


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _write(store: Store, kind: str, fmt: str, folder: Path, *, full: bool,
           result: Row | None, leaderboard_kw: dict[str, Any], include_failing: bool = False) -> Path:
    path = folder / f"{kind}.{fmt}"
    if kind == "leaderboard":
        result = result if result is not None else compute_leaderboard(store, **leaderboard_kw)
        if fmt == "json":
            return write_json(path, {"provenance": provenance(store, kind), **result})
        headers, rows = table(result, include_failing)  # default: failing reviewers left out (JSON has both)
        return write_csv(path, headers, rows)
    rows = table_rows(store, kind, full=full)
    if fmt == "json":
        return write_json(path, {"provenance": provenance(store, kind, n_rows=len(rows), full=full), "rows": rows})
    headers = _columns(rows)
    return write_csv(path, headers, [[r.get(h) for h in headers] for r in rows])


def export_file(store: Store, kind: str, fmt: str, folder: str | Path, *, full: bool = True,
                include_failing: bool = False, **leaderboard_kw: Any) -> Path:
    """Write ``<kind>.<fmt>`` into ``folder`` (created when missing); returns its path.

    ``kind`` in {votes, pairs, trials, leaderboard}, ``fmt`` in {csv, json}; anything else raises ExportError
    before touching the disk. ``leaderboard_kw`` go to ``review.leaderboard.leaderboard`` (config, seed, ...);
    ``include_failing``: the leaderboard CSV table with the reviewers failing the gold screening."""
    kind, fmt = _check(kind, KINDS, "kind"), _check(fmt, FORMATS, "format")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = _write(store, kind, fmt, folder, full=full, result=None, leaderboard_kw=leaderboard_kw,
                  include_failing=include_failing)
    logger.info("exported %s", path)
    return path


def export_all(store: Store, out_dir: str | Path, fmt: str, *, full: bool = True, include_failing: bool = False,
               **leaderboard_kw: Any) -> list[Path]:
    """votes, pairs, trials in ``fmt`` plus leaderboard.json (and leaderboard.csv when ``fmt`` is csv) in
    ``out_dir`` (created when missing; must not be an existing non-directory). Returns the paths written."""
    fmt = _check(fmt, FORMATS, "format")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = [_write(store, kind, fmt, out, full=full, result=None, leaderboard_kw={}) for kind in TABLE_KINDS]
    result = compute_leaderboard(store, **leaderboard_kw)
    written.append(_write(store, "leaderboard", "json", out, full=full, result=result, leaderboard_kw={}))
    if fmt == "csv":
        written.append(_write(store, "leaderboard", "csv", out, full=full, result=result, leaderboard_kw={},
                              include_failing=include_failing))
    logger.info("exported %d files to %s", len(written), out)
    return written

"""The Export tab: votes, pairs and trials as CSV and JSON download buttons.

Exports hold answer keys (which side showed which arm), so with an admin password configured they need it
(checked on the server on every call). Without one (a local study) anyone may export, but unanswered trials,
sessions and client hashes are left out, so an export never reveals the key of a trial still on someone's page.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from review.store import Store
from review.trials import VoteRefused
from review.ui.review_tab import request_address
from review.ui.services import Services

logger = logging.getLogger(__name__)

TABLES = ("votes", "pairs", "trials")
FORMATS = ("csv", "json")
PRIVATE_COLUMNS = ("session", "client")  # dropped from public (password-less) exports
# reviewer ids are hashed in public exports: a known id could be claimed by another browser
EXPORT_MAX_AGE_S = 3600.0


def export_rows(store: Store, *, full: bool) -> dict[str, list[dict[str, Any]]]:
    """The three tables as flat rows; ``full=False`` drops unanswered trials and private columns."""
    tables = {"votes": store.vote_rows(), "pairs": store.list_pairs(), "trials": store.trial_rows()}
    if not full:
        tables["trials"] = [r for r in tables["trials"] if r.get("vote_id") is not None]
        tables = {name: [_public(r) for r in rows] for name, rows in tables.items()}
    return tables


def _public(row: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in row.items() if k not in PRIVATE_COLUMNS}
    if row.get("reviewer_id"):
        row["reviewer_id"] = hashlib.sha256(f"reviewer:{row['reviewer_id']}".encode()).hexdigest()[:16]
    return row


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def write_exports(store: Store, folder: str | Path, *, full: bool) -> dict[str, Path]:
    """Write votes/pairs/trials .csv and .json into ``folder``; returns 'votes.csv' -> path, ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, rows in export_rows(store, full=full).items():
        csv_path = folder / f"{name}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=_columns(rows))
            writer.writeheader()
            writer.writerows(rows)
        json_path = folder / f"{name}.json"
        json_path.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
        written[csv_path.name], written[json_path.name] = csv_path, json_path
    return written


def clean_exports(root: Path, max_age_s: float = EXPORT_MAX_AGE_S) -> None:
    if not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)


def handlers(services: Services) -> dict[str, Any]:
    def prepare(password: Any, request: gr.Request) -> list[Any]:
        full, address = bool(services.config.admin_password), request_address(request, services)
        try:
            if full:
                services.check_admin(password, address, request.session_hash)
            else:  # open exports are still limited per address (each call writes files)
                assert services.admin_limiter is not None
                services.admin_limiter.check(f"export:{address}", "export requests")
        except VoteRefused as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        clean_exports(services.dirs.exports)
        folder = services.dirs.exports / secrets.token_hex(16)
        files = write_exports(services.store, folder, full=full)
        logger.info("exports written to %s (full=%s)", folder, full)
        note = "All rows." if full else "No admin password configured: answered trials only, no client columns."
        return [note, *(gr.DownloadButton(value=str(files[f"{t}.{f}"]), visible=True)
                        for t in TABLES for f in FORMATS)]

    return {"prepare": prepare}


def build_export_tab(services: Services) -> None:
    """The Export tab; call inside ``gr.Tabs()``."""
    fns, locked = handlers(services), bool(services.config.admin_password)
    with gr.Tab("Export", id="export"):
        gr.Markdown("Download the study data as CSV or JSON." +
                    (" Admin password required." if locked else ""))
        password = gr.Textbox(label="Admin password", type="password", visible=locked)
        prepare = gr.Button("Prepare downloads")
        note = gr.Markdown("")
        with gr.Row():
            buttons = [gr.DownloadButton(f"{t}.{f}", visible=False, elem_id=f"export-{t}-{f}")
                       for t in TABLES for f in FORMATS]
    prepare.click(fns["prepare"], [password], [note, *buttons], api_visibility="private")

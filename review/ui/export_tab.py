"""The Export tab: the study as a dataset folder (``review.export.dataset.export_dataset``, the CLI's export too), offered as
one zip and as its single files (Parquet, CSV, JSON, the leaderboard, the README card).

Exports hold answer keys (which side showed which arm), so with an admin password configured they need it
(checked on the server on every call). Without one (a local study) anyone may export, but it is a public export:
unanswered trials, sessions and client hashes are left out, so an export never reveals the key of a trial still
on someone's page. Reviewer ids are pseudonymised with the study's salt in both cases.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr

from review.export.dataset import export_dataset
from review.study.services import Services
from review.study.trials import VoteRefused
from review.ui.review_tab import request_address

logger = logging.getLogger(__name__)

EXPORT_MAX_AGE_S = 3600.0
DATASET_DIR = "study-dataset"  # the folder inside each export (and the zip's top folder)


def zip_folder(folder: Path, target: Path) -> Path:
    """``folder`` as a zip whose entries start with the folder's name (fixed entry times: same bytes each time)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(Path(folder.name) / path.relative_to(folder)), date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return target


def clean_exports(root: Path, max_age_s: float = EXPORT_MAX_AGE_S) -> None:
    """Remove export folders older than ``max_age_s``."""
    if not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)


def handlers(services: Services) -> dict[str, Any]:
    """The Export tab's event functions (``prepare``)."""
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
        files = export_dataset(services.store, folder / DATASET_DIR, full=full)
        archive = zip_folder(folder / DATASET_DIR, folder / f"{DATASET_DIR}.zip")
        logger.info("export written to %s (full=%s)", folder, full)
        note = ("All rows, reviewer ids pseudonymised." if full else
                "No admin password configured: answered trials only, no client columns, reviewer ids pseudonymised.")
        return [note, gr.File(value=[str(archive), *map(str, files)], visible=True)]

    return {"prepare": prepare}


def build_export_tab(services: Services) -> None:
    """The Export tab; call inside ``gr.Tabs()``."""
    fns, locked = handlers(services), bool(services.config.admin_password)
    with gr.Tab("Export", id="export"):
        gr.Markdown("Download the study as a Hugging Face dataset: a zip of the folder, or its files (Parquet, "
                    "CSV, JSON, the leaderboard and a README dataset card). `python -m review export` writes the "
                    "same folder." + (" Admin password required." if locked else ""))
        password = gr.Textbox(label="Admin password", type="password", visible=locked)
        prepare = gr.Button("Prepare downloads")
        note = gr.Markdown("")
        files = gr.File(label="Downloads", file_count="multiple", visible=False, interactive=False,
                        elem_id="export-files")
    prepare.click(fns["prepare"], [password], [note, files], api_visibility="private")

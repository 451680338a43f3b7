"""Hugging Face Hub: push an export folder to a dataset repo, and the scheduled backup used on Spaces.

``push_folder`` needs a token (HF_TOKEN, or the one ``hf auth login`` stored) and says so clearly without one.
``start_backup`` (switched on by REVIEW_BACKUP_REPO in app.py) runs a ``CommitScheduler`` that, every few minutes,
commits a consistent snapshot of the study database (SQLite's online backup, not a copy of a live file) and a
full dataset export into that private dataset repo.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BACKUP_EVERY_MIN = 10  # CommitScheduler's period; the Hub suggests no less than 5 minutes


class HubError(RuntimeError):
    """No token, or the Hub refused the upload; the message says which."""


def hub_token() -> str | None:
    """HF_TOKEN, else the token saved by ``hf auth login``, else None."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except (ImportError, OSError):  # no hub library or no readable token file: no token
        return None


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = True) -> str:
    """Upload ``folder`` to the dataset repo ``repo_id`` (created when missing); returns the repo URL."""
    from huggingface_hub import HfApi

    token = token or hub_token()
    if not token:
        raise HubError("pushing to the Hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="Export of the review study")
    except Exception as exc:  # network, permissions, bad repo id: one clear message
        raise HubError(f"could not push {folder} to the dataset repo {repo_id}: {exc}") from exc
    logger.info("pushed %s to %s", folder, repo_id)
    return str(url)


def start_backup(store: Any, folder: str | Path, repo_id: str, *, every_min: float = BACKUP_EVERY_MIN) -> Any:
    """A CommitScheduler that snapshots ``store`` (``<folder>/review.db``) and exports it (``<folder>/export``)
    before each scheduled commit to the private dataset repo ``repo_id``. Returns the scheduler."""
    from huggingface_hub import CommitScheduler

    from review.export.dataset import export_dataset

    class StudyBackup(CommitScheduler):
        def push_to_hub(self) -> Any:
            with self.lock:
                store.snapshot(Path(folder) / "review.db")
                export_dataset(store, Path(folder) / "export", full=True)
            return super().push_to_hub()

    token = hub_token()
    if not token:
        raise HubError("REVIEW_BACKUP_REPO is set but there is no Hugging Face token: add HF_TOKEN as a secret")
    Path(folder).mkdir(parents=True, exist_ok=True)
    logger.info("backing up the study to the dataset repo %s every %s min", repo_id, every_min)
    return StudyBackup(repo_id=repo_id, repo_type="dataset", folder_path=folder, every=every_min, private=True,
                       token=token)

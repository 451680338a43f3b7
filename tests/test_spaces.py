"""Spaces set-up: persistent storage picked when /data exists, the onnxruntime-gpu swap (pip mocked), the scheduled
backup (CommitScheduler mocked), the README front matter a Space reads, and the store's consistent snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from review import spaces_env
from review.store import LATEST, Store

ROOT = Path(__file__).resolve().parents[1]


def test_storage_root_is_the_persistent_volume_when_mounted(tmp_path, monkeypatch):
    monkeypatch.setenv("REVIEW_PERSISTENT_DIR", str(tmp_path))
    assert spaces_env.storage_root() == tmp_path / "review"
    monkeypatch.setenv("REVIEW_PERSISTENT_DIR", str(tmp_path / "absent"))
    assert spaces_env.storage_root() == Path("var")


def test_app_defaults_follow_the_persistent_volume(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REVIEW_DB", "REVIEW_DATA")}
    env.update(REVIEW_PERSISTENT_DIR=str(tmp_path), COLUMNS="400")
    done = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert str(tmp_path / "review" / "review.db") in done.stdout and str(tmp_path / "review" / "data") in done.stdout


def test_onnxruntime_gpu_swap_runs_pip_once_and_only_when_asked(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(spaces_env.subprocess, "run", lambda cmd, check: calls.append(cmd))
    installed = {"onnxruntime"}
    monkeypatch.setattr(spaces_env, "_installed", lambda name: name in installed)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    assert spaces_env.ensure_onnxruntime(None) is False and spaces_env.ensure_onnxruntime("cpu") is False
    assert calls == []
    assert spaces_env.ensure_onnxruntime("gpu") is True
    assert calls[0][-3:] == ["uninstall", "-y", "onnxruntime"]
    assert calls[1][-5:] == ["install", "--force-reinstall", "--no-deps", "-r", str(spaces_env.GPU_REQUIREMENTS)]
    assert spaces_env.GPU_REQUIREMENTS.is_file()
    installed.clear()
    installed.add("onnxruntime-gpu")
    calls.clear()
    assert spaces_env.ensure_onnxruntime("gpu") is False and calls == []  # already the GPU wheel


def test_snapshot_is_a_readable_copy_of_a_live_database(tmp_path):
    with Store(tmp_path / "live.db") as store:
        store.get_or_create_reviewer("a" * 32)
        copy = store.snapshot(tmp_path / "backup" / "copy.db")
    with Store(copy, migrate=False) as snap:
        assert snap.integrity_check() == [] and snap.schema_version() == LATEST


def test_backup_scheduler_snapshots_and_exports_before_each_commit(tmp_path, monkeypatch):
    import huggingface_hub

    from review.export import hub

    pushed: list[list[str]] = []

    class FakeScheduler:
        def __init__(self, **kwargs):
            self.kwargs, self.lock = kwargs, __import__("threading").Lock()

        def push_to_hub(self):
            folder = Path(self.kwargs["folder_path"])
            pushed.append(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))

    monkeypatch.setattr(huggingface_hub, "CommitScheduler", FakeScheduler)
    monkeypatch.setattr(hub, "hub_token", lambda: None)
    with Store(tmp_path / "study.db") as store:
        with pytest.raises(hub.HubError, match="HF_TOKEN"):
            hub.start_backup(store, tmp_path / "backup", "me/backup")
        monkeypatch.setattr(hub, "hub_token", lambda: "hf_x")
        scheduler = hub.start_backup(store, tmp_path / "backup", "me/backup")
        assert scheduler.kwargs["repo_id"] == "me/backup" and scheduler.kwargs["repo_type"] == "dataset"
        assert scheduler.kwargs["private"] is True and scheduler.kwargs["token"] == "hf_x"
        scheduler.push_to_hub()
    assert "review.db" in pushed[0] and "export/README.md" in pushed[0] and "export/leaderboard.json" in pushed[0]


def test_readme_front_matter_declares_models_license_and_description():
    front = (ROOT / "README.md").read_text(encoding="utf-8").split("---\n")[1]
    assert "models:\n- InstantX/InstantID\n- stabilityai/stable-diffusion-xl-base-1.0\n" in front
    assert "license: apache-2.0\n" in front and "short_description: " in front
    short = next(line for line in front.splitlines() if line.startswith("short_description: "))
    assert len(short.removeprefix("short_description: ").strip('"')) <= 60  # the Hub's limit

"""A launched re-run of a finished study (its own module, so a parallel test worker runs it beside the first
launch in tests/test_sharding.py instead of after it)."""

from __future__ import annotations

import pytest
from test_sharding import launch, launch_args

from review.store import Store


@pytest.mark.slow
def test_a_launched_rerun_of_a_finished_study_generates_nothing(tmp_path, monkeypatch):
    """The re-run half, on its own so the two launches can run in parallel: the same study made in this process
    (same conditions and keys as the launched run makes), then launched on two processes: both skip everything."""
    pytest.importorskip("accelerate")
    from review.cli.generate import main_generate

    monkeypatch.setenv("INSTANTID_CACHE", str(tmp_path / "cache"))  # the launch below uses the same cache
    db = tmp_path / "out" / "study.db"
    assert main_generate(launch_args(db)) == 0
    with Store(db) as store:
        assert store.db["generations"].count == 4 and len(store.list_pairs()) == 2
    again = launch(tmp_path, db)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "generated 0 images, added 0 pairs; 2 pairs in" in again.stdout
    with Store(db) as store:
        assert store.db["generations"].count == 4 and len(store.list_pairs()) == 2
        assert store.integrity_check() == []
    assert len(list((db.parent / "images").iterdir())) == 4

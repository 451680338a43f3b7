"""Scale-out: conditions split whole across processes (review.generation.sharding), and `accelerate launch` with 2 CPU
processes writing into one SQLite database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from instantid import GenerationSettings
from review.generation import sharding
from review.generation.conditions import DATA_DIR, Condition
from review.generation.jobs import PairRunner
from review.generation.sharding import Shard, shard, split, world_size
from review.store import Store

ROOT = Path(__file__).resolve().parent.parent
FACE = DATA_DIR / "faces" / "astronaut.jpg"
SMALL = GenerationSettings(steps=1, width=128, height=128)


def conds(n: int, **fields) -> list[Condition]:
    return [Condition(face=FACE, prompt=f"prompt {i // 2}", seed=1 + i % 2, settings=SMALL, **fields)
            for i in range(n)]


# -- the split --------------------------------------------------------------------------------------------------
def test_four_conditions_over_two_processes_are_disjoint_covering_and_whole():
    conditions = conds(4)
    shares = [split(conditions, i, 2) for i in range(2)]
    assert shares == [[conditions[0], conditions[2]], [conditions[1], conditions[3]]]  # round-robin, in order
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1], key=conditions.index) == conditions
    # a condition is a whole unit: split() hands out the Condition objects themselves, never arms
    assert all(any(c is given for given in conditions) for share in shares for c in share)


# Each process computes its share alone, in its own interpreter: with string hashing salted per process
# (PYTHONHASHSEED), anything that orders conditions by hash (a set, say) would give processes different splits.
SHARE_IN_A_PROCESS = """
import json, sys
from pathlib import Path
from instantid import GenerationSettings
from review.generation.conditions import Condition
from review.generation.sharding import split
small = GenerationSettings(steps=1, width=128, height=128)
conditions = [Condition(face=Path("f{}.png".format(i % 3)), prompt="prompt {}".format(i // 2), seed=1 + i % 2,
                        settings=small, group="g{}".format(i)) for i in range(9)] * 2  # each one named twice
print(json.dumps([[c.face.name, c.prompt, c.seed] for c in split(conditions, int(sys.argv[1]), 2)]))
"""


def test_each_process_computes_the_same_split_on_its_own():
    expected = [[f"f{i % 3}.png", f"prompt {i // 2}", 1 + i % 2] for i in range(9)]  # distinct, in given order
    shares = []
    for index, hash_seed in ((0, "1"), (1, "2")):  # two interpreters, differently salted string hashes
        proc = subprocess.run([sys.executable, "-c", SHARE_IN_A_PROCESS, str(index)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr[-2000:]
        shares.append(json.loads(proc.stdout))
    assert shares == [expected[0::2], expected[1::2]]  # disjoint, covering, round-robin: what the launch relies on


def test_equal_conditions_land_in_one_share_and_spare_processes_get_nothing():
    a, b = conds(2)
    same_as_a = Condition(face=FACE, prompt=a.prompt, seed=a.seed, settings=SMALL, group="other")
    shares = [split([a, b, same_as_a], i, 2) for i in range(2)]
    assert shares == [[a], [b]]  # `group` is not a generation input: same_as_a is a, generated once
    assert [split([a], i, 3) for i in range(3)] == [[a], [], []]
    with pytest.raises(ValueError):
        split([a], 2, 2)


def test_one_process_is_a_no_op_without_accelerate(monkeypatch):
    for name in sharding.WORLD_SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sharding, "_state", lambda cpu=False: pytest.fail("PartialState used for one process"))
    conditions = conds(3)
    assert world_size() == 1
    assert shard(conditions) == Shard(conditions, 0, 1, None)
    assert sharding.gather("x") == ["x"]
    sharding.barrier()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shard(conditions).num_processes == 1


def test_face_registered_meanwhile_by_another_process_leaves_no_orphan_copy(tiny_engine, tmp_path, monkeypatch):
    with Store(tmp_path / "study.db") as store:
        PairRunner(tiny_engine, store, tmp_path, warmup=False).condition_row(conds(1)[0])
        late = PairRunner(tiny_engine, store, tmp_path, warmup=False)
        lookups = iter([None])  # the other process had not registered it yet when this one looked
        real = store.get_face_by_sha
        monkeypatch.setattr(store, "get_face_by_sha", lambda sha: next(lookups, real(sha)))
        row = late.condition_row(conds(1)[0])
        assert row["face_id"] == 1 and store.db["faces"].count == 1
    assert len(list((tmp_path / "faces").iterdir())) == 1


# -- two CPU processes through accelerate launch ------------------------------------------------------------------
# `accelerate launch --cpu` always uses its single-process launcher (whatever --num_processes says); several CPU
# processes come from the torchrun launcher that --multi_gpu selects, which on a machine without CUDA starts CPU
# processes; review.generation.sharding then asks PartialState(cpu=True) for a gloo process group.
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def launch_args(db: Path) -> list[str]:
    return ["--stack", "tiny", "--db", str(db), "--faces", str(FACE), "--prompts", "a portrait", "--presets", "fast",
            "--seeds", "1,2", "--steps", "1", "--size", "128x128", "--quiet"]


def launch(tmp_path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSTANTID_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf"),  # no user accelerate config can change the launch
           "CUDA_VISIBLE_DEVICES": ""}  # CPU processes even where a GPU exists
    return subprocess.run([*LAUNCH, "-m", "review", "generate", *launch_args(db)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_two_cpu_processes_share_one_database_condition_by_condition(tmp_path):
    pytest.importorskip("accelerate")
    db = tmp_path / "out" / "study.db"
    first = launch(tmp_path, db)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("\n") == 1, first.stdout  # only the main process prints the summary
    assert "on 2 processes (process 0: 1 condition(s) on cpu; process 1: 1 condition(s) on cpu" in first.stdout
    assert "generated 4 images, added 2 pairs; 2 pairs in" in first.stdout
    with Store(db) as store:
        assert store.integrity_check() == []
        gens = list(store.db["generations"].rows)
        assert Counter(g["preset"] for g in gens) == {"full": 2, "fast": 2}
        assert len(store.list_pairs()) == 2 and store.db["conditions"].count == 2
        assert store.db["faces"].count == 1 and store.db["images"].count == 4
        by_condition: dict[int, set[tuple[int, str]]] = {}
        for g in gens:
            versions = json.loads(g["versions"]) if isinstance(g["versions"], str) else g["versions"]
            assert versions["num_processes"] == 2
            by_condition.setdefault(g["condition_id"], set()).add((versions["process_index"], g["run_id"]))
        assert all(len(owners) == 1 for owners in by_condition.values())  # each condition: one process, one run
        assert sorted(index for [(index, _)] in by_condition.values()) == [0, 1]  # a different process each
        assert all(p["full_run_id"] == p["sel_run_id"] for p in store.list_pairs())
    assert len(list((db.parent / "images").iterdir())) == 4 and len(list((db.parent / "faces").iterdir())) == 1
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)

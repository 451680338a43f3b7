"""`python -m instantid presets`: JSON and table output, adaptive options, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instantid.cli.presets import main_presets
from instantid.layers import SD15_LAYERS, SDXL_LAYERS
from instantid.presets import PRESET_NAMES

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instantid", "presets", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_module_prints_json_for_every_preset() -> None:
    done = run_module("--json")
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    assert list(table) == list(PRESET_NAMES)
    assert {name: row["count"] for name, row in table.items()} == {
        "full": 70,
        "balanced": 55,
        "fast": 20,
        "output_only": 36,
        "none": 0,
        "adaptive": 70,
    }
    assert table["full"]["layers"] == [layer.name for layer in SDXL_LAYERS]
    for row in table.values():
        assert len(row["layers"]) == row["count"]
        assert 0.0 <= row["flops_share"] <= 1.0 and 0.0 <= row["bytes_share"] <= 1.0
    assert table["none"]["bytes_share"] == 0.0 and table["full"]["bytes_share"] == 1.0


def test_module_rejects_a_bad_spec_with_the_accepted_forms() -> None:
    done = run_module("--spec", "output:9")
    assert done.returncode == 2
    assert "accepted preset forms" in done.stderr and "input:8:0-4" in done.stderr


def test_adaptive_follows_ip_weight_and_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_presets(["--json", "--ip-weight", "0.15"]) == 0
    assert json.loads(capsys.readouterr().out)["adaptive"]["count"] == 61
    assert main_presets(["--json", "--ip-weight", "0.8", "--threshold", "0.6"]) == 0
    assert json.loads(capsys.readouterr().out)["adaptive"]["count"] == 55


def test_sd15_map_and_extra_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_presets(["--json", "--map", "sd15", "--spec", "balanced@0-0.5"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["full"]["count"] == len(SD15_LAYERS)
    row = table["balanced@0-0.5"]
    assert row["count"] == 6 and (row["start"], row["end"]) == (0.0, 0.5)


def test_table_mode_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_presets([]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["preset", "layers", "FLOPs", "bytes"]
    for name in PRESET_NAMES:
        assert any(line.startswith(name + " ") for line in lines)
    assert "55/70" in out and "100.0%" in out


def test_bad_adaptive_numbers_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_presets(["--ip-weight", "nan"]) == 2
    assert "not finite" in capsys.readouterr().err

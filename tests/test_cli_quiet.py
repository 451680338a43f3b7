"""Quiet, honest CLIs: a normal tiny run prints its result on stdout and nothing from third parties; our own
warnings go to stderr; a bad face is refused before torch loads; the one notice filter drops only what it names."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instantid import quiet

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "data" / "faces" / "astronaut.jpg"


@pytest.mark.slow
def test_tiny_generate_prints_json_on_stdout_and_no_third_party_lines(tmp_path):
    env = {**os.environ, "INSTANTID_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "instantid", "generate", "--stack", "tiny", "--face", str(FACE), "--prompt", "x",
         "--preset", "fast", "--steps", "1", "--size", "64x64", "--dtype", "bf16", "--json",
         "--out", str(tmp_path / "o.png")], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()  # one JSON object, nothing else on stdout
    assert json.loads(line)["dtype"] == "bfloat16"
    assert [x for x in proc.stderr.splitlines() if not x.startswith("warning: ")] == [], proc.stderr


def test_an_unreadable_face_is_refused_before_torch_loads(tmp_path):
    (tmp_path / "face.png").write_bytes(b"not an image")
    script = ("import sys\nfrom instantid.cli.generate import main_generate\n"
              f"code = main_generate(['--face', {str(tmp_path / 'face.png')!r}, '--prompt', 'x', '--out', 'o.png'])\n"
              "print(code, 'torch' in sys.modules, 'diffusers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
    assert "face.png" in proc.stderr


def test_dtype_choices_have_no_none():
    from instantid.cli.generate import build_parser

    (action,) = [a for a in build_parser()._actions if a.dest == "dtype"]
    assert action.choices == ["fp16", "bf16", "fp32"] and action.default is None


def test_the_notice_filter_drops_only_the_known_notices(caplog):
    quiet.install()
    quiet.install()  # idempotent
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    assert sum(isinstance(f, quiet.KnownNoticeFilter) for f in diffusers_log.filters) == 1
    with caplog.at_level(logging.WARNING):
        diffusers_log.warning("There are modules in UNet2DConditionModel that should be kept in float32: []. "
                              "Casting directly with `to()` ...")
        diffusers_log.warning("There are modules in X that should be kept in float32: ['norm']. Casting ...")
        logging.getLogger("transformers.utils.import_utils").warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`")
        logging.getLogger("transformers.utils.import_utils").warning("something else")
    assert [r.getMessage()[:40] for r in caplog.records] == ["There are modules in X that should be ke",
                                                              "something else"]

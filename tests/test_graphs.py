"""Graph step runner on CPU: the static-buffer plumbing with the eager step standing in for replay, keys, the K/V
refresh, the fallback, and the benchmark's statistics on synthetic timings (planted ramp and outliers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from instantid import GenerationRequest, GenerationSettings
from instantid.bench.stats import flag_outliers, format_goals, goals, runs_agreement, warm_up
from instantid.graph_capture import EagerStandInBackend
from instantid.graphs import GraphStepRunner
from instantid.runners import resolve_graph_mode, timing_mode
from instantid.step import build_step_inputs, run_denoising


@pytest.fixture(scope="module")
def face_photo():
    from skimage.data import astronaut

    return Image.fromarray(astronaut())


@pytest.fixture()
def stand_in(tiny_engine):
    """The tiny engine with a graph runner whose capture/replay is the eager stand-in; restored afterwards."""
    runner = GraphStepRunner(tiny_engine.pipe, tiny_engine.patcher, EagerStandInBackend(tiny_engine.pipe))
    tiny_engine.graph_runner = runner
    yield runner
    tiny_engine.graph_runner = None


SMALL = GenerationSettings(steps=2, width=64, height=64)


def request(photo, **kw):
    return GenerationRequest(face_image=photo, prompt="a portrait", settings=SMALL, **kw)


def test_graph_runner_images_equal_eager_and_a_new_face_reuses_the_graphs(tiny_engine, stand_in, face_photo):
    tiny_engine.cuda_graphs = "off"
    eager = tiny_engine.generate(request(face_photo, seed=1), "fast@0-0.5")
    tiny_engine.cuda_graphs = "auto"
    first = tiny_engine.generate(request(face_photo, seed=1), "fast@0-0.5")
    assert first.timing_mode == "graphs" and stand_in.captures == 2  # face branch on (step 0) and off (step 1)
    assert np.array_equal(np.asarray(first.image), np.asarray(eager.image))
    other_face = first.face.__class__(**{**first.face.__dict__, "embedding": first.face.embedding[::-1].copy()})
    second = tiny_engine.generate(GenerationRequest(face_image=None, face=other_face, prompt="a portrait",
                                                    settings=SMALL, seed=2), "fast@0-0.5")
    tiny_engine.cuda_graphs = "off"
    want = tiny_engine.generate(GenerationRequest(face_image=None, face=other_face, prompt="a portrait",
                                                  settings=SMALL, seed=2), "fast@0-0.5")
    assert stand_in.captures == 2 and second.timing_mode == "graphs"  # same key: no recapture
    assert np.array_equal(np.asarray(second.image), np.asarray(want.image))  # the K/V were re-projected
    assert not np.array_equal(np.asarray(second.image), np.asarray(first.image))
    tiny_engine.cuda_graphs = "auto"


def test_without_the_kv_refresh_a_new_face_would_reuse_stale_kv(tiny_engine, monkeypatch):
    """The refresh is load-bearing: skipping it changes the result, so the equality test above (a new face through
    the same graphs equals eager) can fail."""
    pipe, patcher = tiny_engine.pipe, tiny_engine.patcher
    patcher.apply(frozenset(patcher.face))
    runner = GraphStepRunner(pipe, patcher, EagerStandInBackend(pipe))
    monkeypatch.setattr(GraphStepRunner, "_refresh_fn", staticmethod(lambda entry: lambda: None))
    run_denoising(pipe, build_step_inputs(pipe, 64, 64, 1, seed=1), runner)  # captures with the first face
    stale = run_denoising(pipe, build_step_inputs(pipe, 64, 64, 1, seed=5), runner)[0]
    eager = run_denoising(pipe, build_step_inputs(pipe, 64, 64, 1, seed=5))[0]
    assert runner.captures == 1 and runner.graph_steps == 2
    assert not torch.allclose(stale, eager)
    patcher.clear_cache()


def test_graph_keys_follow_everything_a_capture_bakes_in(tiny_engine):
    pipe, patcher = tiny_engine.pipe, tiny_engine.patcher
    runner = GraphStepRunner(pipe, patcher, EagerStandInBackend(pipe))
    runner.bind(build_step_inputs(pipe, 64, 64, 2))
    full = frozenset(patcher.face)
    keys = {}
    patcher.apply(full)
    keys["full"], keys["full-off"] = runner.key(runner.static, True), runner.key(runner.static, False)
    patcher.apply(full)
    assert runner.key(runner.static, True) == keys["full"]  # switching back: the same graph
    patcher.apply(frozenset(list(full)[:20]))
    keys["20"] = runner.key(runner.static, True)
    patcher.apply_stock()
    keys["stock"] = runner.key(runner.static, True)
    patcher.apply(full)
    patcher.set_scale(0.5)
    keys["scale"] = runner.key(runner.static, True)
    patcher.set_scale(0.8)
    patcher.state.cache_kv = False
    keys["nocache"] = runner.key(runner.static, True)
    patcher.state.cache_kv = True
    runner.bind(build_step_inputs(pipe, 64, 64, 2, guidance_scale=7.0))
    keys["guidance"] = runner.key(runner.static, True)
    runner.bind(build_step_inputs(pipe, 64, 128, 2))
    keys["size"] = runner.key(runner.static, True)
    assert len(set(keys.values())) == len(keys) and len(runner.statics) == 2  # 64x64 buffers reused, 64x128 new


def test_a_failed_capture_falls_back_to_eager_with_the_reason(tiny_engine, face_photo):
    runner = GraphStepRunner(tiny_engine.pipe, tiny_engine.patcher,
                             EagerStandInBackend(tiny_engine.pipe, fail_with=RuntimeError("capture boom")))
    tiny_engine.graph_runner = runner
    try:
        got = tiny_engine.generate(request(face_photo, seed=3), "full")
    finally:
        tiny_engine.graph_runner = None
    want = tiny_engine.generate(request(face_photo, seed=3), "full")
    assert got.timing_mode == "eager" and timing_mode(runner) == "eager"
    assert any("capture failed (RuntimeError: capture boom)" in w for w in got.warnings)
    assert "capture boom" in runner.fallback_traceback and "Traceback" in runner.fallback_traceback
    assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


def test_graph_modes_and_timing_modes():
    assert resolve_graph_mode("auto", torch.device("cpu")) is False
    assert resolve_graph_mode("off", torch.device("cpu")) is False
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_graph_mode("on", torch.device("cpu"))
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_graph_mode("always", torch.device("cpu"))

    class Counts:
        graph_steps, eager_steps = 3, 0

    assert timing_mode(Counts()) == "graphs"
    Counts.eager_steps = 1
    assert timing_mode(Counts()) == "mixed"
    Counts.graph_steps = 0
    assert timing_mode(Counts()) == "eager"


def test_load_engine_refuses_graphs_on_without_cuda():
    from instantid import load_engine

    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_engine("tiny", device="cpu", cuda_graphs="on")


def test_step_flops_count_the_face_branch(tiny_engine):
    from instantid.bench.checks import count_step_flops

    flops = count_step_flops(tiny_engine, 64, 64)
    assert 0 < flops["none"] < flops["full"]
    assert tiny_engine.patcher.patched == frozenset(tiny_engine.patcher.face)


# ---- statistics on synthetic timings ------------------------------------------------------------------------


def test_warm_up_waits_out_a_planted_ramp():
    ramp = iter([130.0, 121.0, 112.0, 104.0, 100.5, 100.0, 100.8, 100.2, 100.1] + [100.0] * 50)
    clock = iter(range(0, 1000, 5))  # 5 s per repetition
    result = warm_up(lambda: next(ramp), min_s=10, max_s=120, k=3, tol=0.02, clock=lambda: float(next(clock)))
    # the first three repetitions within 2 %: 104.0 is 3.5 % above 100.5, so it ends at 100.5, 100.0, 100.8
    assert result["steady"] and result["reps"] == 7 and result["rep_ms"][-3:] == [100.5, 100.0, 100.8]


def test_warm_up_gives_up_unsteady_after_max_s():
    values = iter([100.0, 130.0] * 100)
    clock = iter(range(0, 1000, 10))
    result = warm_up(lambda: next(values), min_s=5, max_s=60, clock=lambda: float(next(clock)))
    assert result["steady"] is False and result["seconds"] >= 60


def test_planted_outliers_are_flagged_reported_and_left_out_pairwise():
    rng = np.random.default_rng(0)
    full = 90 * (1 + 0.005 * rng.standard_normal(20))
    none = full / 1.01 * (1 + 0.002 * rng.standard_normal(20))
    full[3] *= 1.6  # a +60 % stall in one arm
    none[11] *= 1.8
    kept, flags = flag_outliers({"full": list(full), "none": list(none)})
    assert {(f["rep"], f["arm"]) for f in flags} == {(3, "full"), (11, "none")}
    assert 3 not in kept and 11 not in kept and len(kept) == 18
    ratio = np.median(full[kept] / none[kept])
    assert abs(ratio - 1.01) < 0.003  # the planted ratio, recovered
    kept_all, flags_few = flag_outliers({"full": list(full[:5]), "none": list(none[:5])})
    assert kept_all == list(range(5)) and all(f["kept_anyway"] for f in flags_few)  # < 5 would remain


def test_runs_agreement_and_goal_lines():
    assert runs_agreement([1.01, 1.011, 1.012], [[1.0, 1.02], [1.005, 1.015], [1.01, 1.014]]) == {
        "runs": 3, "cis_overlap": True, "spread": pytest.approx(0.00198, abs=1e-4)}
    assert runs_agreement([1.02, 1.07], [[1.0, 1.03], [1.05, 1.08]])["cis_overlap"] is False
    result = {"presets": {"full[g]": {"ratio_to_full": 1.0, "ratio_ci": [1, 1]},
                          "none[g]": {"ratio_to_full": 1.004, "ratio_ci": [1.001, 1.006]},
                          "full#2[g]": {"ratio_to_full": 0.999, "ratio_ci": [0.993, 1.004]}},
              "runs_agreement": {"spread": 0.003}, "graphs_speedup": {"full": {"ratio": 1.4}},
              "ours_vs_stock": {"ratio": 1.2, "ours": "full[g]"}, "acceptance": {"proportionality_r2_graphs": 0.9}}
    status = {g["goal"].split(" ")[0]: g["status"] for g in goals(result)}
    assert status == {"face-branch": "PASS", "A/A": "MISS", "runs'": "PASS", "graphs": "PASS", "ours": "MISS",
                      "preset": "PASS"}
    lines = format_goals(goals(result))
    assert any(line.startswith("GOAL MISS ours") and "-0.050x" in line for line in lines)
    assert any(line.startswith("GOAL MISS A/A") and "0.0020" in line for line in lines)


def test_the_bench_graphs_check_reports_a_failed_capture_and_goes_eager(tiny_engine, capsys):
    import argparse

    from instantid.bench.cli import run_graphs_check

    tiny_engine.graph_runner = GraphStepRunner(tiny_engine.pipe, tiny_engine.patcher,
                                               EagerStandInBackend(tiny_engine.pipe, fail_with=RuntimeError("no graph")))
    args = argparse.Namespace(check_graphs=1, seed=0, mode="both")
    check = run_graphs_check(tiny_engine, args, 64, 64)
    out = capsys.readouterr()
    assert check["ok"] is False and "RuntimeError: no graph" in check["error"] and "Traceback" in check["traceback"]
    assert "graphs check FAILED" in out.err and "Traceback" in out.err and "eager arms only" in out.out
    assert args.mode == "eager" and tiny_engine.graph_runner is None


@pytest.mark.parametrize("module", ["instantid.bench.cli", "instantid.cli.generate", "review.cli.generate"])
def test_help_texts_render(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    text = parser.format_help()
    assert "--cuda-graphs" in text or "--mode" in text

#!/usr/bin/env bash
# One-GPU acceptance run (docs/benchmark.md, issue 14), in under 7 minutes with a whole-script budget:
#  1. env.txt: GPU, driver, versions.
#  2. generate.txt: `instantid generate --stack tiny --device cuda --cuda-graphs on` (smoke test: timing_mode must
#     be "graphs"), the same with --cuda-graphs off, and the two images' max pixel difference.
#  3. bench-graphs.json / bench-graphs.txt: `python -m instantid.bench` on the full-size SDXL-shaped stack (SDXL
#     UNet + IdentityNet + real-size face adapter, random fp16 weights made on the GPU, nothing downloaded),
#     1024x1024, CFG batch 2, --mode both: arms full, balanced, fast, none and full#2 (A/A) eager and as captured
#     CUDA graphs ([g]), plus diffusers' stock processors (full-stock, balanced-stock, fast-stock, none-stock;
#     eager), 14 arms in Williams order. First a graphs-vs-eager check (3 steps, max abs latent difference); if a
#     capture fails its error and traceback are printed and the benchmark runs the eager arms only. Then FLOPs of
#     one step (achieved TFLOP/s), warm-up until steady, and --runs 3 interleaved runs; the table ends in GOAL
#     PASS/MISS lines.
#  4. profile-face-branch.txt / .json: `scripts/profile_face_branch.py`, torch.profiler over eager steps of full
#     and none: the kernels the face branch adds (PROFILE_S seconds reserved for it, default 100; 0 skips it).
# Budget: BUDGET seconds in all (default 400). Expected on one H200: setup ~20 s, generate ~40 s, bench: stack
# build < 1 min, check + FLOPs ~15 s, warm-up 15-45 s, then the rest of the budget for 3 runs (14 arms x 5 steps x
# ~75 ms = ~5.5 s a repetition: ~10 repetitions a run). The benchmark's --time-budget starts no repetition it
# cannot finish (fewer, meta.reps_done, instead of none); `timeout` kills each stage shortly after its share.
# The same path runs without a GPU on meta tensors in tests/test_bench.py (shapes and dtypes only).
# Output: $OUT when set (the device machine), else bench-results/ (5 files). The device image has torch
# (Python 3.12) but not diffusers: carry .whl/ (`make gpu-wheels`: diffusers==0.42.1), installed into /tmp/site.
set -uo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench-results}"
STEPS="${STEPS:-5}"
REPS="${REPS:-28}"  # per run; two cycles of the 14-arm Williams design if time allows (the budget decides)
RUNS="${RUNS:-3}"
BUDGET="${BUDGET:-400}"
PROFILE_S="${PROFILE_S:-100}"  # reserved at the end for the kernel profile (0: no profile)
PRESETS="${PRESETS:-full,balanced,fast,none,full-stock,balanced-stock,fast-stock,none-stock}"
mkdir -p "$OUT_DIR"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && timeout 60 .venv/bin/python -c "import torch; assert torch.cuda.is_available()" \
      2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
if ! timeout 60 "$PY" -c "import diffusers" 2>/dev/null; then
  if ! ls .whl/diffusers-*.whl >/dev/null 2>&1; then
    echo "gpu_check: $PY has no diffusers and there is no .whl/diffusers-*.whl to install (see the header)" >&2
    exit 2
  fi
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 INSTANTID_CACHE="${INSTANTID_CACHE:-/tmp/instantid-cache}"

{
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
    || echo "nvidia-smi failed"
  timeout 60 "$PY" -c "import sys, torch, diffusers, transformers; print('python', sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0), \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" || echo "python environment check failed"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) budget ${BUDGET}s steps $STEPS reps $REPS runs $RUNS"
} 2>&1 | tee "$OUT_DIR/env.txt"

echo "== generate smoke test (tiny stack, cuda graphs on / off) $((SECONDS))s"
{
  timeout 30 "$PY" -c "from skimage.data import astronaut; from PIL import Image; \
Image.fromarray(astronaut()).save('/tmp/face.png')" || echo "face image failed"
  for mode in on off; do
    timeout 90 "$PY" -m instantid generate --stack tiny --device cuda --cuda-graphs "$mode" --face /tmp/face.png \
      --prompt "a portrait" --steps 4 --size 256x256 --seed 1 --out "/tmp/generate-$mode.png" --json \
      || echo "generate --cuda-graphs $mode FAILED (status $?)"
  done
  timeout 30 "$PY" -c "import numpy as np; from PIL import Image; \
a, b = (np.asarray(Image.open(f'/tmp/generate-{m}.png'), dtype=int) for m in ('on', 'off')); \
print('generate: graphs vs eager image max abs pixel difference', int(np.abs(a - b).max()))" \
    || echo "generate image comparison failed"
} 2>&1 | tee "$OUT_DIR/generate.txt"

LEFT=$((BUDGET - SECONDS - 15 - PROFILE_S))  # 15 s: SIGTERM grace (timeout -k 5) and the output flush
if [ "$LEFT" -lt 150 ]; then
  echo "gpu_check: only ${LEFT}s left of BUDGET=${BUDGET}s after setup; not starting the benchmark" >&2
  exit 3
fi
echo "== benchmark, ${LEFT}s left $((SECONDS))s"
status=0
timeout -k 5 "$LEFT" "$PY" -m instantid.bench --stack sdxl-shape --size 1024x1024 --dtype fp16 --mode both \
  --presets "$PRESETS" --steps "$STEPS" --reps "$REPS" --runs "$RUNS" --warmup-s 15 --warmup-max-s 45 \
  --check-graphs 3 --flops --time-budget $((LEFT - 20)) --out "$OUT_DIR/bench-graphs.json" \
  2> >(tee "$OUT_DIR/bench-graphs.log" >&2) | tee "$OUT_DIR/bench-graphs.txt" || status=$?
if [ "$status" -ne 0 ]; then
  echo "gpu_check: benchmark exited with status $status (124/137: killed at the ${LEFT}s limit)" >&2
fi
if [ "$PROFILE_S" -gt 0 ]; then
  echo "== kernel profile of the face branch (eager full vs none) $((SECONDS))s"
  timeout -k 5 "$PROFILE_S" "$PY" scripts/profile_face_branch.py --steps 5 --out "$OUT_DIR/profile-face-branch.json" \
    2>&1 | tee "$OUT_DIR/profile-face-branch.txt" || echo "gpu_check: the profile failed or ran out of time" >&2
fi
echo "gpu_check: ${SECONDS}s in all"
exit "$status"

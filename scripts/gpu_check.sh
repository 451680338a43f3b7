#!/usr/bin/env bash
# One-GPU acceptance run of the step benchmark (docs/benchmark.md) on the full-size SDXL-shaped stack: SDXL UNet +
# IdentityNet + real-size face adapter with random fp16 weights made on the GPU (nothing downloaded), 1024x1024,
# CFG batch 2, arms full, balanced, fast, output_only, none, full-nocache, full-stock (diffusers' own processors:
# the patch overhead) and full#2 (A/A), interleaved in Williams order.
#
# Budget: BUDGET seconds for the whole script (default 450, so under 8 minutes even if the benchmark must be
# killed). Expected on one H100: stack build < 1 min; 8 arms x STEPS x (REPS + 1) steps at ~70-120 ms each,
# ~1.5-2.5 min with the defaults. The benchmark gets what is left (--time-budget: it starts no repetition it
# cannot finish and reports fewer, meta.reps_done, instead of none); `timeout` kills it 20 s later in any case.
# The same path runs without a GPU on meta tensors in tests/test_bench.py (shapes and dtypes only).
# Output: $OUT when set (the device machine), else bench-results/: bench-sdxl-shape.json (every field: aa_ratio,
# aa_ci, acceptance, presets, meta), bench-sdxl-shape.txt (the table and log), env.txt (GPU, driver, versions).
# The device machine's image has torch (Python 3.12) but not diffusers: carry a .whl/ folder holding
# diffusers==0.42.1 (its other requirements are on the image; importlib_metadata is only for Python < 3.8), made
# as /work/.library/device/README.md describes; it is installed into /tmp/site here.
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench-results}"
STEPS="${STEPS:-10}"
REPS="${REPS:-16}"  # 8 arms: two full cycles of the Williams design (8 orders)
BUDGET="${BUDGET:-450}"
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
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
    || echo "nvidia-smi failed"
  timeout 60 "$PY" -c "import sys, torch, diffusers, transformers; print('python', sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0), \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" || echo "python environment check failed"
} 2>&1 | tee "$OUT_DIR/env.txt"

LEFT=$((BUDGET - SECONDS - 20))  # 20 s: SIGTERM grace (timeout -k 10) and the output flush
if [ "$LEFT" -lt 120 ]; then
  echo "gpu_check: only ${LEFT}s left of BUDGET=${BUDGET}s after setup; not starting the benchmark" >&2
  exit 3
fi
status=0
timeout -k 10 "$LEFT" "$PY" -m instantid.bench --stack sdxl-shape --size 1024x1024 --dtype fp16 \
  --presets full,balanced,fast,output_only,none,full-nocache,full-stock --steps "$STEPS" --reps "$REPS" \
  --time-budget $((LEFT - 30)) --out "$OUT_DIR/bench-sdxl-shape.json" 2>&1 | tee "$OUT_DIR/bench-sdxl-shape.txt" \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "gpu_check: benchmark exited with status $status (124/137: killed at the ${LEFT}s limit)" >&2
fi
echo "gpu_check: ${SECONDS}s in all"
exit "$status"

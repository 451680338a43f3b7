#!/usr/bin/env bash
# One-GPU acceptance run of the step benchmark (docs/benchmark.md) on the full-size SDXL-shaped stack: SDXL UNet +
# IdentityNet + real-size face adapter with random fp16 weights made on the GPU (nothing downloaded), 1024x1024,
# CFG batch 2, arms full, balanced, fast, output_only, none, full-nocache and full#2 (A/A), interleaved.
#
# Budget: under 8 minutes on one H100 (stack build ~1 min; 7 arms x STEPS x (REPS + 1) steps at ~70-90 ms each,
# ~1.5-2 min with the defaults); a 450 s timeout stops it in any case.
# Output: $OUT when set (the device machine), else bench-results/: bench-sdxl-shape.json (every field),
# bench-sdxl-shape.txt (the table), env.txt (GPU, driver, versions).
# The device machine's image has torch but not diffusers: carry a .whl/ folder with diffusers==0.42.1 (and any
# missing dependency, e.g. importlib_metadata) as /work/.library/device/README.md describes; it is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench-results}"
STEPS="${STEPS:-10}"
REPS="${REPS:-15}"
mkdir -p "$OUT_DIR"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
if [ -d .whl ] && ! "$PY" -c "import diffusers" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
} > "$OUT_DIR/env.txt" 2>&1

timeout 450 "$PY" -m instantid.bench --stack sdxl-shape --size 1024x1024 --dtype fp16 \
  --presets full,balanced,fast,output_only,none,full-nocache --steps "$STEPS" --reps "$REPS" \
  --out "$OUT_DIR/bench-sdxl-shape.json" 2>&1 | tee "$OUT_DIR/bench-sdxl-shape.txt"

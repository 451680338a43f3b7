# make run   : create .venv on first use, install, start the app (offline tiny stack by default)
# make test  : create .venv on first use, install (with the test extra), run the test suite
# ORT=gpu    : onnxruntime-gpu in place of onnxruntime (GPU machines; requirements-gpu.txt)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
ORT ?= cpu

.PHONY: run test lint bench clean-venv gpu-wheels wheel

# torch first (pinned, so the rest cannot pull another build), then the package and its runtime dependencies
$(STAMP): pyproject.toml requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements.txt
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps -e .
	if [ "$(ORT)" = gpu ]; then $(BIN)/python -m pip uninstall -q -y onnxruntime; \
	  $(BIN)/python -m pip install -q --force-reinstall --no-deps -r requirements-gpu.txt; fi
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements-dev.txt
	touch $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/python app.py

# two pytest workers (pytest-xdist), a test file per worker at a time (module fixtures built once; the modules
# with `slow` tests first, tests/conftest.py), so the 2-core machine runs the suite in about 3 minutes
TEST_WORKERS ?= 2
test: $(DEV_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

# a wheel of the package in dist/ (no dependencies built)
wheel: $(STAMP)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .

# the device machine has torch but not diffusers: its wheel travels in .whl/ (kept out of git), see scripts/gpu_check.sh
# (git rev-parse --git-path: .git is a file in a linked worktree; info/exclude lives in the common git dir)
gpu-wheels:
	exclude="$$(git rev-parse --git-path info/exclude)"; mkdir -p "$$(dirname "$$exclude")"; \
	  grep -qx '/.whl/' "$$exclude" 2>/dev/null || echo /.whl/ >> "$$exclude"
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 insightface==2.1

clean-venv:
	rm -rf $(VENV)

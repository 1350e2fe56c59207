# sdm-neuro: two commands set everything up on a fresh machine.
#   make run   - create .venv, install, run the main job on the shipped model
#   make test  - create .venv, install, run the test suite
# The venv is reused while pyproject.toml is unchanged.

PYTHON ?= $(shell command -v python3.10 2>/dev/null || echo $(HOME)/.pyenv/versions/3.10.13/bin/python3.10)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_DIR ?= runs/main

.PHONY: install run test bench clean fashion-mnist-data gpu-carry

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

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
	$(BIN)/python -m pytest -q

# Fashion-MNIST (60,000 train / 10,000 t10k, 28x28) from Debian's package; needs root (apt-get).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist-data:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }
	@ls $(FMNIST_DIR)

# Files that travel to a GPU machine for scripts/gpu_fmnist.py (both folders are git-ignored):
# the four Fashion-MNIST .gz files in .fmnist/ (31 MB), the lava-dl wheel (installed there with --no-deps)
# in .whl/, repacked without its test suite and pretrained YOLO weights (68 MB -> 0.2 MB).
gpu-carry: fashion-mnist-data install
	mkdir -p .fmnist .whl
	cp $(FMNIST_DIR)/*-ubyte.gz .fmnist/
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --ignore-requires-python \
		--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d .whl lava-dl==0.6.0
	$(BIN)/python scripts/slim_lava_dl_wheel.py .whl/lava_dl-0.6.0-py3-none-any.whl
	@ls -la .fmnist .whl

bench: install
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs

# `make demo` and `make test` set everything up on first use (.venv/ in the repo root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1 is a pair that works on the CPU and on CUDA 12/13 GPUs.
# For another CUDA build: make setup TORCH_INDEX=<PyTorch's wheel index for that CUDA version, or its cpu index>.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
export OMP_WAIT_POLICY ?= PASSIVE
export GRADIO_ANALYTICS_ENABLED = False
export HF_HUB_OFFLINE = 1

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[demo,dev,scale]'
	bash scripts/install_system_packages.sh
	touch $@

demo: setup
	$(BIN)/python -m hjepa.demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check hjepa tests benchmarks

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs exports .cache

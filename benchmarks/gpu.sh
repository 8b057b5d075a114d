#!/usr/bin/env bash
# One call on a lent NVIDIA machine: GPU tests, train-step benchmarks (ViT-S/16 224 and the CIFAR presets, eager and
# compiled, bf16), the inference benchmark, then a short table. Run from the repo root after `make setup` (or with
# PYTHON pointing at an interpreter that has the project installed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=${PYTHONPATH:-}:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU"; exit 1; }
echo "== GPU tests"
$PY -m pytest -q -m "gpu or tensorrt" tests || echo "GPU tests failed"
echo "== train step"
$PY benchmarks/train_step.py --device cuda --compile --settings vit-s16-224 cifar100-vit-tiny cifar100-vit-small quickstart
echo "== inference"
$PY benchmarks/inference.py --device cuda || true
echo "== summary"
$PY benchmarks/summary.py

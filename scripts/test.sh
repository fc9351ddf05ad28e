#!/usr/bin/env bash
# The project's test command (README). Runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

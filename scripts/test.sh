#!/usr/bin/env bash
# The project's test command (README): `bash scripts/test.sh` runs the WHOLE suite on CPU (CI runs
# exactly this). `bash scripts/test.sh --fast` is the developer's tier: every test that starts no
# vLLM engine, loads no tiny model, starts no Prefect server and launches no child process (the
# markers are set by tests/conftest.py from what each test uses). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
args=()
for a in "$@"; do
  if [[ "$a" == "--fast" ]]; then
    args+=(-m "not slow and not engine and not server and not launch")
  else
    args+=("$a")
  fi
done
exec .venv/bin/python -m pytest -q -p no:cacheprovider "${args[@]}"

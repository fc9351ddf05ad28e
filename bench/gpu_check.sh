#!/usr/bin/env bash
# First GPU check of the FGRPO update (bench/gpu_update.py; docs/training.md "First GPU check").
#
#   bash bench/gpu_check.sh                                    # GPU machine: 3B shape on CUDA
#   bash bench/gpu_check.sh --device cpu --shape tiny ...      # CPU dry run (tests/test_gpu_check.py)
#
# Runs from a bare copy of the repository (fgrpo_core is not installed there: the repo root goes
# on PYTHONPATH). Of fgrpo_core's imports only pydantic is missing on the GPU machine; it travels
# as wheels in bench/wheels (WHEELS.txt lists them with sizes) and is installed offline into a
# scratch folder put on PYTHONPATH, never into the machine's environment. typing_extensions is
# added only when the installed one is too old for pydantic. Arguments go to gpu_update.py; the
# figures land in $OUT/gpu_check.json when OUT is set (the device tool's output folder).
#
# Environment: PYTHON (default python3), FGRPO_GPU_SITE (scratch folder, default
# ${TMPDIR:-/tmp}/fgrpo-gpu-site), FGRPO_FORCE_WHEELS=1 installs the wheels even where pydantic
# is importable, FGRPO_WHEELS_ONLY=1 stops after that (tests/test_gpu_check.py checks the wheels
# install and import under a CPython 3.12 where one is at hand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
WHEELS=bench/wheels
SITE=${FGRPO_GPU_SITE:-${TMPDIR:-/tmp}/fgrpo-gpu-site}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

need_pydantic() { ! "$PY" -c "import pydantic" 2>/dev/null; }

if [[ -n "${FGRPO_FORCE_WHEELS:-}" ]] || need_pydantic; then
  echo "[wheels] installing pydantic from $WHEELS into $SITE (offline)"
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
    --target "$SITE" "$WHEELS"/pydantic-*.whl "$WHEELS"/pydantic_core-*.whl \
    "$WHEELS"/annotated_types-*.whl "$WHEELS"/typing_inspection-*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if need_pydantic; then  # typing_extensions too old for this pydantic: add ours beside it
    echo "[wheels] adding typing_extensions from $WHEELS"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
      --target "$SITE" --upgrade "$WHEELS"/typing_extensions-*.whl
  fi
  "$PY" -c "import pydantic; print('[wheels] pydantic', pydantic.VERSION, 'from', pydantic.__file__)"
fi
if [[ -n "${FGRPO_WHEELS_ONLY:-}" ]]; then exit 0; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec "$PY" bench/gpu_update.py "$@"

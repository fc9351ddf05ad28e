#!/usr/bin/env bash
# Mutation score of the math (not part of CI): mutmut mutates fgrpo_core/parsing.py, rewards/,
# advantages.py, lagrangian.py and loss.py, and runs only their unit tests against each mutant.
#
#   mutmut is a dev tool, not a dependency of the project (it is not in the lock); install it with
#     uv pip install --python .venv/bin/python mutmut     # measured with mutmut 3.8.1
#   then:   nice -n 10 bash bench/mutation.sh [WORKDIR]    # default /tmp/fgrpo-mutation
#   after:  (cd WORKDIR && ../.venv/bin/mutmut results)   # survivors; `mutmut show NAME` for a diff
#
# It runs in a scratch copy (WORKDIR) so the repository gets no mutmut config or mutants/ folder.
# MUTMUT_JOBS (default 1) sets mutmut's parallel workers.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/fgrpo-mutation}"
PY="$ROOT/.venv/bin/python"
"$PY" -c "import mutmut" 2>/dev/null || {
  echo "mutmut is not installed: uv pip install --python $PY mutmut" >&2; exit 2; }
TESTS=(tests/test_parsing.py tests/test_rewards.py tests/test_advantages.py tests/test_lagrangian.py tests/test_loss.py)

rm -rf "$WORK" && mkdir -p "$WORK/tests"
cp -r "$ROOT/fgrpo_core" "$WORK/"
find "$WORK/fgrpo_core" -name __pycache__ -prune -exec rm -rf {} +
cp "$ROOT/pyproject.toml" "$WORK/"
cp "$ROOT/tests/__init__.py" "$ROOT/tests/conftest.py" "$WORK/tests/"
for t in "${TESTS[@]}"; do cp "$ROOT/$t" "$WORK/tests/"; done
{
  echo "[mutmut]"
  echo "source_paths = fgrpo_core"
  echo "only_mutate ="
  for p in fgrpo_core/parsing.py "fgrpo_core/rewards/*" fgrpo_core/advantages.py fgrpo_core/lagrangian.py fgrpo_core/loss.py; do
    echo "    $p"
  done
  echo "pytest_add_cli_args_test_selection ="
  for t in "${TESTS[@]}"; do echo "    $t"; done
  echo "pytest_add_cli_args ="
  for a in -p no:cacheprovider -p no:timeout; do echo "    $a"; done
} > "$WORK/setup.cfg"

cd "$WORK"
unset PYTHONPATH  # mutmut puts its mutants/ folder first on sys.path
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
"$ROOT/.venv/bin/mutmut" run --max-children "${MUTMUT_JOBS:-1}" || true
echo "mutmut run: $(( $(date +%s) - start )) s"
"$ROOT/.venv/bin/mutmut" results --all true > results.txt 2>&1 || "$ROOT/.venv/bin/mutmut" results > results.txt 2>&1 || true
"$PY" - <<'PY'
import collections, re
counts = collections.Counter()
for line in open("results.txt"):
    m = re.match(r"\s*(\S+): (\S.*)$", line)
    if m and "__mutmut_" in m.group(1):
        counts[m.group(2).strip()] += 1
total = sum(counts.values())
killed = counts.get("killed", 0) + counts.get("timeout", 0)
print(dict(counts))
if total:
    print(f"killed {killed} of {total} mutants: {100 * killed / total:.1f}% (before removing equivalent ones)")
PY

"""The test tiers and the per-test timeout (tests/conftest.py, pyproject): the fast tier really
leaves out the tests that boot vLLM, a Prefect server or a two-process launch, and a hung test
fails within its limit, named."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = "not slow and not engine and not server and not launch"  # scripts/test.sh --fast


def _pytest(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_fast_tier_leaves_out_engine_server_and_launch_tests():
    # None of these files sets a marker by hand on these tests: conftest finds them from the
    # fixtures and code they use (tiny model, VLLMEngine, accelerate launch, prefect_test_harness).
    heavy = ["tests/test_train_launch.py::test_train_cli_two_processes_with_vllm",
             "tests/test_engine_tp.py::test_two_tensor_parallel_workers_sample_what_one_does",
             "tests/test_update_old_pass.py::test_first_minibatch_old_logprobs_equal_a_separate_pass"]
    files = sorted({h.split("::")[0] for h in heavy} | {"tests/test_rounds_ddp.py", "tests/test_update_ddp.py",
                                                         "tests/test_loss.py"})
    every = _pytest("--collect-only", "-q", *files)
    fast = _pytest("--collect-only", "-q", "-m", FAST, *files)
    assert every.returncode == 0 and fast.returncode == 0, every.stdout[-3000:] + fast.stdout[-3000:]
    all_ids = {line for line in every.stdout.splitlines() if "::" in line}
    fast_ids = {line for line in fast.stdout.splitlines() if "::" in line}
    for h in heavy:
        assert any(i.startswith(h) for i in all_ids), h  # the name still exists
        assert not any(i.startswith(h) for i in fast_ids), f"{h} is in the fast tier"
    for name in ("tests/test_rounds_ddp.py", "tests/test_update_ddp.py"):
        assert not any(i.startswith(name) for i in fast_ids), name
    # The pure math stays in: a tier that drops everything would pass the checks above.
    loss = {i for i in all_ids if i.startswith("tests/test_loss.py")}
    assert loss and loss <= fast_ids


def test_a_hung_test_fails_within_its_limit_naming_it(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_timeout_set_timer  # noqa: F401\n")
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_sleeps_forever():\n    time.sleep(600)\n")
    t0 = time.monotonic()
    res = _pytest("-q", "-o", "timeout=3", "-o", "timeout_method=thread", "--rootdir", str(tmp_path),
                  str(tmp_path / "test_hang.py"), cwd=tmp_path, timeout=300)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "TIMEOUT: test_hang.py::test_sleeps_forever ran past 3 s" in out, out[-3000:]
    assert "time.sleep(600)" in out  # the stack of the stuck test follows
    assert time.monotonic() - t0 < 250  # far less than the 600 s sleep

"""``fgrpo train`` under ``accelerate launch`` with 2 processes and the real vLLM engine on the
main process, against the same command in one process.

The hazard (found by running it): a vLLM engine core inside a rank finds ``torch.distributed``
initialised, takes the trainer's 2-rank group as its world and creates its groups with
collectives that rank 1, which runs no engine, never joins: the main process hung for good.
``VLLMEngine`` now starts its engine core in a process of its own there, without the launcher's
variables, and pushes weights through a safetensors file. The one-process run keeps the
in-process engine (tensors handed over directly), so equal rollouts in round 2 also show that the
file push delivers the same weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.support.replay import stage_with_traces
from tests.test_update_ddp import launch_args

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
           TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _overrides(model_dir: Path, data: Path, run: Path) -> list[str]:
    sets = {
        "model.path": model_dir, "data.out_dir": data, "fgrpo.init_from": model_dir,
        "fgrpo.out_dir": run / "ckpt", "fgrpo.run_dir": run / "runs",
        "fgrpo.rounds": 2, "fgrpo.rollout_batch": 3, "fgrpo.update_batch": 3, "fgrpo.micro_batch": 4,
        "fgrpo.lr": 1e-3,  # a step that changes what round 2 samples
        "fgrpo.keep_checkpoints": "all",
        "rollout.group_size": 2, "rollout.max_tokens": 24, "rollout.enforce_eager": "true",
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _run(cmd: list[str], what: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    data, _ = stage_with_traces(tmp_path_factory.mktemp("staged-launch") / "data", 6, n_sft=2)
    return data


def test_train_cli_two_processes_with_vllm(staged, tiny_model_dir, tmp_path):
    train = ["-m", "flows.cli", "train", "--params", str(REPO / "params" / "tiny.yaml")]
    one = _run([sys.executable, *train, *_overrides(tiny_model_dir, staged, tmp_path / "one")], "one process")
    two = _run([*launch_args("ddp"), *train, *_overrides(tiny_model_dir, staged, tmp_path / "two")],
               "accelerate launch, 2 processes")
    print(f"fgrpo train, 2 rounds: one process {one:.0f} s, 2 processes {two:.0f} s")

    runs = {k: tmp_path / k / "runs" for k in ("one", "two")}
    for r in (1, 2):
        a = pd.read_parquet(runs["one"] / f"round-{r}" / "rollouts.parquet")
        b = pd.read_parquet(runs["two"] / f"round-{r}" / "rollouts.parquet")
        assert len(a) == 3 * 2 and (a["policy_version"] == r - 1).all()
        pd.testing.assert_frame_equal(a, b)  # round 2: sampled by the policy the first update made
    m = {k: pd.read_csv(v / "train_metrics.csv") for k, v in runs.items()}
    assert m["two"]["policy_version"].tolist() == [1, 2]
    assert (m["two"]["optimizer_steps"] > 0).all()
    pd.testing.assert_frame_equal(pd.read_csv(runs["one"] / "multipliers.csv"),
                                  pd.read_csv(runs["two"] / "multipliers.csv"))
    for k in ("ckpt/round-1/model.safetensors", "ckpt/round-2/model.safetensors"):
        assert (tmp_path / "two" / k).is_file(), k
    # The update moved the policy enough to change what it samples (else round 2 proves nothing).
    r1 = pd.read_parquet(runs["one"] / "round-1" / "rollouts.parquet")
    r2 = pd.read_parquet(runs["one"] / "round-2" / "rollouts.parquet")
    assert r1["text"].tolist() != r2["text"].tolist()

"""FGRPO rounds under ``accelerate launch`` with 2 processes on the CPU (gloo), as DDP and as FSDP2
(the shipped configs/accelerate/fsdp.yaml): the main process alone samples, scores and writes,
every rank sees the same batch and takes the same dual step, resume works on every rank, the
outputs equal a one-process run, and a failure on the main process reaches the other rank as an
error. Under FSDP the weight push, the checkpoint (weights and optimiser state) and the resume
gather or scatter the shards.

Processes are started with ``--multi_gpu`` (torchrun), not ``--cpu``: see tests/test_update_ddp.py.
The sampler is the replay engine (tests/support/replay.py), so both runs see the same rollouts whatever
the policy; the exact judge, advantages, update, dual ascent and checkpoints run for real.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fgrpo_core.config import AdvantageMode, Params
from fgrpo_core.train.threads import cpu_threads
from tests.support.replay import ReplayEngine, stage_with_traces
from tests.test_update_ddp import launch_args

REPO = Path(__file__).resolve().parents[1]
N_RL = 6
STATS = ["loss", "pg_loss", "kl", "clip_frac", "ratio_mean", "grad_norm"]
TIMING = ["rollout_s", "score_s", "update_s", "tokens_per_s"]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return stage_with_traces(tmp_path_factory.mktemp("staged-ddp") / "data", N_RL, n_sft=2)


def _params() -> Params:
    p = Params()
    p.rollout.group_size, p.rollout.max_tokens, p.rollout.temperature = 4, 200, 1.0
    f = p.fgrpo
    f.mode, f.constraints = AdvantageMode("fgrpo"), ["consistency", "semantic", "spatial"]
    # 3 prompts x 4 rollouts a round; mini-batches of 2 and 1 prompts (8 and 4 rows, 4 + 4 and
    # 2 + 2 per rank); lr small because AdamW magnifies all-reduce rounding in near-zero gradient
    # entries to ~1% of a step (measured: 9e-7 after 4 steps of lr 2e-5; see test_update_ddp).
    f.rollout_batch, f.update_batch, f.micro_batch = 3, 2, 4
    f.lr, f.lambda_min_count, f.lambda_lr = 5e-6, 4, 0.5
    f.keep_checkpoints = "all"
    return p


def _one_process(p, staged, model_dir, run: Path):
    from fgrpo_core.models.loading import load_processor
    from fgrpo_core.train.setup import create_trainer

    data, traces = staged
    tr = create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges, init_path=model_dir,
                        data_dir=data, seed=0, engine=ReplayEngine(traces, load_processor(model_dir).tokenizer),
                        run_dir=run / "runs", ckpt_dir=run / "ckpt")
    with cpu_threads(1):
        tr.run(2, progress=False)


def _launch_two(p, staged, model_dir, run: Path, strategy: str = "ddp") -> float:
    data, traces = staged
    case = run.parent / "rounds-case.pt"
    torch.save(dict(params=p, data_dir=str(data), model_dir=str(model_dir), traces=traces, run=str(run)), case)
    cmd = [*launch_args(strategy), str(REPO / "tests" / "support" / "ddp_rounds_worker.py"), str(case), str(run / "out")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"accelerate launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return time.perf_counter() - t0


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN (not-applicable signals)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def one_process_run(staged, tiny_model_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one-process")
    _one_process(_params(), staged, tiny_model_dir, run)
    return run


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_rounds_equal_one(staged, tiny_model_dir, tmp_path, one_process_run, strategy):
    p = _params()
    seconds = _launch_two(p, staged, tiny_model_dir, tmp_path / "two", strategy)
    print(f"2-process {strategy} launch + 2 rounds (round 2 after a resume): {seconds:.1f} s")
    ranks = json.loads((tmp_path / "two" / "out" / "ranks.json").read_text())
    main, other = ranks
    assert main["sharded"] == other["sharded"] == (strategy == "fsdp")
    # Rounds 1 and 2 updated (round 3's sampler failed): under FSDP one gather of the full weights
    # a round, shared by the vLLM push and the checkpoint.
    assert main["gathers"] == other["gathers"] == (2 if strategy == "fsdp" else 0)

    # Roles: only the main process holds the sampler and the judge, and only it writes files.
    assert (main["engine"], main["judge"], other["engine"], other["judge"]) == (True, True, False, False)
    assert other["writes"] == []
    for r in (1, 2):
        assert {f"runs/round-{r}/rollouts.parquet", f"runs/round-{r}/scores.parquet",
                f"checkpoint round-{r}"} <= set(main["writes"])
    assert {"runs/multipliers.csv", "runs/train_metrics.csv"} <= set(main["writes"])
    assert main["resumed"] == other["resumed"] == 1  # both ranks resumed from the round-1 checkpoint
    # A sampler failure on the main process reaches the other rank as an error (no rank hangs).
    assert main["failure"] == "ConnectionError: sampler down"
    assert other["failure"] == "RuntimeError: round 3: rollout failed on the main process: ConnectionError: sampler down"

    # Every rank took the same dual steps on the same constraint means and reports the same metrics.
    assert main["lambdas"] == other["lambdas"]
    assert len(main["multipliers"]) == len(other["multipliers"]) == 2 * 3
    for a, b in zip(main["multipliers"], other["multipliers"]):
        assert all(_same(a[k], b[k]) for k in a), (a, b)
    for a, b in zip(main["metrics"], other["metrics"], strict=True):
        assert all(_same(a[k], b[k]) for k in a), (a, b)

    # Equal to one process: samples, scores and the multiplier history exactly; update statistics
    # and weights to rounding (DDP sums the ranks' gradients in another order).
    one, two = one_process_run / "runs", tmp_path / "two" / "runs"
    for r in (1, 2):
        for name in ("rollouts.parquet", "scores.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(one / f"round-{r}" / name),
                                          pd.read_parquet(two / f"round-{r}" / name))
    pd.testing.assert_frame_equal(pd.read_csv(one / "multipliers.csv"), pd.read_csv(two / "multipliers.csv"))
    m1 = pd.read_csv(one / "train_metrics.csv").drop(columns=TIMING)
    m2 = pd.read_csv(two / "train_metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(m1.drop(columns=STATS), m2.drop(columns=STATS))
    pd.testing.assert_frame_equal(m1[STATS], m2[STATS], check_exact=False, rtol=1e-5, atol=1e-7)
    assert (m1["grad_norm"] > 0).all()
    w1 = load_file(str(one_process_run / "ckpt" / "round-2" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "ckpt" / "round-2" / "model.safetensors"))
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - init[k]).abs().max()) for k in w1)
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"round-2 weights: max |two - one| = {worst:.1e}, moved by up to {moved:.1e}")
    assert moved > 1e-5  # 4 AdamW steps of up to lr = 5e-6 each
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-6, rtol=0, msg=k)

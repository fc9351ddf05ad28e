"""Kill and resume on the live vLLM engine: the determinism case (docs/method.md#determinism).

vLLM reproduces samples only when asked to: per-request seeds (``rollout.base.prompt_seed`` of
the round's seed and the prompt id), the in-process engine (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``VLLMEngine``'s default) and the same batch. A resumed run also starts a *new* engine, which
must get the round-r weights from the checkpoint on disk (``load_weights_from``) where the
uninterrupted run pushed them in place from memory (``update_weights``), and then sample the
very same tokens.

One run goes straight through 2 rounds; another is SIGKILLed mid-update in round 2 and resumed.
Round 1 of both (two fresh engines in two processes) and round 2 (in-place pushed weights vs a
reloaded checkpoint in a new engine) must give identical token ids, texts and sampler log-probs,
and the final weights, metrics and lambda history must be equal.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.faults.conftest import TIMING_COLUMNS, TrainProcess, run_train, train_overrides

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def test_vllm_resume_samples_what_the_uninterrupted_run_sampled(tmp_path, tiny_model_dir, faults_data):
    import vllm  # noqa: F401  (a missing vLLM is a failure of this test, never a skip)
    data_dir, _ = faults_data
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    # lr 1e-3: round 1 (zero advantages) moves the weights by weight decay only, ~1e-5 relative,
    # which the exact comparison of round 2's sampler log-probs sees if the engine were stale
    extra = {"rollout.engine": "vllm", "fgrpo.rounds": 2, "rollout.max_tokens": 24, "fgrpo.lr": 0.001}
    straight = TrainProcess(train_overrides(straight_dir, tiny_model_dir, data_dir, **extra), straight_dir, "straight")

    args = train_overrides(killed_dir, tiny_model_dir, data_dir, **extra)
    first = run_train(args, killed_dir, "p1", pause="update@2")
    assert first.stopped_at == "update@2" and first.returncode == -9, first.tail()
    second = run_train(args, killed_dir, "p2")
    assert second.returncode == 0 and "resuming after round 1" in second.stdout, second.tail()
    base = straight.finish()
    assert base.returncode == 0, base.tail()

    a, b = straight_dir / "runs", killed_dir / "runs"
    for r in (1, 2):
        ra = pd.read_parquet(a / f"round-{r}" / "rollouts.parquet")
        rb = pd.read_parquet(b / f"round-{r}" / "rollouts.parquet")
        assert len(ra) == 4 * 2 and (ra["token_ids"].map(len) > 0).all()
        pd.testing.assert_frame_equal(ra, rb, check_exact=True, obj=f"round {r} rollouts")  # bit for bit
    r1 = pd.read_parquet(a / "round-1" / "rollouts.parquet")
    r2 = pd.read_parquet(a / "round-2" / "rollouts.parquet")
    assert set(r1["policy_version"]) == {0} and set(r2["policy_version"]) == {1}  # round 2: policy 1

    ma, mb = pd.read_csv(a / "train_metrics.csv"), pd.read_csv(b / "train_metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns=TIMING_COLUMNS), mb.drop(columns=TIMING_COLUMNS), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(a / "multipliers.csv"), pd.read_csv(b / "multipliers.csv"))
    wa = load_file(str(straight_dir / "ckpt" / "round-2" / "model.safetensors"))
    wb = load_file(str(killed_dir / "ckpt" / "round-2" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

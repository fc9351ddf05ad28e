"""FGRPO rounds on the tiny model: every ablation mode, the dual rule on measured means, outputs,
and resume (N rounds == k rounds, a new process, N-k rounds)."""

import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fgrpo_core.config import AdvantageMode, Params
from tests.support.replay import ReplayEngine, stage_with_traces

N_RL = 12


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return stage_with_traces(tmp_path_factory.mktemp("staged") / "data", N_RL, n_sft=4)


def _params(mode="fgrpo", constraints=("consistency", "semantic", "spatial"), **fg):
    p = Params()
    p.rollout.group_size, p.rollout.max_tokens, p.rollout.temperature = 4, 200, 1.0
    f = p.fgrpo
    f.mode, f.constraints = AdvantageMode(mode), list(constraints)
    f.rollout_batch, f.update_batch, f.micro_batch = 6, 3, 12
    f.lr, f.lambda_min_count, f.lambda_lr = 1e-3, 4, 0.5  # big dual steps: visible in 3 rounds
    f.keep_checkpoints = "all"
    for k, v in fg.items():
        setattr(f, k, v)
    return p


def _trainer(p, staged, tiny_model_dir, tmp, engine=None):
    from fgrpo_core.models.loading import load_processor
    from fgrpo_core.train.setup import create_trainer

    data, traces = staged
    engine = engine or ReplayEngine(traces, load_processor(tiny_model_dir).tokenizer)
    return create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                          init_path=tiny_model_dir, data_dir=data, seed=0, engine=engine,
                          run_dir=tmp / "runs", ckpt_dir=tmp / "ckpt")


MODES = [
    ("grpo_task", ("consistency", "spatial")),
    ("reward_sum", ("consistency", "spatial")),
    ("gate", ("consistency", "spatial")),
    ("fgrpo_fixed", ("consistency", "semantic", "spatial")),
    ("fgrpo", ("consistency",)),
    ("fgrpo", ("consistency", "semantic", "spatial")),
]


@pytest.mark.parametrize("mode,constraints", MODES, ids=[f"{m}-{'+'.join(c)}" for m, c in MODES])
def test_three_rounds_each_mode(mode, constraints, staged, tiny_model_dir, tmp_path):
    p = _params(mode, constraints)
    tr = _trainer(p, staged, tiny_model_dir, tmp_path)
    assert tr.resume() == 0
    tr.run(3, progress=False)

    runs = tmp_path / "runs"
    for r in (1, 2, 3):
        assert (runs / f"round-{r}" / "rollouts.parquet").is_file()
        assert (tmp_path / "ckpt" / f"round-{r}" / "model.safetensors").is_file()
    metrics = pd.read_csv(runs / "train_metrics.csv")
    assert metrics["round"].tolist() == [1, 2, 3]
    assert metrics["policy_version"].tolist() == [1, 2, 3]  # weights pushed after every update
    assert (metrics["loss"].abs() > 0).any() and (metrics["grad_norm"] > 0).all()
    # no escape hatches: the shares of rollouts with nothing to judge are logged every round
    for col in ("semantic_undefined_share", "consistency_unjudged_share", "unparsable_share"):
        assert metrics[col].dropna().between(0.0, 1.0).all() and metrics[col].notna().any(), col

    hist = pd.read_csv(runs / "multipliers.csv")
    assert sorted(hist["constraint"].unique()) == sorted(constraints)
    assert len(hist) == 3 * len(constraints)
    f = p.fgrpo
    for r in (1, 2, 3):
        scores = pd.read_parquet(runs / f"round-{r}" / "scores.parquet")
        # Masks (docs/method.md#rewards): R_C and R_S only where the answer is right.
        assert scores.loc[scores.acc == 0, ["consistency", "semantic"]].isna().all().all()
        for name in constraints:
            row = hist[(hist.step == r - 1) & (hist.constraint == name)].iloc[0]
            applicable = scores[name].dropna()
            assert row["count"] == len(applicable)
            if len(applicable):
                assert row["mean"] == pytest.approx(applicable.mean())  # c_k = masked mean
            if mode != "fgrpo" or row["count"] < f.lambda_min_count:
                assert row["skipped"] and row["lambda_after"] == row["lambda_before"]
            else:  # docs/method.md#dual-ascent, by hand
                expect = min(max(row["lambda_before"] + f.lambda_lr * (row["threshold"] - row["mean"]), 0.0),
                             f.lambda_max)
                assert row["lambda_after"] == pytest.approx(expect)
            if r > 1:  # lambda carries over from the previous step
                prev = hist[(hist.step == r - 2) & (hist.constraint == name)].iloc[0]
                assert row["lambda_before"] == prev["lambda_after"]
    if mode == "fgrpo":
        moved = hist[~hist.skipped]
        assert len(moved) > 0, "no dual step was taken: the replayed signals never reached min_count"
        below = moved[moved["mean"] < moved["threshold"]]
        assert (below["lambda_after"] > below["lambda_before"]).all()  # rises while violated


def test_resume_equals_uninterrupted(staged, tiny_model_dir, tmp_path):
    p = _params("fgrpo")
    straight = _trainer(p, staged, tiny_model_dir, tmp_path / "a")
    straight.run(4, progress=False)

    first = _trainer(p, staged, tiny_model_dir, tmp_path / "b")
    first.run(2, progress=False)
    del first  # "killed" after round 2; a new trainer (fresh model, optimiser, lambda) resumes
    second = _trainer(p, staged, tiny_model_dir, tmp_path / "b")
    assert second.resume() == 2
    assert second.engine.policy_version == 2  # the engine holds the resumed policy
    second.run(4, progress=False)

    timing = ["rollout_s", "score_s", "update_s", "tokens_per_s"]
    a = pd.read_csv(tmp_path / "a" / "runs" / "train_metrics.csv").drop(columns=timing)
    b = pd.read_csv(tmp_path / "b" / "runs" / "train_metrics.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "runs" / "multipliers.csv"),
                                  pd.read_csv(tmp_path / "b" / "runs" / "multipliers.csv"))
    wa = load_file(str(tmp_path / "a" / "ckpt" / "round-4" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "ckpt" / "round-4" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(wa[k], init[k]) for k in wa), "training never changed the weights"


def test_interrupted_checkpoint_is_never_read(staged, tiny_model_dir, tmp_path):
    p = _params("fgrpo")
    tr = _trainer(p, staged, tiny_model_dir, tmp_path)
    tr.run(1, progress=False)
    # A save killed half-way leaves a hidden temporary directory, never a round-N directory.
    junk = tmp_path / "ckpt" / ".round-2.abc123"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    again = _trainer(p, staged, tiny_model_dir, tmp_path)
    assert again.resume() == 1
    assert not junk.exists()


def test_latest_only_keeps_one_checkpoint(staged, tiny_model_dir, tmp_path):
    p = _params("fgrpo", keep_checkpoints="latest")
    tr = _trainer(p, staged, tiny_model_dir, tmp_path)
    tr.run(2, progress=False)
    assert sorted(x.name for x in (tmp_path / "ckpt").iterdir()) == ["round-2"]


def test_round_with_the_live_vllm_engine(staged, tiny_model_dir, tmp_path, vllm_engine, restore_vllm_weights):
    """Real sampler: the pushed weights reach vLLM (PITFALLS: stale weights), outputs are written."""
    from fgrpo_core.prompts import build_messages
    from fgrpo_core.records import PromptInput, SamplingSettings
    from fgrpo_core.rollout.hf_engine import HFEngine

    p = _params("fgrpo", lr=5e-3)
    p.rollout.max_tokens = 24
    tr = _trainer(p, staged, tiny_model_dir, tmp_path, engine=vllm_engine)
    sample = tr.samples[0]
    probe = [PromptInput("probe", build_messages(sample.question, sample.choices), sample.image)]
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=8)
    before = vllm_engine.generate(probe, greedy).rollouts[0]
    v0 = vllm_engine.policy_version
    tr.run(2, progress=False)
    assert vllm_engine.policy_version == v0 + 2
    after = vllm_engine.generate(probe, greedy).rollouts[0]
    policy = tr.updater.accelerator.unwrap_model(tr.updater.model)
    reference = HFEngine(policy, tr.processor).generate(probe, greedy).rollouts[0]
    assert after.token_ids == reference.token_ids, "vLLM does not sample the trainer's current policy"
    assert after.token_ids != before.token_ids or not math.isclose(after.logprobs[0], before.logprobs[0],
                                                                    abs_tol=1e-6)
    rollouts = pd.read_parquet(tmp_path / "runs" / "round-2" / "rollouts.parquet")
    assert len(rollouts) == 6 * 4 and set(rollouts.policy_version) == {v0 + 1}

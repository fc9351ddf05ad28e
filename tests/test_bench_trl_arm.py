"""bench/update.py compares our update with TRL's GRPOTrainer on equal terms (issue #7).

The bench's TRL arm at toy size (2 prompts x G=4, <= 24 tokens): from the same weights, on the
same rollouts, ours and TRL's loss values coincide where their definitions do, and so do the
gradients they leave after one optimiser step. A drift in either side's loss, aggregation,
mini-batch order (the two groups get different advantages, so visiting another group first
changes the first micro-batch's loss) or model inputs breaks the apples-to-apples timing and fails
here. Not timed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train.policy import encode_prompt
from fgrpo_core.train.update import UpdateSettings

G = 4


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    from PIL import Image

    from bench.trl_update import build_grpo_trainer
    from fgrpo_core.models.loading import load_policy, load_processor

    # One thread: on the shared 2-core CI machine two threads made this test ~35x slower (46 s vs 1.3 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proc = load_processor(tiny_model_dir)
    base = load_policy(tiny_model_dir)
    # Two prompts of different lengths, so micro-batches mixing them carry left padding.
    prompts = [PromptInput(f"q{i}", build_messages("Which is closer?" + " really" * (3 * i), ["red", "blue"]),
                           Image.new("RGB", (112, 112), (40 + 90 * i, 90, 200))) for i in range(2)]
    enc = [encode_prompt(proc, p) for p in prompts]
    gen = torch.Generator().manual_seed(0)
    rows = [enc[i // G] for i in range(2 * G)]
    comps = [torch.randint(100, 900, (int(torch.randint(5, 24, (1,), generator=gen)),), generator=gen).tolist()
             for _ in range(2 * G)]
    group_ids = torch.tensor([i // G for i in range(2 * G)])
    advantages = torch.randn(2 * G, generator=gen)
    # update_batch 1 prompt: two optimiser steps, so the first mini-batch's 'dapo' normaliser
    # (the round's tokens per step) differs from ours (its own tokens) and the scale is exercised.
    settings = UpdateSettings(lr=1e-5, update_batch=1, micro_batch=2)
    trainer = build_grpo_trainer(copy.deepcopy(base), proc, settings, 2 * G, G, tmp_path_factory.mktemp("trl"))
    yield trainer, base, rows, comps, advantages, group_ids, settings, proc.tokenizer.pad_token_id
    torch.set_num_threads(threads)


def test_trl_arm_computes_our_loss_and_gradient(setup):
    from bench.trl_update import check_agreement

    trainer, base, rows, comps, adv, gid, settings, pad = setup
    a = check_agreement(trainer, base, rows, comps, adv, gid, settings, pad, n_prompts=2)
    assert a.scale != pytest.approx(1.0, abs=1e-3), "the toy batch should exercise the 'dapo' rescaling"
    assert abs(a.first_loss_ours) > 1e-3  # a real value, not two zeros agreeing
    assert a.first_loss_ours == pytest.approx(a.first_loss_trl, abs=1e-6)
    assert a.round_loss_ours == pytest.approx(a.round_loss_trl, abs=1e-6)
    assert a.grad_rel_diff < 1e-4
    # Negative control (the gradient check is not blind): TRL's own inputs carry mm_token_type_ids
    # (M-RoPE positions for the image), our update path passes none, and the gradients differ.
    assert a.grad_rel_diff_mrope > 100 * a.grad_rel_diff, (
        "TRL with mm_token_type_ids now matches our gradient: if fgrpo_core/train/policy.py passes them, "
        "drop the 'TRL 1-D' arm of bench/update.py and this control")


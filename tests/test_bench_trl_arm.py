"""bench/update.py compares our update with TRL's GRPOTrainer on equal terms (issue #7).

The bench's TRL arm at toy size (2 prompts x G=4, <= 24 tokens): from the same weights, on the
same rollouts, ours and TRL's loss values coincide where their definitions do, and so do the
gradients they leave after one optimiser step, both sides feeding Qwen2.5-VL the processor's
mm_token_type_ids (M-RoPE image positions). A drift in either side's loss, aggregation,
mini-batch order (the two groups get different advantages, so visiting another group first
changes the first micro-batch's loss) or model inputs breaks the apples-to-apples timing and fails
here. Negative control: TRL fed no mm_token_type_ids (1-D image positions) must leave a gradient
far outside the tolerance, so the gradient check can fail. Not timed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fgrpo_core.config import FGRPOParams, RolloutParams
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train.policy import collate, encode_prompt, vision_token_ids
from fgrpo_core.train.update import UpdateSettings

G = 4
GRAD_TOL = 1e-5  # max |g_ours - g_TRL| / max |g_TRL|; float32 summation order alone gives ~1e-6


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
    settings = UpdateSettings.from_params(FGRPOParams(lr=1e-5, update_batch=1, micro_batch=2, freeze_vision=False), RolloutParams())
    trainer = build_grpo_trainer(copy.deepcopy(base), proc, settings, 2 * G, G, tmp_path_factory.mktemp("trl"))
    yield trainer, base, rows, comps, advantages, group_ids, settings, proc.tokenizer.pad_token_id, enc
    torch.set_num_threads(threads)


def test_trl_arm_computes_our_loss_and_gradient(setup):
    from bench.trl_update import check_agreement

    trainer, base, rows, comps, adv, gid, settings, pad, _ = setup
    a = check_agreement(trainer, base, rows, comps, adv, gid, settings, pad, n_prompts=2)
    assert a.scale != pytest.approx(1.0, abs=1e-3), "the toy batch should exercise the 'dapo' rescaling"
    assert abs(a.first_loss_ours) > 1e-3  # a real value, not two zeros agreeing
    assert a.first_loss_ours == pytest.approx(a.first_loss_trl, abs=1e-6)
    assert a.round_loss_ours == pytest.approx(a.round_loss_trl, abs=1e-6)
    assert a.grad_rel_diff < GRAD_TOL
    # Negative control (the gradient check is not blind): TRL without mm_token_type_ids gives the
    # image tokens 1-D positions, another function, and its gradient must land far outside the
    # tolerance. If this fails, one side no longer uses M-RoPE (or the batch no longer carries types).
    assert a.grad_rel_diff_1d > 100 * GRAD_TOL, (
        f"TRL without mm_token_type_ids matches our gradient ({a.grad_rel_diff_1d:.1e}): "
        "the M-RoPE inputs no longer reach one of the two models")


def test_trl_gets_the_processor_image_types(setup):
    """TRL is fed our collated mm_token_type_ids: they must be 1 exactly on image placeholders.

    That is what TRL would build from the processor itself; a mismatch (e.g. types shifted by the
    left padding) would make both sides agree on a wrong input.
    """
    trainer, _, rows, comps, _, _, _, pad, enc = setup
    cfg = trainer.model.config
    assert len(enc[0].input_ids) != len(enc[1].input_ids)  # so the batch below is left-padded
    batch = collate([rows[0], rows[G]], [comps[0], comps[G]], pad, vision_token_ids(cfg))
    assert batch.mm_token_type_ids is not None, "collate dropped the processor's mm_token_type_ids"
    image = (batch.input_ids == int(cfg.image_token_id)).long()
    assert int(image.sum()) > 0
    assert torch.equal(batch.mm_token_type_ids, image)


"""The policy update reuses the first mini-batch's own log-probs as old log-probs (the policy has
not stepped yet) instead of a separate pass: the step must equal the full old-pass reference."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from fgrpo_core.config import FGRPOParams, RolloutParams
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train import update as update_mod
from fgrpo_core.train.policy import encode_prompt


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy, load_processor

    proc = load_processor(tiny_model_dir)
    model = load_policy(tiny_model_dir)
    prompts = [encode_prompt(proc, PromptInput(f"q{i}", build_messages(f"Which is left? {i}", ["a", "b"]),
                                                Image.new("RGB", (56, 56), (40 * i, 90, 30))))
               for i in range(4)]
    g = torch.Generator().manual_seed(0)
    rows = [prompts[i // 2] for i in range(8)]  # 4 prompts x G=2
    comps = [torch.randint(5, 900, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
             for _ in range(8)]
    adv = torch.randn(8, generator=g)
    gid = torch.arange(8) // 2
    return model, proc.tokenizer.pad_token_id, rows, comps, adv, gid


def _step(setup, monkeypatch, full_old_pass: bool, epochs: int = 2, micro_batch: int = 3, no_old_pass: bool = False):
    model, pad, rows, comps, adv, gid = setup
    torch.manual_seed(0)
    settings = update_mod.UpdateSettings.from_params(
        FGRPOParams(lr=1e-2, update_batch=2, micro_batch=micro_batch, epochs=epochs, beta=0.04, freeze_vision=False),
        RolloutParams())
    up = update_mod.PolicyUpdater(copy.deepcopy(model), copy.deepcopy(model), pad, settings)
    calls, olds = [], []
    real = up.sequence_logprobs
    monkeypatch.setattr(up, "sequence_logprobs", lambda m, p, c: (calls.append(len(p)), real(m, p, c))[1])
    real_mb = up._minibatch
    # The old log-probs each run fed to the loss (the list _minibatch fills in place).
    monkeypatch.setattr(up, "_minibatch", lambda idx, share, n, pr, co, a, old, *r: (
        olds.append(old), real_mb(idx, share, n, pr, co, a, old, *r))[1])
    monkeypatch.setattr(update_mod, "_has_dropout", lambda m: full_old_pass)
    if no_old_pass:  # negative control: every mini-batch takes its own live log-probs as old ones
        real_scored = up._scored
        monkeypatch.setattr(up, "_scored", lambda m, rows, *a: [None] * len(rows) if m is not up.ref_model
                            else real_scored(m, rows, *a))
    stats = up.step(rows, comps, adv, gid, torch.Generator().manual_seed(3))
    weights = {k: v.detach().clone() for k, v in up.named_weights()}
    return stats, weights, calls, olds[0]


def test_first_minibatch_old_logprobs_equal_a_separate_pass(setup, monkeypatch):
    # micro_batch=1: every forward (the separate old pass and the training forward alike) sees one
    # unpadded row, so both paths run the same kernels on the same shapes and the shortcut must be
    # BITWISE the separate pass: no tolerance. (With larger micro-batches the two paths batch
    # different rows together, and float32 reductions over other shapes round differently; four
    # AdamW steps then turn last-bit gradient differences of near-zero gradient coordinates into
    # up to ~lr per step, which no eps-scale tolerance on the weights can bound: that case is
    # checked on the old log-probs themselves below.)
    ref_stats, ref_w, ref_calls, ref_old = _step(setup, monkeypatch, full_old_pass=True, micro_batch=1)
    stats, w, calls, old = _step(setup, monkeypatch, full_old_pass=False, micro_batch=1)
    # 8 rollouts, mini-batches of 2 prompts = 4 rollouts: the old pass covers the other 4 only;
    # the reference pass always covers all 8 (then the frozen reference model: 8).
    assert ref_calls == [8, 8] and calls == [4, 8]
    assert stats.optimizer_steps == ref_stats.optimizer_steps == 4  # 2 epochs x 2 mini-batches
    for a, b in zip(old, ref_old, strict=True):
        assert torch.equal(a, b)
    assert stats.loss == ref_stats.loss and stats.clip_frac == ref_stats.clip_frac
    for k in ref_w:
        assert torch.equal(w[k], ref_w[k]), k


def test_negative_control_a_shortcut_for_every_minibatch_is_caught(setup, monkeypatch):
    """The check above catches the tempting wrong shortcut: skipping the old pass altogether, so
    that later mini-batches (after the policy stepped) take their own log-probs as old ones."""
    ref_stats, ref_w, _, ref_old = _step(setup, monkeypatch, full_old_pass=True, micro_batch=1)
    stats, w, calls, old = _step(setup, monkeypatch, full_old_pass=False, micro_batch=1, no_old_pass=True)
    assert calls == [8]  # the reference pass only
    assert any(not torch.equal(a, b) for a, b in zip(old, ref_old, strict=True))
    assert any(not torch.equal(w[k], ref_w[k]) for k in ref_w)


def test_first_minibatch_old_logprobs_in_padded_micro_batches(setup, monkeypatch):
    """micro_batch=3: the shortcut takes row j of a padded micro-batch as rollout i's old log-probs;
    a mix-up of rows moves a log-prob by O(1) (about log V = 7 nats per token under the random
    tiny model), float32 rounding by far less. Bound: a float32 dot product of length H is off by
    at most H * eps * sum|x*y| (the textbook worst case), so each logit and then each token
    log-prob is off by at most about H * eps * |log-prob| (H = the widest reduction, the MLP's
    intermediate size); the separate pass batches other rows, so it is compared to that bound."""
    model = setup[0]
    _, _, calls, old = _step(setup, monkeypatch, full_old_pass=False, micro_batch=3)
    _, _, _, ref_old = _step(setup, monkeypatch, full_old_pass=True, micro_batch=3)
    assert calls == [4, 8]
    h = max(model.config.text_config.hidden_size, model.config.text_config.intermediate_size)
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(old, ref_old, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=h * eps, atol=h * eps)


def test_dropout_is_detected(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy

    m = load_policy(tiny_model_dir)
    assert not update_mod._has_dropout(m)  # Qwen2.5-VL: attention_dropout 0
    m.config.text_config.attention_dropout = 0.1
    assert update_mod._has_dropout(m)

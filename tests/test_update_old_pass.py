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


def _step(setup, monkeypatch, full_old_pass: bool, epochs: int = 2):
    model, pad, rows, comps, adv, gid = setup
    torch.manual_seed(0)
    settings = update_mod.UpdateSettings.from_params(
        FGRPOParams(lr=1e-2, update_batch=2, micro_batch=3, epochs=epochs, beta=0.04, freeze_vision=False), RolloutParams())
    up = update_mod.PolicyUpdater(copy.deepcopy(model), copy.deepcopy(model), pad, settings)
    calls = []
    real = up.sequence_logprobs
    monkeypatch.setattr(up, "sequence_logprobs", lambda m, p, c: (calls.append(len(p)), real(m, p, c))[1])
    monkeypatch.setattr(update_mod, "_has_dropout", lambda m: full_old_pass)
    stats = up.step(rows, comps, adv, gid, torch.Generator().manual_seed(3))
    weights = {k: v.detach().clone() for k, v in up.named_weights()}
    return stats, weights, calls


def test_first_minibatch_old_logprobs_equal_a_separate_pass(setup, monkeypatch):
    ref_stats, ref_w, ref_calls = _step(setup, monkeypatch, full_old_pass=True)
    stats, w, calls = _step(setup, monkeypatch, full_old_pass=False)
    # 8 rollouts, mini-batches of 2 prompts = 4 rollouts: the old pass covers the other 4 only;
    # the reference pass always covers all 8 (then the frozen reference model: 8).
    assert ref_calls == [8, 8] and calls == [4, 8]
    assert stats.optimizer_steps == ref_stats.optimizer_steps == 4  # 2 epochs x 2 mini-batches
    assert stats.loss == pytest.approx(ref_stats.loss, abs=1e-6)
    assert stats.clip_frac == ref_stats.clip_frac
    for k in ref_w:
        torch.testing.assert_close(w[k], ref_w[k], atol=1e-6, rtol=1e-5)


def test_dropout_is_detected(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy

    m = load_policy(tiny_model_dir)
    assert not update_mod._has_dropout(m)  # Qwen2.5-VL: attention_dropout 0
    m.config.text_config.attention_dropout = 0.1
    assert update_mod._has_dropout(m)

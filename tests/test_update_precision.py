"""Precision of the policy update: float32 master weights, compute in the params' precision
(accelerate's mixed_precision, autocast), the reference run under the same autocast.

Why: on a GPU ``model.dtype: auto`` means bf16. An AdamW step moves each weight by about lr
(1e-6 in the paper), far below bf16's resolution of a weight (2^-13 ~ 1.2e-4 at |w| ~ 0.02), so
bf16 weights would silently not learn. The CPU runs bf16 autocast too, so this is tested here.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from fgrpo_core.config import FGRPOParams, RolloutParams
from fgrpo_core.train import update as update_mod
from tests.test_update_ddp import make_case


@pytest.fixture(scope="module")
def case(tiny_model_dir):
    return make_case(tiny_model_dir)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate fixes the mixed precision once per process (one run, one precision); these
    tests switch it, so each starts and leaves with a fresh state (the process group stays)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def _updater(case, dtype=torch.float32, mixed="bf16", lr=1e-6, beta=0.04):
    from fgrpo_core.models.loading import load_policy

    torch.manual_seed(0)
    model = load_policy(case["model_dir"], dtype=dtype)
    settings = update_mod.UpdateSettings.from_params(
        FGRPOParams(lr=1e-6, update_batch=4, micro_batch=4, epochs=1, beta=beta, freeze_vision=False), RolloutParams(),
        mixed_precision=mixed)
    # lr 0 (a step that must not move the weights) is below what params accept: set it on the settings
    settings = dataclasses.replace(settings, lr=lr)
    return update_mod.PolicyUpdater(model, copy.deepcopy(model), case["pad_id"], settings)


def _step(up, case):
    return up.step(case["rows"], case["completions"], case["advantages"], case["group_ids"],
                   torch.Generator().manual_seed(0))


def test_bf16_weights_refused(case):
    with pytest.raises(ValueError, match=r"float32 master weights.*torch.bfloat16 for model\."):
        _updater(case, dtype=torch.bfloat16)


def test_lr_1e6_step_moves_float32_master_weights_and_would_vanish_in_bf16(case):
    up = _updater(case)
    before = {k: v.detach().clone() for k, v in up.named_weights()}
    assert all(v.dtype == torch.float32 for v in before.values())
    stats = _step(up, case)
    after = dict(up.named_weights())
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    total = sum(v.numel() for v in before.values())
    # The same update applied to bf16 weights: most entries round back to where they were.
    kept_bf16 = sum(int(((before[k].bfloat16().float() + (after[k] - before[k])).bfloat16() != before[k].bfloat16()).sum())
                    for k in before)
    print(f"lr 1e-6: {changed / total:.1%} of entries move in float32, {kept_bf16 / total:.1%} would in bf16")
    assert stats.optimizer_steps == 1 and stats.grad_norm > 0
    assert changed / total > 0.5
    assert kept_bf16 / total < 0.1


def test_reference_shares_the_compute_precision(case):
    """One mini-batch, policy == reference: the KL is exactly 0 when both run under the same
    autocast; bf16 compute is really on (its log-probs differ from float32 compute)."""
    up = _updater(case, lr=0.0)
    stats = _step(up, case)
    assert stats.kl == 0.0
    ref_bf16 = up.sequence_logprobs(up.ref_model, case["rows"][:2], case["completions"][:2])
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    fp32 = _updater(case, mixed="no", lr=0.0)
    ref_fp32 = fp32.sequence_logprobs(fp32.ref_model, case["rows"][:2], case["completions"][:2])
    diff = max(float((a - b).abs().max()) for a, b in zip(ref_bf16, ref_fp32))
    print(f"max |logp_bf16 - logp_fp32| = {diff:.1e}")
    assert diff > 1e-4

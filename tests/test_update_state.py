"""The updater's strategy check and its optimiser state (one format under one process, DDP and
FSDP: torch's distributed-checkpoint full state dict, parameter names as keys)."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from PIL import Image

from fgrpo_core.config import FGRPOParams, RolloutParams
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train import update as update_mod
from fgrpo_core.train.policy import encode_prompt


@pytest.mark.parametrize("kind, fsdp2, error", [
    (DistributedType.NO, False, None),
    (DistributedType.MULTI_CPU, False, None),
    (DistributedType.MULTI_GPU, False, None),
    (DistributedType.FSDP, True, None),
    (DistributedType.FSDP, False, "FSDP version 2"),
    (DistributedType.DEEPSPEED, False, "DeepSpeed config is for SFT only"),
])
def test_strategy_check(kind, fsdp2, error):
    acc = SimpleNamespace(distributed_type=kind, is_fsdp2=fsdp2)
    if error is None:
        update_mod._check_strategy(acc)
    else:
        with pytest.raises(ValueError, match=error):
            update_mod._check_strategy(acc)


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy, load_processor

    proc = load_processor(tiny_model_dir)
    prompts = [encode_prompt(proc, PromptInput(f"q{i}", build_messages(f"Which is left? {i}", ["a", "b"]),
                                                Image.new("RGB", (56, 56), (60 * i, 90, 30))))
               for i in range(2)]
    g = torch.Generator().manual_seed(1)
    comps = [torch.randint(5, 900, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
             for _ in range(4)]
    return load_policy(tiny_model_dir), proc.tokenizer.pad_token_id, [prompts[i // 2] for i in range(4)], comps, \
        torch.randn(4, generator=g), torch.arange(4) // 2


def _updater(model, pad):
    settings = update_mod.UpdateSettings.from_params(
        FGRPOParams(lr=1e-2, update_batch=1, micro_batch=2, epochs=1, beta=0.04, freeze_vision=False), RolloutParams())
    return update_mod.PolicyUpdater(copy.deepcopy(model), copy.deepcopy(model), pad, settings)


def _step(up, batch, seed):
    _, _, rows, comps, adv, gid = batch
    return up.step(rows, comps, adv, gid, torch.Generator().manual_seed(seed))


def test_state_round_trip_continues_bitwise(batch):
    """Save after one step (through torch.save, as a checkpoint does), load into a fresh updater
    holding the saved weights: its next step equals the original's next step exactly."""
    model, pad = batch[0], batch[1]
    a = _updater(model, pad)
    _step(a, batch, 0)
    buf = io.BytesIO()
    torch.save({"weights": dict(a.named_weights()), "updater": a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["updater"]["format"] == update_mod.OPTIMIZER_FORMAT
    # names as keys (not optimiser indices), so the state maps onto any wrapping of the model
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved["updater"]["optimizer"]["state"]) == names

    b = _updater(model, pad)
    b.load_weights(saved["weights"])
    b.load_state_dict(saved["updater"])
    sa, sb = _step(a, batch, 1), _step(b, batch, 1)
    wa, wb = dict(a.named_weights()), dict(b.named_weights())
    moved = max(float((wa[k] - saved["weights"][k]).abs().max()) for k in wa)
    assert moved > 1e-3  # the second step moved the weights (AdamW, lr 1e-2)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert (sa.loss, sa.grad_norm) == (sb.loss, sb.grad_norm)

    # Control: without the optimiser state (fresh AdamW moments) the next step differs.
    c = _updater(model, pad)
    c.load_weights(saved["weights"])
    _step(c, batch, 1)
    assert any(not torch.equal(wa[k], v) for k, v in c.named_weights())


def test_old_format_refused(batch):
    up = _updater(batch[0], batch[1])
    old = {"optimizer": up.optimizer.state_dict(), "scheduler": up.scheduler.state_dict()}  # before the change
    with pytest.raises(ValueError, match="optimizer state format None.*--fresh"):
        up.load_state_dict(old)

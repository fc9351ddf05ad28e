"""TRL's GRPOTrainer doing the work of one ``PolicyUpdater.step``: the peer arm of bench/update.py.

What the TRL arm runs (``trl_step``), from the same weights, on the same rollouts and advantages:
  1. old and reference per-token log-probs: ``trainer._get_per_token_logps_and_entropies`` under
     ``no_grad``, in rollout order, chunks of ``micro_batch`` rows. This is what TRL's
     ``_generate_and_score_completions`` does after generation; it computes the old log-probs
     because one generation batch feeds more than one optimiser step here
     (``gradient_accumulation_steps % steps_per_generation != 0``), and so do we (always).
  2. for each epoch, the prompt groups in the same seeded order as ``PolicyUpdater.step``, cut into
     the same mini-batches and micro-batches; per micro-batch ``trainer.compute_loss(model, inputs)``
     + ``accelerator.backward``; per mini-batch zero grad, gradient clipping, one optimiser step,
     scheduler step (what ``Trainer``'s loop does around ``training_step``). The optimiser is
     TRL's own (``create_optimizer``: AdamW, no weight decay on biases and norms; ours decays all).
Left out on both sides: generation, rewards, advantages.

Each micro-batch is built by our ``collate`` (the same rows, the same padding) and handed to TRL as
the ``inputs`` dict its ``_generate_and_score_completions`` returns (prompt/completion ids and
masks, advantages, old/ref log-probs, pixel_values, image_grid_thw, num_images, num_items_in_batch,
and mm_token_type_ids, which Qwen2.5-VL's processor returns and TRL passes on: they are our
``SequenceBatch.mm_token_type_ids``, the processor's own, which our update passes to the model too,
so both sides give the image tokens the same M-RoPE positions). So the timing compares the
loss/log-prob implementations, not padding policies (TRL pads the whole generation batch to one
width, which would only make it slower).

The config matches ours where TRL allows it: epsilon / epsilon_high = clip_low / clip_high, beta,
temperature, lr, weight decay, grad clip, constant schedule, float32, no gradient checkpointing
(TRL's default is on; we never checkpoint), num_iterations = epochs, per-device batch = micro_batch.
Loss aggregation: token_mean -> "dapo", sequence_mean -> "grpo", fixed_length -> "dr_grpo".
Where the definitions still differ, see ``trl_loss_scale``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from fgrpo_core.train.policy import EncodedPrompt, SequenceBatch, collate, vision_token_ids
from fgrpo_core.train.update import UpdateSettings

LOSS_TYPE = {"token_mean": "dapo", "sequence_mean": "grpo", "fixed_length": "dr_grpo"}


def _zero_reward(completions, **kwargs) -> list[float]:
    """GRPOTrainer wants a reward function; we never generate, so it is never called."""
    return [0.0] * len(completions)


def _micro_counts(n_rollouts: int, group: int, st: UpdateSettings) -> tuple[int, int]:
    """(micro-batches per optimiser step, micro-batches per round) for TRL's batch arithmetic."""
    per_step = min(st.update_batch * group, n_rollouts)
    if per_step % st.micro_batch or n_rollouts % per_step:
        raise ValueError(f"TRL arm needs equal micro-batches: {n_rollouts} rollouts, {per_step} per optimiser step "
                         f"(update_batch {st.update_batch} x G {group}), micro_batch {st.micro_batch}")
    return per_step // st.micro_batch, n_rollouts // st.micro_batch


def build_grpo_trainer(model, processor, settings: UpdateSettings, n_rollouts: int, group: int, out_dir: Path):
    """A GRPOTrainer on ``model`` (its reference is loaded by TRL from the model's own path)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    st = settings
    accum, per_round = _micro_counts(n_rollouts, group, st)
    args = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=st.micro_batch,
        gradient_accumulation_steps=accum,
        steps_per_generation=per_round,  # one generation batch = the whole round
        num_generations=group,
        num_iterations=st.epochs,
        beta=st.beta,
        epsilon=st.clip_low,
        epsilon_high=st.clip_high,
        loss_type=LOSS_TYPE[st.aggregation],
        max_completion_length=st.max_tokens,
        temperature=st.temperature,
        learning_rate=st.lr,
        weight_decay=st.weight_decay,
        max_grad_norm=st.grad_clip,
        lr_scheduler_type="constant",
        bf16=False,
        gradient_checkpointing=False,
        use_vllm=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    data = Dataset.from_dict({"prompt": ["unused"] * (n_rollouts // group)})
    trainer = GRPOTrainer(model=model, reward_funcs=_zero_reward, args=args, train_dataset=data,
                          processing_class=processor)
    return trainer


def reset(trainer, state_dict: dict, n_steps: int) -> None:
    """Policy back to ``state_dict``, a fresh optimiser and scheduler (as a new PolicyUpdater has)."""
    trainer.model.load_state_dict(state_dict)
    trainer.model.zero_grad(set_to_none=True)
    trainer.optimizer, trainer.lr_scheduler = None, None
    trainer.create_optimizer_and_scheduler(num_training_steps=n_steps)


def trl_inputs(batch: SequenceBatch, advantages: Tensor | None = None, old: Tensor | None = None,
               ref: Tensor | None = None, num_items: Tensor | None = None, mrope: bool = True) -> dict:
    """The ``inputs`` dict TRL's ``_generate_and_score_completions`` would return for these rows.

    ``mrope``: pass ``mm_token_type_ids`` (the processor's, 1 on image placeholders, as collated in
    ``batch``), as TRL does with Qwen2.5-VL and as our update does. ``mrope=False`` is only the
    negative control of ``check_agreement``: transformers then falls back to 1-D positions for the
    image tokens, another function than the one our update (and vLLM) computes.
    """
    p = batch.input_ids.shape[1] - batch.completion_ids.shape[1]
    out = {
        "prompt_ids": batch.input_ids[:, :p],
        "prompt_mask": batch.attention_mask[:, :p],
        # TRL feeds the sampled ids back as input; our collate swaps vision tokens in the input row
        # for pad (trl#3847). The replayed completions hold none, so the rows are identical.
        "completion_ids": batch.completion_ids,
        "completion_mask": batch.completion_mask.long(),
    }
    if batch.pixel_values is not None:
        out.update(pixel_values=batch.pixel_values, image_grid_thw=batch.image_grid_thw,
                   num_images=[1] * batch.input_ids.shape[0])
    if mrope and batch.mm_token_type_ids is not None:
        out["mm_token_type_ids"] = batch.mm_token_type_ids
    if advantages is not None:
        out["advantages"] = advantages
    if old is not None:
        out["old_per_token_logps"] = old
    if ref is not None:
        out["ref_per_token_logps"] = ref
    if num_items is not None:
        out["num_items_in_batch"] = num_items
    return out


def _pad(rows: Sequence[Tensor], width: int) -> Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


@torch.no_grad()
def _logps(trainer, model, prompts, completions, pad_id, vis, mb, mrope) -> list[Tensor]:
    out: list[Tensor] = []
    for s in range(0, len(prompts), mb):
        batch = collate(prompts[s : s + mb], completions[s : s + mb], pad_id, vis)
        x = trl_inputs(batch, mrope=mrope)
        lp, _, _ = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([x["prompt_ids"], x["completion_ids"]], 1),
            torch.cat([x["prompt_mask"], x["completion_mask"]], 1), batch.completion_ids.shape[1],
            pixel_values=x.get("pixel_values"), image_grid_thw=x.get("image_grid_thw"),
            num_images=x.get("num_images"), mm_token_type_ids=x.get("mm_token_type_ids"))
        out += [lp[i, : len(c)].cpu() for i, c in enumerate(completions[s : s + mb])]
    return out


def minibatch_order(group_ids: Tensor, update_batch: int, epochs: int, generator: torch.Generator) -> list[list[int]]:
    """Row indices of each mini-batch, in the order ``PolicyUpdater.step`` visits them (same draws)."""
    groups = torch.unique(group_ids)
    out = []
    for _ in range(epochs):
        order = groups[torch.randperm(groups.numel(), generator=generator)]
        for g0 in range(0, order.numel(), update_batch):
            out.append(torch.isin(group_ids, order[g0 : g0 + update_batch]).nonzero().flatten().tolist())
    return out


@dataclass
class TRLStepResult:
    micro_losses: list[float]  # compute_loss values as returned (scaled by TRL for accumulation)
    num_items: int  # tokens in the generation batch (TRL's num_items_in_batch)
    optimizer_steps: int


def trl_step(trainer, prompts: Sequence[EncodedPrompt], completions: Sequence[Sequence[int]], advantages: Tensor,
             group_ids: Tensor, generator: torch.Generator, settings: UpdateSettings, pad_id: int,
             mrope: bool = True) -> TRLStepResult:
    """TRL's side of one update round (see the module docstring for what is included).

    ``mrope=False`` withholds ``mm_token_type_ids`` from TRL (the negative control only).
    """
    st = settings
    model = trainer.model
    vis = vision_token_ids(model.config)
    dev = trainer.accelerator.device
    old = _logps(trainer, model, prompts, completions, pad_id, vis, st.micro_batch, mrope)
    ref = _logps(trainer, trainer.ref_model, prompts, completions, pad_id, vis, st.micro_batch, mrope) \
        if st.beta else None
    num_items = torch.tensor(float(sum(len(c) for c in completions)), device=dev)
    losses: list[float] = []
    steps = 0
    model.train()
    for idx in minibatch_order(group_ids, st.update_batch, st.epochs, generator):
        chunks = [idx[s : s + st.micro_batch] for s in range(0, len(idx), st.micro_batch)]
        trainer.current_gradient_accumulation_steps = len(chunks)
        model.zero_grad(set_to_none=True)  # at the start, as PolicyUpdater: the last step's gradient stays readable
        for chunk in chunks:
            batch = collate([prompts[i] for i in chunk], [completions[i] for i in chunk], pad_id, vis).to(dev)
            width = batch.completion_ids.shape[1]
            inputs = trl_inputs(batch, advantages[chunk].to(dev, torch.float32),
                                _pad([old[i] for i in chunk], width).to(dev),
                                _pad([ref[i] for i in chunk], width).to(dev) if ref is not None else None,
                                num_items, mrope)
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(model, inputs)
            trainer.accelerator.backward(loss)
            losses.append(float(loss.detach()))
        trainer.accelerator.clip_grad_norm_(model.parameters(), st.grad_clip)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        steps += 1
    return TRLStepResult(losses, int(num_items), steps)


def trl_loss_scale(settings: UpdateSettings, minibatch_rows: Sequence[int], completions, num_items: int,
                   n_micro: int, n_micro_round: int) -> float:
    """Factor f with  ours = f * TRL  for a micro-batch loss, where the definitions differ only in scale.

    token_mean vs "dapo": we divide by the mini-batch's own token count; TRL divides by
        num_items_in_batch * accumulation / steps_per_generation, i.e. the round's tokens per
        optimiser step on average. f = that / ours (1 when one mini-batch holds the round).
    sequence_mean vs "grpo", fixed_length vs "dr_grpo": TRL takes the micro-batch mean and divides
        by the number of accumulated micro-batches; with equal micro-batches (required here) that is
        our mini-batch mean exactly: f = 1.
    """
    if settings.aggregation != "token_mean":
        return 1.0
    ours = sum(len(completions[i]) for i in minibatch_rows)
    trl = num_items * n_micro / n_micro_round
    return trl / ours


# ---------------------------------------------------------------------------------- agreement check
def our_micro_losses(updater, *step_args) -> list[float]:
    """Run ``updater.step`` and return each micro-batch loss it computed (a spy on policy_loss)."""
    import fgrpo_core.train.update as update_mod

    seen: list[float] = []
    real = update_mod.policy_loss

    def spy(*a, **k):
        loss, stats = real(*a, **k)
        seen.append(float(loss.detach()))
        return loss, stats

    update_mod.policy_loss = spy
    try:
        updater.step(*step_args)
    finally:
        update_mod.policy_loss = real
    return seen


def _grads(model) -> Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@dataclass
class Agreement:
    """Ours against TRL from the same weights on the same rollouts (see ``check_agreement``)."""

    first_loss_ours: float  # first micro-batch, the bench's settings
    first_loss_trl: float  # TRL's value times ``scale``
    scale: float  # trl_loss_scale of the first mini-batch
    round_loss_ours: float  # one mini-batch holding the round: sum of micro-batch losses
    round_loss_trl: float
    grad_rel_diff: float  # max |g_ours - g_trl| / max |g_trl| after that one (clipped) step
    # Negative control: the same against TRL fed no mm_token_type_ids (1-D image positions), a
    # different function, so this must be far above grad_rel_diff or the gradient check is blind.
    grad_rel_diff_1d: float


def check_agreement(trainer, base, prompts, completions, advantages, group_ids, settings: UpdateSettings,
                    pad_id: int, n_prompts: int) -> Agreement:
    """Loss and gradient of our update against TRL's, where the definitions coincide.

    1. The bench's settings: the first micro-batch's loss (before any step). On-policy the ratio is
       1 and the KL 0, so this pins the rows, masks, advantages and aggregation, not the log-probs.
    2. One mini-batch holding the whole round (one optimiser step, ``f = 1``): the summed loss and
       the clipped gradient left after the step, which does depend on the log-probs. TRL is run
       twice: on our inputs with ``mm_token_type_ids`` (M-RoPE, as both sides run), and, as a
       negative control, without them (1-D image positions: another function).
    Both arms start from ``base``'s weights; our reference is a copy of ``base``, TRL's is loaded
    from the same directory.
    """
    from dataclasses import replace

    from fgrpo_core.train.update import PolicyUpdater

    state = base.state_dict()
    n = len(completions)

    def args():  # a fresh seeded generator each time: the mini-batch order is drawn from it
        return prompts, completions, advantages, group_ids, torch.Generator().manual_seed(0)

    def ours(st):
        return PolicyUpdater(copy.deepcopy(base), copy.deepcopy(base), pad_id, st)

    def trl(st, mrope):
        reset(trainer, state, len(minibatch_order(group_ids, st.update_batch, st.epochs, args()[4])))
        return trl_step(trainer, *args(), st, pad_id, mrope=mrope)

    st = settings
    ours_first = our_micro_losses(ours(st), *args())[0]
    trl_first = trl(st, mrope=True)
    first_mb = minibatch_order(group_ids, st.update_batch, st.epochs, args()[4])[0]
    f = trl_loss_scale(st, first_mb, completions, trl_first.num_items, len(first_mb) // st.micro_batch,
                       n // st.micro_batch)

    one = replace(st, update_batch=n_prompts, epochs=1)
    up = ours(one)
    ours_round = sum(our_micro_losses(up, *args()))
    g_ours = _grads(up.model)
    trl_round = sum(trl(one, mrope=True).micro_losses)
    g_trl = _grads(trainer.model)
    trl(one, mrope=False)
    g_trl_1d = _grads(trainer.model)
    return Agreement(ours_first, trl_first.micro_losses[0] * f, f, ours_round, trl_round,
                     _rel(g_ours, g_trl), _rel(g_ours, g_trl_1d))

"""The constrained policy update of one round (docs/method.md#policy-step), on accelerate.

    old log-probs   recomputed by the policy that sampled the round, before any step   [ours];
                    the first mini-batch runs on that very policy, so its rollouts take their
                    own detached log-probs (one forward fewer per round for 1/M of the data)
    ref log-probs   the frozen SFT policy
    for epoch in 1..epochs:
        shuffle the prompt groups (seeded), cut into mini-batches of ``update_batch`` prompts
        for each mini-batch: micro-batches of ``micro_batch`` sequences, gradients accumulated
            loss = policy_loss(...) with the mini-batch's own denominator, so the accumulated
                   micro-batch losses equal the mini-batch loss exactly
        clip the gradient norm, one AdamW step

``accelerate`` does the device placement, DDP/FSDP2 wrapping (under
``accelerate launch``) and the gradient sync; gradients are synchronised only on the last
micro-batch of each mini-batch (``no_sync``).

Several processes (``accelerate launch``, W = ``num_processes``): every rank holds the whole
round (same rollouts, advantages, seeded mini-batch order) and takes its own contiguous share of
each mini-batch (``accelerator.split_between_processes``); it scores old/ref log-probs only for
the rollouts it trains on. Each rank's loss keeps the mini-batch's *global* denominator, so the
ranks' losses add up to the mini-batch loss; DDP averages gradients over ranks, hence the loss is
multiplied by W before backward and the synchronised gradient equals the one-process gradient of
the whole mini-batch:

    grad = (1/W) sum_r grad(W * loss_r) = grad(sum_r loss_r) = grad(loss of the mini-batch)

Every rank makes the same number of policy forward/backward calls (wrappers communicate inside
them: DDP syncs buffers and gradients, FSDP gathers parameters): a rank whose share runs out
first fills up with zero-weighted calls on one row of the mini-batch (``accelerate``'s
``join_uneven_inputs`` cannot do this: it is for a rank that leaves the loop for good, and it is
a no-op outside multi-GPU DDP). Statistics are summed over ranks (``accelerator.reduce``), so
every rank reports the global numbers. With one process all of this reduces to the plain loop.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
from torch import Tensor

from fgrpo_core.loss import policy_loss
from fgrpo_core.train.policy import EncodedPrompt, collate, completion_logprobs, vision_token_ids


@dataclass(frozen=True, kw_only=True)
class UpdateSettings:
    """The fields of ``FGRPOParams`` the update reads. No defaults: each value (the paper's
    included) is defined once, in ``FGRPOParams``/``RolloutParams``; build with ``from_params``."""

    lr: float
    weight_decay: float
    grad_clip: float
    clip_low: float
    clip_high: float
    beta: float
    aggregation: str
    max_tokens: int  # response budget, for fixed_length aggregation
    update_batch: int  # prompts per optimiser step
    micro_batch: int  # sequences per forward/backward
    epochs: int
    temperature: float  # sampling temperature: log-probs are taken at it
    freeze_vision: bool
    # Compute precision (accelerate's mixed_precision: "no", "bf16", "fp16"). The weights the
    # optimiser steps stay float32 (master weights): an AdamW step of lr 1e-6 is below bf16's
    # resolution of a weight, so bf16 weights would barely move (measured on the tiny model: 1.8%
    # of the entries changed, against 83% with float32 weights).
    mixed_precision: str = "no"

    @classmethod
    def from_params(cls, p, rollout, mixed_precision: str = "no") -> "UpdateSettings":
        return cls(mixed_precision=mixed_precision, lr=p.lr, weight_decay=p.weight_decay, grad_clip=p.grad_clip, clip_low=p.clip_low,
                   clip_high=p.clip_high, beta=p.beta, aggregation=p.loss_aggregation,
                   max_tokens=p.loss_max_length or rollout.max_tokens, update_batch=p.update_batch, micro_batch=p.micro_batch,
                   epochs=p.epochs, temperature=rollout.temperature if rollout.temperature > 0 else 1.0,
                   freeze_vision=p.freeze_vision)


@dataclass
class UpdateStats:
    loss: float
    pg_loss: float
    kl: float
    clip_frac: float
    ratio_mean: float
    grad_norm: float  # mean pre-clip gradient norm over the optimiser steps
    optimizer_steps: int
    tokens: int
    seconds: float


# While the main process samples and scores a round, the other ranks wait inside a collective
# (rounds.py); NCCL's default 10-minute timeout would abort them on a long round.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def process_state():
    """accelerate's view of the processes, as the updater's ``Accelerator`` sets it up; call it
    before anything else creates the process group (the first call fixes it for the process).
    Without ``cpu=True`` on a machine without CUDA, the ranks that ``accelerate launch`` starts
    each believe they are alone (``DistributedType.NO``)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=PROCESS_GROUP_TIMEOUT)


def _pad(rows: Sequence[Tensor], width: int) -> Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


class PolicyUpdater:
    """Holds the policy, the frozen reference, the optimiser and the scheduler."""

    def __init__(self, model, ref_model, pad_token_id: int, settings: UpdateSettings, accelerator=None):
        from accelerate import Accelerator
        from transformers import get_scheduler

        self.settings = settings
        if accelerator is None:
            process_state()  # the process group (if launched) with our timeout, before Accelerator
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available(),
                                                      mixed_precision=settings.mixed_precision)
        low = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
        if low:
            raise ValueError(f"the policy's trainable weights must be float32 master weights (compute precision "
                             f"comes from mixed_precision), got {model.get_parameter(low[0]).dtype} for {low[0]} "
                             f"and {len(low) - 1} more")
        self.pad_id = pad_token_id
        self.vision_ids = vision_token_ids(model.config)
        if settings.freeze_vision:
            for name, p in model.named_parameters():
                if ".visual." in f".{name}":
                    p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = get_scheduler("constant", optimizer)
        _check_strategy(self.accelerator)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.ref_model = None
        if ref_model is not None:
            ref_model.requires_grad_(False)
            if self.sharded:  # sharded like the policy (with cpu_ram_efficient_loading: rank 0's weights)
                from accelerate.utils.fsdp_utils import fsdp2_prepare_model

                ref_model = fsdp2_prepare_model(self.accelerator, ref_model)
            self.ref_model = ref_model.to(self.accelerator.device).eval()

    # ------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def sequence_logprobs(self, model, prompts: Sequence[EncodedPrompt], completions: Sequence[Sequence[int]]) -> list[Tensor]:
        """Per-rollout ``[len(c_i)]`` log-probs under ``model`` (no gradient), micro-batched, in the
        policy's compute precision (the reference too, so that its KL starts at exactly 0)."""
        out: list[Tensor] = []
        mb = self.settings.micro_batch
        was_training = model.training
        model.eval()
        for s in range(0, len(prompts), mb):
            batch = collate(prompts[s : s + mb], completions[s : s + mb], self.pad_id, self.vision_ids)
            with self.accelerator.autocast():
                lp = completion_logprobs(model, batch.to(self.accelerator.device), self.settings.temperature).cpu()
            out += [lp[i, : len(c)] for i, c in enumerate(completions[s : s + mb])]
        model.train(was_training)
        return out

    # ------------------------------------------------------------------ the step
    def step(
        self,
        prompts: Sequence[EncodedPrompt],  # one per rollout (repeated within a group)
        completions: Sequence[Sequence[int]],  # sampled token ids per rollout
        advantages: Tensor,  # [N]
        group_ids: Tensor,  # [N] prompt group of each rollout
        generator: torch.Generator,  # seeded: mini-batch order (the same on every rank)
    ) -> UpdateStats:
        st = self.settings
        n = len(completions)
        if not (len(prompts) == n == advantages.numel() == group_ids.numel()):
            raise ValueError(f"update: {len(prompts)} prompts, {n} completions, {advantages.numel()} advantages, "
                             f"{group_ids.numel()} group ids")
        t0 = time.perf_counter()
        minibatches = minibatch_plan(group_ids, st.update_batch, st.epochs, generator)
        shares = [self._share(idx) for idx in minibatches]  # this rank's rollouts of each mini-batch
        needed = sorted(set().union(*shares))  # all N with one process
        # Old log-probs: the policy before this round's first optimiser step. The first mini-batch
        # runs on exactly that policy, so its own (detached) log-probs are the old ones: no separate
        # pass for its rollouts (unless dropout makes a training forward differ from an eval one).
        policy = self.accelerator.unwrap_model(self.model)
        live_first = set(shares[0]) if shares and not _has_dropout(policy) else set()
        rest = [i for i in needed if i not in live_first]
        # Equal forward counts on every rank (FSDP gathers parameters inside each forward):
        # [old-pass rows, ref-pass rows, then micro-batches per mini-batch], max over ranks.
        counts = self._max_over_ranks([len(rest), len(needed)] + [_n_chunks(len(s), st.micro_batch) for s in shares])
        old: list[Tensor | None] = [None] * n
        for i, lp in zip(rest, self._scored(policy, rest, counts[0], prompts, completions)):
            old[i] = lp
        ref: list[Tensor | None] | None = None
        if st.beta:
            ref = [None] * n
            # The unsharded reference (one process, DDP) has no collectives: no filler rows.
            target = counts[1] if self.sharded else len(needed)
            for i, lp in zip(needed, self._scored(self.ref_model, needed, target, prompts, completions)):
                ref[i] = lp

        sums = _Sums()
        steps = 0
        self.model.train()
        for idx, share, n_calls in zip(minibatches, shares, counts[2:]):
            sums.grad_norm += self._minibatch(idx, share, n_calls, prompts, completions, advantages, old, ref, sums)
            steps += 1
        sums = self._sum_over_ranks(sums)
        tok = max(sums.tokens, 1)
        return UpdateStats(
            loss=sums.loss / steps, pg_loss=sums.pg / steps, kl=sums.kl / tok,
            clip_frac=sums.clip / tok, ratio_mean=sums.ratio / tok, grad_norm=sums.grad_norm / steps,
            optimizer_steps=steps, tokens=sums.tokens // max(st.epochs, 1), seconds=time.perf_counter() - t0,
        )

    def _scored(self, model, rows: list[int], target: int, prompts, completions) -> list[Tensor]:
        """Log-probs of ``rows`` under ``model``, padded to ``target`` rows with a repeated row (scored
        and thrown away) so that every rank makes the same number of forwards."""
        padded = rows + (rows[:1] or [0]) * (target - len(rows))
        return self.sequence_logprobs(model, [prompts[i] for i in padded], [completions[i] for i in padded])[: len(rows)]

    def _minibatch(self, idx, share, n_calls, prompts, completions, advantages, old, ref, sums) -> float:
        """One optimiser step on mini-batch ``idx``; this rank trains on ``share`` in ``n_calls``
        forward/backward calls (the last one synchronises gradients). Returns the gradient norm."""
        st = self.settings
        lengths = [len(completions[i]) for i in idx]
        denominator = {  # of the whole mini-batch, on every rank
            "token_mean": float(max(sum(lengths), 1)),
            "sequence_mean": float(max(sum(1 for n in lengths if n > 0), 1)),
            "fixed_length": float(len(idx) * st.max_tokens),
        }[st.aggregation]
        world = self.accelerator.num_processes
        dev = self.accelerator.device
        self.optimizer.zero_grad(set_to_none=True)
        chunks = [share[s : s + st.micro_batch] for s in range(0, len(share), st.micro_batch)]
        chunks += [None] * (n_calls - len(chunks))  # zero-weighted calls (see the module docstring)
        for k, chunk in enumerate(chunks):
            rows = chunk if chunk is not None else idx[:1]
            batch = collate([prompts[i] for i in rows], [completions[i] for i in rows], self.pad_id,
                            self.vision_ids).to(dev)
            width = batch.completion_ids.shape[1]
            sync = contextlib.nullcontext() if k == len(chunks) - 1 else self.accelerator.no_sync(self.model)
            with sync:
                logp = completion_logprobs(self.model, batch, st.temperature)
                if chunk is None:  # same graph as a real call, gradient exactly 0
                    self.accelerator.backward(logp.sum() * 0.0)
                    continue
                for j, i in enumerate(chunk):
                    if old[i] is None:  # first mini-batch: the policy has not stepped yet
                        old[i] = logp[j, : len(completions[i])].detach().cpu()
                loss, stats = policy_loss(
                    logp,
                    _pad([old[i] for i in chunk], width).to(dev),
                    _pad([ref[i] for i in chunk], width).to(dev) if ref is not None else None,
                    advantages[chunk].to(dev, torch.float32),
                    batch.completion_mask,
                    clip_low=st.clip_low, clip_high=st.clip_high, beta=st.beta,
                    aggregation=st.aggregation, max_length=st.max_tokens, denominator=denominator,
                )
                # DDP averages over W ranks; the ranks' losses add up to the mini-batch loss.
                self.accelerator.backward(loss * world if world > 1 else loss)
            sums.loss += float(loss.detach())
            sums.pg += stats.pg_loss
            sums.kl += stats.kl * stats.tokens
            sums.clip += stats.clip_frac * stats.tokens
            sums.ratio += stats.ratio_mean * stats.tokens
            sums.tokens += stats.tokens
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), st.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)  # of the synchronised gradient: the same on every rank

    # ------------------------------------------------------------------ processes
    def _share(self, idx: list[int]) -> list[int]:
        """This rank's contiguous part of ``idx`` (all of it with one process)."""
        with self.accelerator.split_between_processes(idx) as mine:
            return list(mine)

    def _max_over_ranks(self, values: list[int]) -> list[int]:
        if self.accelerator.num_processes == 1:
            return values
        t = torch.tensor(values, dtype=torch.long, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="max").tolist()

    def _sum_over_ranks(self, sums: "_Sums") -> "_Sums":
        """Every statistic summed over ranks, except the gradient norm (already global)."""
        if self.accelerator.num_processes == 1:
            return sums
        t = torch.tensor([sums.loss, sums.pg, sums.kl, sums.clip, sums.ratio, float(sums.tokens)],
                         dtype=torch.float64, device=self.accelerator.device)
        loss, pg, kl, clip, ratio, tokens = self.accelerator.reduce(t, reduction="sum").tolist()
        return _Sums(loss=loss, pg=pg, kl=kl, clip=clip, ratio=ratio, tokens=int(round(tokens)),
                     grad_norm=sums.grad_norm)

    # ------------------------------------------------------------------ state
    # Under FSDP each rank holds a shard of every parameter and of its optimiser state: the full
    # weights and the full optimiser state are gathered by collectives, so the methods below must
    # be called on EVERY rank, in the same order (rounds.py does). torch's distributed-checkpoint
    # state-dict API gives one format under one process, DDP and FSDP (parameter names as keys,
    # full tensors), so a checkpoint written by one resumes under another.

    @property
    def sharded(self) -> bool:
        """FSDP: parameters and optimiser state are split across the ranks."""
        return bool(getattr(self.accelerator, "is_fsdp2", False))

    def named_weights(self):
        """The policy's parameters under transformers names, full tensors (for the vLLM push and
        saving). Collective under FSDP: call on every rank; the main process gets the weights (the
        others may get an empty dict)."""
        if self.sharded:
            return self.accelerator.get_state_dict(self.model).items()
        return self.accelerator.unwrap_model(self.model).state_dict().items()

    def load_weights(self, state: dict[str, Tensor]) -> None:
        """Full weights into the policy. Under FSDP (collective) only the main process's ``state``
        is read: it is broadcast and each rank keeps its shard (the others may pass ``{}``; with
        ``cpu_ram_efficient_loading`` transformers loads zeros on them)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(
                full_state_dict=True, broadcast_from_rank0=True, strict=True))
        else:
            self.accelerator.unwrap_model(self.model).load_state_dict(state, strict=True)

    def state_dict(self) -> dict:
        """Optimiser (full state, keyed by parameter name) and scheduler. Collective under FSDP."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim = get_optimizer_state_dict(self.model, self._torch_optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {"optimizer": optim, "scheduler": self.scheduler.state_dict(), "format": OPTIMIZER_FORMAT}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if state.get("format") != OPTIMIZER_FORMAT:
            raise ValueError(f"optimizer state format {state.get('format')!r}, expected {OPTIMIZER_FORMAT!r} "
                             "(a checkpoint written before the format change cannot be resumed; start with --fresh)")
        set_optimizer_state_dict(self.model, self._torch_optimizer, optim_state_dict=state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])

    @property
    def _torch_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's wrapper holds it


# Optimiser state in checkpoints: torch.distributed.checkpoint's full state dict (names as keys).
OPTIMIZER_FORMAT = "dcp-full-v1"


def _check_strategy(accelerator) -> None:
    """The update is written for one process, DDP and FSDP2 (see the module docstring)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ValueError("fgrpo train runs under DDP (configs/accelerate/ddp.yaml) or FSDP2 "
                         "(configs/accelerate/fsdp.yaml); the DeepSpeed config is for SFT only")
    if kind == DistributedType.FSDP and not getattr(accelerator, "is_fsdp2", False):
        raise ValueError("fgrpo train needs FSDP version 2 (fsdp_config.fsdp_version: 2 in the accelerate "
                         "config); FSDP 1 is not supported")


@dataclass
class _Sums:
    """Running sums of one step (``kl``, ``clip``, ``ratio`` weighted by tokens)."""

    loss: float = 0.0
    pg: float = 0.0
    kl: float = 0.0
    clip: float = 0.0
    ratio: float = 0.0
    tokens: int = 0
    grad_norm: float = 0.0


def minibatch_plan(group_ids: Tensor, update_batch: int, epochs: int, generator: torch.Generator) -> list[list[int]]:
    """Rollout indices of each mini-batch: per epoch a seeded shuffle of the prompt groups, cut
    into runs of ``update_batch`` groups (a group never straddles two mini-batches)."""
    groups = torch.unique(group_ids)
    orders = [groups[torch.randperm(groups.numel(), generator=generator)] for _ in range(epochs)]
    return [torch.isin(group_ids, order[g0 : g0 + update_batch]).nonzero().flatten().tolist()
            for order in orders for g0 in range(0, order.numel(), update_batch)]


def _n_chunks(rows: int, micro_batch: int) -> int:
    return -(-rows // micro_batch)


def _has_dropout(model) -> bool:
    """Any dropout that is active in training mode (then a training forward is not the old policy)."""
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    cfgs = [getattr(model, "config", None)]
    cfgs += [getattr(cfgs[0], k, None) for k in ("text_config", "vision_config")] if cfgs[0] is not None else []
    return any(float(getattr(c, "attention_dropout", 0.0) or 0.0) > 0 for c in cfgs if c is not None)

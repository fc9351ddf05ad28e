"""Advantages: FGRPO's decoupled normalisation and the ablation switch (docs/method.md#decoupled-advantages, #ablation-rows).

FGRPO (decoupled normalisation, docs/method.md#decoupled-advantages):
    z_x[i] = (r_x[i] - mu_x[g]) / (sigma_x[g] + eps)   per signal x, over the applicable
                                                       (non-NaN) values of i's group g
    z_x[i] = 0   where r_x[i] is NaN, or g has fewer than 2 applicable values of x
    A[i]   = z_task[i] + sum_k lambda_k z_k[i]
    A      = (A - mean(A)) / (std(A) + eps)            whitening over the whole batch

Conventions (open in the paper, fixed and tested here):
- **std**: unbiased (Bessel, divides by n - 1) by default, as TRL's and verl's GRPO do
  (``torch.std``); ``unbiased=False`` gives the population std. The same convention is used for
  the group statistics and for whitening.
- **Groups by id, never by reshape** (docs/method.md#groups-by-id): the core works on flat ``[N]`` tensors with
  explicit group ids, so uneven groups never mix prompts and singleton groups get 0. The
  ``[B, G]`` functions are thin wrappers that build the ids ``i // G``.
- Per-group z-scores sum to 0 inside each group, so the batch mean of A is 0 up to rounding
  and whitening is in effect a rescaling: a group with no signal keeps advantage 0.

The ablation rows (``AdvantageMode``, docs/method.md#ablation-rows) differ only in how rewards become A:
- ``grpo_task``:  A = z(R_task)                                     (GRPO-T, no constraints)
- ``reward_sum``: A = z(1/3 R_acc + 1/3 R_acc R_C + 1/3 R_fmt R_G)   (the paper's ablation,
                  "R_C, R_G added to the reward")
- ``gate``:       A = z(1/2 R_acc R_C + 1/2 R_fmt R_G)               ("multiplicative gates")
- ``fgrpo_fixed`` / ``fgrpo``: the decoupled A above (they differ only in whether lambda moves,
  see ``fgrpo_core.lagrangian``).
Joint modes are plain GRPO z-scores and are not whitened; ``whiten`` applies to the decoupled
combination, whose scale grows with the number and size of the lambdas.

The two shaped rewards need R_acc and R_fmt apart (``TaskRewards``), and exactly the two
constraints the paper names, R_C and R_G. Where a term is not a number **[ours]**:
- **R_C is NaN** -> the consistency bonus is 0. Where R_acc = 0 the product R_acc R_C is 0 anyway.
  A right answer earns the bonus only on a verdict "consistent": a right answer the judge could
  not rule on (scoring already gives R_C = 0 to a right answer without a parsable reasoning,
  see ``train.scoring``; what is left is a judge failure) gets no bonus, so breaking the
  reasoning never pays.
- **R_G is NaN** (the sample has no ground-truth box) -> R_G counts as 1, so the term is R_fmt:
  the paper's formula is kept unchanged where R_G is defined, the weights stay 1/3 (1/2) for
  every prompt, and the format incentive the term carries stays. This opens no escape hatch:
  whether R_G is defined is a property of the *sample* (the same for all G rollouts of a group),
  not something the policy can choose, and a policy that writes no box on a sample that has
  ground-truth boxes gets R_G = 0 (nothing matched), not NaN. As z-scores are taken within a
  group, the alternatives differ only in the within-group contrast: dropping the term (or
  renormalising the weights over the defined terms) would remove any reward for a well-formed
  output on box-less prompts, while R_fmt R_S would bring in a signal the paper's rows do not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from fgrpo_core.config import AdvantageMode

GroupIds = Tensor | Sequence[Hashable]
_DECOUPLED = (AdvantageMode.fgrpo, AdvantageMode.fgrpo_fixed)


# --------------------------------------------------------------------------------------------
# Flat core: everything below is built from group_zscore and batch_whiten
# --------------------------------------------------------------------------------------------
def _index_groups(group_ids: GroupIds, n: int) -> tuple[Tensor, int]:
    """Dense ids 0..n_groups-1 ([N] long) from a tensor or a sequence of hashable ids."""
    if isinstance(group_ids, Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids must be 1-D [N], got shape {tuple(group_ids.shape)}")
        _, dense = torch.unique(group_ids, return_inverse=True)
    else:
        seen: dict[Hashable, int] = {}
        dense = torch.tensor([seen.setdefault(g, len(seen)) for g in group_ids], dtype=torch.long)
    if dense.numel() != n:
        raise ValueError(f"group_ids has {dense.numel()} entries, rewards have {n}")
    return dense, int(dense.max()) + 1 if n else 0


def _check_signal(name: str, r: Tensor, n: int, allow_nan: bool) -> Tensor:
    if r.dim() != 1 or r.numel() != n:
        raise ValueError(f"reward '{name}' must have shape [{n}], got {tuple(r.shape)}")
    r = r.to(torch.float64)
    bad = torch.isinf(r) | (torch.isnan(r) & (not allow_nan))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"reward '{name}' has value {r[i].item()} at rollout {i}")
    return r


def group_zscore(
    rewards: Tensor,  # [N] float, NaN = not applicable
    group_ids: GroupIds,  # [N] group of each rollout
    eps: float = 1e-4,
    unbiased: bool = True,
) -> Tensor:  # [N] float64
    """NaN-aware per-group z-score; 0 at NaN entries and in groups with < 2 applicable values."""
    n = rewards.numel()
    ids, n_groups = _index_groups(group_ids, n)
    r = _check_signal("rewards", rewards.reshape(-1), n, allow_nan=True)
    ok = ~torch.isnan(r)  # [N]
    x = torch.where(ok, r, 0.0)
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, ok.double())  # [n_groups]
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, x) / count.clamp(min=1)
    dev = torch.where(ok, x - mean[ids], 0.0)  # [N]; exactly 0 where a group is constant
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, dev * dev)
    std = (sq / (count - (1 if unbiased else 0)).clamp(min=1)).sqrt()  # [n_groups]
    z = dev / (std[ids] + eps)
    return torch.where(ok & (count[ids] >= 2), z, 0.0)


def batch_whiten(advantages: Tensor, eps: float = 1e-4, unbiased: bool = True) -> Tensor:
    """(A - mean) / (std + eps) over all entries (0 for fewer than 2 entries)."""
    a = advantages.to(torch.float64)
    if a.numel() < 2:
        return torch.zeros_like(a)
    return (a - a.mean()) / (a.std(correction=1 if unbiased else 0) + eps)


def _out_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


# --------------------------------------------------------------------------------------------
# GRPO and FGRPO on flat rollouts with group ids
# --------------------------------------------------------------------------------------------
def grpo_advantages_by_id(
    rewards: Tensor,  # [N]
    group_ids: GroupIds,  # [N]
    eps: float = 1e-4,
    unbiased: bool = True,
) -> Tensor:  # [N]
    """Plain GRPO: the per-group z-score of one scalar reward."""
    return group_zscore(rewards, group_ids, eps, unbiased).to(_out_dtype(rewards))


def signal_advantages(
    task: Tensor,  # [N], no NaN
    constraints: Mapping[str, Tensor],  # name -> [N], NaN = not applicable
    group_ids: GroupIds,  # [N]
    eps: float = 1e-4,
    unbiased: bool = True,
) -> dict[str, Tensor]:  # "task" and each constraint name -> [N] float64 z-scores
    """The decoupled per-signal z-scores before weighting (also what a trainer logs)."""
    n = task.numel()
    _check_signal("task", task.reshape(-1), n, allow_nan=False)  # task applies to every rollout
    if "task" in constraints:
        raise ValueError("a constraint may not be called 'task'")
    out = {"task": group_zscore(task.reshape(-1), group_ids, eps, unbiased)}
    for name, r in constraints.items():
        _check_signal(name, r.reshape(-1), n, allow_nan=True)
        out[name] = group_zscore(r.reshape(-1), group_ids, eps, unbiased)
    return out


def decoupled_advantages_by_id(
    task: Tensor,  # [N]
    constraints: Mapping[str, Tensor],  # name -> [N], NaN = not applicable
    lambdas: Mapping[str, float],  # name -> lambda_k (every constraint needs one)
    group_ids: GroupIds,  # [N]
    eps: float = 1e-4,
    whiten: bool = True,
    unbiased: bool = True,
) -> Tensor:  # [N]
    """FGRPO's A = z_task + sum_k lambda_k z_k (then whitened), on flat rollouts."""
    missing = sorted(set(constraints) - set(lambdas))
    if missing:
        raise ValueError(f"no lambda for constraint(s) {missing}; lambdas has {sorted(lambdas)}")
    z = signal_advantages(task, constraints, group_ids, eps, unbiased)
    a = z["task"].clone()
    for name in constraints:
        a += float(lambdas[name]) * z[name]
    if whiten:
        a = batch_whiten(a, eps, unbiased)
    return a.to(_out_dtype(task))


# --------------------------------------------------------------------------------------------
# [B, G] forms (rows are prompts, columns their G rollouts)
# --------------------------------------------------------------------------------------------
def _rows(t: Tensor, name: str) -> Tensor:
    if t.dim() != 2:
        raise ValueError(f"'{name}' must be [B, G], got shape {tuple(t.shape)}")
    return torch.arange(t.shape[0]).repeat_interleave(t.shape[1])  # [B*G] group id = row


def grpo_advantages(rewards: Tensor, eps: float = 1e-4, unbiased: bool = True) -> Tensor:
    """Plain GRPO advantage of a [B, G] reward: z-score within each row."""
    return grpo_advantages_by_id(rewards.reshape(-1), _rows(rewards, "rewards"), eps, unbiased).view_as(rewards)


def decoupled_advantages(
    task: Tensor,  # [B, G]
    constraints: Mapping[str, Tensor],  # name -> [B, G], NaN = not applicable
    lambdas: Mapping[str, float],
    eps: float = 1e-4,
    whiten: bool = True,
    unbiased: bool = True,
) -> Tensor:  # [B, G]
    """FGRPO's decoupled advantage of [B, G] rewards (see the module docstring)."""
    ids = _rows(task, "task")
    for name, r in constraints.items():
        if r.shape != task.shape:
            raise ValueError(f"constraint '{name}' has shape {tuple(r.shape)}, task has {tuple(task.shape)}")
    flat = {k: v.reshape(-1) for k, v in constraints.items()}
    return decoupled_advantages_by_id(task.reshape(-1), flat, lambdas, ids, eps, whiten, unbiased).view_as(task)


# --------------------------------------------------------------------------------------------
# The ablation switch
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRewards:
    """The two rule-based rewards of each rollout that R_task is made of (docs/method.md#rewards)."""

    acc: Tensor  # [N] or [B, G], R_acc in {0, 1}
    fmt: Tensor  # same shape, R_fmt in {0, 1}


# The paper's ablation rewards (docs/method.md#ablation-rows): weights of (R_acc, R_acc R_C, R_fmt R_G).
SHAPED_WEIGHTS: dict[AdvantageMode, tuple[float, float, float]] = {
    AdvantageMode.reward_sum: (1 / 3, 1 / 3, 1 / 3),
    AdvantageMode.gate: (0.0, 1 / 2, 1 / 2),
}
SHAPED_CONSTRAINTS = ("consistency", "spatial")  # R_C and R_G: the only constraints they use


def shaped_reward(
    mode: AdvantageMode,
    task: Tensor,  # [N] or [B, G], R_task (used by grpo_task only)
    constraints: Mapping[str, Tensor],  # "consistency", "spatial" -> same shape, NaN = not applicable
    parts: TaskRewards | None = None,  # R_acc, R_fmt: required by reward_sum and gate
) -> Tensor:  # same shape, float64
    """The single reward the joint modes normalise (see the module docstring for the NaN rules)."""
    for name, c in constraints.items():
        if c.shape != task.shape:
            raise ValueError(f"constraint '{name}' has shape {tuple(c.shape)}, task has {tuple(task.shape)}")
    if mode is AdvantageMode.grpo_task:
        return task.to(torch.float64)
    if mode not in SHAPED_WEIGHTS:
        raise ValueError(f"mode {mode.value} has no single shaped reward (it is decoupled)")
    if parts is None:
        raise ValueError(f"mode {mode.value} needs R_acc and R_fmt apart: pass parts=TaskRewards(acc, fmt)")
    if sorted(constraints) != sorted(SHAPED_CONSTRAINTS):
        raise ValueError(f"mode {mode.value} is the paper's reward over R_C and R_G: the active constraints must "
                         f"be {list(SHAPED_CONSTRAINTS)}, got {sorted(constraints)} (fgrpo.constraints)")
    acc = _check_signal("acc", parts.acc.reshape(-1), task.numel(), allow_nan=False).view(task.shape)
    fmt = _check_signal("fmt", parts.fmt.reshape(-1), task.numel(), allow_nan=False).view(task.shape)
    c = torch.nan_to_num(constraints["consistency"].to(torch.float64), nan=0.0)  # no verdict, no bonus
    g = torch.nan_to_num(constraints["spatial"].to(torch.float64), nan=1.0)  # no boxes: the term is R_fmt
    w_acc, w_c, w_g = SHAPED_WEIGHTS[mode]
    return w_acc * acc + w_c * acc * c + w_g * fmt * g  # docs/method.md#ablation-rows (the paper's ablation)


def compute_advantages(
    mode: AdvantageMode | str,
    task: Tensor,  # [B, G], or [N] with group_ids
    constraints: Mapping[str, Tensor],  # name -> same shape as task, NaN = not applicable
    lambdas: Mapping[str, float],  # used by the decoupled modes only
    active: Sequence[str] | None = None,  # constraint subset (None = all given)
    eps: float = 1e-4,
    whiten: bool = True,  # decoupled modes only
    unbiased: bool = True,
    group_ids: GroupIds | None = None,  # required for flat [N] inputs
    parts: TaskRewards | None = None,  # R_acc, R_fmt (same shape as task): reward_sum and gate need them
) -> Tensor:  # same shape as task
    """Per-rollout rewards (+ lambda) -> advantages for one row of the ablation table."""
    mode = AdvantageMode(mode)
    names = list(constraints) if active is None else list(active)
    unknown = sorted(set(names) - set(constraints))
    if unknown:
        raise ValueError(f"active constraint(s) {unknown} not among the given {sorted(constraints)}")
    used = {k: constraints[k] for k in names}
    if group_ids is None:
        if mode in _DECOUPLED:
            return decoupled_advantages(task, used, lambdas, eps, whiten, unbiased)
        return grpo_advantages(shaped_reward(mode, task, used, parts), eps, unbiased).to(_out_dtype(task))
    if mode in _DECOUPLED:
        return decoupled_advantages_by_id(task, used, lambdas, group_ids, eps, whiten, unbiased)
    return grpo_advantages_by_id(shaped_reward(mode, task, used, parts), group_ids, eps, unbiased).to(_out_dtype(task))

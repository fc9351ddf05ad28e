"""The FGRPO policy loss (docs/method.md#constrained-objective, #decoupled-advantages, #policy-step).

    objective   max_theta E[R_task]  s.t.  E[R_k] >= tau_k,  k in {consistency, semantic, spatial}
    Lagrangian  L(theta, lambda) = E[R_task] + sum_k lambda_k (E[R_k] - tau_k)   (lagrangian.py)
    advantage   A_i = whiten(z(R_task)_i + sum_k lambda_k z(R_k)_i)   per-group z (advantages.py)
    per token   rho_t = exp(logp_t - logp_old_t)
                l_t   = -min(rho_t A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) A_i) + beta KL_t
                KL_t  = exp(ref_t - logp_t) - (ref_t - logp_t) - 1    (k3 estimator: unbiased, >= 0)
    loss        = aggregate(l_t over the response tokens of all sequences)

Where we depart from GRPO (DeepSeekMath) and from the paper:
- Asymmetric clip (eps_low 0.2, eps_high 0.28, DAPO's clip-higher) as the paper; GRPO clips
  symmetrically.
- Aggregation is a parameter. ``token_mean`` (default, DAPO/EasyR1): sum over all tokens / number
  of tokens, so long answers weigh by length. ``sequence_mean`` (GRPO paper): mean over tokens
  inside each sequence, then over sequences. ``fixed_length`` (Dr. GRPO): sum / (N * max_length),
  a constant normaliser free of length bias; ``max_length`` is the response budget
  (``rollout.max_tokens``), and a sequence longer than it is an error.
- With gradient accumulation the per-call mean is not the batch mean: pass ``denominator`` (the
  whole update batch's token count, sequence count, or N * max_length) so that the micro-batch
  losses add up to the full-batch loss.
- Old log-probs come from the policy that generated the round, recomputed by the trainer,
  not the sampler's **[ours]**; they and the reference log-probs carry no gradient.
- Positions where ``mask`` is 0 never touch the loss or the gradient, whatever they hold
  (inf, NaN): they are replaced before any arithmetic, not multiplied by 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Aggregation = Literal["token_mean", "sequence_mean", "fixed_length"]


@dataclass(frozen=True)
class LossStats:
    """What one loss call saw (means over unmasked tokens unless said otherwise)."""

    loss: float  # the returned loss
    pg_loss: float  # the clipped-surrogate part, aggregated like the loss
    kl: float  # mean k3 KL to the reference
    ratio_mean: float  # mean rho_t
    ratio_min: float
    ratio_max: float
    clip_frac_low: float  # share of tokens with A < 0 and rho < 1 - eps_low (gradient cut)
    clip_frac_high: float  # share of tokens with A > 0 and rho > 1 + eps_high (gradient cut)
    tokens: int  # unmasked tokens
    sequences: int  # sequences with at least one unmasked token

    @property
    def clip_frac(self) -> float:
        return self.clip_frac_low + self.clip_frac_high


def _check_shapes(logprobs: Tensor, others: dict[str, Tensor | None], advantages: Tensor) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got {tuple(logprobs.shape)}")
    for name, t in others.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, logprobs has {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [N] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}")
    if not torch.isfinite(advantages).all():
        i = int((~torch.isfinite(advantages)).nonzero()[0])
        raise ValueError(f"advantages[{i}] = {advantages[i].item()} is not finite")


def policy_loss(
    logprobs: Tensor,  # [N, T] log pi_theta of the taken tokens (requires grad)
    old_logprobs: Tensor,  # [N, T] log pi_old (the policy that sampled the round)
    ref_logprobs: Tensor | None,  # [N, T] log pi_ref (SFT policy); None only when beta == 0
    advantages: Tensor,  # [N] one advantage per sequence
    mask: Tensor,  # [N, T] 1 on response tokens, 0 on prompt/padding
    *,  # no defaults: the paper's values live once, in FGRPOParams (fgrpo.clip_low, ...)
    clip_low: float,
    clip_high: float,
    beta: float,
    aggregation: Aggregation,
    max_length: int | None = None,  # fixed_length only: the response budget T_max
    denominator: float | None = None,  # override the aggregation's count (grad accumulation)
) -> tuple[Tensor, LossStats]:
    """Clipped surrogate with a k3 KL penalty (see the module docstring); returns (loss, stats)."""
    _check_shapes(logprobs, {"old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs, "mask": mask}, advantages)
    if beta != 0 and ref_logprobs is None:
        raise ValueError(f"beta = {beta} needs ref_logprobs")
    m = mask.bool()  # [N, T]
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    # Replace masked positions first: where() passes no gradient to them and no inf/NaN survives.
    logp = torch.where(m, logprobs, zero)
    old = torch.where(m, old_logprobs.detach().to(logprobs.dtype), zero)
    adv = advantages.detach().to(logprobs.dtype)[:, None]  # [N, 1]

    ratio = torch.exp(logp - old)  # [N, T]
    surr = ratio * adv
    surr_clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv
    pg_tok = -torch.minimum(surr, surr_clipped)  # [N, T], docs/method.md#policy-step
    if beta != 0:
        ref = torch.where(m, ref_logprobs.detach().to(logprobs.dtype), zero)
        d = ref - logp
        kl_tok = torch.exp(d) - d - 1  # k3 (Schulman 2020)
    else:
        kl_tok = torch.zeros_like(logp)
    pg_tok = torch.where(m, pg_tok, zero)
    kl_tok = torch.where(m, kl_tok, zero)

    n_tok_seq = m.sum(1)  # [N]
    tokens, sequences = int(n_tok_seq.sum()), int((n_tok_seq > 0).sum())

    def aggregate(tok: Tensor) -> Tensor:
        if aggregation == "token_mean":
            return tok.sum() / (denominator if denominator is not None else max(tokens, 1))
        if aggregation == "sequence_mean":
            per_seq = tok.sum(1) / n_tok_seq.clamp(min=1)  # [N]; empty sequences give 0
            return per_seq.sum() / (denominator if denominator is not None else max(sequences, 1))
        if aggregation == "fixed_length":
            if max_length is None:
                raise ValueError("aggregation 'fixed_length' needs max_length (the response budget)")
            longest = int(n_tok_seq.max()) if n_tok_seq.numel() else 0
            if longest > max_length:
                raise ValueError(f"a sequence has {longest} response tokens, more than max_length {max_length}")
            return tok.sum() / (denominator if denominator is not None else max(logprobs.shape[0] * max_length, 1))
        raise ValueError(f"unknown aggregation '{aggregation}' (token_mean, sequence_mean, fixed_length)")

    pg_loss = aggregate(pg_tok)
    kl_loss = aggregate(kl_tok)
    loss = pg_loss + beta * kl_loss

    with torch.no_grad():
        denom = max(tokens, 1)
        valid_ratio = ratio[m]
        stats = LossStats(
            loss=float(loss),
            pg_loss=float(pg_loss),
            kl=float(kl_tok.sum() / denom),
            ratio_mean=float(valid_ratio.mean()) if tokens else 1.0,
            ratio_min=float(valid_ratio.min()) if tokens else 1.0,
            ratio_max=float(valid_ratio.max()) if tokens else 1.0,
            clip_frac_low=float(((adv < 0) & (ratio < 1 - clip_low) & m).sum() / denom),
            clip_frac_high=float(((adv > 0) & (ratio > 1 + clip_high) & m).sum() / denom),
            tokens=tokens,
            sequences=sequences,
        )
    return loss, stats

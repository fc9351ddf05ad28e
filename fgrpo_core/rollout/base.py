"""The rollout engine interface: prompts with images in, typed rollouts out.

Two engines implement it: :class:`~fgrpo_core.rollout.vllm_engine.VLLMEngine` (the one training
uses; kept alive across rounds, new weights pushed in place) and
:class:`~fgrpo_core.rollout.hf_engine.HFEngine` (transformers ``generate``; the reference, and the
fallback on machines without vLLM).

Log-probs are the policy's *raw* per-token log-probs of the sampled tokens (log-softmax of the
logits before temperature / top-p), which is what vLLM returns by default. The trainer recomputes
old log-probs itself (docs/method.md#policy-step); these are for diagnostics and staleness checks.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Protocol, Sequence, runtime_checkable

import torch

from fgrpo_core.records import PromptInput, RolloutBatch, SamplingSettings


@runtime_checkable
class RolloutEngine(Protocol):
    policy_version: int

    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSettings) -> RolloutBatch:
        """``sampling.n`` completions per prompt, ordered by (prompt, sample index)."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load new policy weights (transformers parameter names) in place; returns the new
        policy version."""
        ...


def prompt_seed(base_seed: int | None, prompt_id: str) -> int | None:
    """Per-request seed: stable across runs and independent of batch order (resume-safe)."""
    if base_seed is None:
        return None
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

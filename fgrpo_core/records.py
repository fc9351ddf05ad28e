"""Typed records passed between stages (docs/method.md#code-principles: containers a reader can look up).

Shapes: ``B`` prompts, ``G`` completions per prompt, ``T`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class PromptInput:
    """One prompt for a rollout engine: chat messages and the image they refer to.

    ``messages`` use the Hugging Face multimodal chat format; the user turn holds one
    ``{"type": "image"}`` part, which the engine fills with ``image``.
    """

    prompt_id: str
    messages: list[dict[str, Any]]
    image: Image.Image | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: ``n`` completions per prompt; temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None


@dataclass
class Rollout:
    """One completion of one prompt, as the sampler produced it."""

    prompt_id: str
    sample_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float] | None  # [T] sampler log-prob of each generated token
    finish_reason: str  # "stop" | "length" | ...
    prompt_token_ids: list[int] = field(default_factory=list)


@dataclass
class RolloutBatch:
    """All completions of one engine call, ordered by (prompt, sample index)."""

    rollouts: list[Rollout]
    policy_version: int = 0

    def by_prompt(self) -> dict[str, list[Rollout]]:
        out: dict[str, list[Rollout]] = {}
        for r in self.rollouts:
            out.setdefault(r.prompt_id, []).append(r)
        return out

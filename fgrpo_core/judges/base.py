"""The judge protocol (docs/method.md#rewards): consistency R_C and semantic grounding R_S.

Every judge (the exact scene-graph verifier, a vLLM offline model, an OpenAI-compatible HTTP
endpoint) takes batches of requests and returns one verdict per request, in order. A verdict
always carries a status; only ``ok`` verdicts carry a score. A judge failure is counted, and is
never a score (docs/method.md#a-missing-reward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, Sequence, runtime_checkable

from PIL import Image


class VerdictStatus(str, Enum):
    ok = "ok"  # the judge answered and the answer parsed
    unparseable = "unparseable"  # the judge answered, but not in the required form
    failed = "failed"  # no answer: timeout, transport error, exhausted retries


class SentenceLabel(str, Enum):
    correct = "CORRECT"  # 1: the sentence is true of the image
    incorrect = "INCORRECT"  # 0: it describes something that is not there / not so
    skip = "SKIP"  # excluded from the mean (not checkable, or trivial)


@dataclass(frozen=True)
class ConsistencyRequest:
    """Does ``answer`` follow from ``reasoning``'s own logic (not: is it true)?"""

    question: str
    choices: tuple[str, ...]
    reasoning: str
    answer: str
    scene: dict[str, Any] | None = None  # scene graph, for the exact verifier


@dataclass(frozen=True)
class SemanticRequest:
    """Label each non-trivial sentence of the reasoning given the image and the question."""

    question: str
    choices: tuple[str, ...]
    sentences: tuple[str, ...]  # already split and filtered (judges.sentences)
    image: Image.Image | None = None
    scene: dict[str, Any] | None = None  # scene graph, for the exact verifier


@dataclass
class ConsistencyVerdict:
    status: VerdictStatus
    consistent: bool | None = None  # None unless status is ok
    raw: str = ""  # the judge's raw output (or the error text)

    @property
    def score(self) -> float:
        """R_C in {0, 1}, or NaN (not a score) when the judge did not deliver."""
        if self.status is not VerdictStatus.ok or self.consistent is None:
            return math.nan
        return 1.0 if self.consistent else 0.0


@dataclass
class SemanticVerdict:
    status: VerdictStatus
    labels: list[SentenceLabel] = field(default_factory=list)  # one per request sentence
    raw: str = ""

    @property
    def score(self) -> float:
        """R_S = share of CORRECT among non-SKIP sentences; NaN when none or not ok."""
        if self.status is not VerdictStatus.ok:
            return math.nan
        kept = [lab for lab in self.labels if lab is not SentenceLabel.skip]
        if not kept:
            return math.nan
        return sum(lab is SentenceLabel.correct for lab in kept) / len(kept)


@runtime_checkable
class Judge(Protocol):
    """Batched judge. ``name`` and ``version`` enter the verdict cache key."""

    name: str
    version: str

    def consistency(self, requests: Sequence[ConsistencyRequest]) -> list[ConsistencyVerdict]: ...

    def semantic(self, requests: Sequence[SemanticRequest]) -> list[SemanticVerdict]: ...

"""Asking the judges about a batch of completions, and settling each verdict: one home for
training (``train/scoring.py``) and evaluation (``eval/runner.py``).

For each completion the caller chooses to judge, the requests are built as everywhere else
(``agreement.trace_requests``: parse, split, drop trivial sentences), sent in one batch per
signal, and each verdict is settled into ``(status, score)``:

    status   ok | unparseable | failed | unjudgeable, or None where nothing was asked (not chosen,
             or the signal is off)
    score    the verdict's score where the status is ok, NaN otherwise
    rules    a consistency verdict "ok" without a verdict (NaN) is a judge bug: unparseable, counted
             as a failure, never a score. A chosen completion that gives a judge nothing to rule on
             is ``unjudgeable`` (NaN): no parsable reasoning or answer (consistency), no checkable
             sentence, or a semantic "ok" whose every sentence was SKIP (K' = 0). What an
             unjudgeable completion then counts as is the caller's rule (training scores it 0,
             evaluation counts it as inconsistent / 0 grounding: docs/rewards.md), so that writing
             nothing checkable is never a way out of a constraint.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from fgrpo_core.judges.agreement import trace_requests
from fgrpo_core.judges.base import ConsistencyVerdict, Judge, SemanticVerdict, VerdictStatus


UNJUDGEABLE = "unjudgeable"  # a chosen completion that gave the judge nothing to rule on


@dataclass(frozen=True)
class Trace:
    """One completion to judge, with what the judges see of its sample."""

    question: str
    choices: Sequence[str]
    text: str  # the whole completion
    image: Any = None
    scene: dict | None = None


@dataclass
class Verdicts:
    """Settled verdicts, aligned with the traces asked about."""

    consistency_status: list[str | None]
    consistency: list[float]
    semantic_status: list[str | None]
    semantic: list[float]
    sentences: list[int]  # sentences sent to the semantic judge (0 where not asked)
    no_reasoning: list[bool]  # chosen, but no parsable reasoning or answer (whether or not asked)
    no_claim: list[bool]  # chosen, but no checkable sentence (whether or not asked)

    def counts(self, signal: str) -> dict[str, int]:
        """status -> count over the completions asked about (``signal``: consistency or semantic)."""
        return dict(Counter(s for s in getattr(self, f"{signal}_status") if s is not None))


def settle(v: ConsistencyVerdict | SemanticVerdict) -> tuple[str, float]:
    """``(status, score)`` of one verdict (module docstring)."""
    status = v.status.value if isinstance(v.status, VerdictStatus) else str(v.status)
    score = v.score
    if status == VerdictStatus.ok.value and math.isnan(score):
        status = VerdictStatus.unparseable.value if isinstance(v, ConsistencyVerdict) else UNJUDGEABLE
    return status, (score if status == VerdictStatus.ok.value else math.nan)


def _expect(n: int, got: list, what: str, judge: Judge) -> list:
    if len(got) != n:
        raise RuntimeError(f"judge {getattr(judge, 'name', judge)!r}: {what} returned {len(got)} verdicts "
                           f"for {n} requests")
    return got


def ask_judges(judge: Judge, traces: Sequence[Trace | None], *, consistency: bool = True,
               semantic: bool = True) -> Verdicts:
    """Ask ``judge`` about every trace that is not None (one batch per signal); settle the verdicts."""
    n = len(traces)
    out = Verdicts([None] * n, [math.nan] * n, [None] * n, [math.nan] * n, [0] * n, [False] * n, [False] * n)
    c_at, c_req, s_at, s_req = [], [], [], []
    for i, t in enumerate(traces):
        if t is None:
            continue
        c, sem = trace_requests(t.question, t.choices, t.text, t.image, t.scene)
        out.no_reasoning[i], out.no_claim[i] = c is None, sem is None
        if c is None and consistency:
            out.consistency_status[i] = UNJUDGEABLE
        if sem is None and semantic:
            out.semantic_status[i] = UNJUDGEABLE
        if c is not None and consistency:
            c_at.append(i)
            c_req.append(c)
        if sem is not None and semantic:
            s_at.append(i)
            s_req.append(sem)
            out.sentences[i] = len(sem.sentences)
    if c_req:
        for i, v in zip(c_at, _expect(len(c_req), judge.consistency(c_req), "consistency", judge)):
            out.consistency_status[i], out.consistency[i] = settle(v)
    if s_req:
        for i, v in zip(s_at, _expect(len(s_req), judge.semantic(s_req), "semantic", judge)):
            out.semantic_status[i], out.semantic[i] = settle(v)
    return out

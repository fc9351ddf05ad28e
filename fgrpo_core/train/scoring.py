"""Scoring a round: every rollout gets R_fmt, R_acc, R_task, R_C, R_S, R_G (docs/method.md#rewards).

    R_fmt, R_acc, R_task, R_G   the grader (rewards.grader), the same code evaluation uses
    R_C, R_S                    the judge, asked only where they apply: rollouts with R_acc > 0
                                that have a reasoning and an answer (NaN elsewhere)
    R_G                         NaN when the sample has no ground-truth box

NaN means "not applicable" and never enters a mean. A judge that fails or answers garbage
gives NaN too, and the verdict's status is kept, so a round can count its judge failures.

No escape hatches **[ours]**. Where a constraint applies (R_acc > 0) and is active, a rollout
that gives the judge nothing to rule on scores 0, not NaN (status ``unjudgeable``):

    R_C = 0   a right answer without a parsable reasoning (no think part): the answer cannot be
              shown to follow from a reasoning that is not there
    R_S = 0   a right answer with no checkable sentence (K' = 0: no reasoning, every sentence
              trivial, or every sentence labelled SKIP by the judge): no claim about the image
              was made, so none was grounded

Leaving them NaN would drop them from the constraint means c_k fed to dual ascent and from the
group z-scores, so a policy could meet a constraint by writing nothing checkable or by breaking
the format while the honest rollouts carried the whole penalty. Because the 0 is written here,
the decoupled advantages, the shaped rewards and c_k all see the same value. Evaluation counts
the same cases the same way (``eval.runner``, ``eval.metrics``). A *judge* failure stays NaN:
it is the judge's fault, not the policy's, and is counted in ``judge_status``. The shares are
counted per round (``EscapeCounts``) and logged in ``train_metrics.csv``.
Asking and settling verdicts is ``judges/asking.py``, the same code evaluation uses.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch

from fgrpo_core.advantages import TaskRewards
from fgrpo_core.constraints import CONSTRAINTS  # noqa: F401  (re-exported)
from fgrpo_core.data.schema import Sample
from fgrpo_core.judges.asking import UNJUDGEABLE, Trace, ask_judges
from fgrpo_core.judges.base import Judge
from fgrpo_core.records import Rollout
from fgrpo_core.rewards.grader import grade_completions

NOT_APPLICABLE = "not_applicable"  # the status of a signal the judge was not asked about


@dataclass
class RolloutScore:
    """All signals of one rollout (NaN = not applicable)."""

    prompt_id: str
    sample_index: int
    fmt: float
    acc: float
    task: float
    consistency: float
    semantic: float
    spatial: float
    consistency_status: str  # ok | unparseable | failed | unjudgeable | not_applicable
    semantic_status: str
    response_tokens: int
    n_pred_boxes: int


@dataclass(frozen=True)
class EscapeCounts:
    """How many rollouts of a round gave a judge nothing to rule on (see the module docstring)."""

    rollouts: int
    correct: int  # R_acc > 0: where R_C and R_S apply
    semantic_undefined: int  # correct, K' = 0: no checkable sentence (or all SKIP)
    consistency_unjudged: int  # correct, no parsable reasoning: never judged for consistency
    unparsable: int  # any answer: no parsable reasoning or no parsable answer

    @property
    def semantic_undefined_share(self) -> float:
        """Among the rollouts R_S applies to (NaN when none)."""
        return self.semantic_undefined / self.correct if self.correct else math.nan

    @property
    def consistency_unjudged_share(self) -> float:
        """Among the rollouts R_C applies to (NaN when none)."""
        return self.consistency_unjudged / self.correct if self.correct else math.nan

    @property
    def unparsable_share(self) -> float:
        """Among all rollouts."""
        return self.unparsable / self.rollouts if self.rollouts else math.nan


@dataclass
class RoundScores:
    scores: list[RolloutScore]
    judge_status: dict[str, dict[str, int]] = field(default_factory=dict)  # signal -> status -> count
    escapes: EscapeCounts | None = None

    def tensors(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``(task [N], {constraint: [N]}, group_ids [N])`` in rollout order (float64)."""
        task = torch.tensor([s.task for s in self.scores], dtype=torch.float64)
        cons = {k: torch.tensor([getattr(s, k) for s in self.scores], dtype=torch.float64) for k in CONSTRAINTS}
        index: dict[str, int] = {}
        gid = torch.tensor([index.setdefault(s.prompt_id, len(index)) for s in self.scores], dtype=torch.long)
        return task, cons, gid

    def task_rewards(self) -> TaskRewards:
        """R_acc and R_fmt ``[N]`` in rollout order (the shaped rewards of the ablation need them apart)."""
        return TaskRewards(acc=torch.tensor([s.acc for s in self.scores], dtype=torch.float64),
                           fmt=torch.tensor([s.fmt for s in self.scores], dtype=torch.float64))

    def rows(self) -> list[dict]:
        return [asdict(s) for s in self.scores]


def score_rollouts(
    rollouts: Sequence[Rollout],
    samples: Mapping[str, Sample],  # prompt_id -> the sample it asked
    judge: Judge,
    constraints: Sequence[str] = CONSTRAINTS,  # judges are asked only for active constraints
) -> RoundScores:
    missing = sorted({r.prompt_id for r in rollouts} - set(samples))
    if missing:
        raise KeyError(f"rollouts for unknown prompt ids: {missing[:5]}")
    smp = [samples[r.prompt_id] for r in rollouts]
    grades = grade_completions(
        [r.text for r in rollouts],
        [s.answer for s in smp],
        [s.choices for s in smp],
        [[b.as_list() for b in s.boxes] for s in smp],
    )
    # Ask the judge only where R_C / R_S apply: correct answers with a reasoning and an answer.
    n = len(rollouts)
    verdicts = ask_judges(
        judge,
        [Trace(s.question, s.choices, r.text, s.image, s.scene) if g.acc > 0 else None
         for r, s, g in zip(rollouts, smp, grades)],
        consistency="consistency" in constraints, semantic="semantic" in constraints,
    )
    c_score, s_score = list(verdicts.consistency), list(verdicts.semantic)
    c_status = [st or NOT_APPLICABLE for st in verdicts.consistency_status]
    s_status = [st or NOT_APPLICABLE for st in verdicts.semantic_status]
    # The statuses of the verdicts the judge gave, as the scores record them (an all-SKIP semantic
    # answer is recorded unjudgeable); completions with nothing to send were never asked.
    status = {sig: dict(Counter(st for st, nothing in zip(getattr(verdicts, f"{sig}_status"), none_sent)
                                if st is not None and not nothing))
              for sig, none_sent in (("consistency", verdicts.no_reasoning), ("semantic", verdicts.no_claim))}
    # The escape rule (module docstring): where the constraint is active, nothing to judge scores 0.
    for i in range(n):
        if c_status[i] == UNJUDGEABLE:
            c_score[i] = 0.0
        if s_status[i] == UNJUDGEABLE:
            s_score[i] = 0.0
    escapes = EscapeCounts(
        rollouts=n,
        correct=sum(g.acc > 0 for g in grades),
        semantic_undefined=sum(nc or st == UNJUDGEABLE for nc, st in zip(verdicts.no_claim, s_status)),
        consistency_unjudged=sum(verdicts.no_reasoning),
        unparsable=sum(not g.parsed.think or not g.parsed.answer for g in grades),
    )
    scores = [
        RolloutScore(
            prompt_id=r.prompt_id,
            sample_index=r.sample_index,
            fmt=g.fmt,
            acc=g.acc,
            task=g.task,
            consistency=c_score[i],
            semantic=s_score[i],
            spatial=g.spatial,  # cheap: always computed, used only when the constraint is active
            consistency_status=c_status[i],
            semantic_status=s_status[i],
            response_tokens=len(r.token_ids),
            n_pred_boxes=len(g.parsed.boxes),
        )
        for i, (r, g) in enumerate(zip(rollouts, grades))
    ]
    return RoundScores(scores=scores, judge_status=status, escapes=escapes)

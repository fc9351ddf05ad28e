"""Scoring a round: every rollout gets R_fmt, R_acc, R_task, R_C, R_S, R_G (docs/method.md#rewards).

    R_fmt, R_acc, R_task, R_G   the grader (rewards.grader), the same code evaluation uses
    R_C, R_S                    the judge, asked only where they apply: rollouts with R_acc > 0
                                that have a reasoning and an answer (NaN elsewhere)
    R_G                         NaN when the sample has no ground-truth box

NaN means "not applicable" and never enters a mean. A judge that fails or answers garbage
gives NaN too, and the verdict's status is kept, so a round can count its judge failures. Asking
and settling verdicts is ``judges/asking.py``, the same code evaluation uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch

from fgrpo_core.constraints import CONSTRAINTS  # noqa: F401  (re-exported)
from fgrpo_core.data.schema import Sample
from fgrpo_core.judges.asking import Trace, ask_judges
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
    consistency_status: str  # ok | unparseable | failed | not_applicable
    semantic_status: str
    response_tokens: int
    n_pred_boxes: int


@dataclass
class RoundScores:
    scores: list[RolloutScore]
    judge_status: dict[str, dict[str, int]] = field(default_factory=dict)  # signal -> status -> count

    def tensors(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``(task [N], {constraint: [N]}, group_ids [N])`` in rollout order (float64)."""
        task = torch.tensor([s.task for s in self.scores], dtype=torch.float64)
        cons = {k: torch.tensor([getattr(s, k) for s in self.scores], dtype=torch.float64) for k in CONSTRAINTS}
        index: dict[str, int] = {}
        gid = torch.tensor([index.setdefault(s.prompt_id, len(index)) for s in self.scores], dtype=torch.long)
        return task, cons, gid

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
    verdicts = ask_judges(
        judge,
        [Trace(s.question, s.choices, r.text, s.image, s.scene) if g.acc > 0 else None
         for r, s, g in zip(rollouts, smp, grades)],
        consistency="consistency" in constraints, semantic="semantic" in constraints,
    )
    c_score, s_score = verdicts.consistency, verdicts.semantic
    c_status = [st or NOT_APPLICABLE for st in verdicts.consistency_status]
    s_status = [st or NOT_APPLICABLE for st in verdicts.semantic_status]
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
    status = {"consistency": verdicts.counts("consistency"), "semantic": verdicts.counts("semantic")}
    return RoundScores(scores=scores, judge_status=status)

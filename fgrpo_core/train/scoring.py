"""Scoring a round: every rollout gets R_fmt, R_acc, R_task, R_C, R_S, R_G (docs/method.md#rewards).

    R_fmt, R_acc, R_task, R_G   the grader (rewards.grader), the same code evaluation uses
    R_C, R_S                    the judge, asked only where they apply: rollouts with R_acc > 0
                                that have a reasoning and an answer (NaN elsewhere)
    R_G                         NaN when the sample has no ground-truth box

NaN means "not applicable" and never enters a mean. A judge that fails or answers garbage
gives NaN too, and the verdict's status is kept, so a round can count its judge failures.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch

from fgrpo_core.data.schema import Sample
from fgrpo_core.judges.agreement import trace_requests
from fgrpo_core.judges.base import Judge
from fgrpo_core.records import Rollout
from fgrpo_core.rewards.grader import grade_completions

CONSTRAINTS = ("consistency", "semantic", "spatial")


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
    c_req, c_at, s_req, s_at = [], [], [], []
    for i, (r, s, g) in enumerate(zip(rollouts, smp, grades)):
        if g.acc <= 0:
            continue
        c, sem = trace_requests(s.question, s.choices, r.text, s.image, s.scene)
        if c is not None and "consistency" in constraints:
            c_req.append(c)
            c_at.append(i)
        if sem is not None and "semantic" in constraints:
            s_req.append(sem)
            s_at.append(i)
    c_ver = judge.consistency(c_req) if c_req else []
    s_ver = judge.semantic(s_req) if s_req else []
    if len(c_ver) != len(c_req) or len(s_ver) != len(s_req):
        raise RuntimeError(f"judge {judge.name} returned {len(c_ver)}/{len(c_req)} consistency and "
                           f"{len(s_ver)}/{len(s_req)} semantic verdicts")

    n = len(rollouts)
    c_score, c_status = [math.nan] * n, ["not_applicable"] * n
    s_score, s_status = [math.nan] * n, ["not_applicable"] * n
    for i, v in zip(c_at, c_ver):
        c_score[i], c_status[i] = v.score, v.status.value
    for i, v in zip(s_at, s_ver):
        s_score[i], s_status[i] = v.score, v.status.value
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
    status = {
        "consistency": dict(Counter(c_status[i] for i in c_at)),
        "semantic": dict(Counter(s_status[i] for i in s_at)),
    }
    return RoundScores(scores=scores, judge_status=status)

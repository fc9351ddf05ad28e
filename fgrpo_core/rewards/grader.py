"""The one grader (docs/method.md#code-principles): training rewards and benchmark metrics call the same code.

``grade_completion(text, answer, choices, gt_boxes)`` turns one completion into a
:class:`Grade` holding R_fmt, R_acc, R_task and R_G. Consistency (R_C) and semantic grounding
(R_S) need a judge and are filled in by the judge stage; :func:`mask_unless_correct` applies
their mask (docs/method.md#rewards: they apply only to rollouts with R_acc > 0, NaN elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from fgrpo_core.parsing import ParsedCompletion, parse_completion
from fgrpo_core.rewards.answer import accuracy_reward, combine_task, format_reward
from fgrpo_core.rewards.spatial import BoxesLike, spatial_grounding_batch


@dataclass(frozen=True)
class Grade:
    """Rule-based scores of one completion (NaN = not applicable, never 0)."""

    fmt: float  # R_fmt in {0, 1}
    acc: float  # R_acc in {0, 1}
    task: float  # R_task = 0.5 acc + 0.5 fmt
    spatial: float  # R_G in [0, 1]; NaN when the sample has no ground-truth box
    parsed: ParsedCompletion  # think / answer / boxes, for the judges and for reports


def grade_completions(
    texts: Sequence[str],
    answers: Sequence[str],
    choices: Sequence[Sequence[str]],
    gt_boxes: Sequence[BoxesLike],
) -> list[Grade]:
    """Grade many completions; the i-th text is scored against the i-th answer/choices/boxes.

    Spatial grounding runs batched over all completions (``spatial_grounding_batch``).
    """
    n = len(texts)
    if not (len(answers) == len(choices) == len(gt_boxes) == n):
        raise ValueError(
            f"grade_completions: {n} texts but {len(answers)} answers, "
            f"{len(choices)} choice lists and {len(gt_boxes)} box lists"
        )
    parsed = [parse_completion(t) for t in texts]
    spatial = spatial_grounding_batch([p.boxes for p in parsed], gt_boxes)
    grades = []
    for p, ans, ch, rg in zip(parsed, answers, choices, spatial):
        fmt, acc = format_reward(p), accuracy_reward(p, ans, ch)
        grades.append(Grade(fmt=fmt, acc=acc, task=combine_task(acc, fmt), spatial=float(rg), parsed=p))
    return grades


def grade_completion(
    text: str, answer: str, choices: Sequence[str] = (), gt_boxes: BoxesLike = ()
) -> Grade:
    """Grade one completion against its sample's answer, options and ground-truth boxes."""
    return grade_completions([text], [answer], [choices], [gt_boxes])[0]


def mask_unless_correct(score: float, acc: float) -> float:
    """A judge score (R_C or R_S) where it applies (R_acc > 0), NaN where it does not."""
    return score if acc > 0 else math.nan

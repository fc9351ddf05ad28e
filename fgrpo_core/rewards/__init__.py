"""Rewards (docs/method.md#rewards). One grader scores training rollouts and benchmarks (docs/method.md#code-principles)."""

from fgrpo_core.rewards.answer import (
    accuracy_reward,
    combine_task,
    format_reward,
    normalise_answer,
    task_reward,
)
from fgrpo_core.rewards.grader import Grade, grade_completion, grade_completions, mask_unless_correct
from fgrpo_core.rewards.spatial import (
    ciou_matrix,
    spatial_grounding,
    spatial_grounding_batch,
    valid_boxes,
)

__all__ = [
    "Grade",
    "accuracy_reward",
    "ciou_matrix",
    "combine_task",
    "format_reward",
    "grade_completion",
    "grade_completions",
    "mask_unless_correct",
    "normalise_answer",
    "spatial_grounding",
    "spatial_grounding_batch",
    "task_reward",
    "valid_boxes",
]

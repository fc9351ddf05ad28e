"""The vocabulary of a synthetic scene graph: relations and their opposites, the question spec a
trace is written from, and geometric helpers on its boxes.

One home for what the generator (``synthetic.py``), the SFT trace writer (``traces.py``) and the
exact judge (``judges/exact.py``) share, so none of them imports another: the judge (and so the
``train`` and ``evaluate`` stages) does not depend on the generator or the trace fault injector.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from fgrpo_core.data.schema import box_iou

RELATIONS = ("left_of", "right_of", "above", "below", "closer", "farther", "bigger", "smaller")
OPPOSITE = {
    "left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above",
    "closer": "farther", "farther": "closer", "bigger": "smaller", "smaller": "bigger",
}


@dataclass
class QuestionSpec:
    """A question about a scene, with what a trace needs to explain it.

    ``objects`` are the object ids the question is about, in a task-specific role order
    (documented in each ``_ask_*``); they are also the sample's ground-truth boxes.
    """

    task: str
    variant: str
    question: str
    choices: list[str]
    answer_index: int
    objects: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


class Relations:
    """Lookup over a scene graph's relation list."""

    def __init__(self, scene: dict[str, Any]):
        self.triples = {(r["subject"], r["predicate"], r["object"]) for r in scene["relations"]}

    def holds(self, a: int, pred: str, b: int) -> bool:
        return (a, pred, b) in self.triples


def random_box_away(rng: random.Random, like: list[float], avoid: list[list[float]], W: float, H: float,
                    max_iou: float = 0.2) -> list[float] | None:
    """A box of the same size as ``like`` inside the image, with IoU <= max_iou to each of ``avoid``."""
    w, h = like[2] - like[0], like[3] - like[1]
    for _ in range(200):
        x1, y1 = round(rng.uniform(0, W - w)), round(rng.uniform(0, H - h))
        cand = [x1, y1, x1 + w, y1 + h]
        if all(box_iou(cand, a) <= max_iou for a in avoid) and cand[2] <= W and cand[3] <= H:
            return cand
    return None


def region_of(box: list[float], width: float, margin: float) -> str | None:
    """Which third of the image the box centre is in; None within ``margin`` of a border."""
    cx = (box[0] + box[2]) / 2
    for name, lo, hi in (("left", -math.inf, width / 3), ("middle", width / 3, 2 * width / 3),
                         ("right", 2 * width / 3, math.inf)):
        if lo + margin < cx < hi - margin:
            return name
    return None

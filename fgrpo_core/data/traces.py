"""Chain-of-thought SFT traces written from the scene graph, with controlled unfaithfulness.

A trace is ``<think>S1 S2 ... Sn</think><answer>L</answer>`` where the sentences

1. locate the objects the question is about, citing ``<bbox>[x1, y1, x2, y2]</bbox>``
   (integers, pixels of the staged image),
2. state the evidence (a relation, a count, a region...) in a small regular vocabulary,
3. end with a sentence that names the option ("So the answer is B.").

Phrasings are drawn from a few templates per sentence kind, so a tiny model can learn them.

Faults (each drawn independently with its share from ``SyntheticDataParams``; recorded in
``trace_faults``), built so that each is caught by exactly one check:

- ``inconsistent``: the concluding sentence names a *different* option while ``<answer>`` stays
  correct ("right answer, wrong reason"). Evidence sentences stay true, so only the consistency
  check (R_C) sees it.
- ``hallucination``: one extra sentence that is false in the scene: an absent object
  ("There is also a purple square near the red circle."), an inverted relation of a kind the
  question does not ask about, or a wrong count (never in counting questions). It never touches
  the relation that decides the answer, so the reasoning's logic still reaches the answer.
- ``bad_box``: one cited box is moved to a random place of the same size with IoU <= 0.2 to its
  object (never the target's box in a localisation question, which would contradict the answer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from fgrpo_core.data.render import COLOURS, SHAPES
from fgrpo_core.data.scene_graph import OPPOSITE, QuestionSpec, Relations, random_box_away
from fgrpo_core.prompts import LETTERS


@dataclass(frozen=True)
class FaultShares:
    """Probability that a trace carries each fault (drawn independently)."""

    inconsistent: float = 0.0
    hallucination: float = 0.0
    bad_box: float = 0.0

    def __post_init__(self):
        for name in ("inconsistent", "hallucination", "bad_box"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}_share must lie in [0, 1], got {v}")


LOCATE = ("The {n} is at {b}.", "I see the {n} at {b}.", "The {n} is located at {b}.", "There is a {n} at {b}.")
CONCLUDE = ("So the answer is {L}.", "Therefore, the answer is {L}.", "Thus the answer is option {L}.",
            "So option {L} is correct.")
CONCLUDE_NAMED = ("So the answer is {L}, the {c}.", "Therefore the answer is {L}: the {c}.")
PHRASE = {
    "left_of": ("left of", "to the left of"),
    "right_of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
    "closer": ("closer to the camera than", "nearer to the camera than"),
    "farther": ("farther from the camera than",),
    "bigger": ("looks bigger than", "is larger than"),
    "smaller": ("looks smaller than",),
}
RELATION_TEMPLATES = ("The {a} is {p} the {b}.", "Comparing the two, the {a} is {p} the {b}.")
FAMILY = {"left_of": "horizontal", "right_of": "horizontal", "above": "vertical", "below": "vertical",
          "closer": "depth", "farther": "depth", "bigger": "size", "smaller": "size"}


def fmt_box(box: list[float]) -> str:
    return "<bbox>[" + ", ".join(str(int(round(v))) for v in box) + "]</bbox>"


def relation_sentence(rng: random.Random, a: str, pred: str, b: str) -> str:
    """"The red circle is left of the blue square." (sizes read "looks bigger than")."""
    p = rng.choice(PHRASE[pred])
    if pred in ("bigger", "smaller"):
        return f"The {a} {p} the {b}."
    return rng.choice(RELATION_TEMPLATES).format(a=a, p=p, b=b)


# --------------------------------------------------------------------------------------------
# Evidence per task: a list of sentences (without the locate sentences and the conclusion)
# --------------------------------------------------------------------------------------------
def _evidence(scene: dict[str, Any], spec: QuestionSpec, rng: random.Random) -> list[str]:
    names = {o["id"]: o["name"] for o in scene["objects"]}
    rel = Relations(scene)
    ob = spec.objects
    if spec.task == "relation_2d":
        a, b = ob
        axis = ("left_of", "right_of") if spec.variant == "horizontal" else ("above", "below")
        pred = next(p for p in axis if rel.holds(a, p, b))
        return [relation_sentence(rng, names[a], pred, names[b])]
    if spec.task == "perspective":
        v, t = ob
        side = spec.extra["image_side"]
        seen = spec.choices[spec.answer_index]
        lines = [f"In the image, the {names[t]} is {side} of the {names[v]}."]
        if spec.extra["facing"] == "camera":
            lines.append(f"Facing the camera from the {names[v]}, left and right are swapped, "
                         f"so the {names[t]} is on the {seen}.")
        else:
            lines.append(f"Facing away from the camera at the {names[v]}, left and right stay the same, "
                         f"so the {names[t]} is on the {seen}.")
        return lines
    if spec.task == "depth_order":
        target, others = ob[0], ob[1:]
        lines = []
        for o in others:
            if spec.variant == "closer":
                lines.append(f"The {names[target]} is lower in the image than the {names[o]}.")
                lines.append(rng.choice([
                    f"Objects lower in the image are closer to the camera, so the {names[target]} is "
                    f"closer to the camera than the {names[o]}.",
                    f"So the {names[target]} is nearer to the camera than the {names[o]}.",
                ]))
            else:
                lines.append(f"The {names[target]} is higher in the image than the {names[o]}.")
                lines.append(rng.choice([
                    f"Objects higher in the image are farther from the camera, so the {names[target]} is "
                    f"farther from the camera than the {names[o]}.",
                    f"So the {names[target]} is farther from the camera than the {names[o]}.",
                ]))
        return lines
    if spec.task == "relative_distance":
        a, near, far = ob
        if spec.variant == "closer":
            return [rng.choice([f"The {names[near]} is closer to the {names[a]} than the {names[far]} is.",
                                f"In the scene, the {names[near]} is nearer to the {names[a]} than the "
                                f"{names[far]} is."])]
        return [rng.choice([f"The {names[far]} is farther from the {names[a]} than the {names[near]} is.",
                            f"In the scene, the {names[far]} is farther from the {names[a]} than the "
                            f"{names[near]} is."])]
    if spec.task == "relative_size":
        big, small = ob
        if spec.variant == "bigger":
            return [relation_sentence(rng, names[big], "bigger", names[small])]
        return [relation_sentence(rng, names[small], "smaller", names[big])]
    if spec.task == "counting":
        return [count_sentence(rng, spec.extra["attribute"], spec.extra["value"], spec.extra["count"])]
    if spec.task == "localization":
        if spec.variant == "region":
            return [f"The {names[ob[0]]} is in the {spec.extra['region']} part of the image."]
        return []
    raise ValueError(f"no trace templates for task {spec.task!r}")


def count_sentence(rng: random.Random, attribute: str, value: str, n: int) -> str:
    noun = (value if n == 1 else value + "s") if attribute == "shape" else (
        f"{value} object" if n == 1 else f"{value} objects")
    verb = "is" if n == 1 else "are"
    return rng.choice([f"There {verb} {n} {noun} in the image.", f"In total I count {n} {noun}."])


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------
def _hallucination(scene: dict[str, Any], spec: QuestionSpec, rng: random.Random) -> str:
    """A sentence that is false in the scene and does not touch the deciding relation."""
    names = {o["id"]: o["name"] for o in scene["objects"]}
    present = {(o["color"], o["shape"]) for o in scene["objects"]}
    kinds = ["absent"]
    asked = {
        "relation_2d": {"horizontal" if spec.variant == "horizontal" else "vertical"},
        "perspective": {"horizontal"},
        "depth_order": {"depth", "vertical"},  # "lower in the image" is the depth evidence
        "relative_size": {"size"},
    }.get(spec.task, set())
    flips = sorted(
        (r["subject"], r["predicate"], r["object"]) for r in scene["relations"]
        if FAMILY[r["predicate"]] not in asked
    )
    if flips:
        kinds.append("relation")
    if spec.task != "counting":
        kinds.append("count")
    kind = rng.choice(kinds)
    if kind == "absent":
        colour, shape = rng.choice(sorted({(c, s) for c in COLOURS for s in SHAPES} - present))
        anchor = names[rng.choice(sorted(names))]
        return rng.choice([f"There is also a {colour} {shape} near the {anchor}.",
                           f"I also see a {colour} {shape} next to the {anchor}."])
    if kind == "relation":
        a, pred, b = rng.choice(flips)
        return relation_sentence(rng, names[a], OPPOSITE[pred], names[b])
    attribute = rng.choice(["shape", "color"])
    value = rng.choice(sorted({o[attribute] for o in scene["objects"]}))
    n = scene["counts"][attribute][value]
    wrong = n + 1 if n == 1 or rng.random() < 0.5 else n - 1
    return count_sentence(rng, attribute, value, wrong)


def make_trace(scene: dict[str, Any], spec: QuestionSpec, rng: random.Random,
               shares: FaultShares) -> tuple[str, list[str]]:
    """The SFT target for one question, and the faults it carries (in TRACE_FAULTS order)."""
    faults = [name for name in ("inconsistent", "hallucination", "bad_box")
              if rng.random() < getattr(shares, name)]
    objs = {o["id"]: o for o in scene["objects"]}
    cited = list(spec.objects)
    boxes = {i: list(objs[i]["box"]) for i in cited}
    if "bad_box" in faults:
        movable = cited[1:] if spec.task == "localization" else cited
        victim = rng.choice(movable)
        moved = random_box_away(rng, boxes[victim], [boxes[victim]], scene["width"], scene["height"])
        if moved is None:  # an object too large to move away from itself: no fault after all
            faults.remove("bad_box")
        else:
            boxes[victim] = moved
    body = [rng.choice(LOCATE).format(n=objs[i]["name"], b=fmt_box(boxes[i])) for i in cited]
    body += _evidence(scene, spec, rng)
    if "hallucination" in faults:
        body.insert(rng.randint(1, len(body)), _hallucination(scene, spec, rng))
    concluded = spec.answer_index
    if "inconsistent" in faults:
        concluded = rng.choice([k for k in range(len(spec.choices)) if k != spec.answer_index])
    letter = LETTERS[concluded]
    object_choices = spec.task in ("depth_order", "relative_distance", "relative_size")
    if object_choices and rng.random() < 0.5:
        body.append(rng.choice(CONCLUDE_NAMED).format(L=letter, c=spec.choices[concluded]))
    else:
        body.append(rng.choice(CONCLUDE).format(L=letter))
    trace = "<think>" + " ".join(body) + "</think><answer>" + LETTERS[spec.answer_index] + "</answer>"
    return trace, faults

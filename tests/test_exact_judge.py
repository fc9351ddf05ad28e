"""Exact scene-graph judges: every injected SFT fault is found, none is invented; hand cases."""

from __future__ import annotations

import json
import math
import re

import pytest

from fgrpo_core.config import SyntheticDataParams
from fgrpo_core.data.synthetic import generate_split
from fgrpo_core.judges.base import (
    ConsistencyRequest,
    Judge,
    SemanticRequest,
    SentenceLabel,
    VerdictStatus,
)
from fgrpo_core.judges.exact import ExactJudge, answer_option, concluded_option, label_sentence
from fgrpo_core.judges.sentences import checkable_sentences

C, I, S = SentenceLabel.correct, SentenceLabel.incorrect, SentenceLabel.skip
JUDGE = ExactJudge()


# ---------------------------------------------------------------------------------------------
# Against the SFT traces' recorded faults
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft():
    params = SyntheticDataParams(max_objects=6, inconsistent_share=0.3, hallucination_share=0.3,
                                 bad_box_share=0.3)
    return generate_split(params, "sft", 420, 28 * 28 * 4, 28 * 28 * 1280, with_trace=True)


def _judge_trace(s):
    m = re.match(r"<think>(.*)</think><answer>(.*)</answer>$", s.trace, re.S)
    reasoning, answer = m.groups()
    cv = JUDGE.consistency([ConsistencyRequest(s.question, tuple(s.choices), reasoning, answer)])[0]
    sentences = tuple(checkable_sentences(reasoning))
    sv = JUDGE.semantic([SemanticRequest(s.question, tuple(s.choices), sentences, scene=s.scene)])[0]
    return cv, sv


def test_every_injected_fault_is_found_and_none_is_invented(sft):
    assert {f for s in sft for f in s.trace_faults} == {"inconsistent", "hallucination", "bad_box"}
    for s in sft:
        cv, sv = _judge_trace(s)
        assert cv.status is VerdictStatus.ok and sv.status is VerdictStatus.ok
        found = set()
        if not cv.consistent:
            found.add("inconsistent")
        for row in json.loads(sv.raw):
            if row["label"] == "INCORRECT":
                box_fail = any(r.startswith("fail: box of") for r in row["reasons"])
                found.add("bad_box" if box_fail else "hallucination")
        assert found == set(s.trace_faults), (s.trace_faults, found, s.trace, sv.raw)


def test_clean_traces_score_one(sft):
    clean = [s for s in sft if not s.trace_faults]
    assert len(clean) > 100
    for s in clean:
        cv, sv = _judge_trace(s)
        assert cv.score == 1.0
        assert sv.score == 1.0  # every checkable sentence of a clean trace is CORRECT


def test_exact_judge_implements_the_protocol():
    assert isinstance(JUDGE, Judge)


# ---------------------------------------------------------------------------------------------
# Consistency by hand
# ---------------------------------------------------------------------------------------------
def _consistent(reasoning, answer, choices=("left", "right")):
    v = JUDGE.consistency([ConsistencyRequest("q?", tuple(choices), reasoning, answer)])[0]
    assert v.status is VerdictStatus.ok
    return v.consistent


def test_consistency_reads_the_last_concluded_option():
    assert _consistent("The cube is right of the ball. So the answer is B.", "B")
    assert _consistent("So the answer is B.", "(b)")  # answer letter in any case/parentheses
    assert _consistent("So the answer is B.", "right")  # answer given as the option text
    assert not _consistent("The cube is right of the ball. So the answer is A.", "B")
    assert _consistent("I first thought the answer is A. Wait, the answer is B.", "B")  # last one wins
    assert _consistent("Thus option (B) is correct.", "B")
    assert _consistent("Answer: B", "B")


def test_consistency_falls_back_to_option_text_in_a_concluding_sentence():
    choices = ("red circle", "blue square")
    assert _consistent("The blue square is lower. Therefore the blue square is closer.", "B", choices)
    assert not _consistent("The blue square is lower. Therefore the blue square is closer.", "A", choices)
    # a non-concluding sentence naming an option is no conclusion
    assert not _consistent("The blue square is lower.", "B", choices)


def test_no_conclusion_is_inconsistent_not_unparseable():
    v = JUDGE.consistency([ConsistencyRequest("q?", ("left", "right"), "The cube is big.", "A")])[0]
    assert v.status is VerdictStatus.ok and v.consistent is False and v.score == 0.0
    assert "no conclusion" in v.raw


def test_letter_outside_the_options_is_inconsistent():
    assert not _consistent("So the answer is D.", "A")
    assert concluded_option("So the answer is D.", ["x", "y"])[0] == -1
    assert answer_option("D", ["x", "y"]) is None


def test_free_form_consistency():
    assert _consistent("There are two. So the answer is 2.", "2", choices=())
    assert not _consistent("So the answer is 3.", "2", choices=())


# ---------------------------------------------------------------------------------------------
# Semantic grounding by hand, on a three-object scene whose relations are written out below
# ---------------------------------------------------------------------------------------------
#   id  name            box               centre    depth  x     area
#   0   red circle      [10, 60, 30, 80]  (20, 70)  1.2   -0.5   314
#   1   blue square     [60, 40, 70, 50]  (65, 45)  2.5    1.5   100
#   2   green triangle  [12, 30, 22, 40]  (17, 35)  2.4   -0.9    50
# Margins: 4 px for centres, depth ratio 1.15, size ratio 1.4, distance ratio 1.3.
#   red/green centres differ by 3 px in x: no left/right relation between them (undecidable);
#   blue (2.5) vs green (2.4): 2.4 * 1.15 = 2.76 > 2.5, no depth relation.
#   3D distances to the red circle: green hypot(0.4, 1.2) = 1.26, blue hypot(2.0, 1.3) = 2.39;
#   2.39 / 1.26 = 1.89 > 1.3, so green is clearly closer to the red circle than blue.
REL = [
    (0, "left_of", 1), (1, "right_of", 0), (2, "left_of", 1), (1, "right_of", 2),
    (0, "below", 1), (1, "above", 0), (0, "below", 2), (2, "above", 0), (2, "above", 1), (1, "below", 2),
    (0, "closer", 1), (1, "farther", 0), (0, "closer", 2), (2, "farther", 0),
    (0, "bigger", 1), (1, "smaller", 0), (0, "bigger", 2), (2, "smaller", 0), (1, "bigger", 2), (2, "smaller", 1),
]
SCENE = {
    "width": 100, "height": 100,
    "objects": [
        {"id": 0, "name": "red circle", "color": "red", "shape": "circle", "box": [10, 60, 30, 80],
         "depth": 1.2, "x": -0.5, "area": 314},
        {"id": 1, "name": "blue square", "color": "blue", "shape": "square", "box": [60, 40, 70, 50],
         "depth": 2.5, "x": 1.5, "area": 100},
        {"id": 2, "name": "green triangle", "color": "green", "shape": "triangle", "box": [12, 30, 22, 40],
         "depth": 2.4, "x": -0.9, "area": 50},
    ],
    "relations": [{"subject": s, "predicate": p, "object": o} for s, p, o in REL],
    "thresholds": {"position_px": 4, "region_px": 4, "depth_ratio": 1.15, "size_ratio": 1.4,
                   "distance_ratio": 1.3},
}


@pytest.mark.parametrize(
    "sentence, label",
    [
        ("The red circle is at <bbox>[10, 60, 30, 80]</bbox>.", C),
        ("I see the red circle at <bbox>[11, 61, 30, 80]</bbox>.", C),  # IoU 0.9025
        ("The red circle is at <bbox>[20, 60, 40, 80]</bbox>.", I),  # IoU 10*20/(2*400-200) = 0.33
        ("There is a purple square near the red circle.", I),  # absent object
        ("The red circle is left of the blue square.", C),
        ("The red circle is to the right of the blue square.", I),
        ("The red circle is left of the green triangle.", S),  # 3 px apart: undecidable, object exists
        ("The green triangle is above the red circle.", C),
        ("The blue square is closer to the camera than the red circle.", I),
        ("So the red circle is nearer to the camera than the green triangle.", C),
        ("The blue square is farther from the camera than the green triangle.", S),
        ("The red circle looks bigger than the blue square.", C),
        ("The green triangle is larger than the blue square.", I),
        ("The red circle is lower in the image than the blue square.", C),  # bottoms 80 > 50
        ("The green triangle is closer to the red circle than the blue square is.", C),
        ("The blue square is closer to the red circle than the green triangle is.", I),
        ("The red circle is in the left part of the image.", C),  # centre 20 < 33.3 - 4
        ("The red circle is in the right part of the image.", I),
        ("The blue square is in the middle part of the image.", S),  # centre 65 within 4 px of 66.7
        ("There are 3 objects in the image.", C),
        ("There are 2 circles in the image.", I),
        ("There is 1 blue object in the image.", C),
        ("Facing the camera from the red circle, left and right are swapped, so the blue square is on the left.", C),
        ("Facing away from the camera at the red circle, the blue square is on the left.", I),
        ("Hence the answer is B (left).", S),  # nothing checkable
        ("The circle is left of the blue square.", C),  # 'the circle' names one object here
        ("A box at <bbox>[60, 40, 70, 50]</bbox> holds something.", C),  # loose box on an object
        ("A box at <bbox>[80, 80, 95, 95]</bbox> holds something.", I),  # loose box on nothing
    ],
)
def test_semantic_labels_by_hand(sentence, label):
    got, reasons = label_sentence(sentence, SCENE)
    assert got is label, reasons


def test_semantic_without_scene_fails_and_is_not_a_score():
    v = JUDGE.semantic([SemanticRequest("q", ("a", "b"), ("The red circle is left.",), scene=None)])[0]
    assert v.status is VerdictStatus.failed and math.isnan(v.score)


def test_semantic_score_is_share_of_correct_among_checked():
    sentences = ("The red circle is left of the blue square.",  # CORRECT
                 "The red circle is to the right of the blue square.",  # INCORRECT
                 "Hence the answer is B (left).")  # SKIP
    v = JUDGE.semantic([SemanticRequest("q", ("a", "b"), sentences, scene=SCENE)])[0]
    assert v.labels == [C, I, S]
    assert v.score == 0.5  # 1 correct / 2 checked

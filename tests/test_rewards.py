"""Rewards: answer matching, CIoU against independent formulas, Hungarian against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import complete_box_iou

import fgrpo_core.rewards.spatial as spatial_mod
from fgrpo_core.parsing import parse_completion
from fgrpo_core.rewards import (
    accuracy_reward,
    ciou_matrix,
    format_reward,
    grade_completion,
    grade_completions,
    mask_unless_correct,
    normalise_answer,
    spatial_grounding,
    spatial_grounding_batch,
    task_reward,
)


def _completion(answer: str, think: str = "because") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


# ------------------------------------------------------------------------------------------
# Answer, format, task
# ------------------------------------------------------------------------------------------
def test_normalise_answer():
    assert normalise_answer("  (B). ") == "b"
    assert normalise_answer("Left-of  the\tCUP!") == "left of the cup"
    assert normalise_answer("3.5") == "3 5"  # both sides normalise the same way


CHOICES = ["left", "right", "behind"]


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("B", "B", 1.0),  # letter vs letter
        ("(b).", "B", 1.0),  # punctuation and case stripped
        ("right", "B", 1.0),  # the option's text names the gold letter
        ("B. Right", "B", 1.0),  # the prompt's own "B. right" form
        ("B", "right", 1.0),  # gold given as the option's text
        ("A", "B", 0.0),
        ("left", "B", 0.0),
        ("B right behind", "B", 0.0),  # not an exact match
        ("", "B", 0.0),
    ],
)
def test_accuracy_with_choices(pred, gold, expected):
    assert accuracy_reward(parse_completion(_completion(pred)), gold, CHOICES) == expected


def test_accuracy_free_form_and_missing_answer():
    assert accuracy_reward(parse_completion(_completion("Three.")), "three", ()) == 1.0
    assert accuracy_reward(parse_completion(_completion("four")), "three", ()) == 0.0
    assert accuracy_reward(parse_completion("<think>B</think>"), "B", CHOICES) == 0.0


def test_accuracy_counts_for_a_malformed_completion_with_an_answer():
    p = parse_completion("Sure. <think>x</think><answer>B</answer>")
    assert not p.well_formed
    assert (format_reward(p), accuracy_reward(p, "B", CHOICES)) == (0.0, 1.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        (_completion("B"), 1.0),  # 0.5 * 1 + 0.5 * 1
        (_completion("A"), 0.5),  # 0.5 * 0 + 0.5 * 1
        ("oops <answer>B</answer>", 0.5),  # 0.5 * 1 + 0.5 * 0
        ("oops", 0.0),
    ],
)
def test_task_reward(text, expected):
    assert task_reward(parse_completion(text), "B", CHOICES) == expected


# ------------------------------------------------------------------------------------------
# CIoU
# ------------------------------------------------------------------------------------------
def ciou_scalar(p, g) -> float:
    """Independent float64 CIoU (Zheng et al. 2020), one pair, plain Python."""
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = iw * ih
    wp, hp, wg, hg = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
    iou = inter / (wp * hp + wg * hg - inter)
    cx = max(p[2], g[2]) - min(p[0], g[0])
    cy = max(p[3], g[3]) - min(p[1], g[1])
    rho2 = ((p[0] + p[2]) / 2 - (g[0] + g[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (g[1] + g[3]) / 2) ** 2
    v = 4 / math.pi**2 * (math.atan(wg / hg) - math.atan(wp / hp)) ** 2
    alpha = 0.0 if v == 0 else v / (1 - iou + v)
    return iou - rho2 / (cx * cx + cy * cy) - alpha * v


def _random_boxes(rng, n, size=100.0, lo=1.0, hi=40.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def test_ciou_hand_computed():
    # p = [0,0,2,2], g = [1,0,3,2]: intersection 1*2 = 2, union 4 + 4 - 2 = 6, IoU = 1/3;
    # centres (1,1) and (2,1): rho^2 = 1; enclosing box [0,0,3,2]: c^2 = 3^2 + 2^2 = 13;
    # same aspect ratio: v = 0. CIoU = 1/3 - 1/13 = 10/39.
    assert ciou_matrix([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0, 0] == pytest.approx(10 / 39, abs=1e-15)
    # Identical boxes: IoU 1, no distance, v = 0, alpha = 0/0 := 0 -> CIoU = 1.
    assert ciou_matrix([[5, 5, 9, 7]], [[5, 5, 9, 7]])[0, 0] == 1.0
    # Same centre, aspect 1 vs 4: p = [0,0,2,2], g = [-1,0.5,3,1.5] (4 x 1).
    # inter = 2 * 1 = 2, union = 4 + 4 - 2 = 6, IoU = 1/3, rho = 0,
    # v = 4/pi^2 (atan 4 - atan 1)^2, alpha = v / (1 - 1/3 + v).
    v = 4 / math.pi**2 * (math.atan(4) - math.atan(1)) ** 2
    expected = 1 / 3 - v / (2 / 3 + v) * v
    assert ciou_matrix([[0, 0, 2, 2]], [[-1, 0.5, 3, 1.5]])[0, 0] == pytest.approx(expected, abs=1e-15)


def test_ciou_matches_independent_formula_and_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, g = _random_boxes(rng, 7), _random_boxes(rng, 5)
        # thin and huge boxes too
        p[0] = [10, 10, 10.001, 90]
        p[1] = [0, 0, 5000, 3000]
        ours = ciou_matrix(p, g)
        ref = np.array([[ciou_scalar(a, b) for b in g] for a in p])
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        tv = complete_box_iou(torch.tensor(p), torch.tensor(g)).numpy()  # eps=1e-7 inside
        np.testing.assert_allclose(ours, tv, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        [10, 10, 10, 20],  # zero width
        [10, 10, 20, 10],  # zero height
        [20, 10, 10, 30],  # x2 < x1
        [float("nan"), 0, 5, 5],
        [0, 0, float("inf"), 5],
        [-float("inf"), 0, 5, 5],
        [0, 0, 1e300, 1e300],  # beyond MAX_COORD: squares would overflow
        [0, 0, 1e-200, 1e-200],  # area underflows to 0
    ],
)
def test_invalid_predicted_box_scores_zero(bad):
    gt = [[0, 0, 10, 10], [5, 5, 30, 30]]
    c = ciou_matrix([bad, [0, 0, 10, 10]], gt)
    assert np.all(c[0] == 0.0)
    assert c[1, 0] == 1.0
    # R_G: the valid box matches gt 0 (1.0), the invalid one scores 0: (1 + 0) / max(2, 2)
    assert spatial_grounding([bad, [0, 0, 10, 10]], gt) == 0.5
    assert spatial_grounding([bad], gt) == 0.0


def test_invalid_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gts\[1\]: ground-truth box 0 = \[5.0, 5.0, 1.0, 9.0\]"):
        spatial_grounding_batch([[], []], [[[0, 0, 1, 1]], [[5, 5, 1, 9]]])
    with pytest.raises(ValueError, match="shape"):
        spatial_grounding([[0, 0, 1]], [[0, 0, 1, 1]])


# ------------------------------------------------------------------------------------------
# Spatial grounding
# ------------------------------------------------------------------------------------------
def test_spatial_hand_computed():
    g1, g2 = [0, 0, 10, 10], [20, 0, 30, 10]
    # Not applicable without ground truth; 0 when the model cites nothing.
    assert math.isnan(spatial_grounding([g1], []))
    assert spatial_grounding([], [g1]) == 0.0
    # One exact box for two objects: (1 + 0) / max(1, 2) = 0.5
    assert spatial_grounding([g1], [g1, g2]) == 0.5
    # Both exact, in the other order: Hungarian pairs them up: (1 + 1) / 2 = 1
    assert spatial_grounding([g2, g1], [g1, g2]) == 1.0
    # A third, far-away box: its CIoU is negative -> clipped to 0; (1 + 1 + 0) / max(3, 2)
    assert spatial_grounding([g2, g1, [500, 500, 510, 510]], [g1, g2]) == pytest.approx(2 / 3)
    # Shifted box: p = [0,0,2,2] vs g = [1,0,3,2] has CIoU 10/39 (see the CIoU test)
    assert spatial_grounding([[0, 0, 2, 2]], [[1, 0, 3, 2]]) == pytest.approx(10 / 39)


def _brute_force(pred, gt) -> float:
    """max over all one-to-one matchings of sum max(CIoU, 0), / max(N, M), by enumeration."""
    s = np.array([[max(ciou_scalar(a, b), 0.0) for b in gt] for a in pred]).reshape(len(pred), len(gt))
    if len(pred) > len(gt):
        s = s.T
    n, m = s.shape
    best = max(sum(s[i, cols[i]] for i in range(n)) for cols in itertools.permutations(range(m), n))
    return best / max(n, m)


def _clustered_case(rng):
    """Boxes around a few centres, so that many pairs overlap and matchings conflict."""
    centres = rng.uniform(20, 80, (3, 2))

    def boxes(k):
        c = centres[rng.integers(0, 3, k)] + rng.normal(0, 4, (k, 2))
        half = rng.uniform(3, 15, (k, 2))
        return np.concatenate([c - half, c + half], 1)

    return boxes(int(rng.integers(1, 7))), boxes(int(rng.integers(1, 7)))


def test_hungarian_matches_brute_force(monkeypatch):
    calls = []
    real = spatial_mod.linear_sum_assignment
    monkeypatch.setattr(spatial_mod, "linear_sum_assignment", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(1)
    cases = [_clustered_case(rng) for _ in range(150)]
    cases += [(_random_boxes(rng, int(rng.integers(1, 7))), _random_boxes(rng, int(rng.integers(1, 7)))) for _ in range(50)]
    batch = spatial_grounding_batch([p for p, _ in cases], [g for _, g in cases])
    for (p, g), got in zip(cases, batch):
        assert got == pytest.approx(_brute_force(p, g), abs=1e-12)
    # Both paths ran: the optimality certificate and the Hungarian fallback.
    assert 0 < len(calls) < len(cases)


def test_matching_maximises_the_clipped_score():
    # A case where raw-CIoU matching and clipped matching disagree (found by search, fixed here).
    pred = [[36, 32, 40, 47], [5, 37, 20, 53]]
    gt = [[16, 37, 22, 52], [3, 39, 14, 42]]
    c = ciou_matrix(pred, gt)
    # c ~ [[-0.3955, -0.6819], [0.1404, 0.0283]]
    # raw sums:     diagonal -0.3955 + 0.0283 = -0.367  >  anti -0.6819 + 0.1404 = -0.542
    # clipped sums: diagonal  0      + 0.0283 =  0.028  <  anti  0      + 0.1404 =  0.140
    assert c[0, 0] + c[1, 1] > c[0, 1] + c[1, 0]
    # R_G takes the clipped optimum: 0.1404 / max(2, 2)
    assert spatial_grounding(pred, gt) == pytest.approx(c[1, 0] / 2, abs=1e-15)


def test_batch_equals_one_by_one_and_is_permutation_invariant():
    rng = np.random.default_rng(2)
    cases = [_clustered_case(rng) for _ in range(60)] + [([], [[0, 0, 1, 1]]), ([[0, 0, 1, 1]], [])]
    batch = spatial_grounding_batch([p for p, _ in cases], [g for _, g in cases])
    for (p, g), got in zip(cases, batch):
        one = spatial_grounding(p, g)
        assert (math.isnan(one) and math.isnan(got)) or one == pytest.approx(got, abs=1e-12)
        if len(p) and len(g):
            shuffled = spatial_grounding(rng.permutation(np.asarray(p)), rng.permutation(np.asarray(g)))
            assert shuffled == pytest.approx(got, abs=1e-12)


_COORD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-50, max_value=150),
)
_BOX = st.tuples(_COORD, _COORD, _COORD, _COORD)
_GT_BOX = st.tuples(
    st.floats(0, 100), st.floats(0, 100), st.floats(0.5, 50), st.floats(0.5, 50)
).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_BOX, max_size=8), st.lists(_GT_BOX, max_size=5))
def test_any_predicted_boxes_never_raise(pred, gt):
    r = spatial_grounding(pred, gt)
    if gt:
        assert 0.0 <= r <= 1.0
    else:
        assert math.isnan(r)
    c = ciou_matrix(pred, gt)
    assert c.shape == (len(pred), len(gt)) and np.isfinite(c).all()


@settings(max_examples=150, deadline=None)
@given(st.text(), st.lists(_GT_BOX, max_size=3))
def test_grader_never_raises_on_any_text(text, gt):
    g = grade_completion(text, "B", CHOICES, gt)
    assert g.fmt in (0.0, 1.0) and g.acc in (0.0, 1.0) and g.task == 0.5 * g.acc + 0.5 * g.fmt
    assert math.isnan(g.spatial) == (not gt)


# ------------------------------------------------------------------------------------------
# The one grader
# ------------------------------------------------------------------------------------------
def test_grade_completion_record():
    text = "<think>The cup <bbox>[0, 0, 10, 10]</bbox> is left.</think><answer>A</answer>"
    g = grade_completion(text, "A", CHOICES, [[0, 0, 10, 10], [20, 0, 30, 10]])
    # fmt 1, acc 1, task 0.5 + 0.5 = 1, spatial (1 + 0) / 2 = 0.5
    assert (g.fmt, g.acc, g.task, g.spatial) == (1.0, 1.0, 1.0, 0.5)
    assert g.parsed.boxes == [(0.0, 0.0, 10.0, 10.0)]


def test_grade_completions_checks_lengths():
    with pytest.raises(ValueError, match="2 texts but 1 answers"):
        grade_completions(["a", "b"], ["A"], [CHOICES], [[]])


def test_mask_unless_correct():
    assert mask_unless_correct(0.0, acc=1.0) == 0.0
    assert math.isnan(mask_unless_correct(1.0, acc=0.0))


def test_shared_ground_truth_objects_and_array_inputs():
    # The G rollouts of a prompt pass the same ground-truth list: read once, same answers.
    rng = np.random.default_rng(3)
    cases = [_clustered_case(rng) for _ in range(20)]
    preds = [p for p, _ in cases for _ in range(3)]
    shared = [g.tolist() for _, g in cases]
    gts_shared = [shared[k // 3] for k in range(60)]
    gts_copies = [list(map(tuple, shared[k // 3])) for k in range(60)]
    a, b = spatial_grounding_batch(preds, gts_shared), spatial_grounding_batch(preds, gts_copies)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(spatial_grounding_batch([np.asarray(p) for p in preds], [np.asarray(g) for g in gts_copies]), a)
    # An invalid box in a shared list is reported with a rollout that uses it
    bad = [[0, 0, 1, 1], [3, 3, 2, 9]]
    with pytest.raises(ValueError, match=r"gts\[1\]: ground-truth box 1"):
        spatial_grounding_batch([[], [], []], [[[0, 0, 1, 1]], bad, bad])


@pytest.mark.parametrize(
    "preds, message",
    [
        ([[(1, 2, 3)]], r"preds\[0\]: boxes must have shape \[K, 4\], got \(1, 3\)"),
        ([[], [(0, 0, 1, 1), (1, 2, 3, 4, 5)]], r"preds\[1\]: cannot read boxes"),
        ([[], ["a box"]], r"preds\[1\]: cannot read boxes"),
        ([None], r"preds\[0\]"),
    ],
)
def test_malformed_box_lists_are_named(preds, message):
    with pytest.raises(ValueError, match=message):
        spatial_grounding_batch(preds, [[(0, 0, 1, 1)]] * len(preds))


def test_box_iou_by_hand():
    from fgrpo_core.data.schema import box_iou

    # [0,0,2,2] and [1,1,3,3]: intersection 1x1 = 1, union 4 + 4 - 1 = 7
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # touching edges
    assert box_iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # empty union, not NaN
    assert box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)

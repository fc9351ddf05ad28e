"""Synthetic scenes: determinism, answers checked independently, boxes that cover their objects."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fgrpo_core.config import SyntheticDataParams
from fgrpo_core.data.render import COLOURS
from fgrpo_core.data.schema import samples_hash, validate_sample
from fgrpo_core.data.synthetic import TASKS, generate_split, make_scene

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280  # the default ModelParams frame: 112 stays 112
PARAMS = SyntheticDataParams(max_objects=6)


@pytest.fixture(scope="module")
def samples():
    return generate_split(PARAMS, "test", 280, MIN_PX, MAX_PX)  # 40 per task


def test_same_seed_same_hash_other_seed_other_hash(samples):
    again = generate_split(PARAMS, "test", 280, MIN_PX, MAX_PX)
    assert samples_hash(again) == samples_hash(samples)
    other = generate_split(PARAMS.model_copy(update={"seed": 1}), "test", 280, MIN_PX, MAX_PX)
    assert samples_hash(other) != samples_hash(samples)


def test_splits_are_independent_and_prefix_stable(samples):
    # Growing a split never changes its first samples; another split holds other scenes.
    assert samples_hash(generate_split(PARAMS, "test", 20, MIN_PX, MAX_PX)) == samples_hash(samples[:20])
    rl = generate_split(PARAMS, "rl", 20, MIN_PX, MAX_PX)
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(rl, samples[:20]))


def test_samples_pass_schema_and_cover_every_task(samples):
    for k, s in enumerate(samples):
        validate_sample(s, "<synthetic>", k)
        assert s.image.size == (112, 112)
        assert s.trace == "" and s.trace_faults == []
    assert {s.task for s in samples} == set(TASKS)
    letters = {s.answer for s in samples}
    assert {"A", "B"} <= letters  # options are shuffled, the answer is not always A


# ---------------------------------------------------------------------------------------------
# An independent checker: parses the question text and recomputes the answer from the scene's
# objects (boxes, depths, positions) with its own arithmetic, not the generator's relations.
# ---------------------------------------------------------------------------------------------
SHAPE_AREA = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}  # share of the box


def _obj(scene, name):
    found = [o for o in scene["objects"] if o["name"] == name]
    assert len(found) == 1, f"'{name}' must name exactly one object"
    return found[0]


def _cx(o):
    return (o["box"][0] + o["box"][2]) / 2


def _cy(o):
    return (o["box"][1] + o["box"][3]) / 2


def _area(o):
    x1, y1, x2, y2 = o["box"]
    return (x2 - x1) * (y2 - y1) * SHAPE_AREA[o["shape"]]


def expected_answer(s) -> str:
    q, sc = s.question, s.scene
    if m := re.match(r"Is the (.+) to the left or to the right of the (.+)\?$", q) or re.match(
        r"Where is the (.+) relative to the (.+): left or right\?$", q
    ):
        a, b = _obj(sc, m[1]), _obj(sc, m[2])
        return "left" if _cx(a) < _cx(b) else "right"
    if m := re.match(r"Is the (.+) above or below the (.+)\?$", q) or re.match(
        r"Where is the (.+) relative to the (.+): above or below\?$", q
    ):
        a, b = _obj(sc, m[1]), _obj(sc, m[2])
        return "above" if _cy(a) < _cy(b) else "below"
    if m := re.match(r"How many (\w+)s are in the image\?$", q):
        return str(sum(o["shape"] == m[1] for o in sc["objects"]))
    if m := re.match(r"How many (\w+) objects are in the image\?$", q):
        return str(sum(o["color"] == m[1] for o in sc["objects"]))
    if q == "Which object is closer to the camera?":
        return min(s.choices, key=lambda c: _obj(sc, c)["depth"])
    if q == "Which object is farther from the camera?":
        return max(s.choices, key=lambda c: _obj(sc, c)["depth"])
    if m := re.match(r"Which object is (closer to|farther from) the (.+) in the scene\?$", q):
        anchor = _obj(sc, m[2])

        def dist(c):
            o = _obj(sc, c)
            return math.hypot(o["x"] - anchor["x"], o["depth"] - anchor["depth"])

        return (min if m[1] == "closer to" else max)(s.choices, key=dist)
    if m := re.match(r"Which object looks (bigger|smaller) in the image\?$", q):
        return (max if m[1] == "bigger" else min)(s.choices, key=lambda c: _area(_obj(sc, c)))
    if m := re.match(r"Which box contains the (.+)\?$", q):
        return "[" + ", ".join(str(round(v)) for v in _obj(sc, m[1])["box"]) + "]"
    if m := re.match(r"In which part of the image is the (.+): left, middle or right\?$", q):
        return ["left", "middle", "right"][int(_cx(_obj(sc, m[1])) // (sc["width"] / 3))]
    if m := re.match(r"Imagine standing at the (.+), (facing the camera|facing away from the camera)\. "
                     r"Is the (.+) on your left or on your right\?$", q):
        v, t = _obj(sc, m[1]), _obj(sc, m[3])
        image_side = "left" if _cx(t) < _cx(v) else "right"
        if m[2] == "facing the camera":
            return {"left": "right", "right": "left"}[image_side]
        return image_side
    raise AssertionError(f"checker does not know this question: {q!r}")


def test_every_answer_is_right_by_an_independent_checker(samples):
    for s in samples:
        assert s.choices["ABCDEFGHIJ".index(s.answer)] == expected_answer(s), (s.id, s.question, s.choices)


def test_checker_can_fail(samples):
    s = next(x for x in samples if x.task == "depth_order")
    wrong = [c for c in s.choices if c != s.choices["ABCDEFGHIJ".index(s.answer)]]
    assert expected_answer(s) not in wrong


def test_boxes_inside_the_image_and_cover_their_objects_pixels(samples):
    for s in samples:
        img = np.asarray(s.image)  # [H, W, 3]
        H, W = img.shape[:2]
        for o in s.scene["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, (s.id, o)
        for colour, rgb in COLOURS.items():
            mask = np.all(img == np.array(rgb, dtype=np.uint8), axis=-1)  # [H, W]
            owners = [o for o in s.scene["objects"] if o["color"] == colour]
            inside = np.zeros_like(mask)
            for o in owners:
                x1, y1, x2, y2 = (int(v) for v in o["box"])
                inside[y1:y2, x1:x2] = True
                # every object shows some of its colour inside its own box
                assert mask[y1:y2, x1:x2].sum() >= 12, (s.id, o["name"])
            # no pixel of a colour lies outside the boxes of the objects that have it
            assert not (mask & ~inside).any(), (s.id, colour)
        # the sample's ground-truth boxes are scene objects' boxes
        scene_boxes = {(o["name"], tuple(o["box"])) for o in s.scene["objects"]}
        assert {(b.label, (b.x1, b.y1, b.x2, b.y2)) for b in s.boxes} <= scene_boxes


def test_scenes_have_occlusion_perspective_and_2_to_6_objects(samples):
    counts = [len(s.scene["objects"]) for s in samples]
    assert min(counts) == 2 and max(counts) == 6
    visible = [o["visible"] for s in samples for o in s.scene["objects"]]
    assert min(visible) >= 0.5 and any(v < 1 for v in visible)  # some objects are occluded
    for s in samples:
        for o in s.scene["objects"]:  # closer = lower bottom edge in the image
            for p in s.scene["objects"]:
                if o["depth"] < p["depth"] - 1e-6:
                    assert o["box"][3] >= p["box"][3]


def test_object_count_limits_are_checked():
    import random

    with pytest.raises(ValueError, match="max_objects=7"):
        make_scene(random.Random(0), 112, 2, 7)


def test_model_frame_scales_scene_with_image():
    # A model whose min_pixels exceeds 112x112 sees a 224x224 image: same scene, boxes x2.
    small = generate_split(PARAMS, "val", 14, MIN_PX, MAX_PX)
    big = generate_split(PARAMS, "val", 14, 224 * 224, MAX_PX)
    for a, b in zip(small, big):
        assert b.image.size == (224, 224)
        assert a.question.split("[")[0] == b.question.split("[")[0]
        for oa, ob in zip(a.scene["objects"], b.scene["objects"]):
            assert ob["box"] == [2 * v for v in oa["box"]]
        for ba, bb in zip(a.boxes, b.boxes):
            assert (bb.x1, bb.y2) == (2 * ba.x1, 2 * ba.y2)


def test_generate_samples_uses_the_default_model_frame():
    from fgrpo_core.data.synthetic import generate_samples

    got = generate_samples(PARAMS, n=5, split="demo")
    assert samples_hash(got) == samples_hash(generate_split(PARAMS, "demo", 5, MIN_PX, MAX_PX))


def test_no_answer_position_shortcut(samples):
    # A policy that always answers the same letter must score at chance (the mean of 1/k over
    # questions with k options), or RL learns the letter instead of the scene. Counting once put
    # small counts at option A: "always A" scored 0.51 on 512 samples where chance was 0.43.
    from scipy.stats import chisquare

    from fgrpo_core.data.synthetic import LETTERS

    k = np.array([len(s.choices) for s in samples])
    chance = (1.0 / k).mean()
    for pos, letter in enumerate(LETTERS[:4]):
        p = np.where(k > pos, 1.0 / k, 0.0)  # "always <letter>" is right w.p. 1/k where that option exists
        hits = sum(s.answer == letter for s in samples)
        sd = math.sqrt((p * (1 - p)).sum())
        assert abs(hits - p.sum()) < 4 * sd, f"always {letter}: {hits} right, chance {p.sum():.1f} (sd {sd:.1f})"
    assert 0.25 < chance < 0.5
    for task in TASKS:  # per task, every position equally likely
        idx = [LETTERS.index(s.answer) for s in samples if s.task == task]
        n_opt = {len(s.choices) for s in samples if s.task == task}
        if len(n_opt) == 1:
            counts = np.bincount(idx, minlength=n_opt.pop())
            assert chisquare(counts).pvalue > 1e-3, f"{task}: answer positions {counts.tolist()}"


def test_position_cue_paints_the_coordinate_ramp_and_changes_nothing_else():
    """data.synthetic.position_cue = L adds L*(2x/(W-1) - 1) to red and L*(2y/(H-1) - 1) to blue.

    Worked numbers for L = 40 on a 112-pixel image: x = 0 -> red - 40, x = 111 -> red + 40,
    x = 56 -> 40 * (112/111 - 1) = +0.36 -> rounds to 0; green never changes. The cue draws no
    random numbers, so the scene, question and answer are those of the same sample without it.
    """
    import numpy as np

    from fgrpo_core.config import SyntheticDataParams
    from fgrpo_core.data.synthetic import generate_item

    plain = generate_item(SyntheticDataParams(), "sft", 3, 3136, 12544).sample
    cued = generate_item(SyntheticDataParams(position_cue=40), "sft", 3, 3136, 12544).sample
    assert (cued.question, cued.choices, cued.answer, cued.scene) == (plain.question, plain.choices, plain.answer, plain.scene)
    a = np.asarray(plain.image).astype(int)
    b = np.asarray(cued.image).astype(int)
    h, w = a.shape[:2]
    ramp_x = np.rint(a[..., 0] + 40 * np.linspace(-1, 1, w)[None, :]).clip(0, 255)
    ramp_y = np.rint(a[..., 2] + 40 * np.linspace(-1, 1, h)[:, None]).clip(0, 255)
    assert (b[..., 0] == ramp_x).all() and (b[..., 2] == ramp_y).all() and (b[..., 1] == a[..., 1]).all()
    # Away from clipping the left edge is 80 levels less red than the right edge.
    row = h // 2
    unclipped = (a[row, [0, w - 1], 0] >= 40).all() and (a[row, [0, w - 1], 0] <= 215).all()
    assert not unclipped or (b[row, w - 1, 0] - a[row, w - 1, 0]) - (b[row, 0, 0] - a[row, 0, 0]) == 80
    # 0 is off: the image is the scene as drawn, byte for byte.
    off = generate_item(SyntheticDataParams(position_cue=0), "sft", 3, 3136, 12544).sample
    assert off.image.tobytes() == plain.image.tobytes()

"""Seeded synthetic spatial-reasoning scenes with boxes, scene graphs and multiple-choice questions.

Geometry (a pinhole camera one unit above a ground plane, image side S, horizon at 0.3*S):

    focal f   = S - 2 - horizon_y                  (so depth Z = 1 stands on the bottom row)
    base row  = horizon_y + f / Z                  closer objects stand lower in the image
    side (px) = 0.26 * S * size / Z                closer objects look bigger
    lateral X = (x_centre - S/2) * Z / f           world position, for 3D distances

Depth Z is drawn in [1, 3]; intrinsic sizes are small/medium/large = 0.75/1/1.3. Objects never
reach above the horizon. Each scene holds 2-6 objects with distinct (colour, shape) pairs, so
"the red circle" names one object; overlapping objects never share a colour, and every object
keeps at least half of its pixels visible.

Scene graph (JSON, in pixels of the staged image):
    {"width", "height", "horizon_y",
     "objects": [{"id", "name", "color", "shape", "size", "box": [x1, y1, x2, y2],
                  "depth": Z, "x": X, "area": amodal pixels, "visible": visible share}],
     "relations": [{"subject": i, "predicate": p, "object": j}],   p in RELATIONS
     "counts": {"total": n, "shape": {...}, "color": {...}},
     "thresholds": {...}}                                          margins used below
Relations are stored only where they are clear (margins in ``thresholds``): left_of/right_of and
above/below compare box centres (margin 4% of the side), closer/farther compare depth (ratio
1.15), bigger/smaller compare amodal pixel area (ratio 1.4). A pair inside a margin has no
relation of that kind, and no question is asked about it.

Task families (``SyntheticDataParams.tasks``), mirroring the paper's benchmarks:
    relation_2d        left/right or above/below of two objects            (CV-Bench 2D relation)
    counting           how many <shape>s / <colour> objects                (CV-Bench 2D count)
    depth_order        which of 2-3 objects is closer/farther from camera  (CV-Bench 3D depth)
    relative_distance  which object is closer to/farther from an anchor    (CV-Bench 3D distance)
    relative_size      which object looks bigger/smaller in the image      (OmniSpatial, SAT)
    localization       which box holds an object / which third it is in    (grounding)
    perspective        left/right seen from another object facing or
                       facing away from the camera                         (MindCube, SAT)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fgrpo_core.config import SyntheticDataParams
from fgrpo_core.data.render import COLOURS, SHAPES, Shape, add_position_cue, render, shape_mask
from fgrpo_core.data.schema import Box, Sample, box_iou, to_model_frame
from fgrpo_core.data.scene_graph import (  # noqa: F401  (the scene vocabulary, re-exported)
    OPPOSITE,
    RELATIONS,
    QuestionSpec,
    Relations,
    random_box_away,
    region_of,
)
from fgrpo_core.prompts import LETTERS

SIZES: dict[str, float] = {"small": 0.75, "medium": 1.0, "large": 1.3}
HORIZON_FRAC = 0.3
SIDE_FRAC = 0.26
Z_NEAR, Z_FAR = 1.0, 3.0
POSITION_MARGIN_FRAC = 0.04
DEPTH_RATIO = 1.15
SIZE_RATIO = 1.4
DISTANCE_RATIO = 1.3
REGION_MARGIN_FRAC = 0.04
MIN_VISIBLE = 0.5
MIN_VISIBLE_PX = 12
MAX_OBJECTS = 6  # five colours x three shapes, but a 112-pixel scene gets crowded beyond this

TASKS = ("relation_2d", "counting", "depth_order", "relative_distance", "relative_size",
         "localization", "perspective")


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
def _place(rng: random.Random, S: int, colour: str, shape: str) -> dict[str, Any]:
    horizon = HORIZON_FRAC * S
    f = S - 2 - horizon
    size = rng.choice(list(SIZES))
    z = rng.uniform(Z_NEAR, Z_FAR)
    side = max(5, int(round(SIDE_FRAC * S * SIZES[size] / z)))
    xc = rng.uniform(side / 2 + 1, S - side / 2 - 1)
    x1 = int(round(xc - side / 2))
    y2 = int(round(horizon + f / z))
    return {
        "color": colour, "shape": shape, "size": size, "depth": z,
        "x": (x1 + side / 2 - S / 2) * z / f,
        "draw_box": (x1, y2 - side, x1 + side, y2),
    }


def _scene_or_none(rng: random.Random, S: int, n: int) -> tuple[dict[str, Any], Any] | None:
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    picked = rng.sample(combos, n)
    objs = [_place(rng, S, c, s) for c, s in picked]
    objs.sort(key=lambda o: -o["depth"])  # far to near = painting order
    shapes = [Shape(o["shape"], o["color"], o["draw_box"]) for o in objs]
    masks = [shape_mask(S, s) for s in shapes]  # [n] x [S, S] bool
    covered = np.zeros((S, S), dtype=bool)
    for i in reversed(range(n)):  # near to far: what nearer objects already cover
        m = masks[i]
        area = int(m.sum())
        visible = int((m & ~covered).sum())
        if area == 0 or visible < MIN_VISIBLE_PX or visible / area < MIN_VISIBLE:
            return None
        ys, xs = np.nonzero(m)
        objs[i]["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        objs[i]["area"] = area
        objs[i]["visible"] = round(visible / area, 4)
        covered |= m
    for i in range(n):
        for j in range(i + 1, n):
            if objs[i]["color"] == objs[j]["color"] and _boxes_touch(objs[i]["box"], objs[j]["box"]):
                return None  # same colour and overlapping: they would merge into one blob
    image = render(S, HORIZON_FRAC * S, shapes)
    scene = {
        "width": S, "height": S, "horizon_y": HORIZON_FRAC * S,
        "objects": [
            {
                "id": k, "name": f"{o['color']} {o['shape']}", "color": o["color"],
                "shape": o["shape"], "size": o["size"], "box": o["box"],
                "depth": round(o["depth"], 4), "x": round(o["x"], 4),
                "area": o["area"], "visible": o["visible"],
            }
            for k, o in enumerate(objs)
        ],
        "thresholds": {
            "position_px": POSITION_MARGIN_FRAC * S, "region_px": REGION_MARGIN_FRAC * S,
            "depth_ratio": DEPTH_RATIO, "size_ratio": SIZE_RATIO, "distance_ratio": DISTANCE_RATIO,
        },
    }
    return scene, image


def _boxes_touch(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] + 1 and b[0] < a[2] + 1 and a[1] < b[3] + 1 and b[1] < a[3] + 1


def finish_scene_graph(scene: dict[str, Any]) -> dict[str, Any]:
    """Add relations and counts from the objects' boxes, depths and areas (in place)."""
    objs, th = scene["objects"], scene["thresholds"]
    rels = []
    for a in objs:
        for b in objs:
            if a is b:
                continue
            ca, cb = _centre(a["box"]), _centre(b["box"])
            if ca[0] < cb[0] - th["position_px"]:
                rels.append((a["id"], "left_of", b["id"]))
            if ca[0] > cb[0] + th["position_px"]:
                rels.append((a["id"], "right_of", b["id"]))
            if ca[1] < cb[1] - th["position_px"]:
                rels.append((a["id"], "above", b["id"]))
            if ca[1] > cb[1] + th["position_px"]:
                rels.append((a["id"], "below", b["id"]))
            if a["depth"] * th["depth_ratio"] < b["depth"]:
                rels.append((a["id"], "closer", b["id"]))
            if b["depth"] * th["depth_ratio"] < a["depth"]:
                rels.append((a["id"], "farther", b["id"]))
            if a["area"] >= th["size_ratio"] * b["area"]:
                rels.append((a["id"], "bigger", b["id"]))
            if b["area"] >= th["size_ratio"] * a["area"]:
                rels.append((a["id"], "smaller", b["id"]))
    scene["relations"] = [{"subject": s, "predicate": p, "object": o} for s, p, o in rels]
    scene["counts"] = {
        "total": len(objs),
        "shape": {s: sum(o["shape"] == s for o in objs) for s in SHAPES},
        "color": {c: sum(o["color"] == c for o in objs) for c in COLOURS},
    }
    return scene


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def scale_scene(scene: dict[str, Any], sx: float, sy: float) -> dict[str, Any]:
    """The scene graph in a resized frame: boxes, sizes and pixel margins scaled, areas by sx*sy."""
    out = {**scene, "width": round(scene["width"] * sx), "height": round(scene["height"] * sy),
           "horizon_y": scene["horizon_y"] * sy}
    out["objects"] = [
        {**o, "box": [o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx, o["box"][3] * sy],
         "area": o["area"] * sx * sy}
        for o in scene["objects"]
    ]
    th = dict(scene["thresholds"])
    th["position_px"] *= (sx + sy) / 2
    th["region_px"] *= sx
    out["thresholds"] = th
    return out


def make_scene(rng: random.Random, size: int, min_objects: int, max_objects: int):
    """A scene graph (without relations yet) and its image; retries until the constraints hold."""
    if not 2 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(
            f"synthetic objects per scene must satisfy 2 <= min_objects <= max_objects <= "
            f"{MAX_OBJECTS}; got min_objects={min_objects}, max_objects={max_objects}"
        )
    for _ in range(1000):
        got = _scene_or_none(rng, size, rng.randint(min_objects, max_objects))
        if got is not None:
            return got
    raise RuntimeError(f"could not place {min_objects}-{max_objects} visible objects in {size}px")


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------
def _shuffled(rng: random.Random, items: list[str], correct: str) -> tuple[list[str], int]:
    items = list(items)
    rng.shuffle(items)
    return items, items.index(correct)


def _names(scene) -> dict[int, str]:
    return {o["id"]: o["name"] for o in scene["objects"]}


def _ask_relation_2d(scene, rng):
    """objects = (A, B): "Is the A left or right of the B?"."""
    rel, names = Relations(scene), _names(scene)
    pairs = [(a, b, p) for (a, p, b) in rel.triples if p in ("left_of", "right_of", "above", "below")]
    if not pairs:
        return None
    a, b, pred = rng.choice(sorted(pairs))
    if pred in ("left_of", "right_of"):
        template = rng.choice(["Is the {a} to the left or to the right of the {b}?",
                               "Where is the {a} relative to the {b}: left or right?"])
        options, correct, variant = ["left", "right"], "left" if pred == "left_of" else "right", "horizontal"
    else:
        template = rng.choice(["Is the {a} above or below the {b}?",
                               "Where is the {a} relative to the {b}: above or below?"])
        options, correct, variant = ["above", "below"], pred, "vertical"
    choices, idx = _shuffled(rng, options, correct)
    return QuestionSpec("relation_2d", variant, template.format(a=names[a], b=names[b]), choices, idx, [a, b])


def _ask_depth_order(scene, rng):
    """objects = (target, *others): the target is closer (farther) than every other option."""
    rel, names = Relations(scene), _names(scene)
    ids = [o["id"] for o in scene["objects"]]
    variant = rng.choice(["closer", "farther"])
    k = 3 if len(ids) >= 3 and rng.random() < 0.5 else 2
    for _ in range(20):
        group = rng.sample(ids, k)
        target = group[0]
        if all(rel.holds(target, variant, o) for o in group[1:]):
            q = ("Which object is closer to the camera?" if variant == "closer"
                 else "Which object is farther from the camera?")
            choices, idx = _shuffled(rng, [names[i] for i in group], names[target])
            return QuestionSpec("depth_order", variant, q, choices, idx, group)
    return None


def _distance(a: dict, b: dict) -> float:
    return math.hypot(a["x"] - b["x"], a["depth"] - b["depth"])


def _ask_relative_distance(scene, rng):
    """objects = (anchor, near, far): near is clearly closer to the anchor in 3D than far."""
    objs, names = {o["id"]: o for o in scene["objects"]}, _names(scene)
    ratio = scene["thresholds"]["distance_ratio"]
    triples = [
        (a, b, c) for a in objs for b in objs for c in objs
        if len({a, b, c}) == 3 and _distance(objs[a], objs[b]) * ratio <= _distance(objs[a], objs[c])
    ]
    if not triples:
        return None
    a, near, far = rng.choice(sorted(triples))
    variant = rng.choice(["closer", "farther"])
    if variant == "closer":
        q, correct = f"Which object is closer to the {names[a]} in the scene?", names[near]
    else:
        q, correct = f"Which object is farther from the {names[a]} in the scene?", names[far]
    choices, idx = _shuffled(rng, [names[near], names[far]], correct)
    return QuestionSpec("relative_distance", variant, q, choices, idx, [a, near, far])


def _ask_relative_size(scene, rng):
    """objects = (big, small): big covers >= size_ratio times the pixels of small."""
    rel, names = Relations(scene), _names(scene)
    pairs = sorted((a, b) for (a, p, b) in rel.triples if p == "bigger")
    if not pairs:
        return None
    big, small = rng.choice(pairs)
    variant = rng.choice(["bigger", "smaller"])
    q = f"Which object looks {variant} in the image?"
    correct = names[big] if variant == "bigger" else names[small]
    choices, idx = _shuffled(rng, [names[big], names[small]], correct)
    return QuestionSpec("relative_size", variant, q, choices, idx, [big, small])


def _ask_counting(scene, rng):
    """objects = the counted objects; extra = {"attribute": "shape"|"color", "value": ...}."""
    attr = rng.choice(["shape", "color"])
    present = sorted({o[attr] for o in scene["objects"]})
    value = rng.choice(present)
    counted = [o["id"] for o in scene["objects"] if o[attr] == value]
    n = len(counted)
    q = (f"How many {value}s are in the image?" if attr == "shape"
         else f"How many {value} objects are in the image?")
    start = max(1, n - rng.randint(0, 3))
    # Shuffled, not in numeric order: small counts would otherwise sit at option A most of the time,
    # and a policy answering "A" always would score far above chance (a shortcut RL finds at once).
    choices, idx = _shuffled(rng, [str(k) for k in range(start, start + 4)], str(n))
    return QuestionSpec("counting", attr, q, choices, idx, counted,
                        {"attribute": attr, "value": value, "count": n})


def _fmt_box(box: list[float]) -> str:
    return "[" + ", ".join(str(int(round(v))) for v in box) + "]"


def _ask_localization(scene, rng):
    """objects = (target, distractor). Box variant: 4 box options; region variant: left/middle/right."""
    objs = {o["id"]: o for o in scene["objects"]}
    target = rng.choice(sorted(objs))
    distractor = rng.choice(sorted(set(objs) - {target}))
    name = objs[target]["name"]
    if rng.random() < 0.5:
        W, H = scene["width"], scene["height"]
        gt = objs[target]["box"]
        options = [_fmt_box(gt), _fmt_box(objs[distractor]["box"])]
        for o in sorted(set(objs) - {target, distractor}):
            if len(options) < 4 and _fmt_box(objs[o]["box"]) not in options:
                options.append(_fmt_box(objs[o]["box"]))
        while len(options) < 4:
            cand = random_box_away(rng, gt, [gt], W, H)
            if cand is None:
                return None
            if _fmt_box(cand) not in options:
                options.append(_fmt_box(cand))
        if len({o for o in options}) != 4:
            return None
        choices, idx = _shuffled(rng, options, _fmt_box(gt))
        return QuestionSpec("localization", "box", f"Which box contains the {name}?", choices, idx,
                            [target, distractor])
    region = region_of(objs[target]["box"], scene["width"], scene["thresholds"]["region_px"])
    if region is None:
        return None
    choices, idx = _shuffled(rng, ["left", "middle", "right"], region)
    return QuestionSpec("localization", "region", f"In which part of the image is the {name}: left, "
                        "middle or right?", choices, idx, [target, distractor], {"region": region})


def _ask_perspective(scene, rng):
    """objects = (viewpoint, target); extra = {"facing": "camera"|"away", "image_side": ...}."""
    rel, names = Relations(scene), _names(scene)
    pairs = sorted((v, t, p) for (t, p, v) in rel.triples if p in ("left_of", "right_of"))
    if not pairs:
        return None
    v, t, pred = rng.choice(pairs)
    image_side = "left" if pred == "left_of" else "right"
    facing = rng.choice(["camera", "away"])
    seen = image_side if facing == "away" else {"left": "right", "right": "left"}[image_side]
    facing_text = "facing the camera" if facing == "camera" else "facing away from the camera"
    q = (f"Imagine standing at the {names[v]}, {facing_text}. "
         f"Is the {names[t]} on your left or on your right?")
    choices, idx = _shuffled(rng, ["left", "right"], seen)
    return QuestionSpec("perspective", facing, q, choices, idx, [v, t],
                        {"facing": facing, "image_side": image_side})


ASKERS: dict[str, Callable[[dict, random.Random], QuestionSpec | None]] = {
    "relation_2d": _ask_relation_2d,
    "counting": _ask_counting,
    "depth_order": _ask_depth_order,
    "relative_distance": _ask_relative_distance,
    "relative_size": _ask_relative_size,
    "localization": _ask_localization,
    "perspective": _ask_perspective,
}


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticItem:
    """A sample plus the question spec its trace was (or can be) written from."""

    sample: Sample
    spec: QuestionSpec


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """Per-sample generator: splits are independent and adding samples never changes others."""
    return random.Random(f"fgrpo-synthetic:{seed}:{split}:{index}")


def generate_item(params: SyntheticDataParams, split: str, index: int, min_pixels: int,
                  max_pixels: int, with_trace: bool = False) -> SyntheticItem:
    """One synthetic sample in the model frame (scene, image and boxes scaled together)."""
    from fgrpo_core.data.traces import FaultShares, make_trace  # SFT traces only

    unknown = [t for t in params.tasks if t not in ASKERS]
    if unknown or not params.tasks:
        raise ValueError(f"synthetic.tasks: unknown task(s) {unknown or params.tasks}; known: {list(ASKERS)}")
    rng = sample_rng(params.seed, split, index)
    task = params.tasks[index % len(params.tasks)]
    for _ in range(200):
        scene, image = make_scene(rng, params.image_size, params.min_objects, params.max_objects)
        image = add_position_cue(image, params.position_cue)
        image, _, (sx, sy) = to_model_frame(image, [], min_pixels, max_pixels)
        scene = finish_scene_graph(scale_scene(scene, sx, sy))
        spec = ASKERS[task](scene, rng)
        if spec is not None:
            break
    else:
        raise RuntimeError(f"no scene supported task {task!r} after 200 tries (split {split}, index {index})")
    objs = {o["id"]: o for o in scene["objects"]}
    boxes = [Box(objs[i]["name"], *objs[i]["box"]) for i in spec.objects]
    trace, faults = "", []
    if with_trace:
        shares = FaultShares(params.inconsistent_share, params.hallucination_share, params.bad_box_share)
        trace, faults = make_trace(scene, spec, rng, shares)
    sample = Sample(
        id=f"synthetic-{split}-{index:06d}", source="synthetic", task=task, image=image,
        question=spec.question, choices=spec.choices, answer=LETTERS[spec.answer_index],
        boxes=boxes, scene=scene, trace=trace, trace_faults=faults,
    )
    return SyntheticItem(sample, spec)


def generate_split(params: SyntheticDataParams, split: str, n: int, min_pixels: int, max_pixels: int,
                   with_trace: bool = False) -> list[Sample]:
    """``n`` samples of one split; tasks cycle in ``params.tasks`` order."""
    return [generate_item(params, split, i, min_pixels, max_pixels, with_trace).sample for i in range(n)]


def generate_samples(params: SyntheticDataParams, n: int, split: str, min_pixels: int | None = None,
                     max_pixels: int | None = None, with_trace: bool = False) -> list[Sample]:
    """:func:`generate_split` with the model frame defaulting to ``ModelParams``' pixel bounds."""
    from fgrpo_core.config import ModelParams

    defaults = ModelParams()
    return generate_split(params, split, n, defaults.min_pixels if min_pixels is None else min_pixels,
                          defaults.max_pixels if max_pixels is None else max_pixels, with_trace)

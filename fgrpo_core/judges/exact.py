"""Exact judges for data that carries a scene graph (the synthetic benchmark), docs/method.md#rewards.

Consistency (R_C): "does the final answer follow from the reasoning's own logic?" We read the
option the reasoning *concludes* and compare it with the final answer:

- the concluded option is the **last** explicit option reference in the reasoning ("answer is
  B", "option B", "(B)"); when there is none, the last concluding sentence ("so/therefore/thus/
  hence/answer ...") that names exactly one option's text;
- consistent iff that option is the answer's option (answer given as a letter, "(B)", or the
  option's text). A letter outside the options counts as concluding something else;
- reasoning that concludes nothing is **inconsistent** (status ok, consistent=False), not
  "unparseable": otherwise a policy could dodge the consistency constraint by never concluding,
  since unparseable verdicts are excluded from the constraint mean. The verdict's ``raw`` says
  which case applied.
This judge needs no scene graph. It does not check that the conclusion is *true*; that is
semantic grounding's job.

Semantic grounding (R_S): each sentence is parsed for object mentions ("the red circle"),
cited boxes, and claims in the vocabulary of our traces (left/right of, above/below,
closer to/farther from the camera than, bigger/larger/smaller than, lower/higher in the image
than, closer to/farther from X than Y, in the left/middle/right part of the image, on the
left/right seen facing (away from) the camera, "there are N <shape>s / <colour> objects"). Every
check is one of:

- a mention that names no object of the scene (an absent object)          -> fails
- a box cited right after a mention ("the red circle is at <bbox>...")     -> IoU with that
  object >= BOX_IOU_MIN (0.5, the usual detection threshold); a box cited alone must reach 0.5
  with some object
- a claim                                                                 -> true / false /
  undecidable (a pair inside the scene's margins, or an ambiguous mention)

Label: INCORRECT if any check fails; CORRECT if at least one check passed, where "the object
exists" counts only in a sentence that makes no claim; SKIP if nothing in the sentence could be
checked (e.g. "Hence the answer is B (left).", or only an undecidable relation). The scene's relation list is
the ground truth for the relations it stores; distances, regions and "lower in the image" are
computed from the objects with the margins in ``scene["thresholds"]``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from fgrpo_core.judges.base import (
    ConsistencyRequest,
    ConsistencyVerdict,
    SemanticRequest,
    SemanticVerdict,
    SentenceLabel,
    VerdictStatus,
)
from fgrpo_core.judges.sentences import split_sentences
from fgrpo_core.data.scene_graph import OPPOSITE, region_of
from fgrpo_core.data.schema import box_iou
from fgrpo_core.parsing import parse_box
from fgrpo_core.prompts import LETTERS
from fgrpo_core.rewards.answer import named_option, normalise_answer

BOX_IOU_MIN = 0.5

COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black",
                "white", "gray", "grey", "cyan")
SHAPE_WORDS = ("circle", "square", "triangle", "cube", "sphere", "cylinder", "rectangle", "cone")

_COL = "|".join(COLOUR_WORDS)
_SHP = "|".join(SHAPE_WORDS)
_MENTION = re.compile(rf"\b(?:(?P<art>the|a|an)\s+)?(?:(?P<col>{_COL})\s+)?(?P<shape>{_SHP})(?![a-z])", re.I)
_BBOX = re.compile(r"<bbox>\s*\[([^\]]*)\]\s*</bbox>", re.I)
_ATTACH = re.compile(r"^\s*(?:,\s*)?(?:which\s+)?(?:is\s+|are\s+)?(?:located\s+|placed\s+|found\s+)?(?:at\s+)?$", re.I)

_V = r"(?:is |looks |appears |lies |sits |stands )?"
CLAIMS: list[tuple[str, re.Pattern[str]]] = [
    ("distance", re.compile(r"@(\d+)@ " + _V + r"(closer|nearer|farther|further) (?:to|from) @(\d+)@ than @(\d+)@")),
    ("horizontal", re.compile(r"@(\d+)@ " + _V + r"(?:to the |on the )?(left|right) of @(\d+)@")),
    ("vertical", re.compile(r"@(\d+)@ " + _V + r"(above|below|under|beneath) @(\d+)@")),
    ("depth", re.compile(r"@(\d+)@ " + _V + r"(closer|nearer|farther|further) (?:to|from) the camera than @(\d+)@")),
    ("size", re.compile(r"@(\d+)@ " + _V + r"(bigger|larger|smaller) than @(\d+)@")),
    ("image_y", re.compile(r"@(\d+)@ " + _V + r"(lower|higher) in the image than @(\d+)@")),
    ("region", re.compile(r"@(\d+)@ " + _V + r"in the (left|middle|center|centre|right) (?:part|third|side) of the image")),
    ("perspective", re.compile(r"@(\d+)@ " + _V + r"on (?:the|its|your) (left|right)(?! of)")),
    ("count", re.compile(rf"(?:there (?:is|are)|i count|count) (\d+) (?:({_COL}) )?(objects?|(?:{_SHP})s?)\b")),
]
_PRED = {"left": "left_of", "right": "right_of", "above": "above", "below": "below", "under": "below",
         "beneath": "below", "closer": "closer", "nearer": "closer", "farther": "farther",
         "further": "farther", "bigger": "bigger", "larger": "bigger", "smaller": "smaller"}


# --------------------------------------------------------------------------------------------
# Consistency
# --------------------------------------------------------------------------------------------
_LETTER_REF = re.compile(
    r"(?i:\banswer\s*(?:is|:|=)?\s*(?:option\s*|choice\s*)?|\boption\s*|\bchoice\s*)\(?([A-J])\)?(?![A-Za-z0-9])"
    r"|\(([A-J])\)(?![A-Za-z0-9])"
)
_CONCLUDING = re.compile(r"^\W*(?:so|therefore|thus|hence|overall|in conclusion)\b|\banswer\b", re.I)


# Answers and option texts are read as the accuracy reward reads them (one matcher).
_norm = normalise_answer
answer_option = named_option  # the option an answer names: "B", "(b)", "B.", "right", "B. right"


def concluded_option(reasoning: str, choices: Sequence[str]) -> tuple[int | None, str]:
    """(option index the reasoning concludes, or None; how it was found / why not)."""
    refs = list(_LETTER_REF.finditer(reasoning))
    if refs:
        letter = refs[-1].group(1) or refs[-1].group(2)
        idx = LETTERS.index(letter)
        if idx >= len(choices):
            return -1, f"concludes letter {letter}, which is not an option"
        return idx, f"letter {letter} in {refs[-1].group(0)!r}"
    for sentence in reversed(split_sentences(reasoning)):
        if not _CONCLUDING.search(sentence):
            continue
        text = f" {_norm(sentence)} "
        named = [i for i, c in enumerate(choices) if _norm(c) and f" {_norm(c)} " in text]
        if len(named) == 1:
            return named[0], f"option text {choices[named[0]]!r} in {sentence!r}"
    return None, "no conclusion naming an option"


def check_consistency(req: ConsistencyRequest) -> ConsistencyVerdict:
    choices = list(req.choices)
    if not choices:  # free-form: the reasoning's "answer is X" must match the answer text
        found = re.findall(r"answer is\s*([^.\n]+)", req.reasoning, re.I)
        if not found:
            return ConsistencyVerdict(VerdictStatus.ok, False, "free-form: no 'answer is ...' in reasoning")
        return ConsistencyVerdict(VerdictStatus.ok, _norm(found[-1]) == _norm(req.answer),
                                  f"free-form: reasoning concludes {found[-1]!r}")
    target = answer_option(req.answer, choices)
    got, how = concluded_option(req.reasoning, choices)
    if got is None:
        return ConsistencyVerdict(VerdictStatus.ok, False, how)
    if target is None:
        return ConsistencyVerdict(VerdictStatus.ok, False, f"{how}; answer {req.answer!r} names no option")
    return ConsistencyVerdict(VerdictStatus.ok, got == target, f"{how}; answer is option {LETTERS[target]}")


# --------------------------------------------------------------------------------------------
# Semantic grounding
# --------------------------------------------------------------------------------------------
@dataclass
class _Mention:
    start: int
    end: int
    colour: str | None
    shape: str
    candidates: list[int]  # object ids with these attributes
    box: list[float] | None = None  # a box cited right after the mention

    @property
    def text(self) -> str:
        return f"{self.colour + ' ' if self.colour else ''}{self.shape}"


class _SceneView:
    def __init__(self, scene: dict[str, Any]):
        self.scene = scene
        self.objects = {o["id"]: o for o in scene["objects"]}
        self.relations = {(r["subject"], r["predicate"], r["object"]) for r in scene["relations"]}
        self.th = scene["thresholds"]

    def relation(self, a: int, pred: str, b: int) -> bool | None:
        if (a, pred, b) in self.relations:
            return True
        if (a, OPPOSITE[pred], b) in self.relations:
            return False
        return None

    def distance(self, a: int, b: int) -> float:
        oa, ob = self.objects[a], self.objects[b]
        return math.hypot(oa["x"] - ob["x"], oa["depth"] - ob["depth"])


def label_sentence(sentence: str, scene: dict[str, Any]) -> tuple[SentenceLabel, list[str]]:
    """(label, reasons): one reason per check, prefixed 'ok' / 'fail' / 'skip'."""
    view = _SceneView(scene)
    reasons: list[str] = []
    mentions: list[_Mention] = []
    for m in _MENTION.finditer(sentence):
        colour = m.group("col").lower() if m.group("col") else None
        if colour is None and (m.group("art") or "").lower() != "the":
            continue  # "1 circle", "circles": not a reference to one object
        shape = m.group("shape").lower()
        cands = [i for i, o in view.objects.items()
                 if o["shape"] == shape and (colour is None or o["color"] == colour.replace("grey", "gray"))]
        mentions.append(_Mention(m.start(), m.end(), colour, shape, cands))

    # boxes: attach each to the mention right before it, else it stands alone
    loose_boxes: list[list[float]] = []
    spans: list[tuple[int, int, str]] = []  # (start, end, replacement) for the normalised text
    for bm in _BBOX.finditer(sentence):
        box = parse_box(f"[{bm.group(1)}]")  # the completion parser's reader (a degenerate box: IoU 0)
        before = [mt for mt in mentions if mt.end <= bm.start()]
        host = before[-1] if before else None
        if host is not None and host.box is None and _ATTACH.match(sentence[host.end : bm.start()]):
            host.box = box
            spans.append((bm.start(), bm.end(), ""))
        else:
            spans.append((bm.start(), bm.end(), " "))
            if box is not None:
                loose_boxes.append(box)
            else:
                reasons.append(f"fail: unreadable box {bm.group(0)!r}")

    resolved: dict[int, int | None] = {}  # mention index -> object id (None: absent or ambiguous)
    for k, mt in enumerate(mentions):
        cands = mt.candidates
        if not cands:
            reasons.append(f"fail: no {mt.text} in the scene")
            resolved[k] = None
            continue
        if mt.box is not None:
            best = max(cands, key=lambda i: box_iou(mt.box, view.objects[i]["box"]))
            score = box_iou(mt.box, view.objects[best]["box"])
            ok = score >= BOX_IOU_MIN
            reasons.append(f"{'ok' if ok else 'fail'}: box of the {mt.text} IoU {score:.2f}")
            resolved[k] = best if len(cands) == 1 or ok else None
        else:
            resolved[k] = cands[0] if len(cands) == 1 else None
            reasons.append(f"ok: the {mt.text} exists" if len(cands) == 1 else
                           f"skip: '{mt.text}' is ambiguous ({len(cands)} objects)")
    for box in loose_boxes:
        score = max((box_iou(box, o["box"]) for o in view.objects.values()), default=0.0)
        reasons.append(f"{'ok' if score >= BOX_IOU_MIN else 'fail'}: cited box best IoU {score:.2f}")

    for k, mt in enumerate(mentions):
        spans.append((mt.start, mt.end, f"@{k}@"))
    text = sentence
    for start, end, rep in sorted(spans, reverse=True):
        text = text[:start] + rep + text[end:]
    text = " ".join(text.lower().split())
    for kind, pattern in CLAIMS:
        for cm in pattern.finditer(text):
            verdict = _check_claim(kind, cm, text, resolved, view)
            reasons.append(f"{'skip' if verdict is None else 'ok' if verdict else 'fail'}: {kind} claim "
                           f"{cm.group(0)!r}")

    if any(r.startswith("fail") for r in reasons):
        return SentenceLabel.incorrect, reasons
    # An object that exists only counts when the sentence claims nothing else: "The red circle is
    # left of the green triangle" with an undecidable pair is SKIP, not CORRECT.
    has_claim = any(" claim " in r for r in reasons)
    if any(r.startswith("ok") and not (has_claim and r.endswith(" exists")) for r in reasons):
        return SentenceLabel.correct, reasons
    return SentenceLabel.skip, reasons


def _check_claim(kind: str, m: re.Match[str], text: str, resolved: dict[int, int | None],
                 view: _SceneView) -> bool | None:
    def obj(group: int) -> int | None:
        return resolved.get(int(m.group(group)))

    if kind == "count":
        n, colour, noun = int(m.group(1)), m.group(2), m.group(3).rstrip("s")
        objs = view.objects.values()
        if noun == "object":
            actual = sum(colour is None or o["color"] == colour for o in objs)
        else:
            actual = sum(o["shape"] == noun and (colour is None or o["color"] == colour) for o in objs)
        return n == actual
    if kind in ("horizontal", "vertical", "depth", "size"):
        a, b = obj(1), obj(3)
        if a is None or b is None or a == b:
            return None
        return view.relation(a, _PRED[m.group(2)], b)
    if kind == "image_y":
        a, b = obj(1), obj(3)
        if a is None or b is None or a == b:
            return None
        dy = view.objects[a]["box"][3] - view.objects[b]["box"][3]  # bottom edges
        if abs(dy) < 1:
            return None
        return (dy > 0) == (m.group(2) == "lower")
    if kind == "distance":
        a, ref, other = obj(1), obj(3), obj(4)
        if None in (a, ref, other) or len({a, ref, other}) < 3:
            return None
        d_a, d_o = view.distance(a, ref), view.distance(other, ref)
        ratio = view.th["distance_ratio"]
        closer = m.group(2) in ("closer", "nearer")
        if d_a * ratio <= d_o:
            return closer
        if d_o * ratio <= d_a:
            return not closer
        return None
    if kind == "region":
        a = obj(1)
        if a is None:
            return None
        region = region_of(view.objects[a]["box"], view.scene["width"], view.th["region_px"])
        said = {"center": "middle", "centre": "middle"}.get(m.group(2), m.group(2))
        return None if region is None else region == said
    if kind == "perspective":
        target = obj(1)
        facing_away = "facing away from the camera" in text
        if target is None or not (facing_away or "facing the camera" in text):
            return None
        others = [resolved.get(int(k)) for k in re.findall(r"@(\d+)@", text) if int(k) != int(m.group(1))]
        viewpoint = next((o for o in others if o is not None and o != target), None)
        if viewpoint is None:
            return None
        image_left = view.relation(target, "left_of", viewpoint)
        if image_left is None:
            return None
        side = ("left" if image_left else "right") if facing_away else ("right" if image_left else "left")
        return side == m.group(2)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------
class ExactJudge:
    """Scene-graph verifier implementing :class:`fgrpo_core.judges.base.Judge`."""

    name = "exact"
    version = "1"

    def consistency(self, requests: Sequence[ConsistencyRequest]) -> list[ConsistencyVerdict]:
        return [check_consistency(r) for r in requests]

    def semantic(self, requests: Sequence[SemanticRequest]) -> list[SemanticVerdict]:
        out = []
        for req in requests:
            if req.scene is None:
                out.append(SemanticVerdict(VerdictStatus.failed, [], "no scene graph: the exact judge "
                                           "checks synthetic samples only"))
                continue
            labels, raws = [], []
            for s in req.sentences:
                label, reasons = label_sentence(s, req.scene)
                labels.append(label)
                raws.append({"sentence": s, "label": label.value, "reasons": reasons})
            out.append(SemanticVerdict(VerdictStatus.ok, labels, json.dumps(raws)))
        return out

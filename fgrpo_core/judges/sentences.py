"""Sentence splitting and the trivial-sentence filter, shared by every judge (docs/method.md#rewards).

R_S is the mean of per-sentence verdicts over the reasoning's *non-trivial* sentences. The paper
drops trivial sentences: those that open with a filler phrase ("Let me", "Therefore", "Wait")
and carry no visual content. We read that as a conjunction **[ours]**:

    trivial(s)  <=>  s opens with a filler prefix  AND  s has no visual word and no <bbox>

so "So the answer is B." is trivial, while "So the red circle is left of the cube." is not
(a conclusion that states a visual fact is still a claim about the image). A sentence with no
filler prefix is never trivial. Callers with an open vocabulary (real benchmarks: chairs,
people, cars) can extend the visual words with ``extra_visual_words``.

Splitting keeps ``<bbox>[x1, y1, x2, y2]</bbox>`` citations whole, does not split decimals
("3.5"), common abbreviations ("e.g.") or list numbers ("1. The ..."), and always splits at
line breaks.
"""

from __future__ import annotations

import re
from typing import Iterable

FILLER_PREFIXES: tuple[str, ...] = (
    "let me", "let's", "let us", "therefore", "thus", "hence", "so", "wait", "hmm", "hm",
    "ok", "okay", "alright", "now", "first", "firstly", "next", "then", "finally", "lastly",
    "in conclusion", "in summary", "overall", "i think", "i need to", "i will", "i'll",
    "to answer", "to determine", "the answer", "my answer", "answer", "well", "yes", "no",
    "oh", "actually", "hold on", "but", "because", "since",
)

VISUAL_WORDS: frozenset[str] = frozenset(
    # colours
    "red green blue yellow purple orange pink brown black white gray grey cyan magenta "
    # shapes and generic object nouns
    "circle circles square squares triangle triangles cube cubes sphere spheres cylinder "
    "cylinders shape shapes object objects box boxes rectangle disk ball "
    # 2D relations and regions
    "left right above below top bottom upper lower higher under over beneath underneath "
    "center centre middle corner edge side between beside next near nearby far adjacent "
    # depth, distance, size, viewpoint
    "front behind closer closest nearer nearest farther farthest further furthest distance "
    "depth camera viewer deeper bigger biggest larger largest smaller smallest size tall "
    "taller tallest short shorter wide wider narrow height width facing "
    # counting
    "count number many".split()
)

_WORD = re.compile(r"[a-z]+")
_BBOX = re.compile(r"<bbox>.*?</bbox>", re.S)
# Periods that do not end a sentence: abbreviations. Decimals never match (no space follows).
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|vs|etc|approx|fig|mr|dr)\.$", re.I)
_ENUM = re.compile(r"^\s*\d{1,2}\.$")  # "1." opening a list item
_END = re.compile(r"[.!?]+(?=\s|$)")


def _protect_boxes(text: str) -> tuple[str, list[str]]:
    """Replace each <bbox>...</bbox> by a placeholder with no sentence punctuation."""
    boxes: list[str] = []

    def keep(m: re.Match[str]) -> str:
        boxes.append(m.group(0))
        return f"\x00{len(boxes) - 1}\x00"

    return _BBOX.sub(keep, text), boxes


def _restore_boxes(text: str, boxes: list[str]) -> str:
    return re.sub(r"\x00(\d+)\x00", lambda m: boxes[int(m.group(1))], text)


def split_sentences(reasoning: str) -> list[str]:
    """Split reasoning text into sentences (stripped, in order; bare punctuation dropped)."""
    text, boxes = _protect_boxes(reasoning)
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _END.finditer(line):
            candidate = line[start : m.end()]
            if _ABBREV.search(candidate) or _ENUM.match(candidate):
                continue  # not a sentence end: keep growing the current sentence
            out.append(candidate)
            start = m.end()
        out.append(line[start:])
    sentences = [_restore_boxes(s, boxes).strip() for s in out]
    return [s for s in sentences if re.search(r"[A-Za-z0-9]", s)]  # drop bare punctuation


def has_visual_content(sentence: str, extra_visual_words: Iterable[str] = ()) -> bool:
    """True if the sentence cites a box or uses a visual word (colour, shape, relation...)."""
    if _BBOX.search(sentence) or "<bbox>" in sentence:
        return True
    words = set(_WORD.findall(sentence.lower()))
    extra = {w.lower() for w in extra_visual_words}
    return bool(words & VISUAL_WORDS) or bool(words & extra)


def starts_with_filler(sentence: str) -> bool:
    """True if the sentence opens with a filler phrase ("Let me", "So", "Wait", ...)."""
    s = sentence.strip().lower().lstrip("*-•\"' ")
    for prefix in FILLER_PREFIXES:
        if s.startswith(prefix) and (len(s) == len(prefix) or not s[len(prefix)].isalpha()):
            return True
    return False


def is_trivial(sentence: str, extra_visual_words: Iterable[str] = ()) -> bool:
    """Trivial = filler prefix and no visual content (see the module docstring). Empty = trivial."""
    if not re.search(r"[A-Za-z]", sentence):
        return True
    return starts_with_filler(sentence) and not has_visual_content(sentence, extra_visual_words)


def checkable_sentences(reasoning: str, extra_visual_words: Iterable[str] = ()) -> list[str]:
    """The sentences a semantic judge labels: split, then trivial ones dropped."""
    return [s for s in split_sentences(reasoning) if not is_trivial(s, extra_visual_words)]

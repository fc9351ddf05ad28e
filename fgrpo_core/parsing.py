"""Parse a completion ``<think>REASONING</think><answer>ANSWER</answer>`` (docs/method.md#output-format).

The same parser serves the format reward, answer extraction, box extraction, training and
evaluation (docs/method.md#code-principles). It never raises: any string maps to a :class:`ParsedCompletion`.

Rules (the paper only says "parses as think/answer"; the details are **[ours]**):

- Tags are matched case-insensitively and may carry inner whitespace (``< Think >``).
- **Well formed** means all of:
  1. exactly one ``<think>…</think>`` followed by exactly one ``<answer>…</answer>``, with
     nothing but whitespace before, between and after them;
  2. both parts non-empty after stripping whitespace;
  3. every ``<bbox>…</bbox>`` sits inside the think part, tags paired, and its content is
     ``[x1, y1, x2, y2]`` with four finite numbers (``(…)`` brackets are not accepted);
  4. no vision special token (``<|image_pad|>`` …) anywhere: a policy that *generates* them
     breaks the next forward pass ("image features and image tokens do not match",
     docs/method.md#image-tokens-and-over-long-prompts), so such a completion is malformed and flagged in ``has_vision_tokens``.
- Extraction is lenient even when the completion is not well formed: ``think`` is the content of
  the first complete think pair, ``answer`` of the *last* complete answer pair (a model that
  restates its answer means the final one), both stripped; ``None`` when absent.
- ``boxes`` are the well-parsed boxes inside ``think`` in order of appearance (a malformed bbox
  is skipped and counted in ``bad_boxes``). Degenerate boxes (``x2 < x1``, zero area) *do* parse:
  they are a grounding failure, scored 0 by the spatial reward, not a format failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]

VISION_TOKENS: tuple[str, ...] = (
    "<|image_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|video_pad|>",
    "<|vision_pad|>",
)

# One linear scan finds every tag; structure is then checked on the short tag list, so no
# regex ever backtracks over the whole text (a hostile string cannot make parsing quadratic).
_TAG = re.compile(r"<\s*(/?)\s*(think|answer|bbox)\s*>", re.IGNORECASE)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_BODY = re.compile(rf"\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]\s*")


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says, and whether it said it in the required form."""

    think: str | None  # reasoning text (stripped), None when there is no complete think pair
    answer: str | None  # final answer text (stripped), None when there is no complete answer pair
    boxes: list[Box] = field(default_factory=list)  # (x1, y1, x2, y2) cited inside think
    well_formed: bool = False
    bad_boxes: int = 0  # <bbox> pairs inside think whose content did not parse
    has_vision_tokens: bool = False  # the completion contains a vision special token


@dataclass(frozen=True)
class _Tag:
    name: str  # "think" | "answer" | "bbox"
    closing: bool
    start: int  # offset of "<"
    end: int  # offset after ">"


def _pairs(tags: list[_Tag], name: str) -> list[tuple[_Tag, _Tag]]:
    """Complete open/close pairs of one tag name, in order (a stray tag breaks no later pair)."""
    out: list[tuple[_Tag, _Tag]] = []
    opened: _Tag | None = None
    for t in tags:
        if t.name != name:
            continue
        if not t.closing:
            opened = t  # a second opening before a close restarts the pair
        elif opened is not None:
            out.append((opened, t))
            opened = None
    return out


def parse_box(body: str) -> Box | None:
    """The box a ``<bbox>`` body states (``[x1, y1, x2, y2]``, four finite numbers), else None.
    The one box reader: the format reward, R_G and the exact judge all read boxes through it."""
    m = _BOX_BODY.fullmatch(body)
    if m is None:
        return None
    try:
        box = tuple(float(g) for g in m.groups())
    except (ValueError, OverflowError):  # pragma: no cover - the regex admits only numbers
        return None
    if not all(math.isfinite(v) for v in box):  # e.g. 1e999 parses to inf
        return None
    return box  # type: ignore[return-value]


def parse_completion(text: str) -> ParsedCompletion:
    """Parse one completion; never raises (non-strings give an empty, malformed result)."""
    if not isinstance(text, str):
        return ParsedCompletion(think=None, answer=None)
    tags = [
        _Tag(m.group(2).lower(), m.group(1) == "/", m.start(), m.end()) for m in _TAG.finditer(text)
    ]
    has_vision = any(tok in text for tok in VISION_TOKENS)

    think_pairs = _pairs(tags, "think")
    answer_pairs = _pairs(tags, "answer")
    think_span = (think_pairs[0][0].end, think_pairs[0][1].start) if think_pairs else None
    answer_span = (answer_pairs[-1][0].end, answer_pairs[-1][1].start) if answer_pairs else None
    think = text[think_span[0] : think_span[1]].strip() if think_span else None
    answer = text[answer_span[0] : answer_span[1]].strip() if answer_span else None

    # Boxes: bbox pairs lying wholly inside the think span.
    boxes: list[Box] = []
    bad_boxes = 0
    bbox_tags = [t for t in tags if t.name == "bbox"]
    bbox_pairs = _pairs(tags, "bbox")
    for open_t, close_t in bbox_pairs:
        if think_span is None or not (think_span[0] <= open_t.start and close_t.end <= think_span[1]):
            continue
        box = parse_box(text[open_t.end : close_t.start])
        if box is None:
            bad_boxes += 1
        else:
            boxes.append(box)

    # Well formed: the skeleton is exactly think-open, think-close, answer-open, answer-close.
    skeleton = [(t.name, t.closing) for t in tags if t.name != "bbox"]
    well_formed = (
        skeleton == [("think", False), ("think", True), ("answer", False), ("answer", True)]
        and not has_vision
        and bool(think)
        and bool(answer)
        and bad_boxes == 0
    )
    if well_formed:
        t_open, t_close, a_open, a_close = (t for t in tags if t.name != "bbox")
        well_formed = (
            not text[: t_open.start].strip()
            and not text[t_close.end : a_open.start].strip()
            and not text[a_close.end :].strip()
            # every bbox tag is paired and inside think
            and len(bbox_tags) == 2 * len(bbox_pairs)
            and all(t_open.end <= t.start and t.end <= t_close.start for t in bbox_tags)
        )
    return ParsedCompletion(
        think=think,
        answer=answer,
        boxes=boxes,
        well_formed=well_formed,
        bad_boxes=bad_boxes,
        has_vision_tokens=has_vision,
    )

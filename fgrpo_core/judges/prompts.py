"""Prompts of the model judges and the strict parser of their verdicts (docs/method.md#rewards).

Two judges, two questions:

- consistency (R_C), text only: does the final answer follow from the reasoning's *own* logic?
  Not: is the reasoning true. A trace of false statements that lead to its answer is consistent.
- semantic grounding (R_S), with the image: each sentence of the reasoning is CORRECT (true of
  the image), INCORRECT (false of it, or about something not there) or SKIP (no checkable claim
  about the image), judged in the context of the question and the sentences before it.
  **[ours]** One call per rollout lists every sentence, numbered; the judge answers one line per
  sentence. The paper's per-sentence calls cost ~5x the calls for the same context.

The parser is strict: a reply not exactly in the required form is ``unparseable`` (NaN score,
counted), never a default verdict (docs/method.md#judges-at-scale: an empty judge answer must not get a default score).
Whitespace around the whole reply and at line ends is the only slack.

Bump :data:`PROMPT_VERSION` whenever a prompt or the parser changes: it is part of every cache
key, so old verdicts are never served for a new prompt.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any, Sequence

from PIL import Image

from fgrpo_core.judges.base import (
    ConsistencyRequest,
    ConsistencyVerdict,
    SemanticRequest,
    SemanticVerdict,
    SentenceLabel,
    VerdictStatus,
)
from fgrpo_core.prompts import LETTERS, format_question

PROMPT_VERSION = "fgrpo-judges-v1"

# An OpenAI-format chat: [{"role": "system", "content": str}, {"role": "user", "content": [...]}]
ChatMessages = list[dict[str, Any]]

CONSISTENCY_SYSTEM = """\
You check the internal logic of a model's reasoning. You get a multiple-choice question, the \
model's reasoning and the final answer the model gave.

Decide one thing: does the final answer follow from the reasoning's own logic? The answer is \
CONSISTENT when the reasoning, taken at its word, leads to that option. It is INCONSISTENT when \
the reasoning concludes a different option, contradicts the answer, or does not lead to it.

Do not judge whether the reasoning or the answer is true. You do not see the image. A reasoning \
built on false statements is still CONSISTENT if its answer is the one those statements lead to.

Reply with exactly one line and nothing else, either
VERDICT: CONSISTENT
or
VERDICT: INCONSISTENT"""

SEMANTIC_SYSTEM = """\
You check whether the sentences of a model's reasoning are true of an image. You get the image, \
a question about it and the reasoning's sentences, numbered in order. Judge each sentence in \
the context of the question and the sentences before it (a sentence may refer to objects named \
earlier).

Label each sentence with one of:
CORRECT - what it states about the image is true (objects, colours, shapes, sizes, counts, \
positions, depth, spatial relations, cited boxes);
INCORRECT - it states something false about the image, or names something the image does not show;
SKIP - it makes no claim about the image that can be checked (restating the task, planning).

Boxes are written <bbox>[x1, y1, x2, y2]</bbox> in pixels of the image, origin top-left. Do not \
judge whether a sentence helps to answer the question, only whether it is true of the image.

Reply with exactly one line per sentence, in order, of the form <number>: <LABEL>, and nothing \
else. For three sentences, for example:
1: CORRECT
2: SKIP
3: INCORRECT"""


def image_to_data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...`` (lossless, so the judge sees the pixels the policy saw)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _answer_text(answer: str, choices: Sequence[str]) -> str:
    """``"B"`` -> ``"B (right)"`` when the letter names an option, so the judge sees both."""
    letter = answer.strip().upper()
    if len(letter) == 1 and letter in LETTERS[: len(choices)]:
        return f"{letter} ({choices[LETTERS.index(letter)]})"
    return answer.strip()


def consistency_messages(req: ConsistencyRequest) -> ChatMessages:
    """Text-only chat for one consistency verdict."""
    user = (
        f"Question:\n{format_question(req.question, req.choices)}\n\n"
        f"Reasoning:\n<<<\n{req.reasoning.strip()}\n>>>\n\n"
        f"Final answer: {_answer_text(req.answer, req.choices)}"
    )
    return [
        {"role": "system", "content": CONSISTENCY_SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": user}]},
    ]


def semantic_messages(req: SemanticRequest) -> ChatMessages:
    """Chat with the image for one semantic-grounding verdict (all sentences of one rollout)."""
    if req.image is None:
        raise ValueError("SemanticRequest has no image: a vision judge needs the image")
    if not req.sentences:
        raise ValueError("SemanticRequest has no sentences: there is nothing to judge")
    # A sentence spanning lines would break the numbered list the judge answers against.
    numbered = "\n".join(f"{i}. {' '.join(s.split())}" for i, s in enumerate(req.sentences, 1))
    width, height = req.image.size
    user = (
        f"Image size: {width}x{height} pixels.\n\n"
        f"Question:\n{format_question(req.question, req.choices)}\n\n"
        f"Sentences ({len(req.sentences)}):\n{numbered}"
    )
    return [
        {"role": "system", "content": SEMANTIC_SYSTEM},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_to_data_url(req.image)}},
                {"type": "text", "text": user},
            ],
        },
    ]


_CONSISTENCY_RE = re.compile(r"VERDICT: (CONSISTENT|INCONSISTENT)")
_SENTENCE_RE = re.compile(r"([1-9][0-9]*): (CORRECT|INCORRECT|SKIP)")


def parse_consistency(raw: str) -> ConsistencyVerdict:
    """Exactly ``VERDICT: CONSISTENT`` or ``VERDICT: INCONSISTENT``; anything else is unparseable."""
    m = _CONSISTENCY_RE.fullmatch(raw.strip())
    if m is None:
        return ConsistencyVerdict(VerdictStatus.unparseable, None, raw)
    return ConsistencyVerdict(VerdictStatus.ok, m.group(1) == "CONSISTENT", raw)


def parse_semantic(raw: str, n_sentences: int) -> SemanticVerdict:
    """Exactly ``n_sentences`` lines ``i: LABEL``, numbered 1..n in order; else unparseable."""
    lines = [line.rstrip() for line in raw.strip().split("\n")] if raw.strip() else []
    if len(lines) != n_sentences:
        return SemanticVerdict(VerdictStatus.unparseable, [], raw)
    labels: list[SentenceLabel] = []
    for i, line in enumerate(lines, 1):
        m = _SENTENCE_RE.fullmatch(line)
        if m is None or int(m.group(1)) != i:
            return SemanticVerdict(VerdictStatus.unparseable, [], raw)
        labels.append(SentenceLabel(m.group(2)))
    return SemanticVerdict(VerdictStatus.ok, labels, raw)

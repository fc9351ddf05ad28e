"""Format and accuracy rewards (docs/method.md#rewards): R_fmt, R_acc and R_task = 0.5 R_acc + 0.5 R_fmt.

Answer matching **[ours]** (the paper says "exact match after stripping punctuation/case"):
both sides are lower-cased, every punctuation character becomes a space and runs of whitespace
collapse to one (``"(B)."`` -> ``"b"``, ``"Left-of"`` -> ``"left of"``). With choices
``["left", "right"]``, the ground truth may be given as a letter (``"B"``) or as the option's
text (``"right"``); the prediction is correct when it equals, after normalisation, the option's
letter, its text, or both in the prompt's own form (``"B. right"`` -> ``"b right"``).
Without choices it is a plain normalised string match.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from fgrpo_core.parsing import ParsedCompletion
from fgrpo_core.prompts import LETTERS

TASK_WEIGHT_ACC = 0.5  # docs/method.md#rewards: R_task = 0.5 R_acc + 0.5 R_fmt
TASK_WEIGHT_FMT = 0.5

_SPACES = re.compile(r"\s+")


def normalise_answer(text: str) -> str:
    """Lower-case, punctuation (any Unicode P* or S* character) to space, collapse whitespace."""
    chars = [" " if unicodedata.category(c)[0] in "PS" else c for c in text.lower()]
    return _SPACES.sub(" ", "".join(chars)).strip()


def _gold_index(answer: str, choices: Sequence[str]) -> int | None:
    """Which option the ground truth names: its text first, else its letter; None if neither."""
    gold = normalise_answer(answer)
    texts = [normalise_answer(c) for c in choices]
    if gold in texts:
        return texts.index(gold)
    letters = [LETTERS[i].lower() for i in range(min(len(choices), len(LETTERS)))]
    if gold in letters:
        return letters.index(gold)
    return None


def _option_forms(i: int, choice: str) -> set[str]:
    """What names option ``i`` after normalisation: its text, its letter, or both ("b right")."""
    text = normalise_answer(choice)
    if i >= len(LETTERS):
        return {text}
    letter = LETTERS[i].lower()
    return {text, letter, f"{letter} {text}"}


def named_option(answer: str, choices: Sequence[str]) -> int | None:
    """Index of the option ``answer`` names (letter, text, or both, as R_acc reads them); None when
    it names none or more than one. The exact consistency judge reads answers through it too."""
    a = normalise_answer(answer)
    hits = {i for i, c in enumerate(choices) if a and a in _option_forms(i, c)}
    return hits.pop() if len(hits) == 1 else None


def format_reward(parsed: ParsedCompletion) -> float:
    """R_fmt in {0, 1}: 1 iff the completion is well formed (see fgrpo_core.parsing)."""
    return 1.0 if parsed.well_formed else 0.0


def accuracy_reward(parsed: ParsedCompletion, answer: str, choices: Sequence[str] = ()) -> float:
    """R_acc in {0, 1}: the extracted answer names the gold option (letter, text, or both)."""
    if parsed.answer is None:
        return 0.0
    pred = normalise_answer(parsed.answer)
    if not pred:
        return 0.0
    idx = _gold_index(answer, choices) if choices else None
    if idx is None:  # free-form answer, or a gold answer that names no option
        return 1.0 if pred == normalise_answer(answer) else 0.0
    return 1.0 if pred in _option_forms(idx, choices[idx]) else 0.0


def combine_task(acc: float, fmt: float) -> float:
    """R_task = 0.5 R_acc + 0.5 R_fmt (docs/method.md#rewards)."""
    return TASK_WEIGHT_ACC * acc + TASK_WEIGHT_FMT * fmt


def task_reward(parsed: ParsedCompletion, answer: str, choices: Sequence[str] = ()) -> float:
    """R_task in {0, 0.5, 1} for one parsed completion."""
    return combine_task(accuracy_reward(parsed, answer, choices), format_reward(parsed))

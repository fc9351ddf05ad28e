"""Circular evaluation (SAT's protocol; docs/method.md#evaluation).

A k-option question is asked k times, its options rotated by 0..k-1 places; the sample counts
as correct only if every rotation is answered right. A model that always answers "A", or that
guesses, cannot pass: with k options a uniform guesser passes with probability (1/k)^k.

Rotation by s moves option i to position (i - s) mod k:

    choices ["a", "b", "c"], answer "B" (= "b")
    s = 0: ["a", "b", "c"], answer "B"
    s = 1: ["b", "c", "a"], answer "A"
    s = 2: ["c", "a", "b"], answer "C"

Free-form questions (no options) have one order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fgrpo_core.prompts import LETTERS


@dataclass(frozen=True)
class OptionOrder:
    shift: int  # rotation applied (0 = the staged order)
    choices: tuple[str, ...]
    answer: str  # the correct letter in this order (or the free-form answer)


def rotate(choices: Sequence[str], answer: str, shift: int) -> OptionOrder:
    """The options rotated left by ``shift`` and the answer letter that follows them."""
    k = len(choices)
    if k == 0:
        if shift:
            raise ValueError("a free-form question cannot be rotated")
        return OptionOrder(0, (), answer)
    if answer not in LETTERS[:k]:
        raise ValueError(f"answer {answer!r} is not one of the option letters {LETTERS[:k]}")
    s = shift % k
    gold = LETTERS.index(answer)
    return OptionOrder(s, tuple(choices[s:]) + tuple(choices[:s]), LETTERS[(gold - s) % k])


def option_orders(choices: Sequence[str], answer: str, circular: bool) -> list[OptionOrder]:
    """Orders to ask: every rotation when circular (and there are options), else the staged one."""
    if not circular or not choices:
        return [rotate(choices, answer, 0)]
    return [rotate(choices, answer, s) for s in range(len(choices))]

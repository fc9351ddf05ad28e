"""SFT traces: the FGRPO format, a small regular vocabulary, and fault shares that match params."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from fgrpo_core.config import SyntheticDataParams
from fgrpo_core.data.schema import samples_hash, validate_sample
from fgrpo_core.data.synthetic import generate_split
from fgrpo_core.data.traces import FaultShares

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280
N = 700
SHARES = {"inconsistent": 0.2, "hallucination": 0.3, "bad_box": 0.1}
PARAMS = SyntheticDataParams(
    max_objects=6,
    inconsistent_share=SHARES["inconsistent"],
    hallucination_share=SHARES["hallucination"],
    bad_box_share=SHARES["bad_box"],
)
TRACE = re.compile(r"^<think>(?P<reasoning>.+)</think><answer>(?P<answer>[A-J])</answer>$", re.S)


@pytest.fixture(scope="module")
def sft():
    return generate_split(PARAMS, "sft", N, MIN_PX, MAX_PX, with_trace=True)


def test_traces_follow_the_fgrpo_format(sft):
    for k, s in enumerate(sft):
        validate_sample(s, "<sft>", k)
        m = TRACE.match(s.trace)
        assert m, s.trace
        assert m["answer"] == s.answer  # the final answer is always right, faults or not
        boxes = re.findall(r"<bbox>(.*?)</bbox>", m["reasoning"])
        assert boxes, "every trace cites at least one box"
        for b in boxes:
            assert re.fullmatch(r"\[\d+, \d+, \d+, \d+\]", b), b  # integer pixel coordinates
        last = m["reasoning"].rstrip().split(". ")[-1]
        assert re.search(r"\b(answer|option)\b", last), last  # ends by naming the option


def test_fault_shares_match_params_within_sampling_error(sft):
    counts = Counter(f for s in sft for f in s.trace_faults)
    for fault, p in SHARES.items():
        share = counts[fault] / N
        sigma = math.sqrt(p * (1 - p) / N)
        assert abs(share - p) < 4 * sigma, (fault, share, p)  # 4 sigma: a flake every ~16k runs


def test_faults_are_drawn_independently(sft):
    both = sum({"inconsistent", "hallucination"} <= set(s.trace_faults) for s in sft) / N
    expected = SHARES["inconsistent"] * SHARES["hallucination"]  # 0.06
    sigma = math.sqrt(expected * (1 - expected) / N)
    assert abs(both - expected) < 4 * sigma


def test_zero_and_full_shares():
    clean = generate_split(SyntheticDataParams(inconsistent_share=0, hallucination_share=0, bad_box_share=0),
                           "sft", 50, MIN_PX, MAX_PX, with_trace=True)
    assert all(s.trace_faults == [] for s in clean)
    full = generate_split(SyntheticDataParams(inconsistent_share=1, hallucination_share=1, bad_box_share=1),
                          "sft", 50, MIN_PX, MAX_PX, with_trace=True)
    assert all({"inconsistent", "hallucination"} <= set(s.trace_faults) for s in full)
    assert sum("bad_box" in s.trace_faults for s in full) >= 48


def test_shares_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match="bad_box_share"):
        FaultShares(0.1, 0.1, 1.5)


def test_traces_are_deterministic_and_phrasings_vary(sft):
    again = generate_split(PARAMS, "sft", 60, MIN_PX, MAX_PX, with_trace=True)
    assert samples_hash(again) == samples_hash(sft[:60])
    openings = Counter(re.sub(r"<bbox>.*", "", TRACE.match(s.trace)["reasoning"]).split(" the ")[0] for s in sft)
    assert len(openings) >= 3  # several templates for the same sentence kind


def test_vocabulary_stays_small(sft):
    # A tiny model must learn the trace language in minutes: a few dozen words, not thousands.
    words = Counter()
    for s in sft:
        text = re.sub(r"<bbox>.*?</bbox>|<[^>]+>", " ", s.trace)
        words.update(re.findall(r"[a-z]+", text.lower()))
    assert len(words) < 110, sorted(words)

"""parse_completion: the format docs/method.md#output-format fixes, tolerant input, never raises."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgrpo_core.parsing import VISION_TOKENS, parse_completion

GOOD = (
    "<think>The red cube <bbox>[10, 20, 50, 60]</bbox> is left of the ball "
    "<bbox>[70.5, 20, 90, 40]</bbox>.</think>\n<answer>A</answer>"
)


def test_well_formed_with_boxes():
    p = parse_completion(GOOD)
    assert p.well_formed
    assert p.answer == "A"
    assert p.think.startswith("The red cube")
    assert p.boxes == [(10.0, 20.0, 50.0, 60.0), (70.5, 20.0, 90.0, 40.0)]
    assert p.bad_boxes == 0 and not p.has_vision_tokens


def test_tolerant_of_whitespace_and_case():
    text = "  \n< THINK >  why \n<BBox>[ 1,2 , 3.0,4e1 ]</ bbox>  </Think>  \n\n <Answer> b </ANSWER>\n "
    p = parse_completion(text)
    assert p.well_formed
    assert p.answer == "b"
    assert p.boxes == [(1.0, 2.0, 3.0, 40.0)]


def test_box_numbers_signs_and_exponents():
    p = parse_completion("<think><bbox>[-1, +2.5, .5e2, 7.]</bbox> x</think><answer>A</answer>")
    assert p.well_formed and p.boxes == [(-1.0, 2.5, 50.0, 7.0)]


def test_degenerate_box_is_a_grounding_failure_not_a_format_failure():
    # x2 < x1 and zero area parse (spatial reward scores them 0), the format is fine.
    p = parse_completion("<think>a <bbox>[50, 50, 10, 10]</bbox> <bbox>[1,1,1,1]</bbox></think><answer>A</answer>")
    assert p.well_formed and p.boxes == [(50.0, 50.0, 10.0, 10.0), (1.0, 1.0, 1.0, 1.0)]


MALFORMED = {
    "no answer": "<think>x</think>",
    "no think": "<answer>A</answer>",
    "empty answer": "<think>x</think><answer>  </answer>",
    "empty think": "<think> </think><answer>A</answer>",
    "text before think": "Sure! <think>x</think><answer>A</answer>",
    "text between": "<think>x</think> so <answer>A</answer>",
    "text after answer": "<think>x</think><answer>A</answer> done",
    "answer first": "<answer>A</answer><think>x</think>",
    "two answers": "<think>x</think><answer>A</answer><answer>B</answer>",
    "two thinks": "<think>x</think><think>y</think><answer>A</answer>",
    "unclosed think": "<think>x <answer>A</answer>",
    "bbox outside think": "<think>x</think><answer>A <bbox>[1,2,3,4]</bbox></answer>",
    "unclosed bbox": "<think>x <bbox>[1,2,3,4]</think><answer>A</answer>",
    "stray bbox close": "<think>x </bbox> y</think><answer>A</answer>",
    "three numbers": "<think>x <bbox>[1,2,3]</bbox></think><answer>A</answer>",
    "nan in box": "<think>x <bbox>[nan,2,3,4]</bbox></think><answer>A</answer>",
    "overflow to inf": "<think>x <bbox>[1e999,2,3,4]</bbox></think><answer>A</answer>",
    "round brackets": "<think>x <bbox>(1,2,3,4)</bbox></think><answer>A</answer>",
    "words in box": "<think>x <bbox>the cup</bbox></think><answer>A</answer>",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name):
    assert not parse_completion(MALFORMED[name]).well_formed


@pytest.mark.parametrize("token", VISION_TOKENS)
def test_vision_tokens_make_a_completion_malformed(token):
    # docs/method.md#image-tokens-and-over-long-prompts: a policy generating vision pad tokens breaks the next forward pass.
    p = parse_completion(f"<think>look {token} here</think><answer>A</answer>")
    assert not p.well_formed and p.has_vision_tokens
    assert p.answer == "A"  # extraction still works, so accuracy can still be measured


def test_lenient_extraction_of_malformed_completions():
    # The last complete answer counts; boxes come only from the think part; bad boxes counted.
    p = parse_completion(
        "junk <think>a <bbox>[1,2,3,4]</bbox> <bbox>[1,2]</bbox></think>"
        "<answer>B</answer> no wait <answer> C </answer> <bbox>[5,6,7,8]</bbox>"
    )
    assert not p.well_formed
    assert p.answer == "C"
    assert p.boxes == [(1.0, 2.0, 3.0, 4.0)]
    assert p.bad_boxes == 1


def test_truncated_completion_has_no_think_and_no_boxes():
    p = parse_completion("<think>the cup <bbox>[1,2,3,4]</bbox> is")
    assert p.think is None and p.answer is None and p.boxes == [] and not p.well_formed


@pytest.mark.parametrize("bad", [None, 3, b"<think>x</think>", ["<think>"]])
def test_non_strings_do_not_raise(bad):
    p = parse_completion(bad)
    assert not p.well_formed and p.boxes == [] and p.think is None


def test_hostile_input_is_parsed_in_linear_time():
    # 20k unclosed openings: a backtracking regex over the text would be quadratic here.
    text = "<think><bbox>[1," * 20000
    t0 = time.perf_counter()
    p = parse_completion(text)
    assert time.perf_counter() - t0 < 1.0
    assert not p.well_formed


_FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "<bbox>", "</bbox>", "< Think >", "</ANSWER>",
     "[1, 2, 3, 4]", "[1e999, 2, 3, 4]", "[-1,", "nan", " ", "\n", "A", "the cup", ",", "]", "[",
     "<|image_pad|>", "<", ">", "/", "0.5", "1e5"]
)


def _check_invariants(p):
    assert isinstance(p.boxes, list)
    assert all(len(b) == 4 and all(math.isfinite(v) for v in b) for b in p.boxes)
    if p.boxes:
        assert p.think is not None
    if p.well_formed:
        assert p.think and p.answer and p.bad_boxes == 0 and not p.has_vision_tokens


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_never_raises(text):
    _check_invariants(parse_completion(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=30).map("".join))
def test_tag_soup_never_raises(text):
    _check_invariants(parse_completion(text))

"""The judge prompts and the strict verdict parser: only the exact form is a verdict."""

from __future__ import annotations

import base64
import io
import math

import pytest
from PIL import Image

from fgrpo_core.judges.base import ConsistencyRequest, SemanticRequest, SentenceLabel, VerdictStatus
from fgrpo_core.judges.prompts import (
    PROMPT_VERSION,
    consistency_messages,
    image_to_data_url,
    parse_consistency,
    parse_semantic,
    semantic_messages,
)

C, I, S = SentenceLabel.correct, SentenceLabel.incorrect, SentenceLabel.skip


def _image(seed: int = 0) -> Image.Image:
    img = Image.new("RGB", (56, 28), (255, 255, 255))
    img.putpixel((seed % 56, 3), (200, 10, 10))
    return img


# ------------------------------------------------------------------------------ consistency
@pytest.mark.parametrize(
    "raw, consistent",
    [
        ("VERDICT: CONSISTENT", True),
        ("VERDICT: INCONSISTENT", False),
        ("  VERDICT: INCONSISTENT\n", False),  # whitespace around the whole reply is the only slack
    ],
)
def test_consistency_well_formed(raw, consistent):
    v = parse_consistency(raw)
    assert v.status is VerdictStatus.ok
    assert v.consistent is consistent
    assert v.score == (1.0 if consistent else 0.0)
    assert v.raw == raw


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   \n",
        "CONSISTENT",
        "verdict: consistent",
        "VERDICT: consistent",
        "VERDICT:CONSISTENT",
        "VERDICT: CONSISTENT.",
        "VERDICT: YES",
        "The answer follows. VERDICT: CONSISTENT",
        "VERDICT: CONSISTENT\nVERDICT: INCONSISTENT",
        "VERDICT: CONSISTENT\nbecause the reasoning says A",
        "<think>hm</think>VERDICT: CONSISTENT",
        "VERDICT: CONSISTENT INCONSISTENT",
        "ĠVERDICT ĠCONSISTENT ĠĠ!!",  # the kind of thing a random tiny model writes
    ],
)
def test_consistency_anything_else_is_unparseable(raw):
    v = parse_consistency(raw)
    assert v.status is VerdictStatus.unparseable
    assert v.consistent is None
    assert math.isnan(v.score)  # never a default 0 or 1
    assert v.raw == raw  # the raw text is kept for inspection


# ------------------------------------------------------------------------------ semantic
def test_semantic_well_formed_maps_each_line():
    v = parse_semantic("1: CORRECT\n2: SKIP\n3: INCORRECT\n4: CORRECT\n", 4)
    assert v.status is VerdictStatus.ok
    assert v.labels == [C, S, I, C]
    # R_S = CORRECT / non-SKIP = 2 / 3 (sentences 1 and 4 of 1, 3 and 4)
    assert v.score == pytest.approx(2 / 3)


def test_semantic_tolerates_crlf_and_trailing_spaces_only():
    assert parse_semantic("1: CORRECT  \r\n2: INCORRECT\r\n", 2).labels == [C, I]


def test_semantic_all_skip_is_ok_but_not_a_score():
    v = parse_semantic("1: SKIP\n2: SKIP", 2)
    assert v.status is VerdictStatus.ok and v.labels == [S, S]
    assert math.isnan(v.score)  # no checkable sentence: not applicable, not 0 or 1


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1: CORRECT",  # too few lines
        "1: CORRECT\n2: CORRECT\n3: CORRECT",  # too many
        "2: CORRECT\n1: CORRECT",  # out of order
        "1: CORRECT\n1: CORRECT",  # repeated number
        "0: CORRECT\n1: CORRECT",  # numbering starts at 1
        "1: correct\n2: SKIP",  # labels are upper case
        "1. CORRECT\n2. SKIP",  # wrong separator
        "1: CORRECT\n\n2: SKIP",  # blank line in between
        "1: TRUE\n2: SKIP",  # not a label
        "1: CORRECT because red\n2: SKIP",  # commentary
        "Here are the labels:\n1: CORRECT",
        "01: CORRECT\n2: SKIP",
    ],
)
def test_semantic_anything_else_is_unparseable(raw):
    v = parse_semantic(raw, 2)
    assert v.status is VerdictStatus.unparseable
    assert v.labels == []
    assert math.isnan(v.score)


# ------------------------------------------------------------------------------ messages
def test_consistency_prompt_is_text_only_and_carries_the_inputs():
    req = ConsistencyRequest("Which side is the cube on?", ("left", "right"), "The cube is on the left. So A.", "B")
    msgs = consistency_messages(req)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "not" in msgs[0]["content"] and "true" in msgs[0]["content"]  # "not: is it true"
    parts = msgs[1]["content"]
    assert [p["type"] for p in parts] == ["text"]  # no image for the consistency judge
    text = parts[0]["text"]
    assert "Which side is the cube on?\nA. left\nB. right" in text
    assert "The cube is on the left. So A." in text
    assert text.endswith("Final answer: B (right)")  # the letter is resolved to its option


def test_consistency_prompt_free_form_answer_kept_verbatim():
    req = ConsistencyRequest("How many cubes?", (), "I count three.", "3")
    assert consistency_messages(req)[1]["content"][0]["text"].endswith("Final answer: 3")


def test_semantic_prompt_numbers_sentences_and_embeds_the_png():
    img = _image(5)
    req = SemanticRequest("Q?", ("yes", "no"), ("The red dot\nis at the top.", "It is small."), img)
    msgs = semantic_messages(req)
    image_part, text_part = msgs[1]["content"]
    text = text_part["text"]
    assert "1. The red dot is at the top.\n2. It is small." in text  # newline folded: one line each
    assert "Image size: 56x28 pixels." in text
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG"
    assert decoded.tobytes() == img.tobytes()  # lossless: the judge sees the policy's pixels


def test_semantic_prompt_rejects_missing_image_or_sentences():
    with pytest.raises(ValueError, match="no image"):
        semantic_messages(SemanticRequest("Q?", (), ("A cube.",), None))
    with pytest.raises(ValueError, match="no sentences"):
        semantic_messages(SemanticRequest("Q?", (), (), _image()))


def test_data_url_round_trip_differs_per_image():
    assert image_to_data_url(_image(1)) != image_to_data_url(_image(2))


def test_prompt_version_is_set():
    assert isinstance(PROMPT_VERSION, str) and PROMPT_VERSION

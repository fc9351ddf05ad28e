"""Sentence splitting and the trivial filter shared by all judges (judges/sentences.py)."""

from fgrpo_core.judges.sentences import (
    checkable_sentences,
    has_visual_content,
    is_trivial,
    split_sentences,
    starts_with_filler,
)


def test_split_keeps_boxes_whole_and_orders_sentences():
    text = (
        "The red circle is at <bbox>[10, 20, 30, 40]</bbox>. The blue square "
        "<bbox>[50.5, 60, 70, 80.25]</bbox> is right of it! Is it? So the answer is B."
    )
    assert split_sentences(text) == [
        "The red circle is at <bbox>[10, 20, 30, 40]</bbox>.",
        "The blue square <bbox>[50.5, 60, 70, 80.25]</bbox> is right of it!",
        "Is it?",
        "So the answer is B.",
    ]


def test_split_decimals_abbreviations_lists_and_newlines():
    text = "1. The cube is 3.5 m away, e.g. far.\n2. It is blue\nSo B"
    assert split_sentences(text) == ["1. The cube is 3.5 m away, e.g. far.", "2. It is blue", "So B"]


def test_split_empty_and_whitespace():
    assert split_sentences("") == []
    assert split_sentences("  \n\n . ") == []  # bare punctuation is no sentence


def test_box_inside_sentence_with_period_in_brackets_is_not_split():
    # A malformed box with '. ' inside must not cut the citation in two.
    text = "The cube is at <bbox>[1. 2, 3, 4]</bbox> here. Next."
    assert split_sentences(text) == ["The cube is at <bbox>[1. 2, 3, 4]</bbox> here.", "Next."]


def test_filler_prefix_needs_a_word_boundary():
    assert starts_with_filler("So the answer is B.")
    assert starts_with_filler("Let me look again.")
    assert starts_with_filler("Wait, that is wrong.")
    assert starts_with_filler("Hmm.")
    assert not starts_with_filler("Some circles are red.")  # "so" + "me": not the filler "so"
    assert not starts_with_filler("Nowhere is it.")
    assert not starts_with_filler("The red circle is left of the square.")


def test_trivial_is_filler_and_no_visual_word():
    assert is_trivial("So the answer is B.")
    assert is_trivial("Let me think about this question step by step.")
    assert is_trivial("Therefore, option C.")
    assert is_trivial("...")
    # filler prefix but visual content: kept
    assert not is_trivial("Therefore the red circle is closer to the camera.")
    assert not is_trivial("So it is at <bbox>[1, 2, 3, 4]</bbox>.")
    # no filler prefix: never trivial, even without visual words
    assert not is_trivial("The question asks about two things.")


def test_extra_visual_words_extend_the_vocabulary():
    s = "So the chair wins."
    assert is_trivial(s)
    assert not is_trivial(s, extra_visual_words=["chair"])
    assert has_visual_content("the CHAIR", ["chair"])


def test_checkable_sentences_drops_only_trivial_ones():
    text = "Let me see. The red circle is at <bbox>[1, 2, 3, 4]</bbox>. So the answer is A."
    assert checkable_sentences(text) == ["The red circle is at <bbox>[1, 2, 3, 4]</bbox>."]

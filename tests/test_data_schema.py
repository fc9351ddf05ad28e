"""Sample schema: datasets round trip, validation errors that name the field, the model frame."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image

from fgrpo_core.data.schema import (
    FEATURES,
    Box,
    Sample,
    SchemaError,
    from_dataset,
    model_frame_size,
    sample_hash,
    smart_resize,
    to_dataset,
    to_model_frame,
    validate_sample,
)

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280


def _sample(**kw):
    base = dict(id="s-1", source="synthetic", task="relation_2d", image=Image.new("RGB", (112, 84), (9, 8, 7)),
                question="Is it left?", choices=["left", "right"], answer="B",
                boxes=[Box("red circle", 1, 2, 30, 40.5)], scene={"objects": [{"id": 0}]},
                trace="<think>x</think><answer>B</answer>", trace_faults=["bad_box"])
    base.update(kw)
    return Sample(**base)


def test_round_trip_through_datasets_keeps_every_field(tmp_path):
    import datasets

    s = _sample()
    ds = to_dataset([s, _sample(id="s-2", scene=None, trace="", trace_faults=[], boxes=[])])
    assert ds.features == FEATURES
    ds.save_to_disk(str(tmp_path / "d"))
    back = from_dataset(datasets.load_from_disk(str(tmp_path / "d")))
    assert back[0].boxes == s.boxes and back[0].scene == s.scene and back[1].scene is None
    assert back[0].image.tobytes() == s.image.tobytes()
    assert [sample_hash(b) for b in back] == [sample_hash(x) for x in (s, _sample(id="s-2", scene=None, trace="",
                                                                                   trace_faults=[], boxes=[]))]
    assert back[0].answer_index == 1


@pytest.mark.parametrize(
    "change, field, words",
    [
        (dict(id=""), "id", "non-empty"),
        (dict(answer="C"), "answer", "option letter"),
        (dict(answer="right"), "answer", "option letter"),
        (dict(choices=["only"]), "choices", "2..10"),
        (dict(boxes=[Box("x", 10, 10, 5, 20)]), "boxes[0]", "x1<x2"),
        (dict(boxes=[Box("x", 0, 0, 113, 20)]), "boxes[0]", "<=112"),
        (dict(boxes=[Box("x", 0, float("nan"), 3, 20)]), "boxes[0]", "finite"),
        (dict(image=Image.new("L", (4, 4))), "image", "RGB"),
        (dict(trace_faults=["typo"]), "trace_faults", "unknown faults"),
        (dict(trace="", trace_faults=["bad_box"]), "trace_faults", "without a trace"),
        (dict(scene={"x": object()}), "scene", "JSON"),
    ],
)
def test_validation_names_file_row_field_and_value(change, field, words):
    with pytest.raises(SchemaError) as err:
        validate_sample(_sample(**change), file="bench/rows.jsonl", row=7)
    msg = str(err.value)
    assert msg.startswith("bench/rows.jsonl: row 7: field '" + field + "'"), msg
    assert words in msg and "got" in msg
    assert err.value.field == field and err.value.row == 7


def test_free_form_question_has_no_choices_and_a_text_answer():
    validate_sample(_sample(choices=[], answer="two"))
    with pytest.raises(SchemaError, match="free-form"):
        validate_sample(_sample(choices=[], answer=" "))


def test_smart_resize_equals_transformers():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    sides = [28, 75, 100, 111, 112, 113, 333, 640, 1001, 2048, 4000]
    for (h, w), (lo, hi) in itertools.product(itertools.product(sides, sides),
                                               [(MIN_PX, MAX_PX), (256 * 28 * 28, 1280 * 28 * 28), (3136, 50176)]):
        assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)


def test_staged_image_is_the_model_frame_for_a_size_the_processor_changes():
    """PITFALLS 'box coordinate frame': a 100x75 image becomes 112x84 in Qwen2.5-VL's eyes."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(min_pixels=MIN_PX, max_pixels=MAX_PX)
    raw = Image.new("RGB", (100, 75), (200, 200, 200))
    box = Box("thing", 10, 15, 50, 60)
    grid = proc(images=[raw], return_tensors="pt")["image_grid_thw"][0].tolist()  # [t, h/14, w/14]
    assert (grid[2] * 14, grid[1] * 14) != raw.size  # the processor does resize this image

    staged, (sbox,), (sx, sy) = to_model_frame(raw, [box], MIN_PX, MAX_PX)
    assert staged.size == (grid[2] * 14, grid[1] * 14) == (112, 84)
    assert (sx, sy) == (112 / 100, 84 / 75)
    # boxes scaled by the same factors: 10*1.12 = 11.2, 15*1.12 = 16.8, 50*1.12 = 56, 60*1.12 = 67.2
    assert [round(v, 6) for v in sbox.as_list()] == [11.2, 16.8, 56.0, 67.2]
    # the processor leaves the staged image as it is: same grid, so boxes stay in its frame
    grid2 = proc(images=[staged], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert (grid2[2] * 14, grid2[1] * 14) == staged.size
    assert model_frame_size(*staged.size, MIN_PX, MAX_PX) == staged.size


def test_already_framed_image_is_untouched():
    img = Image.new("RGB", (112, 112), (1, 2, 3))
    out, boxes, scale = to_model_frame(img, [Box("a", 0, 0, 5, 5)], MIN_PX, MAX_PX)
    assert out.tobytes() == img.tobytes() and scale == (1.0, 1.0) and boxes[0].x2 == 5

"""Benchmark importers on fixture files written in each benchmark's own layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fgrpo_core.config import BenchmarkImport
from fgrpo_core.data.importers import (
    FIELD_MAPPING,
    import_benchmark,
    mapping_table_markdown,
    split_lettered_options,
)
from fgrpo_core.data.schema import Box, SchemaError

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280
DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def _img(w=140, h=112, colour=(10, 200, 30)) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _import(name, path, **kw):
    return list(import_benchmark(BenchmarkImport(name=name, path=str(path), **kw), MIN_PX, MAX_PX))


# ---------------------------------------------------------------------------------------------
# CV-Bench: parquet with the hub's columns, and JSONL + img/
# ---------------------------------------------------------------------------------------------
CVB_ROWS = [
    {"idx": 0, "type": "2D", "task": "Count", "question": "How many chairs are in the image?",
     "choices": ["1", "2", "3", "4"], "answer": "(C)", "prompt": "How many chairs...", "filename": "img/2D/count/ade20k_1.png",
     "source": "ADE20K", "source_dataset": "ADE20K Validation Set", "source_filename": "ADE_val_1.jpg",
     "target_class": None, "target_size": None, "bbox": None},
    {"idx": 1, "type": "3D", "task": "Depth", "question": "Which object is closer to the camera taking this photo, the lamp or the table?",
     "choices": ["lamp", "table"], "answer": "(B)", "prompt": "Which ...", "filename": "img/3D/depth/omni3d_1.png",
     "source": "Omni3D", "source_dataset": "SUNRGBD", "source_filename": "x.jpg", "target_class": None,
     "target_size": None, "bbox": [[10.0, 20.0, 70.0, 100.0], [0.0, 0.0, 140.0, 56.0]]},
]


def test_cvbench_parquet_maps_rows_exactly_and_splits_2d_3d(tmp_path):
    rows = [dict(r, image={"bytes": _png(_img(colour=(k, 0, 0))), "path": r["filename"]}) for k, r in enumerate(CVB_ROWS)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    (s2,) = _import("cvbench_2d", tmp_path)
    (s3,) = _import("cvbench_3d", tmp_path)
    assert (s2.id, s2.source, s2.task, s2.question, s2.choices, s2.answer, s2.boxes, s2.scene) == (
        "cvbench_2d-0", "cvbench_2d", "count", "How many chairs are in the image?", ["1", "2", "3", "4"], "C", [], None)
    assert (s3.id, s3.task, s3.choices, s3.answer) == ("cvbench_3d-1", "depth", ["lamp", "table"], "B")
    # 140x112 is already a multiple of 28: frame unchanged, boxes as given
    assert s3.image.size == (140, 112) and s3.image.getpixel((0, 0)) == (1, 0, 0)
    assert s3.boxes == [Box("object", 10, 20, 70, 100), Box("object", 0, 0, 140, 56)]


def test_cvbench_jsonl_with_image_folder_and_resize(tmp_path):
    (tmp_path / "img" / "3D" / "depth").mkdir(parents=True)
    _img(100, 75).save(tmp_path / "img/3D/depth/omni3d_1.png")  # smart_resize -> 112x84
    row = dict(CVB_ROWS[1], bbox=[[10.0, 20.0, 70.0, 75.0]])
    (tmp_path / "test_3d.jsonl").write_text(json.dumps(row) + "\n")
    (s,) = _import("cvbench_3d", tmp_path)
    assert s.image.size == (112, 84)
    # boxes scaled by 112/100 = 84/75 = 1.12: [10, 20, 70, 75] -> [11.2, 22.4, 78.4, 84]
    assert [round(v, 6) for v in s.boxes[0].as_list()] == [11.2, 22.4, 78.4, 84.0]
    assert s.boxes[0].y2 <= 84  # clamped: 75 * (84 / 75) must not exceed the frame by float rounding


def test_cvbench_bad_answer_names_file_row_and_field(tmp_path):
    bad = dict(CVB_ROWS[0], answer="(E)", image={"bytes": _png(_img()), "path": "x"})
    pq.write_table(pa.Table.from_pylist([bad]), tmp_path / "test_2d.parquet")
    with pytest.raises(SchemaError) as err:
        _import("cvbench_2d", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'test_2d.parquet'}: row 0: field 'answer'")
    assert "(E)" in str(err.value)


def test_cvbench_box_outside_image_is_an_error(tmp_path):
    bad = dict(CVB_ROWS[1], bbox=[[10.0, 20.0, 700.0, 100.0]], image={"bytes": _png(_img()), "path": "x"})
    pq.write_table(pa.Table.from_pylist([bad]), tmp_path / "test_3d.parquet")
    with pytest.raises(SchemaError, match=r"row 0: field 'boxes\[0\]'.*<=140"):
        _import("cvbench_3d", tmp_path)


# ---------------------------------------------------------------------------------------------
# MMVP: Questions.csv + "MMVP Images/<Index>.jpg"
# ---------------------------------------------------------------------------------------------
def _mmvp(tmp_path, rows):
    (tmp_path / "MMVP Images").mkdir()
    lines = ["Index,Question,Options,Correct Answer"] + rows
    (tmp_path / "Questions.csv").write_text("\n".join(lines) + "\n")


def test_mmvp_csv_layout(tmp_path):
    _mmvp(tmp_path, ['1,Are the butterfly\'s wings closer to being open or closed?,(a) Open (b) Closed,(a)',
                     '2,"Is the door open, or closed?",(a) Open (b) Closed,(b)'])
    _img(224, 224).save(tmp_path / "MMVP Images" / "1.jpg")
    _img(224, 224).save(tmp_path / "MMVP Images" / "2.jpg")
    s1, s2 = _import("mmvp", tmp_path)
    assert (s1.id, s1.task, s1.question, s1.choices, s1.answer) == (
        "mmvp-1", "mmvp", "Are the butterfly's wings closer to being open or closed?", ["Open", "Closed"], "A")
    assert (s2.question, s2.answer) == ("Is the door open, or closed?", "B")


def test_mmvp_missing_image_names_row_and_path(tmp_path):
    _mmvp(tmp_path, ["1,Q?,(a) x (b) y,(a)"])
    with pytest.raises(SchemaError, match=r"Questions.csv: row 0: field 'Index': image file not found"):
        _import("mmvp", tmp_path)


def test_mmvp_bad_options(tmp_path):
    _mmvp(tmp_path, ["1,Q?,Open or closed,(a)"])
    with pytest.raises(SchemaError, match=r"row 0: field 'Options'"):
        _import("mmvp", tmp_path)


# ---------------------------------------------------------------------------------------------
# OmniSpatial: data.json + <task_type>/<id before '_'>.png
# ---------------------------------------------------------------------------------------------
OMNI = [{"id": "12_0", "question": "If you sit on the sofa facing the TV, where is the window?",
         "options": ["left", "right", "behind", "front"], "answer": 2, "task_type": "Perspective_Taking",
         "sub_task_type": "Allocentric"}]


def test_omnispatial_json_layout(tmp_path):
    (tmp_path / "Perspective_Taking").mkdir()
    _img().save(tmp_path / "Perspective_Taking" / "12.png")
    (tmp_path / "data.json").write_text(json.dumps(OMNI))
    (s,) = _import("omnispatial", tmp_path)
    assert (s.id, s.task, s.question, s.choices, s.answer) == (
        "omnispatial-12_0", "Perspective_Taking/Allocentric", OMNI[0]["question"], OMNI[0]["options"], "C")


def test_omnispatial_answer_out_of_range(tmp_path):
    (tmp_path / "Perspective_Taking").mkdir()
    _img().save(tmp_path / "Perspective_Taking" / "12.png")
    (tmp_path / "data.json").write_text(json.dumps([dict(OMNI[0], answer=4)]))
    with pytest.raises(SchemaError, match=r"data.json: row 0: field 'answer': option index out of range"):
        _import("omnispatial", tmp_path)


# ---------------------------------------------------------------------------------------------
# RealWorldQA: a saved HF dataset (image, question, answer); options inside the question
# ---------------------------------------------------------------------------------------------
def test_realworldqa_saved_dataset_with_free_form_row(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [_img(), _img()],
         "question": ["Which lane is the car in?\nA. Left lane\nB. Middle lane\nC. Right lane\n"
                      "Please answer directly with only the letter of the correct option and nothing else.",
                      "How many traffic lights are visible?\nPlease answer directly with a single word or number."],
         "answer": ["B", "3"]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string")}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "rwqa"))
    s1, s2 = _import("realworldqa", tmp_path / "rwqa")
    assert (s1.id, s1.question, s1.choices, s1.answer) == (
        "realworldqa-0", "Which lane is the car in?", ["Left lane", "Middle lane", "Right lane"], "B")
    assert (s2.question, s2.choices, s2.answer) == ("How many traffic lights are visible?", [], "3")


def test_saved_dataset_dict_split_choice(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"image": [_img()], "question": ["Q?\nA. x\nB. y"], "answer": ["A"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "question": datasets.Value("string"),
                                                                "answer": datasets.Value("string")}))
    datasets.DatasetDict({"train": ds, "val": ds}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(SchemaError, match=r"field 'split'.*\['train', 'val'\]"):
        _import("realworldqa", tmp_path / "d")
    assert len(_import("realworldqa", tmp_path / "d", split="val")) == 1


# ---------------------------------------------------------------------------------------------
# MindCube: data/raw/MindCube_tinybench.jsonl with image paths from data/
# ---------------------------------------------------------------------------------------------
def test_mindcube_jsonl_tiles_views(tmp_path):
    views = tmp_path / "data" / "other_all_image" / "around" / "s1"
    views.mkdir(parents=True)
    _img(56, 56, (255, 0, 0)).save(views / "1.png")
    _img(112, 112, (0, 0, 255)).save(views / "2.png")
    (tmp_path / "data" / "raw").mkdir()
    row = {"id": "around_001_q1", "category": ["perspective"], "type": "around",
           "question": "Based on these two views, what is to the left of the sofa? A. Lamp B. Table C. Chair",
           "images": ["other_all_image/around/s1/1.png", "other_all_image/around/s1/2.png"], "gt_answer": "C"}
    (tmp_path / "data" / "raw" / "MindCube_tinybench.jsonl").write_text(json.dumps(row) + "\n")
    (s,) = _import("mindcube", tmp_path / "data" / "raw")
    assert (s.id, s.task, s.question, s.choices, s.answer) == (
        "mindcube-around_001_q1", "around", "Based on these two views, what is to the left of the sofa?",
        ["Lamp", "Table", "Chair"], "C")
    # two views, each 56 high: 56 + 56 wide (the second shrunk to height 56) = 112x56
    assert s.image.size == (112, 56)
    assert s.image.getpixel((5, 5)) == (255, 0, 0) and s.image.getpixel((100, 5)) == (0, 0, 255)


def test_jsonl_syntax_error_names_the_line(tmp_path):
    # a blank first line (skipped, still counted), then the bad one: file line 2
    (tmp_path / "MindCube_tinybench.jsonl").write_text('\n{not json\n')
    with pytest.raises(SchemaError) as err:
        _import("mindcube", tmp_path)
    # rows count the file's lines from 0: line 2 is row 1; the message shows the line
    assert err.value.row == 1 and "row 1" in str(err.value) and "{not json" in str(err.value), str(err.value)
    assert "MindCube_tinybench.jsonl" in str(err.value) and "not JSON" in str(err.value)


# ---------------------------------------------------------------------------------------------
# SAT: parquet with image_bytes (list of frames), answers, correct_answer
# ---------------------------------------------------------------------------------------------
def test_sat_parquet(tmp_path):
    rows = [{"image_bytes": [{"bytes": _png(_img(112, 112)), "path": None}],
             "question": "Is the chair to the left of the camera?", "answers": ["yes", "no"],
             "correct_answer": "no", "question_type": "ego_movement"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    (s,) = _import("sat", tmp_path)
    assert (s.id, s.task, s.choices, s.answer, s.image.size) == ("sat-0", "ego_movement", ["yes", "no"], "B", (112, 112))
    rows[0]["correct_answer"] = "maybe"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    with pytest.raises(SchemaError, match=r"row 0: field 'correct_answer': is not one of the answers"):
        _import("sat", tmp_path)


def test_limit_and_missing_download(tmp_path):
    _mmvp(tmp_path, [f"{i},Q{i}?,(a) x (b) y,(a)" for i in (1, 2, 3)])
    for i in (1, 2, 3):
        _img().save(tmp_path / "MMVP Images" / f"{i}.jpg")
    assert [s.id for s in _import("mmvp", tmp_path, limit=2)] == ["mmvp-1", "mmvp-2"]
    with pytest.raises(SchemaError, match="download not found"):
        _import("mmvp", tmp_path / "nope")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Q? A. x B. y", ("Q?", ["x", "y"])),
        ("Q?\nA. left side\nB. right side\nC. center", ("Q?", ["left side", "right side", "center"])),
        ("Pick (A) red (B) blue", ("Pick", ["red", "blue"])),
        ("A cat sat. Where? A. here B. there", ("A cat sat. Where?", ["here", "there"])),
        ("How many cars?", None),
    ],
)
def test_split_lettered_options(text, expected):
    assert split_lettered_options(text) == expected


def test_field_mapping_table_is_in_the_docs():
    assert set(FIELD_MAPPING) == {"cvbench_2d", "cvbench_3d", "mindcube", "mmvp", "omnispatial", "realworldqa", "sat"}
    assert mapping_table_markdown() in DOCS.read_text(), "regenerate the table in docs/data.md"

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
    folder_files_markdown,
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
    assert folder_files_markdown() in DOCS.read_text(), "regenerate the folder table in docs/data.md"


# ---------------------------------------------------------------------------------------------
# Downloads as users have them: MMVP's 'lndex' header, MindCube's folder of splits, archives
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["lndex", "\ufeffIndex", "\ufefflndex"])
def test_mmvp_reads_the_hubs_header_spellings(tmp_path, header):
    # The hub's Questions.csv starts with 'lndex' (lower-case L); a byte-order mark is not part of it.
    (tmp_path / "MMVP Images").mkdir()
    (tmp_path / "Questions.csv").write_text(f"{header},Question,Options,Correct Answer\n7,Open?,(a) Open (b) Closed,(b)\n",
                                            encoding="utf-8")
    _img(224, 224).save(tmp_path / "MMVP Images" / "7.jpg")
    (s,) = _import("mmvp", tmp_path)
    assert (s.id, s.choices, s.answer) == ("mmvp-7", ["Open", "Closed"], "B")


MC_VIEW = "other_all_image/around/s1/1.png"


def _mc_row(rid: str, answer: str = "A") -> dict:
    return {"id": rid, "type": "around", "question": "What is left of the sofa? A. Lamp B. Table",
            "images": [MC_VIEW], "gt_answer": answer}


def _mindcube_download(root: Path, tiny_ids=("t1", "t2"), with_tinybench=True) -> Path:
    """MindCube's data/ as downloaded: raw/ holds the full set, the train split and tinybench."""
    (root / "data" / "other_all_image" / "around" / "s1").mkdir(parents=True)
    _img(56, 56).save(root / "data" / MC_VIEW)
    raw = root / "data" / "raw"
    raw.mkdir()
    write = lambda name, ids: (raw / name).write_text("".join(json.dumps(_mc_row(i)) + "\n" for i in ids))
    write("MindCube.jsonl", ["t1", "t2", "a3", "a4"])  # the full set contains tinybench's ids
    write("MindCube_train.jsonl", ["r1", "r2", "r3"])
    if with_tinybench:
        write("MindCube_tinybench.jsonl", list(tiny_ids))
    return raw


@pytest.mark.parametrize("point_at", ["root", "data", "raw"])
def test_mindcube_folder_takes_tinybench_only(tmp_path, point_at):
    raw = _mindcube_download(tmp_path)
    path = {"root": tmp_path, "data": tmp_path / "data", "raw": raw}[point_at]
    assert [s.id for s in _import("mindcube", path)] == ["mindcube-t1", "mindcube-t2"]  # no train rows, no repeats


def test_mindcube_folder_without_tinybench_lists_the_candidates(tmp_path):
    raw = _mindcube_download(tmp_path, with_tinybench=False)
    with pytest.raises(SchemaError) as err:
        _import("mindcube", raw)
    msg = str(err.value)
    assert "MindCube_tinybench.jsonl" in msg and "the paper evaluates" in msg
    assert str(raw / "MindCube.jsonl") in msg and str(raw / "MindCube_train.jsonl") in msg
    # pointing at the file itself reads it
    assert len(_import("mindcube", raw / "MindCube.jsonl")) == 4


def test_a_pattern_matching_several_splits_is_an_error_not_a_mix(tmp_path):
    rows = [{"image_bytes": [{"bytes": _png(_img(112, 112)), "path": None}], "question": "Left?",
             "answers": ["yes", "no"], "correct_answer": "no", "question_type": "ego"}]
    for name in ("train-00000-of-00001.parquet", "val-00000-of-00001.parquet"):
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / name)
    with pytest.raises(SchemaError) as err:
        _import("sat", tmp_path)
    assert "2 annotation files match '*.parquet'" in str(err.value) and "never mixed" in str(err.value)
    # the shards of one split are one split
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(2):
        pq.write_table(pa.Table.from_pylist([dict(rows[0], question=f"Left {k}?")]), shards / f"test-0000{k}-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows), shards / "train-00000-of-00001.parquet")
    assert [s.question for s in _import("sat", shards)] == ["Left 0?", "Left 1?"]


def test_duplicate_ids_in_a_benchmark_are_an_error_naming_them(tmp_path):
    raw = _mindcube_download(tmp_path, tiny_ids=("t1", "t2", "t1"))
    with pytest.raises(SchemaError) as err:
        _import("mindcube", raw)
    msg = str(err.value)
    assert "row 2: field 'id'" in msg and "'mindcube-t1'" in msg and "row 0 of" in msg


def test_staged_split_with_duplicate_ids_names_every_one(tmp_path):
    from fgrpo_core.config import SyntheticDataParams
    from fgrpo_core.data.stage import _write_split
    from fgrpo_core.data.synthetic import generate_samples

    a, b, c = generate_samples(SyntheticDataParams(), n=3, split="test", with_trace=False)
    with pytest.raises(ValueError) as err:
        _write_split([a, b, a, c, b], tmp_path / "test_x", 10**6, lambda s: 0)
    assert f"2 samples repeat an id" in str(err.value) and repr(sorted([a.id, b.id])) in str(err.value)


def _zip_tree(src: Path, archive: Path, prefix: str = "") -> Path:
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(src).as_posix())
    return archive


def test_mindcube_data_zip_is_read_in_place(tmp_path):
    _mindcube_download(tmp_path / "unpacked")
    download = tmp_path / "MindCube"
    download.mkdir()
    archive = _zip_tree(tmp_path / "unpacked", download / "data.zip")  # members data/raw/..., data/other_all_image/...
    expected = ["mindcube-t1", "mindcube-t2"]
    for path in (archive, download):  # the archive, or the folder it was downloaded into
        samples = _import("mindcube", path)
        assert [s.id for s in samples] == expected
        assert samples[0].image.getpixel((3, 3)) == (10, 200, 30)  # the view, read from the archive


def test_omnispatial_test_zip_is_read_in_place(tmp_path):
    tree = tmp_path / "tree"
    (tree / "Perspective_Taking").mkdir(parents=True)
    _img(colour=(1, 2, 3)).save(tree / "Perspective_Taking" / "12.png")
    (tree / "data.json").write_text(json.dumps(OMNI))
    archive = _zip_tree(tree, tmp_path / "OmniSpatial-test.zip", prefix="OmniSpatial-test/")  # one top folder
    (s,) = _import("omnispatial", archive)
    assert (s.id, s.answer, s.image.getpixel((0, 0))) == ("omnispatial-12_0", "C", (1, 2, 3))
    # an image missing from the archive is named with its place inside the archive
    import zipfile

    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("OmniSpatial-test/data.json", json.dumps(OMNI))
    with pytest.raises(SchemaError, match=r"image file not found at .*broken.zip/OmniSpatial-test/Perspective_Taking/12.png"):
        _import("omnispatial", broken)


def test_archives_that_are_not_read_in_place_say_what_to_extract_where(tmp_path):
    bad = tmp_path / "data.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SchemaError, match=r"not a readable zip archive .*unzip .*data.zip -d "):
        _import("mindcube", bad)
    tar = tmp_path / "OmniSpatial-test.tar.gz"
    tar.write_bytes(b"\x1f\x8b")
    with pytest.raises(SchemaError, match=r"extract it \(e.g. tar -xf .*OmniSpatial-test.tar.gz -C "):
        _import("omnispatial", tar)
    import zipfile

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(SchemaError, match=r"omnispatial: no evaluation file here; looked for \['data.json'"):
        _import("omnispatial", empty)

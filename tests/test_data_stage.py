"""stage_data / `fgrpo stage-data`: splits, manifest, dropping over-long prompts, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from fgrpo_core.config import BenchmarkImport, DataParams, SyntheticDataParams
from fgrpo_core.data.schema import SchemaError, from_dataset, samples_hash
from fgrpo_core.data.stage import load_manifest, prompt_tokens_upper_bound, stage_data
from fgrpo_core.prompts import SYSTEM_PROMPT
from flows.cmd_data import main

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280
SMALL = SyntheticDataParams(n_sft=14, n_rl=7, n_val=7, n_test=7)


def _mmvp(root: Path, n=2) -> Path:
    (root / "MMVP Images").mkdir(parents=True)
    rows = ["Index,Question,Options,Correct Answer"] + [f"{i},Is it open {i}?,(a) Open (b) Closed,(b)" for i in range(1, n + 1)]
    (root / "Questions.csv").write_text("\n".join(rows) + "\n")
    for i in range(1, n + 1):
        Image.new("RGB", (100, 75), (i, i, i)).save(root / "MMVP Images" / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    params = DataParams(synthetic=SMALL, benchmarks=[BenchmarkImport(name="mmvp", path=str(_mmvp(root / "mmvp")))])
    manifest = stage_data(params, MIN_PX, MAX_PX, root / "staged")
    return root, params, manifest


def test_splits_and_manifest(staged):
    root, _, manifest = staged
    out = root / "staged"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "rl", "sft", "test_mmvp", "test_synthetic", "val"]
    assert load_manifest(out) == manifest
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    assert counts == {"sft": 14, "rl": 7, "val": 7, "test_synthetic": 7, "test_mmvp": 2}
    assert manifest["splits"]["test_mmvp"]["by_source"] == {"mmvp": 2}
    assert manifest["splits"]["sft"]["by_task"] == {"counting": 2, "depth_order": 2, "localization": 2, "perspective": 2,
                                                  "relation_2d": 2, "relative_distance": 2, "relative_size": 2}
    assert manifest["dropped_overlong"] == 0
    sft = from_dataset(datasets.load_from_disk(str(out / "sft")))
    rl = from_dataset(datasets.load_from_disk(str(out / "rl")))
    assert all(s.trace.startswith("<think>") for s in sft) and all(s.trace == "" for s in rl)
    assert sum(len(s.trace_faults) for s in sft) == sum(manifest["splits"]["sft"]["faults"].values())
    mmvp = from_dataset(datasets.load_from_disk(str(out / "test_mmvp")))
    assert [s.image.size for s in mmvp] == [(112, 84), (112, 84)]  # staged in the model frame
    assert manifest["splits"]["sft"]["hash"] == samples_hash(sft)


def test_same_params_same_content_hash(staged, tmp_path):
    root, params, manifest = staged
    again = stage_data(params, MIN_PX, MAX_PX, tmp_path / "again")
    assert again["content_hash"] == manifest["content_hash"]
    other = stage_data(params.model_copy(update={"synthetic": SMALL.model_copy(update={"seed": 5})}), MIN_PX, MAX_PX,
                       tmp_path / "other")
    assert other["content_hash"] != manifest["content_hash"]
    assert other["splits"]["test_mmvp"]["hash"] == manifest["splits"]["test_mmvp"]["hash"]


def test_upper_bound_on_prompt_tokens_by_hand(staged):
    root, _, _ = staged
    (s,) = [x for x in from_dataset(datasets.load_from_disk(str(root / "staged" / "test_mmvp")))][:1]
    text = SYSTEM_PROMPT + "Is it open 1?\nA. Open\nB. Closed"
    # bytes of the text + 16 x 2 messages + (112/28)*(84/28) = 12 image tokens + 2 vision markers
    assert prompt_tokens_upper_bound(s) == len(text.encode()) + 32 + 12 + 2


def test_over_long_prompts_are_dropped_and_counted_never_truncated(tmp_path):
    params = DataParams(synthetic=SMALL)
    manifest = stage_data(params, MIN_PX, MAX_PX, tmp_path / "s",
                          prompt_tokens=lambda s: 5000 if s.task == "counting" else 10)
    rep = manifest["splits"]["sft"]
    assert rep["dropped_overlong"] == 2 and rep["count"] == 12 and "counting" not in rep["by_task"]
    sft = from_dataset(datasets.load_from_disk(str(tmp_path / "s" / "sft")))
    assert all(s.task != "counting" for s in sft)
    assert manifest["dropped_overlong"] == 2 + 1 + 1 + 1  # sft 2, rl/val/test one counting sample each


def test_bad_input_leaves_no_half_written_dataset_and_keeps_the_old_one(staged, tmp_path):
    root, params, manifest = staged
    out = tmp_path / "keep"
    good = stage_data(params, MIN_PX, MAX_PX, out)
    bad_root = _mmvp(tmp_path / "bad")
    (bad_root / "MMVP Images" / "2.jpg").unlink()  # row 1 lost its image
    before = sorted(p.name for p in tmp_path.iterdir())
    bad = params.model_copy(update={"benchmarks": [BenchmarkImport(name="mmvp", path=str(bad_root))]})
    with pytest.raises(SchemaError, match=r"Questions.csv: row 1: field 'Index': image file not found"):
        stage_data(bad, MIN_PX, MAX_PX, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder left behind
    assert load_manifest(out) == good
    assert len(datasets.load_from_disk(str(out / "sft"))) == 14


def test_duplicate_benchmark_is_rejected(tmp_path):
    b = BenchmarkImport(name="mmvp", path=str(tmp_path))
    with pytest.raises(ValueError, match="listed twice"):
        stage_data(DataParams(synthetic=SMALL, benchmarks=[b, b]), MIN_PX, MAX_PX, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_stage_data(tmp_path, capsys):
    params_file = tmp_path / "p.yaml"
    params_file.write_text(yaml.safe_dump({"data": {"synthetic": {"n_sft": 7, "n_rl": 0, "n_val": 0, "n_test": 7}}}))
    rc = main(["--params", str(params_file), "--set", f"data.out_dir={tmp_path / 'out'}"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "sft", "test_synthetic"]
    assert "content hash" in capsys.readouterr().out

    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(yaml.safe_dump({"data": {"benchmarks": [{"name": "mmvp", "path": str(tmp_path / "none")}]}}))
    assert main(["--params", str(bad_file), "--set", f"data.out_dir={tmp_path / 'out2'}"]) == 2
    assert "download not found" in capsys.readouterr().err
    assert main(["--params", str(params_file), "--set", "data.synthetic.typo=1"]) == 2
    assert "unknown key 'data.synthetic.typo'" in capsys.readouterr().err


def test_cli_is_registered():
    from flows.cli import COMMANDS

    assert COMMANDS["stage-data"][0] == "flows.cmd_data:main"

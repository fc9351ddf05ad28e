"""Staging's prompt-length counts: the processor's exact count equals what the policy is fed
(``encode_prompt``), the byte bound is above it, and only the bound drops prompts that fit."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from fgrpo_core.config import DataParams, ModelParams, SyntheticDataParams, load_params
from fgrpo_core.data.schema import Sample, from_dataset, to_model_frame
from fgrpo_core.data.stage import (UPPER_BOUND, load_manifest, processor_prompt_counter, prompt_tokens_upper_bound,
                                   stage_data)
from fgrpo_core.data.synthetic import generate_item
from fgrpo_core.models.loading import load_processor
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train.policy import encode_prompt
from flows.cmd_data import main, prompt_counter

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280
SMALL = SyntheticDataParams(n_sft=14, n_rl=7, n_val=7, n_test=7)
LONG = "Is the small red cube to the left of the large blue sphere behind the green cylinder? " * 12


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=MIN_PX, max_pixels=MAX_PX)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _sample(i: int, question: str, choices: list[str], w: int, h: int) -> Sample:
    return Sample(f"s-{i}", "test", "relation_2d", _image(w, h, i), question, choices, "A" if choices else "x")


# Image sizes the processor keeps (112x112, 56x56), rounds (100x75 -> 112x84), or shrinks
# (2000x1500 is over max_pixels); questions short, long, non-ASCII; 0, 2 and 5 options.
CASES = [
    ("Left?", ["yes", "no"], 112, 112),
    ("Left?", ["yes", "no"], 56, 56),
    ("Left?", ["yes", "no"], 100, 75),
    (LONG, ["a", "b", "c", "d", "e"], 640, 480),
    ("Quelle forme est à gauche du cœur ? 左边是什么形状？", ["carré", "cercle"], 2000, 1500),
    ("How many cubes are there?", [], 84, 252),
]


def _policy_length(processor, s: Sample) -> int:
    return len(encode_prompt(processor, PromptInput(s.id, build_messages(s.question, s.choices), s.image)).input_ids)


def test_counter_equals_the_policy_encoding(processor):
    count = processor_prompt_counter(processor)
    samples = [_sample(i, *c) for i, c in enumerate(CASES)]
    expected = [_policy_length(processor, s) for s in samples]
    assert [count(s) for s in samples] == expected
    assert len(set(expected)) == len(expected)  # the cases differ, so equality is not luck


def test_counter_image_tokens_by_hand(processor):
    count = processor_prompt_counter(processor)
    # Same text, two images. 56x56: 4x4 patches of 14 px, merged 2x2 -> 4 tokens.
    # 100x75: smart_resize -> 112x84 (sides rounded to multiples of 28) -> 8x6 patches -> 12 tokens.
    small, rounded = _sample(0, "Left?", ["yes", "no"], 56, 56), _sample(0, "Left?", ["yes", "no"], 100, 75)
    assert count(rounded) - count(small) == 12 - 4


def test_full_processor_route_for_a_processor_without_the_size_rule(processor):
    class FullCallOnly:  # no tokenizer / image_processor attributes: the counter must run it in full
        def apply_chat_template(self, *args, **kwargs):
            return processor.apply_chat_template(*args, **kwargs)

        def __call__(self, **kwargs):
            return processor(**kwargs)

    count = processor_prompt_counter(FullCallOnly())
    samples = [_sample(i, *c) for i, c in enumerate(CASES)]
    assert [count(s) for s in samples] == [_policy_length(processor, s) for s in samples]


def test_byte_bound_is_above_the_real_count(processor):
    """On staged samples (images in the model frame, the bound's premise): the tiny preset's
    synthetic data of every task, and the hand cases above."""
    count = processor_prompt_counter(processor)
    tiny = load_params("params/tiny.yaml")
    mp = tiny.model
    samples = [generate_item(tiny.data.synthetic, split, i, mp.min_pixels, mp.max_pixels).sample
               for split in ("sft", "rl") for i in range(14)]
    for i, (q, choices, w, h) in enumerate(CASES):
        image, _, _ = to_model_frame(_image(w, h, i), [], MIN_PX, MAX_PX)
        samples.append(Sample(f"f-{i}", "test", "t", image, q, choices, "A" if choices else "x"))
    real = [count(s) for s in samples]
    bound = [prompt_tokens_upper_bound(s) for s in samples]
    assert all(b >= r for b, r in zip(bound, real)), [(s.id, b, r) for s, b, r in zip(samples, bound, real) if b < r]
    # the bound's slack is the text: the tiny tokenizer needs ~2 bytes a token, not 1
    assert sum(bound) > 1.5 * sum(real)


def _all_samples(out) -> list[Sample]:
    return [s for split in ("sft", "rl", "val", "test_synthetic")
            for s in from_dataset(datasets.load_from_disk(str(out / split)))]


def test_byte_bound_drops_prompts_that_the_real_count_keeps(processor, tmp_path):
    count = processor_prompt_counter(processor)
    every = stage_data(DataParams(synthetic=SMALL, max_prompt_tokens=100_000), MIN_PX, MAX_PX, tmp_path / "all",
                       prompt_tokens=count, prompt_length="exact (test)")
    samples = _all_samples(tmp_path / "all")
    assert len(samples) == 35 and every["dropped_overlong"] == 0
    real = [count(s) for s in samples]
    bound = [prompt_tokens_upper_bound(s) for s in samples]

    # At the longest real prompt every prompt fits, yet the bound is over it for all of them:
    # the byte-bounded stage refuses the whole SFT split.
    assert min(bound) > max(real)
    with pytest.raises(ValueError, match=f"sft: all 14 samples are longer than data.max_prompt_tokens={max(real)}"):
        stage_data(DataParams(synthetic=SMALL, max_prompt_tokens=max(real)), MIN_PX, MAX_PX, tmp_path / "none")

    # At the median bound: the real count keeps all 35, the bound drops the half above it.
    limit = sorted(bound)[len(bound) // 2]
    over = sum(b > limit for b in bound)
    assert over > 0 and max(real) <= limit
    params = DataParams(synthetic=SMALL, max_prompt_tokens=limit)
    exact = stage_data(params, MIN_PX, MAX_PX, tmp_path / "exact", prompt_tokens=count, prompt_length="exact (test)")
    by_bytes = stage_data(params, MIN_PX, MAX_PX, tmp_path / "bytes")
    assert exact["dropped_overlong"] == 0 and exact["content_hash"] == every["content_hash"]
    assert by_bytes["dropped_overlong"] == over
    assert sum(r["count"] for r in by_bytes["splits"].values()) == 35 - over
    assert exact["prompt_length"] == "exact (test)" and by_bytes["prompt_length"] == UPPER_BOUND


def test_stage_command_counts_with_the_model_processor_when_it_is_on_disk(tiny_model_dir, tmp_path, capsys):
    model = ModelParams(path=str(tiny_model_dir), min_pixels=MIN_PX, max_pixels=MAX_PX)
    count, name = prompt_counter(model)
    s = _sample(0, *CASES[3])
    assert name == f"exact: Qwen2_5_VLProcessor of {tiny_model_dir}"
    assert count(s) == processor_prompt_counter(load_processor(tiny_model_dir, min_pixels=MIN_PX,
                                                               max_pixels=MAX_PX))(s)
    missing = model.model_copy(update={"path": str(tmp_path / "no-model")})
    assert prompt_counter(missing) == (None, f"{UPPER_BOUND} (no model folder at model.path={tmp_path / 'no-model'})")

    sizes = ["data.synthetic.n_sft=2", "data.synthetic.n_rl=0", "data.synthetic.n_val=0", "data.synthetic.n_test=0"]
    for path, expected in [(tiny_model_dir, name), (tmp_path / "no-model", prompt_counter(missing)[1])]:
        out = tmp_path / f"out-{len(expected)}"
        assert main(["--params", "params/tiny.yaml", *[f"--set={o}" for o in sizes],
                     f"--set=model.path={path}", f"--set=data.out_dir={out}"]) == 0
        assert f"prompt length: {expected}" in capsys.readouterr().out
        assert load_manifest(out)["prompt_length"] == expected

"""The locally built tiny Qwen2.5-VL: deterministic, and loadable by the real classes."""

import hashlib

import pytest
import torch
from PIL import Image

from fgrpo_core.config import TinyModelParams
from fgrpo_core.models.tiny import FORMAT_TOKENS, SPECIAL_TOKENS, build_tiny_model
from fgrpo_core.prompts import build_messages


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, tiny_model_dir):
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny_model_dir / name), name
    other = build_tiny_model(tmp_path / "other", TinyModelParams(seed=1))
    assert _digest(other / "model.safetensors") != _digest(tiny_model_dir / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny_model_dir / "tokenizer.json")


def test_rejects_head_dim_vllm_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_model(tmp_path / "bad", TinyModelParams(hidden_size=64, num_attention_heads=4))
    assert not (tmp_path / "bad").exists()


def test_tokenizer_has_qwen_special_tokens_and_format_tags(tiny_model_dir):
    from fgrpo_core.models.loading import load_processor

    proc = load_processor(tiny_model_dir)
    tok = proc.tokenizer
    for t in SPECIAL_TOKENS + FORMAT_TOKENS:
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1, (t, ids)
    # Format tags survive decoding with special tokens skipped; vision tokens do not.
    text = "<think>left <bbox>[1, 2, 30, 40]</bbox></think><answer>B</answer>"
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == text
    vis = tok.encode("<|vision_start|><|image_pad|>", add_special_tokens=False)
    assert tok.decode(vis, skip_special_tokens=True) == ""


def test_loads_and_generates_with_an_image_in_transformers(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy, load_processor

    proc = load_processor(tiny_model_dir)
    model = load_policy(tiny_model_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    text = proc.apply_chat_template(build_messages("Which is left?", ["a", "b"]), add_generation_prompt=True,
                                    tokenize=False)
    inputs = proc(text=[text], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")
    # 112x112 -> 8x8 patches of 14 -> 16 image tokens after the 2x2 merge.
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    # Greedy: 5 new tokens, or fewer when one of them is an end-of-sequence token, which is then the last.
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    assert 1 <= len(new) <= 5 and not eos & set(new[:-1]), (new, eos)
    assert len(new) == 5 or new[-1] in eos, (new, eos)
    # The assistant mask TRL uses comes from the template's generation markers.
    conv = build_messages("q", ["a", "b"]) + [{"role": "assistant", "content": [{"type": "text", "text": "<answer>A</answer>"}]}]
    enc = proc.tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert proc.tokenizer.decode(masked) == "<answer>A</answer><|im_end|>"


def test_init_std_sets_the_spread_of_every_random_matrix(tmp_path):
    """``model.tiny.init_std`` reaches text and vision weights alike (transformers' initializer_range).

    Each matrix is N(0, std^2) over n >= 4096 entries, so its sample std is within ~5 std/sqrt(2n)
    (< 6%) of std; the default 0.02 and 0.08 are 4x apart, far beyond that.
    """
    from safetensors.torch import load_file

    for std in (0.02, 0.08):
        w = load_file(build_tiny_model(tmp_path / f"s{std}", TinyModelParams(init_std=std)) / "model.safetensors")
        names = [n for n in w if n.endswith(("q_proj.weight", "attn.qkv.weight", "embed_tokens.weight",
                                              "patch_embed.proj.weight", "lm_head.weight"))]
        assert any("visual" in n for n in names) and any("layers.0" in n for n in names), names
        for n in names:
            assert abs(w[n].float().std().item() - std) < 0.06 * std, (n, w[n].float().std().item(), std)

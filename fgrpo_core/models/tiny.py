"""Build a tiny Qwen2.5-VL locally: real model classes, random weights, our own tokenizer.

Machines without a model hub (CI, laptops) still run every stage through the real engines: this
writes a Hugging Face model directory that ``transformers`` (``AutoProcessor``,
``Qwen2_5_VLForConditionalGeneration.from_pretrained``) and ``vllm.LLM`` both load.

- tokenizer: byte-level BPE trained with ``tokenizers`` on the project's own vocabulary, with
  Qwen2.5-VL's special tokens and its chat template (plus ``{% generation %}`` markers so TRL can
  mask the loss to assistant turns);
- processor: ``Qwen2_5_VLProcessor`` (Qwen2-VL image processor, patch 14, merge 2);
- model: ``Qwen2_5_VLForConditionalGeneration`` with a small config and seeded random weights,
  saved as safetensors. Same seed, same bytes.

vLLM's CPU attention rejects head_dim 16, so text and vision heads are 32 wide by default.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fgrpo_core.config import TinyModelParams
from fgrpo_core.prompts import SYSTEM_PROMPT

# Qwen2.5-VL's special tokens, in the order the real tokenizer lists them.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The output format's tags: ordinary (non-special) added tokens, so decoding keeps them and a
# tiny model learns them as single symbols.
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<bbox>", "</bbox>"]

# Qwen2.5-VL's chat template, with generation markers around assistant content (TRL's
# assistant-only loss reads them through ``return_assistant_tokens_mask``).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) }}<|im_end|>{% endgeneration %}\n"
    "{% else %}{{ render(message['content']) }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The vocabulary the tokenizer is trained on: the words of our prompts, questions and traces.
_WORDS = """
a an the is are of in on to and or from with than as at by for it its this that these those there
which what where who how many much more most less least first second third then so therefore
thus because since let me look see image picture scene object objects shape shapes
left right above below top bottom middle center centre front behind near far closer farther
further nearer bigger smaller larger big small large tiny huge same different size sizes
count number one two three four five six seven eight nine ten zero
red green blue yellow purple orange white black gray grey brown pink cyan
circle circles square squares triangle triangles rectangle star ball cube box cylinder
located position region quadrant upper lower camera viewer viewpoint perspective facing
distance depth between relative relation next beside overlap overlapping occluded occludes
answer option options question think reasoning correct wait hmm check again both neither
true false yes no not only all each every other another side sides corner edge ground plane
""".split()


def _corpus() -> list[str]:
    lines = [SYSTEM_PROMPT, " ".join(_WORDS), " ".join(w.capitalize() for w in _WORDS)]
    for w in _WORDS:
        lines.append(f"The {w} is {w}. {w.capitalize()}? {w}, {w}.")
    for letter in "ABCDEFGHIJ":
        lines.append(f"{letter}. option {letter}) the answer is {letter}.")
    for i in range(0, 1000):
        lines.append(f"<bbox>[{i}, {i % 97}, {i + 13}, {(i * 7) % 113}]</bbox> {i}")
    lines.append("<think> </think> <answer> </answer> <bbox> </bbox> [ ] , . ? : ; ( ) ' \" - \n")
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen2.5-VL's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in FORMAT_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(p: TinyModelParams, tok):
    from transformers import Qwen2_5_VLConfig

    head_dim = p.hidden_size // p.num_attention_heads
    if head_dim < 32 or p.vision_hidden_size // p.vision_num_heads < 32:
        raise ValueError(
            f"tiny model head_dim must be >= 32 for vLLM's CPU attention "
            f"(text {head_dim}, vision {p.vision_hidden_size // p.vision_num_heads})"
        )
    # M-RoPE splits head_dim/2 rotary frequencies over (temporal, height, width).
    half = head_dim // 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    vocab = ((len(tok) + 63) // 64) * 64
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=p.hidden_size,
            intermediate_size=p.intermediate_size,
            num_hidden_layers=p.num_hidden_layers,
            num_attention_heads=p.num_attention_heads,
            num_key_value_heads=p.num_key_value_heads,
            max_position_embeddings=p.max_position_embeddings,
            rope_scaling={"type": "mrope", "mrope_section": mrope, "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
            initializer_range=p.init_std,
        ),
        vision_config=dict(
            initializer_range=p.init_std,
            depth=p.vision_depth,
            hidden_size=p.vision_hidden_size,
            intermediate_size=p.vision_intermediate_size,
            num_heads=p.vision_num_heads,
            out_hidden_size=p.hidden_size,
            fullatt_block_indexes=[p.vision_depth - 1],
            window_size=112,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | os.PathLike, params: TinyModelParams | None = None) -> Path:
    """Write the tiny model directory at ``out_dir`` (atomically: temp dir, then rename)."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    params = params or TinyModelParams()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = _config(params, tok)

    # Seeded init on CPU in float32: same seed, same bytes, whatever the machine.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 1280),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "fgrpo_tiny.json").write_text(json.dumps(params.model_dump(), indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

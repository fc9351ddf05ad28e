"""SFT data: staged samples -> chat conversations -> token ids with assistant-only labels, once.

A staged row (``fgrpo_core.data.schema``) becomes the conversation every other stage shows the
policy (``prompts.build_messages``: system + user turn with the image) followed by an assistant
turn holding the row's ``trace``. The processor's chat template renders it; its
``{% generation %}`` markers give the assistant mask, so

    labels[t] = input_ids[t]   where t lies in the assistant turn (its <|im_end|> included)
    labels[t] = -100           elsewhere (system, user turn, image placeholders, padding)

Speed: TRL's vision collator renders the chat template and tokenises every batch on every step
(~10 ms a sample on CPU, more than a whole training step of the tiny model). Here each sample is
encoded once, before training (``datasets.map``, cached as Arrow under the run's directory), and
the collator only pads ids and runs the image processor (~5% of a step on the tiny model;
caching pixel values instead saved no more than that, at ~1 MB per real image, so it is not done).

Length: a sample whose encoded length (image tokens included) exceeds ``max_length`` is
dropped and counted, never truncated: cutting a prompt inside its image placeholders breaks the
model ("Image features and image tokens do not match", docs/method.md#image-tokens-and-over-long-prompts).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import datasets
import numpy as np
import torch

from fgrpo_core.prompts import build_messages

IGNORE_INDEX = -100  # label of a token that carries no loss (transformers' convention)
ENCODING_VERSION = 1  # bump when the encoding changes, so cached encodings are not reused
REQUIRED_COLUMNS = ("id", "image", "question", "choices", "trace")


def sft_messages(question: str, choices: Sequence[str], trace: str, image: Any = None) -> list[dict[str, Any]]:
    """The training conversation: the rollout prompt (``build_messages``) plus the trace as the
    assistant turn. With ``image`` given, the user turn's image part carries it (processor input)."""
    messages = build_messages(question, choices)
    if image is not None:
        for message in messages:
            for part in message["content"]:
                if part.get("type") == "image":
                    part["image"] = image
    messages.append({"role": "assistant", "content": [{"type": "text", "text": trace}]})
    return messages


@dataclass
class EncodedSFTData:
    """The training set after the one encoding pass, and what was left out of it."""

    dataset: datasets.Dataset  # id, image, input_ids, labels, n_tokens
    n_source: int  # rows read from the staged splits
    dropped_ids: list[str] = field(default_factory=list)  # over max_length, never truncated
    longest_kept: int = 0  # tokens of the longest kept sample
    assistant_tokens: int = 0  # tokens carrying loss over the kept samples


def encode_one(processor, messages: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One conversation through the processor's chat template: token ids and labels."""
    out = processor.apply_chat_template(
        [messages],
        tokenize=True,
        return_dict=True,
        return_tensors="np",
        return_assistant_tokens_mask=True,
        processor_kwargs={"add_special_tokens": False},  # the template writes every special token
    )
    ids = out["input_ids"][0].astype(np.int64)  # [T]
    mask = out["assistant_masks"][0].astype(bool)  # [T]
    labels = np.where(mask, ids, IGNORE_INDEX)
    return {"input_ids": ids, "labels": labels}


def _encoder(processor, source: str):
    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        cols: dict[str, list] = {"input_ids": [], "labels": [], "n_tokens": []}
        for i, row in enumerate(indices):
            trace = batch["trace"][i]
            if not isinstance(trace, str) or not trace.strip():
                raise ValueError(
                    f"{source}: row {row} (id {batch['id'][i]!r}): field 'trace': empty; "
                    "SFT needs rows with a trace (the staged 'sft' split)"
                )
            image = batch["image"][i]
            if image is None:
                raise ValueError(f"{source}: row {row} (id {batch['id'][i]!r}): field 'image': missing")
            messages = sft_messages(batch["question"][i], batch["choices"][i], trace, image.convert("RGB"))
            enc = encode_one(processor, messages)
            if (enc["labels"] != IGNORE_INDEX).sum() == 0:
                raise ValueError(
                    f"{source}: row {row}: no assistant tokens in the encoding; does the chat template "
                    "carry {% generation %} markers?"
                )
            cols["input_ids"].append(enc["input_ids"])
            cols["labels"].append(enc["labels"])
            cols["n_tokens"].append(len(enc["input_ids"]))
        return cols

    return encode


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "input_ids": datasets.List(datasets.Value("int64")),
        "labels": datasets.List(datasets.Value("int64")),
        "n_tokens": datasets.Value("int64"),
    }
)


def encoding_key(fingerprint: str, processor, max_length: int) -> str:
    """Cache key of one encoded split: source content, processor settings, options, version."""
    ip = processor.image_processor
    blob = json.dumps(
        {
            "source": fingerprint,
            "min_pixels": getattr(ip, "min_pixels", None),
            "max_pixels": getattr(ip, "max_pixels", None),
            "template": hashlib.sha256((processor.chat_template or "").encode()).hexdigest(),
            "vocab": len(processor.tokenizer),
            "max_length": max_length,
            "version": ENCODING_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_staged(path: str | Path) -> datasets.Dataset:
    """A staged split (``datasets.save_to_disk``) with the columns SFT reads."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SFT data not found: {path} (run `fgrpo stage-data` first)")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"{path} holds several splits {list(ds)}; pass the directory of one split")
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {ds.column_names})")
    return ds


def encode_for_sft(
    sources: Sequence[tuple[str, datasets.Dataset]],
    processor,
    max_length: int,
    cache_dir: str | Path,
) -> EncodedSFTData:
    """Encode every (name, dataset) once, drop over-long samples, concatenate.

    ``cache_dir`` receives the encoded Arrow files (keyed by :func:`encoding_key`, so a resumed
    run reuses them and a changed processor or option re-encodes).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts, n_source, dropped = [], 0, []
    for name, ds in sources:
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise ValueError(f"{name}: missing columns {missing} (has {ds.column_names})")
        n_source += len(ds)
        key = encoding_key(ds._fingerprint, processor, max_length)
        encoded = ds.map(
            _encoder(processor, name),
            batched=True,
            batch_size=32,
            with_indices=True,
            remove_columns=[c for c in ds.column_names if c not in ("id", "image")],
            features=FEATURES,
            cache_file_name=str(cache_dir / f"encoded-{key}.arrow"),
            desc=f"encoding {name}",
        )
        too_long = [i for i, n in enumerate(encoded["n_tokens"]) if n > max_length]
        if too_long:
            dropped += [encoded[i]["id"] for i in too_long]
            encoded = encoded.select(sorted(set(range(len(encoded))) - set(too_long)))
        parts.append(encoded)
    data = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(data) == 0:
        raise ValueError(
            f"no SFT sample fits max_length={max_length} ({len(dropped)} of {n_source} dropped as too long)"
        )
    data = data.with_format("numpy", columns=["input_ids", "labels", "n_tokens"], output_all_columns=True)
    n_tokens = data["n_tokens"]
    assistant = sum(int((np.asarray(lab) != IGNORE_INDEX).sum()) for lab in data["labels"])
    return EncodedSFTData(
        dataset=data,
        n_source=n_source,
        dropped_ids=dropped,
        longest_kept=int(np.max(n_tokens)),
        assistant_tokens=assistant,
    )


@dataclass
class SFTCollator:
    """Pads pre-encoded samples (right padding) and supplies the pixels.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (``[B, T]``, -100 on padding),
    ``mm_token_type_ids`` (1 on image placeholder tokens, which Qwen2.5-VL's M-RoPE reads),
    ``pixel_values`` ``[sum of patches, D]`` and ``image_grid_thw`` ``[B, 3]`` (image processor).
    """

    processor: Any
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.image_token_id = tok.convert_tokens_to_ids(self.processor.image_token)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)  # [B, T]
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        attention = torch.zeros((len(features), width), dtype=torch.long)  # [B, T]
        for row, (f, n) in enumerate(zip(features, lengths)):
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            attention[row, :n] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": attention,
            "labels": labels,
            "mm_token_type_ids": (ids == self.image_token_id).long(),
        }
        images = self.processor.image_processor(
            images=[f["image"].convert("RGB") for f in features], return_tensors="pt"
        )
        batch["pixel_values"] = images["pixel_values"]  # [sum of patches, D]
        batch["image_grid_thw"] = images["image_grid_thw"]  # [B, 3]
        return batch

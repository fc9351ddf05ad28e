"""Stage every dataset the params ask for: ``out_dir/<split>`` (datasets ``save_to_disk``) + manifest.

Splits:
    sft             synthetic, with chain-of-thought traces (and their injected faults)
    rl              synthetic prompts for FGRPO rounds
    val             synthetic validation prompts
    test_synthetic  synthetic test set
    test_<name>     one per imported benchmark (``data.benchmarks``)
A split whose size is 0 is not written.

Over-long prompts are dropped, never truncated (docs/method.md#image-tokens-and-over-long-prompts),
and counted per split in the manifest. Two ways to count a prompt's tokens:

- :func:`processor_prompt_counter`: the exact count under the policy's processor, i.e. the
  length of ``train.policy.encode_prompt``'s ``input_ids`` (the stage commands use it whenever
  the model's processor is on disk).
- :func:`prompt_tokens_upper_bound`, the fallback that needs no tokenizer: UTF-8 bytes of the
  chat text (a byte-level BPE token covers at least one byte) + 16 per chat message for role
  markers + the image's tokens, (h/28)*(w/28), + 2 for the vision start/end tokens. It is about
  2-4x the real count (bytes per token), so it drops prompts that would fit.

The manifest's ``prompt_length`` names the one used.

Writing is atomic: everything is built in a hidden folder beside ``out_dir``, then swapped in
by two renames (old -> backup, new -> out_dir) and the backup deleted. Bad input raises before
the swap, so it leaves no half-written dataset and keeps a previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import datasets

from fgrpo_core.config import DataParams, ModelParams
from fgrpo_core.data.importers import import_benchmark
from fgrpo_core.data.schema import PATCH_FACTOR, Sample, sample_hash, to_dataset
from fgrpo_core.data.synthetic import generate_item
from fgrpo_core.prompts import build_messages, prompt_text

CHUNK = 256  # samples turned into Arrow (PNG-encoded) at a time: bounded memory for real images
MANIFEST = "manifest.json"


def prompt_tokens_upper_bound(sample: Sample) -> int:
    """An upper bound on the prompt's token count (see the module docstring)."""
    messages = build_messages(sample.question, sample.choices)
    text = "".join(part.get("text", "") for m in messages for part in m["content"])
    w, h = sample.image.size
    image_tokens = (w // PATCH_FACTOR) * (h // PATCH_FACTOR) + 2
    return len(text.encode("utf-8")) + 16 * len(messages) + image_tokens


UPPER_BOUND = "upper bound: utf-8 bytes of chat text + 16 per message + (h/28)*(w/28) + 2 image tokens"


def processor_prompt_counter(processor) -> Callable[[Sample], int]:
    """The exact token count of a sample's prompt under ``processor`` (a Qwen2.5-VL processor):

        tokens = len(tokenizer(prompt_text)) - 1 + image_tokens
        image_tokens = patches(smart_resize(h, w)) / merge_size^2

    ``prompt_text`` holds one image placeholder, which the processor replaces by
    ``image_tokens`` copies; the image processor's ``get_number_of_image_patches`` is the rule
    vLLM counts them with. This equals ``len(encode_prompt(...).input_ids)`` without touching
    pixels (0.1 ms a prompt; a full processor call takes 1-13 ms for 112-1120 px images). A
    processor without that rule is run in full instead.
    """
    tokenizer = getattr(processor, "tokenizer", None)
    image_processor = getattr(processor, "image_processor", None)
    placeholder = getattr(processor, "image_token_id", None)
    by_size = (tokenizer is not None and placeholder is not None
               and hasattr(image_processor, "get_number_of_image_patches") and hasattr(image_processor, "merge_size"))

    def count(sample: Sample) -> int:
        text = prompt_text(processor, build_messages(sample.question, sample.choices))
        if not by_size:
            return len(processor(text=[text], images=[sample.image])["input_ids"][0])
        ids = tokenizer(text)["input_ids"]
        if ids.count(placeholder) != 1:
            raise ValueError(f"sample {sample.id}: the chat template wrote {ids.count(placeholder)} image "
                             "placeholders, expected 1")
        w, h = sample.image.size
        image_tokens = image_processor.get_number_of_image_patches(h, w) // image_processor.merge_size ** 2
        return len(ids) - 1 + image_tokens

    return count


def prompt_counter(model: ModelParams) -> tuple[Callable | None, str]:
    """How staging counts prompt tokens, and the manifest's name for it: the policy processor's
    exact count when ``model.path`` is a model folder on disk (the processor loads from its local
    files), else ``None`` (a hub id, or the tiny model not built yet): the byte upper bound."""
    path = Path(model.path)
    if not (path / "config.json").is_file():
        return None, f"{UPPER_BOUND} (no model folder at model.path={model.path})"
    from fgrpo_core.models.loading import load_processor

    processor = load_processor(path, trust_remote_code=model.trust_remote_code, min_pixels=model.min_pixels,
                               max_pixels=model.max_pixels)
    return processor_prompt_counter(processor), f"exact: {type(processor).__name__} of {model.path}"


@dataclass
class SplitReport:
    """What went into one split."""

    count: int = 0
    hash: str = ""
    dropped_overlong: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)


def _synthetic_splits(params: DataParams, min_pixels: int, max_pixels: int) -> dict[str, Callable[[], Iterator[Sample]]]:
    sp = params.synthetic
    if not sp.enabled:
        return {}
    sizes = {"sft": sp.n_sft, "rl": sp.n_rl, "val": sp.n_val, "test_synthetic": sp.n_test}

    def make(split: str, n: int) -> Callable[[], Iterator[Sample]]:
        return lambda: (generate_item(sp, split, i, min_pixels, max_pixels, with_trace=split == "sft").sample
                        for i in range(n))

    return {split: make(split, n) for split, n in sizes.items() if n > 0}


def _write_split(samples: Iterable[Sample], path: Path, max_tokens: int,
                 count_tokens: Callable[[Sample], int]) -> SplitReport:
    rep, h = SplitReport(), hashlib.sha256()
    by_source, by_task, faults = Counter(), Counter(), Counter()
    seen: set[str] = set()
    duplicates: list[str] = []
    parts: list[datasets.Dataset] = []
    chunk: list[Sample] = []
    for s in samples:
        if s.id in seen:
            duplicates.append(s.id)
            continue
        seen.add(s.id)
        if count_tokens(s) > max_tokens:
            rep.dropped_overlong += 1
            continue
        h.update(sample_hash(s).encode())
        by_source[s.source] += 1
        by_task[s.task] += 1
        faults.update(s.trace_faults)
        chunk.append(s)
        if len(chunk) == CHUNK:
            parts.append(to_dataset(chunk))
            chunk = []
    if duplicates:  # read the whole split first, so the error names every duplicate, not the first
        shown = sorted(set(duplicates))
        raise ValueError(f"{path.name}: {len(duplicates)} samples repeat an id already in the split "
                         f"({len(shown)} ids): {shown[:20]}{' ...' if len(shown) > 20 else ''}")
    if not parts and not chunk and rep.dropped_overlong:
        raise ValueError(f"{path.name}: all {rep.dropped_overlong} samples are longer than data.max_prompt_tokens="
                         f"{max_tokens} (raise it, or lower model.max_pixels)")
    if chunk or not parts:
        parts.append(to_dataset(chunk))
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    ds.save_to_disk(str(path), num_shards=1 if len(ds) == 0 else None)  # 0 shards fails for 0 rows
    rep.count = len(ds)
    rep.hash = h.hexdigest()
    rep.by_source, rep.by_task, rep.faults = dict(by_source), dict(sorted(by_task.items())), dict(faults)
    return rep


def stage_data(
    params: DataParams,
    model_min_pixels: int,
    model_max_pixels: int,
    out_dir: str | Path,
    prompt_tokens: Callable[[Sample], int] | None = None,
    prompt_length: str | None = None,
) -> dict:
    """Build all splits into ``out_dir`` atomically; returns the manifest (also written there).

    ``prompt_tokens`` counts a sample's prompt tokens (default :func:`prompt_tokens_upper_bound`);
    ``prompt_length`` is what the manifest records for the rule used (default: its own name).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    builders = _synthetic_splits(params, model_min_pixels, model_max_pixels)
    for bench in params.benchmarks:
        split = f"test_{bench.name}"
        if split in builders:
            raise ValueError(f"data.benchmarks: '{bench.name}' is listed twice (or clashes with {split})")
        builders[split] = (lambda b=bench: import_benchmark(b, model_min_pixels, model_max_pixels))
    count = prompt_tokens or prompt_tokens_upper_bound

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        reports = {split: _write_split(build(), tmp / split, params.max_prompt_tokens, count)
                   for split, build in builders.items()}
        content = hashlib.sha256(
            json.dumps({k: r.hash for k, r in sorted(reports.items())}, sort_keys=True).encode()
        ).hexdigest()
        manifest = {
            "content_hash": content,
            "splits": {k: vars(r) for k, r in reports.items()},
            "dropped_overlong": sum(r.dropped_overlong for r in reports.values()),
            "max_prompt_tokens": params.max_prompt_tokens,
            "prompt_length": prompt_length or ("custom counter" if prompt_tokens else UPPER_BOUND),
            "model_frame": {"min_pixels": model_min_pixels, "max_pixels": model_max_pixels},
            "params": params.model_dump(mode="json"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_in(new: Path, out: Path) -> None:
    """Replace ``out`` by ``new``: two renames, with the old copy restored if the second fails."""
    if not out.exists():
        os.replace(new, out)
        return
    backup = out.parent / f".{out.name}.old-{os.getpid()}"
    if backup.exists():
        shutil.rmtree(backup)
    os.replace(out, backup)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def load_manifest(out_dir: str | Path) -> dict:
    """The manifest of a staged folder."""
    return json.loads((Path(out_dir) / MANIFEST).read_text())

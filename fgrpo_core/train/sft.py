"""SFT warm start (docs/method.md#sft-warm-start) with TRL's ``SFTTrainer`` on image + text chat samples.

Objective: next-token cross-entropy on the assistant turn only,

    L(theta) = - sum_{t in assistant} log p_theta(y_t | image, prompt, y_<t) / (# assistant tokens)

summed over the effective batch (``per_device_batch_size`` x devices x accumulation steps) before
dividing, as TRL does. The conversation is exactly the rollout prompt (``prompts.build_messages``)
plus the trace, rendered by the processor's chat template (``sft_data``).

Choices and where they depart from TRL's defaults:
- precision by device: CUDA computes in bf16 under autocast with fp32 master weights (an AdamW
  step of lr 1e-6 is below bf16's resolution of the weights, so bf16 weights would not move);
  the CPU trains in fp32 (TRL turns bf16 on by default, and bf16 autocast on a CPU is slow);
- gradient checkpointing only when asked (TRL turns it on by default: ~30% more compute);
- each sample is encoded once before training, and the collator only pads and adds pixels
  (TRL's vision collator re-renders the template and re-tokenises every batch on every step);
- over-long samples are dropped, never truncated (docs/method.md#image-tokens-and-over-long-prompts);
- frozen vision tower = the whole ``visual`` module, merger included, as EasyR1's
  ``freeze_vision_tower`` (the paper's code base) does;
- the loss on CPU comes from full logits, not TRL's fused LM head (a Python tile loop without
  Triton; ``sft_trainer``);
- LoRA (peft) adapters on the language model's projections only; merged before saving, so the
  saved checkpoint has the base model's parameter names and loads in vLLM as is.

Resume: ``checkpoint-N`` folders (model, optimiser, scheduler, RNG, data position) are written
every ``save_steps`` into ``out_dir``; a new call continues from the newest complete one. The
final model is written to a temporary folder and renamed to ``out_dir/model`` (atomic).
Multi-GPU: run the same entry point under ``accelerate launch``; Trainer does the rest.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from fgrpo_core.checkpoints import MODEL_SUBDIR  # noqa: F401  out_dir/model: the final model (re-exported)
from fgrpo_core.config import SFTParams
from fgrpo_core.models.loading import load_policy, load_processor, resolve_dtype
from fgrpo_core.train.sft_data import EncodedSFTData, SFTCollator, encode_for_sft, load_staged
from fgrpo_core.train.sft_log import write_training_log
from fgrpo_core.train.threads import cpu_threads

RUN_FILE = "sft_run.json"  # what the checkpoints in out_dir were trained from
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class SFTResult:
    """What one SFT run produced."""

    model_dir: Path  # save_pretrained checkpoint (safetensors + processor)
    global_step: int  # optimiser steps done in total (resumed steps included)
    resumed_from_step: int | None  # step of the checkpoint this call continued from
    n_train: int  # samples trained on (after dropping over-long ones)
    n_dropped: int  # samples over max_length, dropped
    first_loss: float
    final_loss: float
    train_runtime_s: float  # this call's training loop
    samples_per_s: float  # this call's training throughput
    log_csv: Path
    plot_png: Path
    summary_json: Path


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------
def freeze_vision_tower(model) -> int:
    """Freeze the whole vision tower (patch embedding, blocks, merger); returns frozen weights."""
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    if visual is None:
        raise ValueError(f"{type(model).__name__} has no vision tower ('visual') to freeze")
    visual.requires_grad_(False)
    return sum(p.numel() for p in visual.parameters())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` (its trainer state is written last, so a folder
    without it was cut off while saving and is skipped)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    found = []
    for p in out_dir.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def accumulation_steps(params: SFTParams, world_size: int) -> int:
    """Effective batch = per-device batch x devices x accumulation steps (exactly)."""
    per_step = params.per_device_batch_size * world_size
    if params.effective_batch_size % per_step:
        raise ValueError(
            f"sft.effective_batch_size={params.effective_batch_size} is not a multiple of "
            f"sft.per_device_batch_size x devices = {params.per_device_batch_size} x {world_size}"
        )
    return params.effective_batch_size // per_step


def _run_identity(params: SFTParams, model_path: str | Path, data: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    # What must not change under a resumed run: logging/saving cadence may.
    p = params.model_dump(mode="json", exclude={"out_dir", "logging_steps", "save_steps"})
    return {"params": p, "model": str(model_path), "data": [[n, ds._fingerprint] for n, ds in data]}


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = [f"sft.{k}" for k in sorted(before.get("params", {}).keys() | now["params"].keys())
            if before.get("params", {}).get(k) != now["params"].get(k)]
    return keys + [k for k in ("model", "data") if before.get(k) != now[k]]


def _check_resume_matches(out_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume checkpoints that another configuration wrote (it would mix two runs)."""
    run_file = out_dir / RUN_FILE
    if latest_checkpoint(out_dir) is None or not run_file.is_file():
        return
    diff = _differences(json.loads(run_file.read_text()), identity)
    if diff:
        raise ValueError(
            f"{out_dir} holds SFT checkpoints of another run (differs in: {', '.join(diff)}); "
            "use another sft.out_dir or remove its checkpoint-* folders"
        )


def _sft_config(params: SFTParams, out_dir: Path, compute_dtype: torch.dtype, on_cuda: bool):
    from trl import SFTConfig

    if not 0 <= params.warmup_ratio < 1:
        raise ValueError(f"sft.warmup_ratio must lie in [0, 1), got {params.warmup_ratio}")
    args = SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=params.epochs,
        learning_rate=params.lr,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_ratio,  # a float < 1 is a share of all steps (transformers 5)
        weight_decay=params.weight_decay,
        per_device_train_batch_size=params.per_device_batch_size,
        gradient_checkpointing=params.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if params.gradient_checkpointing else None,
        bf16=compute_dtype == torch.bfloat16,
        fp16=compute_dtype == torch.float16,
        use_cpu=not on_cuda,
        max_length=None,  # lengths are enforced when encoding (drop, never truncate)
        dataset_kwargs={"skip_prepare_dataset": True},  # encoded once by sft_data
        remove_unused_columns=False,  # the collator needs the image column
        logging_steps=params.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=1,  # older checkpoints are removed only after a newer one is complete
        seed=params.seed,
        data_seed=params.seed,
        report_to="none",
        dataloader_num_workers=params.dataloader_workers,
        dataloader_pin_memory=on_cuda,
        ddp_find_unused_parameters=False,  # every trainable weight gets a gradient (all samples have images)
        disable_tqdm=True,
    )
    args.gradient_accumulation_steps = accumulation_steps(params, args.world_size)
    return args


def _lora_config(params: SFTParams):
    from peft import LoraConfig

    return LoraConfig(
        r=params.lora_r,
        lora_alpha=2 * params.lora_r,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )


def _save_final(trainer, processor, out_dir: Path, lora: bool) -> Path:
    """Write ``out_dir/model`` atomically: save into a temporary folder, then rename."""
    final = out_dir / MODEL_SUBDIR
    accelerator = trainer.accelerator
    if lora:
        model = accelerator.unwrap_model(trainer.model).merge_and_unload()
        state_dict = None
    else:
        state_dict = accelerator.get_state_dict(trainer.model)  # gathers shards (FSDP, ZeRO-3) on all ranks
        model = accelerator.unwrap_model(trainer.model)
    if trainer.is_world_process_zero():
        tmp = out_dir / f".{MODEL_SUBDIR}.tmp-{os.getpid()}"
        old = out_dir / f".{MODEL_SUBDIR}.old-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(tmp)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
@dataclass
class SFTSetup:
    """A ready-to-train ``SFTTrainer`` and what it was built from (``run_sft`` trains it; the
    benchmark reads its batches)."""

    trainer: Any  # trl.SFTTrainer
    processor: Any
    data: EncodedSFTData
    out_dir: Path
    identity: dict[str, Any]  # written to out_dir/sft_run.json when training starts
    compute_dtype: torch.dtype


def build_sft_trainer(
    params: SFTParams,
    model_path: str | Path,
    data_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    callbacks: Sequence[Any] = (),
) -> SFTSetup:
    """Load the policy and processor, encode the data once, configure TRL's ``SFTTrainer``."""
    from fgrpo_core.train.sft_trainer import FGRPOSFTTrainer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    on_cuda = torch.cuda.is_available()
    compute_dtype = resolve_dtype(dtype, "cuda" if on_cuda else "cpu")

    sources = [(str(p), load_staged(p)) for p in data_paths]
    if not sources:
        raise ValueError("run_sft: no SFT data paths given")
    identity = _run_identity(params, model_path, sources)
    _check_resume_matches(out_dir, identity)

    processor = load_processor(model_path, trust_remote_code, min_pixels=min_pixels, max_pixels=max_pixels)
    from accelerate import PartialState

    with PartialState().main_process_first():  # one process writes the encoding, the others read it
        data = encode_for_sft(sources, processor, params.max_length, out_dir / "encoded")
    # fp32 master weights everywhere; the compute dtype enters through autocast (see above).
    model = load_policy(model_path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    if params.freeze_vision:
        freeze_vision_tower(model)
    args = _sft_config(params, out_dir, compute_dtype, on_cuda)
    trainer = FGRPOSFTTrainer(
        fused_lm_head=on_cuda,  # TRL's chunked LM head: Triton on CUDA, a slow Python loop on CPU
        model=model,
        args=args,
        data_collator=SFTCollator(processor),
        train_dataset=data.dataset,
        processing_class=processor,
        peft_config=_lora_config(params) if params.lora else None,
        callbacks=list(callbacks),
    )
    return SFTSetup(trainer, processor, data, out_dir, identity, compute_dtype)


def run_sft(
    params: SFTParams,
    model_path: str | Path,
    data_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    callbacks: Sequence[Any] = (),
) -> SFTResult:
    """Train the policy at ``model_path`` on the staged SFT split(s) at ``data_paths``.

    Writes into ``out_dir``: ``checkpoint-N/`` (resumable state), ``model/`` (the final
    checkpoint), ``train_log.csv``, ``loss.png``, ``summary.json``, ``encoded/`` (the one-time
    encoding). An interrupted call resumes from the newest complete checkpoint. ``dtype`` is the
    compute precision (``auto``: bf16 on CUDA, fp32 on CPU). ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects.
    """
    with cpu_threads(params.cpu_threads, field="sft.cpu_threads"):
        setup = build_sft_trainer(
            params, model_path, data_paths, out_dir, dtype=dtype, trust_remote_code=trust_remote_code,
            min_pixels=min_pixels, max_pixels=max_pixels, callbacks=callbacks,
        )
        trainer, data, out_dir = setup.trainer, setup.data, setup.out_dir
        resume = latest_checkpoint(out_dir)
        if trainer.is_world_process_zero():
            (out_dir / RUN_FILE).write_text(json.dumps(setup.identity, indent=1, sort_keys=True))
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        model_dir = _save_final(trainer, setup.processor, out_dir, params.lora)

    resumed_from = int(_CHECKPOINT.match(resume.name).group(1)) if resume else None
    runtime = float(output.metrics.get("train_runtime", math.nan))
    # Trainer's own samples/s counts every epoch's samples, also those a resumed call skipped.
    done = (trainer.state.global_step - (resumed_from or 0)) * params.effective_batch_size
    throughput = done / runtime if runtime > 0 else math.nan
    log = write_training_log(
        trainer.state.log_history,
        out_dir,
        summary={
            "model_dir": str(model_dir),
            "global_step": trainer.state.global_step,
            "resumed_from_step": resumed_from,
            "n_source": data.n_source,
            "n_train": len(data.dataset),
            "n_dropped": len(data.dropped_ids),
            "dropped_ids": data.dropped_ids[:100],
            "longest_kept_tokens": data.longest_kept,
            "assistant_tokens": data.assistant_tokens,
            "effective_batch_size": params.effective_batch_size,
            "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
            "devices": trainer.args.world_size,
            "compute_dtype": str(setup.compute_dtype).removeprefix("torch."),
            "train_runtime_s": runtime,
            "train_samples_per_s": throughput,
            "params": params.model_dump(mode="json"),
        },
        write=trainer.is_world_process_zero(),
    )
    return SFTResult(
        model_dir=model_dir,
        global_step=trainer.state.global_step,
        resumed_from_step=resumed_from,
        n_train=len(data.dataset),
        n_dropped=len(data.dropped_ids),
        first_loss=log.first_loss,
        final_loss=log.final_loss,
        train_runtime_s=runtime,
        samples_per_s=throughput,
        log_csv=log.csv_path,
        plot_png=log.png_path,
        summary_json=log.summary_path,
    )

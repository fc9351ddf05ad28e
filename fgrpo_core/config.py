"""Typed parameters of every stage, one class per stage, each field documented once.

A params file (``params/<preset>.yaml``) is one :class:`Params`. Unknown keys are an error that
names the key (pydantic ``extra="forbid"``), so a typo never silently falls back to a default.
Defaults are the paper's values (docs/method.md#numbers-and-their-params-keys); the tiny CPU preset overrides what must shrink.

Stages receive only their own section (``params.fgrpo``, ``params.sft``...), never the whole
object: ``fgrpo_core`` functions take the smallest typed input that does the job.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

# Every numeric field declares its valid range (Field ge/gt/le/lt) and every enumerated field its
# values (Literal/Enum); rules between fields are in ``Params._cross_field_rules``. A test walks
# every field with out-of-range values and fails on a numeric field without a declared range.

# The synthetic generator's task families (fgrpo_core.data.synthetic.TASKS; a test keeps them equal).
SyntheticTask = Literal["relation_2d", "counting", "depth_order", "relative_distance", "relative_size",
                        "localization", "perspective"]
# The benchmarks with an importer (fgrpo_core.data.importers.IMPORTERS; a test keeps them equal).
BenchmarkName = Literal["cvbench_2d", "cvbench_3d", "mindcube", "mmvp", "omnispatial", "realworldqa", "sat"]
# transformers.SchedulerType values (a test keeps them equal; config does not import transformers).
LRScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                      "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                      "warmup_stable_decay", "greedy"]


class _Section(BaseModel):
    # allow_inf_nan=False: a NaN passes every range comparison silently; refuse it (and inf) outright.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class TinyModelParams(_Section):
    """Shape of the locally built tiny Qwen2.5-VL (random weights, real model classes)."""

    seed: int = Field(0, ge=0, description="Seed of the random weights; same seed, same bytes.")
    hidden_size: int = Field(128, ge=1, description="Text hidden size.")
    num_hidden_layers: int = Field(2, ge=1, description="Text decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Text attention heads (head_dim >= 32 for vLLM CPU).")
    num_key_value_heads: int = Field(2, ge=1, description="Text KV heads (GQA).")
    intermediate_size: int = Field(256, ge=1, description="Text MLP width.")
    vision_hidden_size: int = Field(64, ge=1, description="Vision tower width.")
    vision_depth: int = Field(2, ge=1, description="Vision tower blocks.")
    vision_num_heads: int = Field(2, ge=1, description="Vision attention heads.")
    vision_intermediate_size: int = Field(128, ge=1, description="Vision MLP width.")
    max_position_embeddings: int = Field(4096, ge=1, description="Longest sequence the model accepts.")
    init_std: float = Field(
        0.02, gt=0, le=1,
        description="Std of the random initial weights (transformers' initializer_range, text and vision). "
        "0.02 is transformers' default; at this size its near-uniform attention leaves the image unused for "
        "hundreds of steps (docs/reproduction.md), and 0.08 lets a tiny model start reading it within 200.",
    )


class ModelParams(_Section):
    """Which policy to start from and how to load it."""

    path: str = Field(
        "models/tiny-qwen2.5-vl",
        description="Local directory (or hub id on machines with a hub) of the base policy.",
    )
    build_tiny: bool = Field(
        False, description="Build the tiny random Qwen2.5-VL at `path` if it does not exist."
    )
    tiny: TinyModelParams = Field(default_factory=TinyModelParams)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPU, float32 on CPU."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model repos to run their own code. Off unless you trust them."
    )
    min_pixels: int = Field(28 * 28 * 4, ge=28 * 28, description="Processor lower bound on image pixels.")
    max_pixels: int = Field(28 * 28 * 1280, ge=28 * 28, description="Processor upper bound on image pixels.")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
class SyntheticDataParams(_Section):
    """The synthetic spatial-reasoning benchmark (scenes with boxes and scene graphs)."""

    enabled: bool = Field(True, description="Generate the synthetic benchmark.")
    seed: int = Field(0, ge=0, description="Generator seed; same seed, same dataset hash.")
    image_size: int = Field(112, ge=56, multiple_of=28, description="Square image side in pixels (multiple of 28).")
    min_objects: int = Field(2, ge=2, le=6, description="Fewest objects per scene.")
    max_objects: int = Field(4, ge=2, le=6, description="Most objects per scene.")
    tasks: list[SyntheticTask] = Field(
        default_factory=lambda: [
            "relation_2d",
            "counting",
            "depth_order",
            "relative_distance",
            "relative_size",
            "localization",
            "perspective",
        ],
        description="Task families to generate.",
    )
    n_sft: int = Field(512, ge=0, description="Samples in the SFT split (with traces).")
    n_rl: int = Field(256, ge=0, description="Samples in the RL prompt split.")
    n_val: int = Field(64, ge=0, description="Samples in the validation split.")
    n_test: int = Field(128, ge=0, description="Samples in the synthetic test split.")
    inconsistent_share: float = Field(
        0.2, ge=0.0, le=1.0, description="SFT traces whose reasoning concludes another option (answer right)."
    )
    hallucination_share: float = Field(
        0.2, ge=0.0, le=1.0, description="SFT traces with a sentence about an object/relation not in the scene."
    )
    bad_box_share: float = Field(0.2, ge=0.0, le=1.0, description="SFT traces with jittered or misplaced boxes.")
    position_cue: float = Field(
        0.0, ge=0.0, le=127.0,
        description="Levels (of 255) of a colour ramp painted over the whole image: red rises left to right and "
        "blue top to bottom by 2x this much, so every pixel, objects included, shows where it is (as CoordConv's "
        "coordinate channels). 0 = off, the scenes as drawn. For tiny random models only: their vision tower has "
        "no absolute position (2-D rotary only) and does not learn positions in minutes without it "
        "(docs/reproduction.md). Object fills are then no longer exact colours.",
    )


class BenchmarkImport(_Section):
    """One real benchmark to import from a local download."""

    name: BenchmarkName = Field(..., description="cvbench_2d, cvbench_3d, mindcube, mmvp, omnispatial, realworldqa, sat.")
    path: str = Field(..., description="Local path of the download: a folder (docs/data.md lists the file each "
                      "benchmark's importer takes from it), a zip archive as downloaded, an HF dataset dir, "
                      "parquet, JSON/JSONL or CSV.")
    limit: int | None = Field(None, ge=1, description="Import at most this many rows.")
    split: str | None = Field(
        None, description="Split of a saved DatasetDict to read; None = 'test', or the only split."
    )
    image_root: str | None = Field(
        None, description="Folder that relative image paths start from; None = beside the annotation file."
    )


class DataParams(_Section):
    """Data staging."""

    out_dir: str = Field("data/staged", description="Where staged splits are written.")
    synthetic: SyntheticDataParams = Field(default_factory=SyntheticDataParams)
    benchmarks: list[BenchmarkImport] = Field(default_factory=list)
    max_prompt_tokens: int = Field(
        1024, ge=1, description="Prompts longer than this are dropped at staging, never truncated."
    )


# --------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------
class SFTParams(_Section):
    """SFT warm start with TRL's SFTTrainer (docs/method.md#sft-warm-start)."""

    out_dir: str = Field("checkpoints/sft", description="Where the SFT checkpoint is saved.")
    epochs: float = Field(3.0, gt=0, description="Passes over the SFT traces (paper: 3).")
    lr: float = Field(1e-6, gt=0, description="Peak learning rate (paper: 1e-6).")
    lr_scheduler: LRScheduler = Field("cosine", description="LR schedule (paper: cosine).")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Warm-up share of steps (paper: 0.03).")
    per_device_batch_size: int = Field(4, ge=1, description="Micro-batch per device.")
    effective_batch_size: int = Field(32, ge=1, description="Global batch, via accumulation (paper: 32).")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (paper: 0.01).")
    max_length: int = Field(2048, ge=1, description="Longest training sequence; longer samples dropped.")
    freeze_vision: bool = Field(True, description="Freeze the vision tower (paper: frozen).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many optimiser steps.")
    logging_steps: int = Field(1, ge=1, description="Log loss every this many steps.")
    seed: int = Field(0, ge=0, description="Trainer seed.")
    dataloader_workers: int = Field(
        4, ge=0, description="DataLoader processes running the image processor beside training (0 on small CPUs)."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads while SFT runs (None: torch's default). 1 for tiny models on a shared CPU."
    )


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------
class RolloutParams(_Section):
    """Sampling the policy (vLLM, or transformers generate for reference)."""

    engine: Literal["vllm", "hf"] = Field("vllm", description="Rollout engine.")
    group_size: int = Field(5, ge=2, description="G: completions per prompt (paper: 5); >= 2, a group of one has no advantage.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling.")
    max_tokens: int = Field(1024, ge=1, description="Longest response in tokens (paper: 1024).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs per engine).")
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0, description="vLLM share of GPU memory.")
    cpu_kvcache_gib: int = Field(1, ge=1, description="vLLM CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE).")
    max_model_len: int = Field(2048, ge=1, description="vLLM context length.")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs / torch.compile in vLLM.")


# --------------------------------------------------------------------------------------------
# Judges
# --------------------------------------------------------------------------------------------
class JudgeEndpoint(_Section):
    """A model judge behind vLLM (offline) or an OpenAI-compatible HTTP endpoint."""

    backend: Literal["vllm", "openai"] = Field("openai", description="Where the judge runs.")
    model: str = Field(..., description="Model name (HTTP) or local path (vLLM).")
    base_url: str | None = Field(None, description="HTTP endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the key (never the key)."
    )
    api_key_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the key; the flows and CLI commands read it "
        "and export it into the variable named by api_key_env when that is unset (the environment "
        "wins); the key is never written anywhere.",
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0.0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, description="Retries on transient errors (5xx, timeouts) only.")
    retry_backoff_s: float = Field(
        0.5, ge=0.0, description="First retry waits this long, each later one twice as long as the last."
    )
    max_tokens: int = Field(256, ge=1, description="Judge response budget.")

    @model_validator(mode="after")
    def _block_needs_a_variable(self) -> "JudgeEndpoint":
        if self.api_key_block is not None and self.api_key_env is None:
            raise ValueError(
                f"api_key_block {self.api_key_block!r} needs api_key_env: the name of the environment "
                "variable the key is exported into (e.g. FGRPO_JUDGE_API_KEY)"
            )
        return self


class JudgeParams(_Section):
    """Who scores consistency (R_C) and semantic grounding (R_S)."""

    consistency: Literal["exact", "model"] = Field(
        "exact", description="exact = scene-graph verifier (synthetic data); model = judge below."
    )
    semantic: Literal["exact", "model"] = Field("exact", description="As above, for R_S.")
    model_judge: JudgeEndpoint | None = Field(None, description="Model judge, when one is used.")
    cache_dir: str = Field("runs/judge-cache", description="Persistent verdict cache.")


# --------------------------------------------------------------------------------------------
# FGRPO rounds
# --------------------------------------------------------------------------------------------
class AdvantageMode(str, Enum):
    """One switch per row of the paper's ablation table (docs/method.md#ablation-rows)."""

    grpo_task = "grpo_task"  # GRPO-T: task reward only
    reward_sum = "reward_sum"  # R_C, R_G added to the reward, jointly normalised
    gate = "gate"  # R_C, R_G as multiplicative gates on the task reward
    fgrpo_fixed = "fgrpo_fixed"  # decoupled normalisation, lambda fixed at init
    fgrpo = "fgrpo"  # decoupled normalisation, adaptive lambda (dual ascent)


class FGRPOParams(_Section):
    """The constrained policy update (docs/method.md#constrained-objective)."""

    init_from: str | None = Field(
        None, description="Policy to start from and KL reference; None = the SFT checkpoint (sft.out_dir)."
    )
    out_dir: str = Field("checkpoints/fgrpo", description="Round checkpoints: <out_dir>/round-<r>.")
    run_dir: str = Field("runs", description="Rollouts, scores, multiplier history, metrics.")
    mode: AdvantageMode = Field(AdvantageMode.fgrpo, description="Ablation row.")
    constraints: list[Literal["consistency", "semantic", "spatial"]] = Field(
        default_factory=lambda: ["consistency", "semantic", "spatial"],
        description="Which constraints are active (e.g. ['consistency'] for that ablation).",
    )
    tau_consistency: float = Field(0.95, ge=0.0, le=1.0, description="tau_C (paper: 0.95).")
    tau_semantic: float = Field(0.95, ge=0.0, le=1.0, description="tau_S (paper: 0.95).")
    tau_spatial: float = Field(0.65, ge=0.0, le=1.0, description="tau_G (paper: 0.65; 0.7 in one place).")
    lambda_lr: float = Field(0.05, ge=0.0, description="eta_lambda, dual step size (paper: 0.05).")
    lambda_max: float = Field(5.0, ge=0.0, description="lambda_max (paper: 5).")
    lambda_init: float = Field(1.0, ge=0.0, description="lambda_k(0) (paper: 1).")
    lambda_min_count: int = Field(8, ge=0, description="Skip a dual step with fewer applicable rollouts (paper: 8).")
    adv_eps: float = Field(1e-4, gt=0.0, description="epsilon in (r - mu) / (sigma + epsilon) (ours, as GDPO/TRL: 1e-4).")
    adv_std_unbiased: bool = Field(
        True, description="Group and whitening std divide by n - 1 (as TRL/verl); False = by n."
    )
    whiten: bool = Field(
        True, description="Whiten the decoupled advantage over the batch (fgrpo, fgrpo_fixed modes)."
    )
    clip_low: float = Field(0.2, ge=0.0, lt=1.0, description="epsilon_low of the clipped surrogate (paper: 0.2).")
    clip_high: float = Field(0.28, ge=0.0, description="epsilon_high (paper: 0.28).")
    beta: float = Field(0.01, ge=0.0, description="KL coefficient to the SFT reference (paper: 0.01).")
    loss_aggregation: Literal["token_mean", "sequence_mean", "fixed_length"] = Field(
        "token_mean", description="How per-token losses are averaged."
    )
    loss_max_length: int | None = Field(
        None, ge=1, description="fixed_length divides by N * this; None = rollout.max_tokens."
    )
    lr: float = Field(1e-6, gt=0.0, description="AdamW learning rate (paper: 1e-6).")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (paper: 0.01).")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradient norm clip (paper: 1.0).")
    rounds: int = Field(1000, ge=1, description="Policy steps (paper: ~1000).")
    rollout_batch: int = Field(128, ge=1, description="Prompts per round (paper: 128).")
    update_batch: int = Field(64, ge=1, description="Prompts per optimiser mini-batch (paper: 64).")
    micro_batch: int = Field(8, ge=1, description="Sequences per forward/backward (memory knob).")
    epochs: int = Field(
        1, ge=1, description="Passes over a round's rollouts per policy step. The paper reports 3 epochs "
        "(read as 3 passes over each RL batch); its code base EasyR1 names two counts, passes per batch "
        "(worker.actor.ppo_epochs, default 1) and passes over the prompt set (trainer.total_epochs), and the "
        "paper's ~1000 steps x 128 prompts is ~3 passes over a ~43K prompt set. Our default 1 keeps every "
        "policy step on fresh on-policy rollouts (EasyR1's default); set 3 to take 3 passes per batch.")
    keep_checkpoints: Literal["all", "latest"] = Field("latest", description="Round checkpoints kept.")
    freeze_vision: bool = Field(
        True, description="Keep the vision tower fixed during RL (paper: frozen in RL as in SFT; the LLM and "
        "projector train). The tiny presets set false: their random vision tower must learn to see.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations (memory for compute).")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads during the policy update (None: torch's default). "
        "1 for tiny models on a shared CPU.")
    seed: int = Field(0, ge=0, description="Seed of sampling, data order and the update.")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
class EvalParams(_Section):
    """Greedy pass@1 on every staged test split (docs/method.md#evaluation)."""

    out_path: str = Field("metrics/eval.json", description="DVC metrics file.")
    report_dir: str = Field("reports", description="Markdown report and PNG plots.")
    max_tokens: int = Field(1024, ge=1, description="Longest response.")
    bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples for intervals.")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Coverage of the bootstrap percentile intervals.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap resamples (same seed, same intervals).")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many samples per split.")
    benchmarks: list[str] | None = Field(
        None, description="Test splits to evaluate (benchmark names); None = every test_* split staged."
    )
    circular: list[str] = Field(
        default_factory=lambda: ["sat"],
        description="Benchmarks scored by circular evaluation (every option rotation must be right).",
    )
    judge_scope: Literal["all", "correct"] = Field(
        "all",
        description="Judge consistency/semantics on every parsed answer (all) or only correct ones "
        "(correct: the training mask).",
    )
    samples_path: str = Field(
        "metrics/eval_samples.jsonl", description="Per-sample results (for paired comparisons)."
    )
    min_sft_margin: float = Field(
        0.10, ge=-1.0, le=1.0,
        description="fgrpo repro trains RL rows only when SFT's per-order accuracy on the val split exceeds "
        "chance (mean 1/k over its questions) by at least this much (absolute; -1 turns the check off).",
    )
    tolerances: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=lambda: {"accuracy": 0.02, "inconsistency_rate": 0.02},
        description="Regression gate: allowed change per metric in the bad direction (fractions; "
        "a drop for accuracy/grounding, a rise for inconsistency_rate).",
    )


class StorageParams(_Section):
    """Remote storage for DVC and artifacts (credentials come from the environment only)."""

    remote_url: str | None = Field(None, description="e.g. s3://bucket/fgrpo")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. MinIO.")


# --------------------------------------------------------------------------------------------
# Root
# --------------------------------------------------------------------------------------------
class Params(_Section):
    """A whole preset."""

    name: str = Field("custom", description="Preset name, shown in reports.")
    seed: int = Field(0, ge=0, description="Global seed.")
    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams = Field(default_factory=DataParams)
    sft: SFTParams = Field(default_factory=SFTParams)
    rollout: RolloutParams = Field(default_factory=RolloutParams)
    judges: JudgeParams = Field(default_factory=JudgeParams)
    fgrpo: FGRPOParams = Field(default_factory=FGRPOParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    storage: StorageParams = Field(default_factory=StorageParams)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Params":
        problems = cross_field_problems(self)
        if problems:
            raise PydanticCustomError("cross_field", "\n  ".join(problems))
        return self


def cross_field_problems(p: Params) -> list[str]:
    """Rules between fields (each field's own range is on the field), one line per broken rule,
    naming the dotted keys, their values and what is allowed. Checked at params load, before any
    stage runs."""
    out: list[str] = []

    def rule(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    m, t = p.model, p.model.tiny
    rule(m.min_pixels <= m.max_pixels,
         f"model.min_pixels = {m.min_pixels} must be <= model.max_pixels = {m.max_pixels}")
    for heads, width, wname in ((t.num_attention_heads, t.hidden_size, "hidden_size"),
                                (t.vision_num_heads, t.vision_hidden_size, "vision_hidden_size")):
        hname = "num_attention_heads" if wname == "hidden_size" else "vision_num_heads"
        rule(width % heads == 0, f"model.tiny.{wname} = {width} must be a multiple of model.tiny.{hname} = {heads}")
    rule(t.num_attention_heads % t.num_key_value_heads == 0,
         f"model.tiny.num_attention_heads = {t.num_attention_heads} must be a multiple of "
         f"model.tiny.num_key_value_heads = {t.num_key_value_heads}")
    syn = p.data.synthetic
    rule(syn.min_objects <= syn.max_objects, f"data.synthetic.min_objects = {syn.min_objects} must be <= "
         f"data.synthetic.max_objects = {syn.max_objects}")
    s = p.sft
    rule(s.effective_batch_size % s.per_device_batch_size == 0,
         f"sft.effective_batch_size = {s.effective_batch_size} must be a multiple of sft.per_device_batch_size = "
         f"{s.per_device_batch_size} (gradient accumulation makes up the rest)")
    f = p.fgrpo
    rule(f.update_batch <= f.rollout_batch, f"fgrpo.update_batch = {f.update_batch} must be <= fgrpo.rollout_batch "
         f"= {f.rollout_batch} (a mini-batch holds prompts of one round; an uneven last mini-batch is allowed)")
    rule(f.lambda_init <= f.lambda_max, f"fgrpo.lambda_init = {f.lambda_init} must be <= fgrpo.lambda_max = "
         f"{f.lambda_max} (lambda lives in [0, lambda_max])")
    rule(len(set(f.constraints)) == len(f.constraints),
         f"fgrpo.constraints = {list(f.constraints)} must not repeat a constraint")
    uses_model = [k for k in ("consistency", "semantic") if getattr(p.judges, k) == "model"]
    rule(not uses_model or p.judges.model_judge is not None,
         f"judges.model_judge is required: judges.{uses_model[0] if uses_model else ''} is 'model'")
    return out


class ParamsError(ValueError):
    """A params file or override is invalid; the message names the file and key."""


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid params in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        elif e["type"] == "cross_field":  # the message names its keys and values
            lines.append(f"  {e['msg']}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ParamsError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["fgrpo.rounds=3", "rollout.group_size=4"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ParamsError(f"override '{item}' is not key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def params_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(source, err)) from None


def load_params(path: str | Path, overrides: list[str] | None = None) -> Params:
    """Read a preset file, apply ``key=value`` overrides, validate (unknown keys rejected)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"params file {path} must hold a mapping at the top level")
    raw = _merge(raw, parse_overrides(overrides))
    return params_from_dict(raw, source=str(path))


def section_hash(section: BaseModel) -> str:
    """Stable content hash of a params section (cache keys for Prefect, agreeing with DVC)."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

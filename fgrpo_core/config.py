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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class TinyModelParams(_Section):
    """Shape of the locally built tiny Qwen2.5-VL (random weights, real model classes)."""

    seed: int = Field(0, description="Seed of the random weights; same seed, same bytes.")
    hidden_size: int = Field(128, description="Text hidden size.")
    num_hidden_layers: int = Field(2, description="Text decoder layers.")
    num_attention_heads: int = Field(4, description="Text attention heads (head_dim >= 32 for vLLM CPU).")
    num_key_value_heads: int = Field(2, description="Text KV heads (GQA).")
    intermediate_size: int = Field(256, description="Text MLP width.")
    vision_hidden_size: int = Field(64, description="Vision tower width.")
    vision_depth: int = Field(2, description="Vision tower blocks.")
    vision_num_heads: int = Field(2, description="Vision attention heads.")
    vision_intermediate_size: int = Field(128, description="Vision MLP width.")
    max_position_embeddings: int = Field(4096, description="Longest sequence the model accepts.")


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
    min_pixels: int = Field(28 * 28 * 4, description="Processor lower bound on image pixels.")
    max_pixels: int = Field(28 * 28 * 1280, description="Processor upper bound on image pixels.")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
class SyntheticDataParams(_Section):
    """The synthetic spatial-reasoning benchmark (scenes with boxes and scene graphs)."""

    enabled: bool = Field(True, description="Generate the synthetic benchmark.")
    seed: int = Field(0, description="Generator seed; same seed, same dataset hash.")
    image_size: int = Field(112, description="Square image side in pixels (multiple of 28).")
    min_objects: int = Field(2, description="Fewest objects per scene.")
    max_objects: int = Field(4, description="Most objects per scene.")
    tasks: list[str] = Field(
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
    n_sft: int = Field(512, description="Samples in the SFT split (with traces).")
    n_rl: int = Field(256, description="Samples in the RL prompt split.")
    n_val: int = Field(64, description="Samples in the validation split.")
    n_test: int = Field(128, description="Samples in the synthetic test split.")
    inconsistent_share: float = Field(
        0.2, description="SFT traces whose reasoning concludes another option (answer right)."
    )
    hallucination_share: float = Field(
        0.2, description="SFT traces with a sentence about an object/relation not in the scene."
    )
    bad_box_share: float = Field(0.2, description="SFT traces with jittered or misplaced boxes.")


class BenchmarkImport(_Section):
    """One real benchmark to import from a local download."""

    name: str = Field(..., description="cvbench_2d, cvbench_3d, mindcube, mmvp, omnispatial, realworldqa, sat.")
    path: str = Field(..., description="Local path of the download (HF dataset dir, parquet, or JSONL).")
    limit: int | None = Field(None, description="Import at most this many rows.")
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
        1024, description="Prompts longer than this are dropped at staging, never truncated."
    )


# --------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------
class SFTParams(_Section):
    """SFT warm start with TRL's SFTTrainer (docs/method.md#sft-warm-start)."""

    out_dir: str = Field("checkpoints/sft", description="Where the SFT checkpoint is saved.")
    epochs: float = Field(3.0, description="Passes over the SFT traces (paper: 3).")
    lr: float = Field(1e-6, description="Peak learning rate (paper: 1e-6).")
    lr_scheduler: str = Field("cosine", description="LR schedule (paper: cosine).")
    warmup_ratio: float = Field(0.03, description="Warm-up share of steps (paper: 0.03).")
    per_device_batch_size: int = Field(4, description="Micro-batch per device.")
    effective_batch_size: int = Field(32, description="Global batch, via accumulation (paper: 32).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    max_length: int = Field(2048, description="Longest training sequence; longer samples dropped.")
    freeze_vision: bool = Field(True, description="Freeze the vision tower (paper: frozen).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(16, description="LoRA rank.")
    save_steps: int = Field(50, description="Checkpoint every this many optimiser steps.")
    logging_steps: int = Field(1, description="Log loss every this many steps.")
    seed: int = Field(0, description="Trainer seed.")
    dataloader_workers: int = Field(
        4, description="DataLoader processes running the image processor beside training (0 on small CPUs)."
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
    group_size: int = Field(5, description="G: completions per prompt (paper: 5).")
    temperature: float = Field(1.0, description="Sampling temperature.")
    top_p: float = Field(1.0, description="Nucleus sampling.")
    max_tokens: int = Field(1024, description="Longest response in tokens (paper: 1024).")
    tensor_parallel_size: int = Field(1, description="vLLM tensor parallelism (GPUs per engine).")
    gpu_memory_utilization: float = Field(0.5, description="vLLM share of GPU memory.")
    cpu_kvcache_gib: int = Field(1, description="vLLM CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE).")
    max_model_len: int = Field(2048, description="vLLM context length.")
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
    max_concurrency: int = Field(8, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, description="Per-request timeout.")
    max_retries: int = Field(3, description="Retries on transient errors (5xx, timeouts) only.")
    retry_backoff_s: float = Field(
        0.5, description="First retry waits this long, each later one twice as long as the last."
    )
    max_tokens: int = Field(256, description="Judge response budget.")

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
    tau_consistency: float = Field(0.95, description="tau_C (paper: 0.95).")
    tau_semantic: float = Field(0.95, description="tau_S (paper: 0.95).")
    tau_spatial: float = Field(0.65, description="tau_G (paper: 0.65; 0.7 in one place).")
    lambda_lr: float = Field(0.05, description="eta_lambda, dual step size (paper: 0.05).")
    lambda_max: float = Field(5.0, description="lambda_max (paper: 5).")
    lambda_init: float = Field(1.0, description="lambda_k(0) (paper: 1).")
    lambda_min_count: int = Field(8, description="Skip a dual step with fewer applicable rollouts.")
    adv_eps: float = Field(1e-4, description="epsilon in (r - mu) / (sigma + epsilon).")
    adv_std_unbiased: bool = Field(
        True, description="Group and whitening std divide by n - 1 (as TRL/verl); False = by n."
    )
    whiten: bool = Field(
        True, description="Whiten the decoupled advantage over the batch (fgrpo, fgrpo_fixed modes)."
    )
    clip_low: float = Field(0.2, description="epsilon_low of the clipped surrogate (paper: 0.2).")
    clip_high: float = Field(0.28, description="epsilon_high (paper: 0.28).")
    beta: float = Field(0.01, description="KL coefficient to the SFT reference (paper: 0.01).")
    loss_aggregation: Literal["token_mean", "sequence_mean", "fixed_length"] = Field(
        "token_mean", description="How per-token losses are averaged."
    )
    loss_max_length: int | None = Field(
        None, description="fixed_length divides by N * this; None = rollout.max_tokens."
    )
    lr: float = Field(1e-6, description="AdamW learning rate (paper: 1e-6).")
    weight_decay: float = Field(0.01, description="AdamW weight decay (paper: 0.01).")
    grad_clip: float = Field(1.0, description="Gradient norm clip (paper: 1.0).")
    rounds: int = Field(1000, description="Policy steps (paper: ~1000).")
    rollout_batch: int = Field(128, description="Prompts per round (paper: 128).")
    update_batch: int = Field(64, description="Prompts per optimiser mini-batch (paper: 64).")
    micro_batch: int = Field(8, description="Sequences per forward/backward (memory knob).")
    epochs: int = Field(1, description="Passes over a round's rollouts per policy step.")
    keep_checkpoints: Literal["all", "latest"] = Field("latest", description="Round checkpoints kept.")
    freeze_vision: bool = Field(False, description="Keep the vision tower fixed during RL.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations (memory for compute).")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads during the policy update (None: torch's default). "
        "1 for tiny models on a shared CPU.")
    seed: int = Field(0, description="Seed of sampling, data order and the update.")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
class EvalParams(_Section):
    """Greedy pass@1 on every staged test split (docs/method.md#evaluation)."""

    out_path: str = Field("metrics/eval.json", description="DVC metrics file.")
    report_dir: str = Field("reports", description="Markdown report and PNG plots.")
    max_tokens: int = Field(1024, description="Longest response.")
    bootstrap: int = Field(1000, description="Bootstrap resamples for intervals.")
    confidence: float = Field(0.95, description="Coverage of the bootstrap percentile intervals.")
    seed: int = Field(0, description="Seed of the bootstrap resamples (same seed, same intervals).")
    limit: int | None = Field(None, description="Evaluate at most this many samples per split.")
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
    tolerances: dict[str, float] = Field(
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
    seed: int = Field(0, description="Global seed.")
    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams = Field(default_factory=DataParams)
    sft: SFTParams = Field(default_factory=SFTParams)
    rollout: RolloutParams = Field(default_factory=RolloutParams)
    judges: JudgeParams = Field(default_factory=JudgeParams)
    fgrpo: FGRPOParams = Field(default_factory=FGRPOParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    storage: StorageParams = Field(default_factory=StorageParams)


class ParamsError(ValueError):
    """A params file or override is invalid; the message names the file and key."""


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid params in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
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

"""First GPU check: the FGRPO update at Qwen2.5-VL-3B shape, its speed and memory (issue 21).

    bash bench/gpu_check.sh                                   # on the GPU machine (H200)
    bash bench/gpu_check.sh --device cpu --shape tiny ...     # the CPU dry run (tests/test_gpu_check.py)

What it runs, in phases, each under a time budget (a phase that would overrun is cut short or
skipped, and the figures gathered so far are written to the JSON after every phase):

  matmul    a bf16 matrix product (8192^3 on CUDA), the machine's achievable rate, measured here
  build     Qwen2_5_VLForConditionalGeneration from the 3B config below (the hub's
            Qwen2.5-VL-3B-Instruct config.json, written out: there is no hub on that machine),
            random weights, float32, built directly on the device; the reference is a copy
  update    fgrpo_core's own update path, as ``FGRPOTrainer.update_step`` runs it minus the files:
            advantages (``compute_advantages``) -> ``PolicyUpdater.step`` -> dual ascent
            (``DualAscent.update``), with the preset's settings (params/qwen2.5-vl-3b.yaml:
            float32 master weights, accelerate bf16 mixed precision, gradient checkpointing,
            micro_batch, freeze_vision) on a synthetic round of the paper's shape: prompts with one
            448x448 image (1024 patches, 256 image tokens) and text, G completions each, lengths
            drawn in [max_tokens/2, max_tokens]. One ``step`` call is one optimiser step
            (update_batch = the round's prompts). A small warm-up step first (CUDA kernels, AdamW
            state), then FGRPO and GRPO-T steps interleaved (GRPO-T: task-only advantages, no
            constraints, no dual step); their median times give the ratio (goal <= 1.05).
  generate  HF ``generate`` on the same weights in bf16, G samples per prompt, max_tokens new
            tokens each (min_new_tokens = max_new_tokens, so all rows run the full length): the
            baseline a later vLLM run is compared with.

Model FLOPs of one optimiser step (matrix products only; norms, rotary, softmax and the loss are
not counted; recomputation by gradient checkpointing is NOT counted, as MFU conventionally
excludes it). Per sequence with P prompt tokens, C completion tokens, S = P + C, and I image
patches, forward:
    LM        2 * N_lm * S        N_lm = L * (d*(h+2*kv)*dh + h*dh*d + 3*d*d_ff) (+ biases 0)
    attention 2 * L * h * dh * S^2          causal: QK^T and AV, half of the S x S square
    lm head   2 * d * V * (C + 1)           only the completion's logits are computed
    vision    2 * N_vis_layers * I  +  window/full attention 4 * dv * sum(window^2)
              + patch embedding 2 * 1176 * dv * I + merger 2 * (16 dv^2 + 4 dv d) * I / 4
The policy trains (backward = 2x forward) the LM and lm head, and the vision tower too unless it
is frozen (then forward only); the reference adds one forward of everything (beta > 0). The old
log-probs cost nothing extra here (one mini-batch: its own detached log-probs are the old ones).
    step FLOPs = sum_rows 3 * (LM + attention + head) + (3 or 1) * vision + (1 * all, reference)
tests/test_gpu_check.py checks the forward formula against torch.utils.flop_counter on the tiny
model. MFU = step FLOPs / step time / peak, against the H200's datasheet bf16 dense peak (989
TFLOP/s) and against the bf16 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Not on the GPU machine: blocked here too, so the dry run imports exactly what that machine can.
ABSENT_PACKAGES = ("vllm", "trl", "prefect", "datasets", "dvc")
# The fgrpo_core modules this check imports (tests import them with ABSENT_PACKAGES blocked).
FGRPO_MODULES = ("fgrpo_core.config", "fgrpo_core.advantages", "fgrpo_core.lagrangian", "fgrpo_core.loss",
                 "fgrpo_core.train.policy", "fgrpo_core.train.update", "fgrpo_core.models.loading",
                 "fgrpo_core.models.tiny")
SCHEMA = "fgrpo-gpu-check/1"
H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM datasheet, dense (no sparsity)

# Qwen/Qwen2.5-VL-3B-Instruct config.json (hub), in the nested form transformers 5 builds from.
QWEN25_VL_3B = dict(
    text_config=dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=128000,
        rms_norm_eps=1e-6, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
        attention_dropout=0.0, use_sliding_window=False, sliding_window=32768, max_window_layers=70,
        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True,
    ),
    vision_config=dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, out_hidden_size=2048,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu",
    ),
    bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
    vision_end_token_id=151653, vision_token_id=151654, image_token_id=151655, video_token_id=151656,
    tie_word_embeddings=True,
)


def block_absent_packages() -> None:
    for name in ABSENT_PACKAGES:
        if name not in sys.modules:
            sys.modules[name] = None  # "import vllm" now fails as it would on the GPU machine


def import_check() -> dict:
    """Import FGRPO_MODULES with ABSENT_PACKAGES blocked (call block_absent_packages first): what
    was blocked, and which absent package got imported for real anyway (none, or this raised)."""
    import importlib

    blocked = []
    for name in ABSENT_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            blocked.append(name)
    for m in FGRPO_MODULES:
        importlib.import_module(m)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ABSENT_PACKAGES and sys.modules[m] is not None)
    return {"blocked_imports": blocked, "fgrpo_modules": list(FGRPO_MODULES), "absent_but_imported": loaded}


# ---------------------------------------------------------------------------------------------
# Model shape and FLOPs
# ---------------------------------------------------------------------------------------------
def build_config(shape: str):
    """The Qwen2_5_VLConfig of ``shape``: '3b' (the hub's 3B config) or 'tiny' (fgrpo_core's tiny model)."""
    if shape == "3b":
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(**QWEN25_VL_3B)
    if shape == "tiny":
        from fgrpo_core.config import TinyModelParams
        from fgrpo_core.models.tiny import _config, build_tokenizer

        return _config(TinyModelParams(), build_tokenizer())
    raise ValueError(f"--shape {shape!r}: choose 3b or tiny")


def pad_token_id(config) -> int:
    """The padding id: the config's, else <|endoftext|> (Qwen's tokenizer pads with it; the 3B
    config.json names no pad id, its bos_token_id is <|endoftext|>)."""
    for c in (config, config.text_config):
        if getattr(c, "pad_token_id", None) is not None:
            return int(c.pad_token_id)
    return int(config.text_config.bos_token_id)


def _window_sizes(grid_h: int, grid_w: int, vcfg) -> list[int]:
    """Patches per attention window of one image (Qwen2.5-VL's window index: windows of
    window_size // merge // patch merged tokens a side, the last ones cut at the image's edge)."""
    merge = vcfg.spatial_merge_size
    win = vcfg.window_size // merge // vcfg.patch_size
    hm, wm = grid_h // merge, grid_w // merge
    rows = [min(win, hm - r) for r in range(0, hm, win)]
    cols = [min(win, wm - c) for c in range(0, wm, win)]
    return [r * c * merge * merge for r in rows for c in cols]


def forward_flops(config, prompt_tokens: int, completion_tokens: int, grid_thw: tuple[int, int, int] | None,
                  causal: bool = True) -> dict[str, float]:
    """Matrix-product FLOPs of one forward of one sequence (see the module docstring), by part.
    ``causal=False`` counts the whole S x S attention square (what an eager kernel multiplies)."""
    t, v = config.text_config, config.vision_config
    d, L, ff, V = t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.vocab_size
    h, kv = t.num_attention_heads, t.num_key_value_heads
    dh = getattr(t, "head_dim", None) or d // h
    s = prompt_tokens + completion_tokens
    n_lm = L * (d * (h + 2 * kv) * dh + h * dh * d + 3 * d * ff)
    out = {
        "lm": 2.0 * n_lm * s,
        "attention": (2.0 if causal else 4.0) * L * h * dh * s * s,
        "head": 2.0 * d * V * (completion_tokens + 1),
        "vision": 0.0,
    }
    if grid_thw is not None:
        gt, gh, gw = grid_thw
        patches = gt * gh * gw
        dv, dv_ff, depth = v.hidden_size, v.intermediate_size, v.depth
        patch_in = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
        merge2 = v.spatial_merge_size ** 2
        layer = 2.0 * patches * (4 * dv * dv + 3 * dv * dv_ff)
        windows = [w for _ in range(gt) for w in _window_sizes(gh, gw, v)]
        full = set(v.fullatt_block_indexes)
        attn = sum(4.0 * dv * (patches ** 2 if i in full else sum(w * w for w in windows)) for i in range(depth))
        embed = 2.0 * patch_in * dv * patches
        merger = 2.0 * (merge2 * dv * merge2 * dv + merge2 * dv * v.out_hidden_size) * patches / merge2
        out["vision"] = depth * layer + attn + embed + merger
    return out


def step_flops(config, rows: list[tuple[int, int, tuple[int, int, int] | None]], vision_trainable: bool,
               with_reference: bool) -> float:
    """Model FLOPs of one optimiser step over ``rows`` = (prompt tokens, completion tokens, image grid)."""
    total = 0.0
    for p, c, grid in rows:
        f = forward_flops(config, p, c, grid)
        text = f["lm"] + f["attention"] + f["head"]
        total += 3.0 * text + (3.0 if vision_trainable else 1.0) * f["vision"]
        if with_reference:
            total += text + f["vision"]
    return total


# ---------------------------------------------------------------------------------------------
# The synthetic round
# ---------------------------------------------------------------------------------------------
def synthetic_round(config, prompts: int, group: int, max_tokens: int, image_px: int, text_tokens: int, seed: int):
    """``prompts`` prompts with one image each and G completions of random tokens, with random
    rewards of the right kinds (R_task in {0, .5, 1}; R_C, R_S only where correct; R_G on 70%)."""
    import torch

    from fgrpo_core.train.policy import EncodedPrompt

    g = torch.Generator().manual_seed(seed)
    v = config.vision_config
    special = {config.image_token_id, config.video_token_id, config.vision_start_token_id,
               config.vision_end_token_id, config.text_config.bos_token_id, config.text_config.eos_token_id,
               pad_token_id(config)}
    # Ordinary text ids: the tiny tokenizer's special tokens are its first 14 ids, Qwen's start at 151643.
    ordinary = torch.tensor([i for i in range(16, min(config.text_config.vocab_size, 4096)) if i not in special])

    def words(n: int) -> list[int]:
        return ordinary[torch.randint(len(ordinary), (n,), generator=g)].tolist()

    side = image_px // v.patch_size
    if side % v.spatial_merge_size or side < v.spatial_merge_size:
        raise ValueError(f"--image-px {image_px}: must be a multiple of {v.patch_size * v.spatial_merge_size}")
    grid = (1, side, side)
    patches = side * side
    n_img = patches // v.spatial_merge_size ** 2
    patch_dim = 3 * v.temporal_patch_size * v.patch_size * v.patch_size
    enc, rows = [], []
    for _ in range(prompts):
        before = int(torch.randint(text_tokens // 4, text_tokens // 2 + 1, (1,), generator=g))
        after = int(torch.randint(text_tokens // 2, text_tokens + 1, (1,), generator=g))
        ids = words(before) + [config.vision_start_token_id] + [config.image_token_id] * n_img \
            + [config.vision_end_token_id] + words(after)
        types = [1 if i == config.image_token_id else 0 for i in ids]
        enc.append(EncodedPrompt(input_ids=ids, pixel_values=torch.randn(patches, patch_dim, generator=g),
                                 image_grid_thw=torch.tensor([grid]), mm_token_type_ids=types))
    rollout_prompts, completions, gid = [], [], []
    for k, e in enumerate(enc):
        for _ in range(group):
            n = int(torch.randint(max(max_tokens // 2, 1), max_tokens + 1, (1,), generator=g))
            rollout_prompts.append(e)
            completions.append(words(n))
            gid.append(k)
            rows.append((len(e.input_ids), n, grid))
    n = len(completions)
    acc = (torch.rand(n, generator=g) < 0.6).double()
    fmt = (torch.rand(n, generator=g) < 0.9).double()
    task = 0.5 * acc + 0.5 * fmt
    nan = torch.full((n,), math.nan, dtype=torch.float64)
    cons = {
        "consistency": torch.where(acc > 0, (torch.rand(n, generator=g) < 0.8).double(), nan),
        "semantic": torch.where(acc > 0, torch.rand(n, generator=g, dtype=torch.float64), nan),
        "spatial": torch.where(torch.rand(n, generator=g) < 0.7, torch.rand(n, generator=g, dtype=torch.float64), nan),
    }
    return dict(prompts=rollout_prompts, completions=completions, task=task, cons=cons,
                group_ids=torch.tensor(gid), rows=rows, encoded=enc)


# ---------------------------------------------------------------------------------------------
# Running under budgets
# ---------------------------------------------------------------------------------------------
class Report:
    """The figures, written whole to ``path`` after every phase (so a cut-short run leaves them)."""

    def __init__(self, path: Path | None, start: float, budget_s: float):
        self.path, self.start, self.budget_s = path, start, budget_s
        self.data: dict = {"schema": SCHEMA, "status": "running", "phases": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(_finite(self.data), indent=2, sort_keys=True, allow_nan=False,
                                  default=_jsonable) + "\n")
        os.replace(tmp, self.path)

    @contextmanager
    def phase(self, name: str, cap_s: float, reserve_s: float = 0.0):
        """Run a phase with ``min(cap_s, time left - reserve_s)`` seconds (``budget`` in the body);
        an error is recorded and the run goes on with the next phase."""
        budget = min(cap_s, self.left() - reserve_s)
        rec = {"status": "ok", "budget_s": round(budget, 1)}
        self.data["phases"][name] = rec
        t0 = time.perf_counter()
        if budget <= 0:
            rec["status"] = "skipped: no time left"
            print(f"[{name}] skipped: no time left", flush=True)
            self.write()
            yield None
            return
        print(f"[{name}] up to {budget:.0f} s", flush=True)
        try:
            yield t0 + budget
        except _Skip as why:
            rec["status"] = f"skipped: {why}"
        except Exception as err:  # noqa: BLE001 - recorded, the next phase still runs
            rec["status"] = "error"
            rec["error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        if rec["status"] == "ok" and rec["seconds"] > budget:
            rec["status"] = "ok, over budget"
        print(f"[{name}] {rec['status']} in {rec['seconds']:.1f} s", flush=True)
        self.write()


class _Skip(Exception):
    pass


def _finite(x):
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul(device, n: int, deadline: float) -> dict:
    """bf16 n x n x n products: 3 warm-ups, then up to 10 timed (fewer if the deadline nears)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    times = []
    while len(times) < 10 and (not times or time.perf_counter() + times[-1] < deadline):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"n": n, "dtype": "bfloat16", "repeats": len(times), "seconds": sec, "tflops": 2.0 * n ** 3 / sec / 1e12}


def _peak_memory(device) -> dict:
    import torch

    if device.type == "cuda":
        return {"kind": "cuda max_memory_allocated", "gib": torch.cuda.max_memory_allocated(device) / 2 ** 30,
                "reserved_gib": torch.cuda.max_memory_reserved(device) / 2 ** 30}
    return {"kind": "host peak RSS (ru_maxrss)", "gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------
def run_update(args, rep: Report, deadline: float, device, model, ref, config, fgrpo, rollout, mixed: str,
               batch, peaks: dict):
    import torch

    from fgrpo_core.advantages import compute_advantages
    from fgrpo_core.config import AdvantageMode
    from fgrpo_core.lagrangian import DualAscent, constraint_stats
    from fgrpo_core.train.update import PolicyUpdater, UpdateSettings

    out = rep.data.setdefault("update", {})
    settings = UpdateSettings.from_params(fgrpo, rollout, mixed)
    out["settings"] = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    if fgrpo.gradient_checkpointing:  # as FGRPOTrainer does
        model.gradient_checkpointing_enable()
    updater = PolicyUpdater(model, ref, pad_token_id(config), settings)
    rep.data["shape"]["params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    arms = {
        "fgrpo": fgrpo,
        "grpo_t": fgrpo.model_copy(update={"mode": AdvantageMode.grpo_task, "constraints": []}),
    }
    duals = {name: DualAscent.from_params(p) for name, p in arms.items()}

    def step(name: str, idx: list[int], seed: int) -> float:
        """One policy step as FGRPOTrainer.update_step runs it (minus files): advantages with
        lambda from the previous step, the update, the dual step. Returns its wall time."""
        p, dual = arms[name], duals[name]
        gid = batch["group_ids"][idx]
        cons = {k: batch["cons"][k][idx] for k in p.constraints}
        _sync(device)
        t0 = time.perf_counter()
        adv = compute_advantages(p.mode, batch["task"][idx], cons, dual.lambdas, active=list(p.constraints),
                                 eps=p.adv_eps, whiten=p.whiten, unbiased=p.adv_std_unbiased,
                                 group_ids=gid).to(torch.float32)
        stats = updater.step([batch["prompts"][i] for i in idx], [batch["completions"][i] for i in idx], adv, gid,
                             torch.Generator().manual_seed(seed))
        dual.update(*constraint_stats(cons))
        _sync(device)
        sec = time.perf_counter() - t0
        if stats.optimizer_steps != 1 or not math.isfinite(stats.loss):
            raise RuntimeError(f"{name}: {stats.optimizer_steps} optimiser steps, loss {stats.loss}")
        out.setdefault("losses", []).append({"arm": name, "loss": stats.loss, "kl": stats.kl,
                                             "grad_norm": stats.grad_norm, "tokens": stats.tokens})
        return sec

    # Warm-up: one whole step, not timed (kernels, cuBLAS handles, AdamW state, allocator pools).
    everyone = list(range(len(batch["completions"])))
    out["warmup_s"] = step("fgrpo", everyone, seed=0)
    # Whether the vision tower really got gradients (frozen or not reached): its backward counts or not.
    policy = updater.accelerator.unwrap_model(updater.model)
    vision_trained = any(p.grad is not None for n, p in policy.named_parameters() if ".visual." in f".{n}")
    rows = batch["rows"]
    tokens = sum(p + c for p, c, _ in rows)
    completion_tokens = sum(c for _, c, _ in rows)
    flops = step_flops(config, rows, vision_trainable=vision_trained, with_reference=settings.beta != 0)
    out.update(tokens_per_step=tokens, completion_tokens_per_step=completion_tokens, flops_per_step=flops,
               sequences_per_step=len(rows), vision_trained=vision_trained)
    times: dict[str, list[float]] = {"fgrpo": [], "grpo_t": []}
    # Interleaved A B B A A B ...: a slow drift (clocks, allocator) weighs on both arms alike.
    order = [("fgrpo", "grpo_t")[(k + 1) // 2 % 2] for k in range(2 * args.steps)]
    for k, name in enumerate(order):
        slowest = max((t for ts in times.values() for t in ts), default=out["warmup_s"])
        if k >= 2 and time.perf_counter() + 1.2 * slowest > deadline:  # one step of each arm at least
            out["cut_short"] = f"{k} of {len(order)} steps: the next would pass the phase budget"
            break
        times[name].append(step(name, everyone, seed=1 + k))
        out["step_seconds"] = times
        peaks["update"] = _peak_memory(device)
        rep.write()
    matmul = rep.data.get("matmul", {}).get("tflops")
    for name, ts in times.items():
        if not ts:
            continue
        sec = statistics.median(ts)
        tflops = flops / sec / 1e12
        out[name] = {"seconds_per_step": sec, "tokens_per_s": tokens / sec,
                     "completion_tokens_per_s": completion_tokens / sec, "tflops": tflops,
                     "mfu_vs_peak": tflops / args.peak_tflops if args.peak_tflops else None,
                     "mfu_vs_matmul": tflops / matmul if matmul else None}
    if times["fgrpo"] and times["grpo_t"]:
        out["ratio_fgrpo_over_grpo_t"] = out["fgrpo"]["seconds_per_step"] / out["grpo_t"]["seconds_per_step"]
    out["peak_memory"] = peaks["update"]
    # Free the optimiser state, gradients and reference before generation (accelerate keeps its own
    # references to what it prepared: free_memory drops them).
    policy.zero_grad(set_to_none=True)
    updater.accelerator.free_memory()
    updater.model = updater.optimizer = updater.scheduler = updater.ref_model = None
    return policy


def run_generate(args, rep: Report, deadline: float, device, model, batch) -> None:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from fgrpo_core.train.policy import collate

    class Deadline(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), time.perf_counter() > deadline, dtype=torch.bool,
                              device=input_ids.device)

    out = rep.data.setdefault("generate", {})
    if getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
    dtype = torch.bfloat16 if args.generate_dtype == "bfloat16" else torch.float32
    model.to(dtype).eval()
    prompts = [p for p in batch["encoded"][: args.gen_prompts] for _ in range(args.group)]
    seqs = collate(prompts, [[] for _ in prompts], pad_token_id(model.config))  # left-padded prompts
    width = seqs.input_ids.shape[1] - 1  # collate appends one completion column: drop it
    inputs = dict(input_ids=seqs.input_ids[:, :width], attention_mask=seqs.attention_mask[:, :width],
                  pixel_values=seqs.pixel_values.to(dtype), image_grid_thw=seqs.image_grid_thw,
                  mm_token_type_ids=seqs.mm_token_type_ids[:, :width])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    out.update(rows=len(prompts), prompt_tokens=int(inputs["attention_mask"].sum()), max_new_tokens=args.max_tokens,
               dtype=str(dtype).replace("torch.", ""), sampling="temperature 1.0, top_p 1.0")
    torch.manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens,
                             stopping_criteria=StoppingCriteriaList([Deadline()]), use_cache=True)
    _sync(device)
    sec = time.perf_counter() - t0
    new = (ids.shape[1] - width) * ids.shape[0]
    out.update(seconds=sec, new_tokens=new, new_tokens_per_row=ids.shape[1] - width, tokens_per_s=new / sec,
               cut_short=ids.shape[1] - width < args.max_tokens)
    out["peak_memory"] = _peak_memory(device)


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
def table(d: dict) -> str:
    def f(x, spec=".3g"):
        return "-" if x is None else format(x, spec)

    sh, up, gen, mm = d.get("shape", {}), d.get("update", {}), d.get("generate", {}), d.get("matmul", {})
    env = d.get("env", {})
    lines = [f"FGRPO GPU check  {env.get('device_name', '?')}  torch {env.get('torch')}  "
             f"transformers {env.get('transformers')}  accelerate {env.get('accelerate')}",
             f"model {sh.get('model')}: {f(sh.get('params_total', 0) / 1e9)} B params "
             f"({f((sh.get('params_trainable') or 0) / 1e9)} B trained), {sh.get('mixed_precision')} compute, "
             f"float32 master weights, gradient checkpointing {sh.get('gradient_checkpointing')}, "
             f"freeze_vision {sh.get('freeze_vision')} (vision tower trained: {up.get('vision_trained', '-')})",
             f"round: {sh.get('prompts')} prompts x G={sh.get('group')} = {up.get('sequences_per_step')} seqs, "
             f"image {sh.get('image_px')} px ({sh.get('image_patches')} patches), <= {sh.get('max_tokens')} "
             f"response tokens, micro_batch {sh.get('micro_batch')}; {f(up.get('tokens_per_step'), 'd')} tokens "
             f"({f(up.get('completion_tokens_per_step'), 'd')} completion) and "
             f"{f((up.get('flops_per_step') or 0) / 1e15)} PFLOP per optimiser step",
             f"bf16 matmul {mm.get('n', '-')}^3: {f(mm.get('tflops'), '.1f')} TFLOP/s measured; "
             f"peak {f(d.get('peak_tflops'), '.0f')} TFLOP/s ({d.get('peak_source')})",
             "",
             f"{'arm':8} {'s/step':>8} {'tokens/s':>10} {'compl tok/s':>11} {'TFLOP/s':>8} "
             f"{'MFU peak':>9} {'MFU matmul':>10}"]
    for name, label in (("fgrpo", "FGRPO"), ("grpo_t", "GRPO-T")):
        a = up.get(name)
        if a:
            lines.append(f"{label:8} {a['seconds_per_step']:8.2f} {a['tokens_per_s']:10.0f} "
                         f"{a['completion_tokens_per_s']:11.0f} {a['tflops']:8.1f} {f(a['mfu_vs_peak'], '9.1%')} "
                         f"{f(a['mfu_vs_matmul'], '10.1%')}")
        else:
            lines.append(f"{label:8} (not measured)")
    mem = up.get("peak_memory") or {}
    lines += ["",
              f"FGRPO / GRPO-T step time: {f(up.get('ratio_fgrpo_over_grpo_t'), '.3f')} (goal <= 1.05); "
              f"steps {up.get('step_seconds', {})}",
              f"peak memory (update): {f(mem.get('gib'), '.1f')} GiB ({mem.get('kind', '-')})",
              f"HF generate: {gen.get('rows', '-')} rows x {gen.get('new_tokens_per_row', '-')} new tokens "
              f"in {f(gen.get('seconds'), '.1f')} s = {f(gen.get('tokens_per_s'), '.0f')} tokens/s "
              f"({gen.get('dtype', '-')}{', cut short by its budget' if gen.get('cut_short') else ''})",
              "phases: " + ", ".join(f"{k} {v['status']} {v.get('seconds', 0):.0f}s" for k, v in d["phases"].items()),
              f"status: {d['status']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--shape", default="3b", choices=["3b", "tiny"])
    ap.add_argument("--params", default=str(ROOT / "params" / "qwen2.5-vl-3b.yaml"),
                    help="preset whose fgrpo/rollout/model settings the update uses")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per optimiser step (paper: 64)")
    ap.add_argument("--group", type=int, default=None, help="G (default: the preset's rollout.group_size)")
    ap.add_argument("--max-tokens", type=int, default=None, help="response budget (default: rollout.max_tokens)")
    ap.add_argument("--micro-batch", type=int, default=None, help="default: the preset's fgrpo.micro_batch")
    ap.add_argument("--image-px", type=int, default=448, help="square image side (multiple of 28)")
    ap.add_argument("--text-tokens", type=int, default=96, help="most text tokens around the image per prompt")
    ap.add_argument("--steps", type=int, default=3, help="timed optimiser steps per arm")
    ap.add_argument("--gen-prompts", type=int, default=16, help="prompts for HF generate (G rows each)")
    ap.add_argument("--generate-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--mixed-precision", default=None, choices=["no", "bf16"],
                    help="default: from the preset's model.dtype (auto: bf16 on CUDA, no on CPU)")
    ap.add_argument("--matmul-n", type=int, default=None, help="default: 8192 on CUDA, 512 on CPU")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"reference peak; default {H200_BF16_DENSE_TFLOPS} on an H100/H200, else none")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall time for everything (start-up included)")
    ap.add_argument("--json", default=None, help="figures as JSON (default: $OUT/gpu_check.json if OUT is set)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    start = time.perf_counter() - _since_process_start()
    args = parse_args(argv)
    block_absent_packages()
    path = Path(args.json) if args.json else (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    rep = Report(path, start, args.budget_s)
    rep.data["args"] = vars(args)

    imports = import_check()
    import accelerate
    import torch
    import transformers

    from fgrpo_core.config import load_params
    from fgrpo_core.models.loading import resolve_dtype

    if args.device == "cuda" and not torch.cuda.is_available():
        rep.data["status"] = "error: --device cuda, but torch sees no CUDA device (--device cpu: the dry run)"
        rep.write()
        print(rep.data["status"], file=sys.stderr)
        return 2
    device = torch.device(args.device)
    params = load_params(args.params)
    mixed = args.mixed_precision or {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[
        resolve_dtype(params.model.dtype, device)]
    updates = {"update_batch": args.prompts}  # one step() call = one optimiser step
    if args.micro_batch:
        updates["micro_batch"] = args.micro_batch
    fgrpo = params.fgrpo.model_copy(update=updates)
    args.group = args.group or params.rollout.group_size
    args.max_tokens = args.max_tokens or params.rollout.max_tokens
    rollout = params.rollout.model_copy(update={"group_size": args.group, "max_tokens": args.max_tokens})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    if args.peak_tflops is None and device.type == "cuda" and ("H200" in name or "H100" in name):
        args.peak_tflops = H200_BF16_DENSE_TFLOPS
        rep.data["peak_source"] = "H100/H200 SXM datasheet bf16 dense"
    else:
        rep.data["peak_source"] = "--peak-tflops" if args.peak_tflops else "none"
    rep.data["peak_tflops"] = args.peak_tflops
    import pydantic

    rep.data["env"] = {"python": platform.python_version(), "torch": torch.__version__,
                       "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                       "pydantic": pydantic.__version__, "pydantic_path": str(Path(pydantic.__file__).parent),
                       "device": str(device), "device_name": name, **imports,
                       "startup_s": round(time.perf_counter() - start, 2)}
    rep.write()
    peaks: dict = {}

    b = args.budget_s  # phase caps are shares of the whole budget (420 s: 21, 126, 294, 126 s)
    with rep.phase("matmul", cap_s=0.05 * b) as deadline:
        if deadline:
            rep.data["matmul"] = measure_matmul(device, args.matmul_n or (8192 if device.type == "cuda" else 512),
                                                deadline)

    model = ref = batch = config = None
    with rep.phase("build", cap_s=0.3 * b) as deadline:
        if deadline:
            config = build_config(args.shape)
            from transformers import Qwen2_5_VLForConditionalGeneration

            torch.manual_seed(args.seed)
            with torch.device(device):  # random float32 weights made where they are used
                model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
            if fgrpo.beta:
                import copy

                ref = copy.deepcopy(model)
            batch = synthetic_round(config, args.prompts, args.group, args.max_tokens, args.image_px,
                                    args.text_tokens, args.seed)
            lm = sum(p.numel() for n, p in model.named_parameters() if ".visual." not in f".{n}")
            rep.data["shape"] = {
                "model": {"3b": "qwen2.5-vl-3b (random weights)", "tiny": "tiny (fgrpo_core.models.tiny)"}[args.shape],
                "params_total": sum(p.numel() for p in model.parameters()), "params_lm": lm,
                "params_vision": sum(p.numel() for p in model.parameters()) - lm, "prompts": args.prompts,
                "group": args.group, "max_tokens": args.max_tokens, "image_px": args.image_px,
                "image_patches": (args.image_px // config.vision_config.patch_size) ** 2,
                "micro_batch": fgrpo.micro_batch, "update_batch": fgrpo.update_batch,
                "gradient_checkpointing": fgrpo.gradient_checkpointing, "freeze_vision": fgrpo.freeze_vision,
                "mixed_precision": mixed, "beta": fgrpo.beta, "preset": str(args.params),
            }
            peaks["build"] = _peak_memory(device)
            rep.data["build"] = {"peak_memory": peaks["build"]}

    policy = None
    with rep.phase("update", cap_s=0.7 * b, reserve_s=0.17 * b) as deadline:
        if deadline and model is None:
            raise _Skip("no model")
        if deadline:
            policy = run_update(args, rep, deadline, device, model, ref, config, fgrpo, rollout, mixed, batch, peaks)
    ref = None
    model = policy if policy is not None else model
    if device.type == "cuda":
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    with rep.phase("generate", cap_s=0.3 * b, reserve_s=0.01 * b) as deadline:
        if deadline and model is None:
            raise _Skip("no model")
        if deadline:
            run_generate(args, rep, deadline, device, model, batch)

    bad = [k for k, v in rep.data["phases"].items() if not v["status"].startswith("ok")]
    rep.data["status"] = "complete" if not bad else "partial: " + ", ".join(bad)
    rep.data["total_s"] = round(time.perf_counter() - start, 2)
    rep.write()
    print()
    print(table(rep.data))
    if path:
        print(f"figures: {path}")
    return 0 if not bad else 1


def _since_process_start() -> float:
    """Seconds since this process started (Linux), so the budget counts Python's start-up too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


if __name__ == "__main__":
    sys.exit(main())

"""One ``PolicyUpdater.step`` under ``accelerate launch`` (run by tests/test_update_ddp.py).

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 ... tests/support/ddp_update_worker.py CASE OUT

CASE is a ``torch.save`` of the batch (model dir, encoded prompts, completions, advantages, group
ids, settings, seeds, whether to enable gradient checkpointing). Launched with the FSDP config,
the worker sets accelerate's FSDP state first (tests/support/fsdp_cpu.py). Every rank runs the step; rank 0 writes OUT/weights.safetensors,
OUT/grads.pt (each optimiser step's gradient before clipping, flattened: [steps, P]), OUT/stats.json
and OUT/calls.json: for each rank, every ``collate`` the updater made, as (grad enabled,
completion token ids of its rows), i.e. which rollouts that rank scored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch


def capture_grads(updater) -> list[torch.Tensor]:
    """Record the synchronised gradient of every optimiser step of ``updater``, before clipping
    (clipping to norm 1 would hide a gradient that is off by a constant factor)."""
    params = [p for p in updater.accelerator.unwrap_model(updater.model).parameters() if p.requires_grad]
    seen: list[torch.Tensor] = []
    real_clip = updater.accelerator.clip_grad_norm_

    def full(g):  # FSDP: each rank holds a shard of the gradient (a collective gathers it)
        return g.full_tensor() if hasattr(g, "full_tensor") else g

    def clip(*args, **kwargs):
        seen.append(torch.cat([full(p.grad.detach()).flatten().cpu() for p in params]))
        return real_clip(*args, **kwargs)

    updater.accelerator.clip_grad_norm_ = clip
    return seen


def main(case_path: str, out_dir: str) -> int:
    from accelerate.utils import gather_object
    from safetensors.torch import save_file

    from fgrpo_core.models.loading import load_policy
    from fgrpo_core.train import update as update_mod
    from tests.support import fsdp_cpu

    torch.set_num_threads(1)
    case = torch.load(case_path, weights_only=False)
    if fsdp_cpu.requested():
        fsdp_cpu.enable()
    calls: list[tuple[bool, list[list[int]]]] = []
    real_collate = update_mod.collate

    def counting_collate(prompts, completions, *args, **kwargs):
        calls.append((torch.is_grad_enabled(), [list(c) for c in completions]))
        return real_collate(prompts, completions, *args, **kwargs)

    update_mod.collate = counting_collate
    torch.manual_seed(0)
    model = load_policy(case["model_dir"])
    ref = load_policy(case["model_dir"])
    if case.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()  # as FGRPOTrainer does for the real presets
    # FSDP with cpu_ram_efficient_loading: transformers loads zeros on every rank but the first.
    loaded = {"policy_zero": all(not p.any() for p in model.parameters()),
              "ref_zero": all(not p.any() for p in ref.parameters())}
    up = update_mod.PolicyUpdater(model, ref, case["pad_id"], update_mod.UpdateSettings(**case["settings"]))
    acc = up.accelerator
    if acc.num_processes != 2:  # `accelerate launch --cpu` starts a single process: fail loudly
        raise RuntimeError(f"expected 2 processes, got {acc.num_processes} ({acc.distributed_type})")
    grads = capture_grads(up)
    stats = up.step(case["rows"], case["completions"], case["advantages"], case["group_ids"],
                    torch.Generator().manual_seed(case["order_seed"]))
    weights = {k: v.detach().cpu().clone() for k, v in up.named_weights()}
    every = gather_object([{"rank": acc.process_index, "stats": asdict(stats), "calls": calls,
                            "strategy": str(acc.distributed_type), "sharded": up.sharded, "loaded": loaded,
                            "checkpointing": bool(acc.unwrap_model(up.model).is_gradient_checkpointing)}])
    if acc.is_main_process:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(out / "weights.safetensors"))
        torch.save(torch.stack(grads), out / "grads.pt")
        (out / "stats.json").write_text(json.dumps([e["stats"] for e in sorted(every, key=lambda e: e["rank"])]))
        (out / "calls.json").write_text(json.dumps([e["calls"] for e in sorted(every, key=lambda e: e["rank"])]))
        (out / "checkpointing.json").write_text(json.dumps([e["checkpointing"] for e in sorted(every, key=lambda e: e["rank"])]))
        (out / "loaded.json").write_text(json.dumps([e["loaded"] for e in sorted(every, key=lambda e: e["rank"])]))
        (out / "strategy.json").write_text(json.dumps([[e["strategy"], e["sharded"]]
                                                      for e in sorted(every, key=lambda e: e["rank"])]))
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

"""The policy update under ``accelerate launch`` with 2 processes on the CPU (gloo), as DDP and as
FSDP2 (the shipped configs/accelerate/fsdp.yaml, see tests/support/fsdp_cpu.py): the same step as one
process, with each rank doing only its share.

How the processes are started: ``accelerate launch --cpu --num_processes 2`` starts ONE process
(accelerate 1.15 sends ``--cpu`` to its simple launcher, which expects ``mpirun`` for several CPU
processes, and none is installed), so the worker would silently run alone. ``--multi_gpu`` goes
through torchrun and starts 2 processes; on a machine without CUDA, ``Accelerator(cpu=True)`` then
sets up ``MULTI_CPU`` with the gloo backend. The worker refuses to run with any other count.

The batch: 4 prompts with uneven groups of 3, 1, 2 and 4 rollouts (10 in all), one group per
mini-batch, micro-batches of 1 sequence, 2 epochs (8 optimiser steps). Contiguous shares of a
mini-batch for 2 ranks (accelerate's ``split_between_processes``):
    group of 3 -> rank 0: 2 rows, rank 1: 1 row  (rank 1 adds one zero-weighted call)
    group of 1 -> rank 0: 1 row,  rank 1: none   (rank 1 makes one zero-weighted call)
    group of 2 -> 1 + 1;  group of 4 -> 2 + 2
so rank 0 trains on 6 rollouts per epoch and rank 1 on 4, and both make 6 forward/backward calls.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fgrpo_core.config import FGRPOParams, RolloutParams
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput
from fgrpo_core.train import update as update_mod
from fgrpo_core.train.policy import encode_prompt
from fgrpo_core.train.threads import cpu_threads
from tests.support.ddp_update_worker import capture_grads

REPO = Path(__file__).resolve().parents[1]
GROUP_SIZES = (3, 1, 2, 4)
# lr: AdamW (eps 1e-8) turns a rounding-level difference d in a near-zero gradient entry into a
# weight difference of about lr * d / eps, so the summation order of DDP's all-reduce (measured
# grads: relative 1e-7 at step 1) shows in the weights as ~5e-6 at lr 1e-3, 5e-7 at lr 1e-4, and
# 3-5e-7 at lr 5e-5, 1.2e-7 at lr 2e-5, which still moves weights by up to 8 * lr = 1.6e-4.
SETTINGS = update_mod.UpdateSettings.from_params(
    FGRPOParams(lr=2e-5, update_batch=1, micro_batch=1, epochs=2, beta=0.04, freeze_vision=False), RolloutParams()
).__dict__
ORDER_SEED = 3


@pytest.fixture(scope="module")
def case(tiny_model_dir):
    return make_case(tiny_model_dir)


def make_case(tiny_model_dir) -> dict:
    from fgrpo_core.models.loading import load_processor

    proc = load_processor(tiny_model_dir)
    prompts = [encode_prompt(proc, PromptInput(f"q{i}", build_messages(f"Which is left? {i}", ["a", "b"]),
                                                Image.new("RGB", (56, 56), (40 * i, 90, 30))))
               for i in range(len(GROUP_SIZES))]
    gid = torch.tensor([g for g, size in enumerate(GROUP_SIZES) for _ in range(size)])  # [10]
    g = torch.Generator().manual_seed(0)
    comps = [torch.randint(5, 900, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
             for _ in range(len(gid))]
    assert len({tuple(c) for c in comps}) == len(comps)  # rows are told apart by their tokens
    return dict(model_dir=str(tiny_model_dir), pad_id=proc.tokenizer.pad_token_id, settings=SETTINGS,
                rows=[prompts[int(i)] for i in gid], completions=comps,
                advantages=torch.randn(len(gid), generator=g), group_ids=gid, order_seed=ORDER_SEED)


def _single_process(case):
    from fgrpo_core.models.loading import load_policy

    torch.manual_seed(0)
    model = load_policy(case["model_dir"])
    up = update_mod.PolicyUpdater(model, copy.deepcopy(model), case["pad_id"], update_mod.UpdateSettings(**SETTINGS))
    assert up.accelerator.num_processes == 1
    grads = capture_grads(up)
    with cpu_threads(1):  # as each worker process (OMP_NUM_THREADS=1): tiny ops, shared cores
        stats = up.step(case["rows"], case["completions"], case["advantages"], case["group_ids"],
                        torch.Generator().manual_seed(ORDER_SEED))
    return stats, {k: v.detach().clone() for k, v in up.named_weights()}, torch.stack(grads)


def launch_args(strategy: str) -> list[str]:
    """``accelerate launch`` arguments for 2 CPU processes: DDP, or FSDP2 from the shipped config
    (8 GPUs, bf16 there; 2 processes in fp32 here)."""
    if strategy == "ddp":
        how = ["--multi_gpu"]
    elif strategy == "fsdp":
        how = ["--config_file", str(REPO / "configs" / "accelerate" / "fsdp.yaml")]
    else:
        raise ValueError(strategy)
    return [sys.executable, "-m", "accelerate.commands.launch", *how, "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]  # port 0: a free one


def _launch_two(case, tmp_path, strategy: str = "ddp") -> tuple[Path, float]:
    torch.save(case, tmp_path / "case.pt")
    cmd = [*launch_args(strategy),
           str(REPO / "tests" / "support" / "ddp_update_worker.py"), str(tmp_path / "case.pt"), str(tmp_path / "out")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, f"accelerate launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return tmp_path / "out", seconds


def _share(rows: list[int], rank: int, world: int = 2) -> list[int]:
    """Contiguous split, the first ``len % world`` ranks one longer (split_between_processes)."""
    base, extra = divmod(len(rows), world)
    start = rank * base + min(rank, extra)
    return rows[start : start + base + (1 if rank < extra else 0)]


def _expected_calls(case, rank: int, sharded: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(no-grad rows, grad rows) of each collate call of ``rank``: row = rollout index. The old
    pass is padded to the longest rank's (a repeated row); so is the reference pass when the
    reference is sharded (FSDP: every forward is a collective)."""
    plan = update_mod.minibatch_plan(case["group_ids"], SETTINGS["update_batch"], SETTINGS["epochs"],
                                     torch.Generator().manual_seed(ORDER_SEED))
    assert sorted(sum(plan, [])) == sorted(2 * list(range(10)))  # each rollout once per epoch
    shares = [[_share(idx, r) for idx in plan] for r in range(2)]
    mine = shares[rank]
    needed = sorted(set(sum(mine, [])))
    rest = [i for i in needed if i not in mine[0]]  # first mini-batch: live old log-probs
    longest_rest = max(len([i for i in sorted(set(sum(s, []))) if i not in s[0]]) for s in shares)
    old_rows = rest + (rest[:1] or [0]) * (longest_rest - len(rest))
    ref_rows = needed
    if sharded:
        longest_needed = max(len(set(sum(s, []))) for s in shares)
        ref_rows = needed + needed[:1] * (longest_needed - len(needed))
    no_grad = [[i] for i in old_rows] + [[i] for i in ref_rows]  # micro-batch 1: old pass, then ref pass
    grad = []
    for m, idx in enumerate(plan):
        calls = max(len(shares[r][m]) for r in range(2))
        grad += [[i] for i in mine[m]] + [idx[:1]] * (calls - len(mine[m]))
    return no_grad, grad


# Gradient checkpointing is on in the 3B/7B presets (fgrpo.gradient_checkpointing): under DDP it
# must not trip the "marked ready twice" reentrant-checkpoint error, under FSDP it recomputes with
# gathered parameters; the gradient is the same as without it. (FSDP without it: test_rounds_ddp.)
@pytest.mark.parametrize("strategy, checkpointing", [("ddp", False), ("ddp", True), ("fsdp", True)])
def test_two_processes_equal_one(case, tmp_path, monkeypatch, strategy, checkpointing):
    one_proc_calls = []  # (grad enabled, rows) of each collate in the one-process step
    real = update_mod.collate
    monkeypatch.setattr(update_mod, "collate", lambda p, c, *a, **k: (
        one_proc_calls.append((torch.is_grad_enabled(), len(c))), real(p, c, *a, **k))[1])
    ref_stats, ref_w, ref_g = _single_process(case)
    monkeypatch.undo()
    out, seconds = _launch_two(dict(case, gradient_checkpointing=checkpointing), tmp_path, strategy)
    print(f"2-process {strategy} (gradient checkpointing {checkpointing}) launch + step: {seconds:.1f} s")
    assert json.loads((out / "checkpointing.json").read_text()) == [checkpointing] * 2
    kinds = json.loads((out / "strategy.json").read_text())
    sharded = strategy == "fsdp"
    assert kinds == [[f"DistributedType.{'FSDP' if sharded else 'MULTI_CPU'}", sharded]] * 2
    if sharded:
        # fsdp.yaml's cpu_ram_efficient_loading: transformers loaded zeros on rank 1 (policy and
        # reference); both were sharded from rank 0's weights, or the comparison below would fail.
        assert json.loads((out / "loaded.json").read_text()) == [
            {"policy_zero": False, "ref_zero": False}, {"policy_zero": True, "ref_zero": True}]

    # Gradients (before clipping): at every optimiser step the synchronised gradient is the
    # one-process gradient of the whole mini-batch (loss x W against the average over ranks that
    # DDP's all-reduce and FSDP's reduce-scatter take; the filler calls add exact zeros), in every
    # parameter tensor: measured relative differences <= 1.2e-6 DDP, 5e-7 FSDP (without the x W
    # scale: 0.5).
    from fgrpo_core.models.loading import load_policy

    init_model = load_policy(case["model_dir"])
    sizes = [(name, p.numel()) for name, p in init_model.named_parameters()]
    g = torch.load(out / "grads.pt")
    assert g.shape == ref_g.shape and g.shape == (8, sum(k for _, k in sizes))
    for s in range(8):
        rel = float((g[s] - ref_g[s]).norm() / ref_g[s].norm())
        print(f"step {s}: |g_2proc - g_1proc| / |g_1proc| = {rel:.1e}")
        assert rel < 1e-5, s
        for (name, a), b in zip(zip((n for n, _ in sizes), g[s].split([k for _, k in sizes])),
                                ref_g[s].split([k for _, k in sizes])):
            assert float((a - b).norm()) <= 1e-5 * float(b.norm()) + 1e-9, (s, name)

    # Weights after the 8 AdamW steps.
    w = load_file(str(out / "weights.safetensors"))
    assert w.keys() == ref_w.keys()
    init = init_model.state_dict()
    moved = max(float((ref_w[k] - init[k]).abs().max()) for k in ref_w)
    assert moved > 1e-4, "the step barely moved the weights: the comparison would be trivial"
    worst = max(float((w[k] - ref_w[k]).abs().max()) for k in w)
    print(f"max |w_2proc - w_1proc| = {worst:.1e} (the step moved weights by up to {moved:.1e})")
    for k in w:
        torch.testing.assert_close(w[k], ref_w[k], atol=1e-6, rtol=0, msg=k)

    # Statistics: every rank reports the global numbers, equal to the one-process step's.
    per_rank = json.loads((out / "stats.json").read_text())
    assert len(per_rank) == 2
    for st in per_rank:
        assert st["tokens"] == ref_stats.tokens == sum(len(c) for c in case["completions"])
        assert st["optimizer_steps"] == ref_stats.optimizer_steps == 8
        for f in ("loss", "pg_loss", "kl", "clip_frac", "ratio_mean", "grad_norm"):
            assert st[f] == pytest.approx(getattr(ref_stats, f), rel=1e-5, abs=1e-7), f
    # A missing x W loss scale would halve every gradient: grad_norm pins it.
    assert ref_stats.grad_norm > 1e-3

    # Work: each rank scored exactly its share (old/ref log-probs only for its own rollouts).
    index = {tuple(c): i for i, c in enumerate(case["completions"])}
    calls = json.loads((out / "calls.json").read_text())
    trained, scored = [], []
    for rank in range(2):
        got_no_grad = [[index[tuple(c)] for c in rows] for grad, rows in calls[rank] if not grad]
        got_grad = [[index[tuple(c)] for c in rows] for grad, rows in calls[rank] if grad]
        want_no_grad, want_grad = _expected_calls(case, rank, sharded)
        assert got_no_grad == want_no_grad, rank
        assert got_grad == want_grad, rank
        trained.append(len(got_grad))
        scored.append(sorted({i for rows in got_no_grad for i in rows}))
    if sharded:  # equal forward counts on both ranks: each FSDP forward gathers the parameters
        assert len({sum(1 for grad, _ in calls[r] if not grad) for r in range(2)}) == 1
    # Groups are contiguous here, so the shares are the same each epoch: rank 0 rows 0,1 | 3 | 4 | 6,7,
    # rank 1 rows 2 | 5 | 8,9; old/ref log-probs are scored for those only (one process: all 10).
    assert scored == [[0, 1, 3, 4, 6, 7], [2, 5, 8, 9]]
    # 20 row-trainings (10 rollouts x 2 epochs) split 12 + 8, plus 4 zero-weighted calls on rank 1 (2 an epoch):
    # each rank makes 12 training calls where one process makes 20 (and no filler call).
    assert trained == [12, 12]
    assert [n for grad, n in one_proc_calls if grad] == [1] * 20
    plan = update_mod.minibatch_plan(case["group_ids"], 1, 2, torch.Generator().manual_seed(ORDER_SEED))
    assert sum(n for grad, n in one_proc_calls if not grad) == (10 - len(plan[0])) + 10  # old + ref passes
    shares = [sum(len(_share(idx, r)) for idx in update_mod.minibatch_plan(
        case["group_ids"], 1, 2, torch.Generator().manual_seed(ORDER_SEED))) for r in range(2)]
    assert shares == [12, 8]


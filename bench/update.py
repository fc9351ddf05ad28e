"""One policy update on the same rollout batch, three arms, at two model sizes (issue #7).

    OMP_NUM_THREADS=1 .venv/bin/python bench/update.py [--sizes tiny,medium] [--prompts 8] [--group 4]
                                                       [--tokens 96] [--repeats 3]

All arms score the same replayed rollouts (the synthetic SFT traces of the prompts, see
tests/support/replay.py) with the real grader and exact judge, and start from the same weights.
  GRPO-T  ``PolicyUpdater.step`` with task-only advantages (constraints off)
  FGRPO   ``PolicyUpdater.step`` with FGRPO advantages (three constraints, lambda = 1)
  TRL     GRPOTrainer's work for the same round on the FGRPO advantages (bench/trl_update.py)
Both sides feed the model the same inputs, the processor's ``mm_token_type_ids`` included (M-RoPE
positions for the image, as vLLM computes them).
Each arm includes: old log-probs (no-grad pass of the policy), reference log-probs (no-grad pass
of the frozen SFT copy), and per mini-batch the micro-batch forward + loss + backward, gradient
clipping and one AdamW step; the same mini-batches and micro-batches (same seeded group order,
micro_batch rows each, padded by the same ``collate``). Neither arm includes generation, scoring
or advantages. Prints seconds per round (median of interleaved repeats) and the ratios
FGRPO/GRPO-T (goal <= 1.05) and FGRPO/TRL (goal <= 1.0).

Loss check (not timed): the first micro-batch's loss of each arm, ours taken from inside
``PolicyUpdater.step``, TRL's from ``compute_loss`` on identical inputs; TRL's value is rescaled
where its normaliser differs by definition (``trl_loss_scale``). Then, with one mini-batch holding
the round, the summed loss and the gradient after the step, and as a negative control the gradient
of TRL fed no ``mm_token_type_ids`` (1-D image positions, another function): it must differ by far
more than ours does from TRL's, or the gradient check could not see a difference.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.rollouts import SIZES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,medium")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from bench.trl_update import LOSS_TYPE, build_grpo_trainer, check_agreement, minibatch_order, reset, trl_step
    from fgrpo_core.advantages import compute_advantages
    from fgrpo_core.config import AdvantageMode, FGRPOParams, RolloutParams, SyntheticDataParams, TinyModelParams
    from fgrpo_core.data.synthetic import generate_samples
    from fgrpo_core.judges.exact import ExactJudge
    from fgrpo_core.models.loading import load_policy, load_processor
    from fgrpo_core.models.tiny import build_tiny_model
    from fgrpo_core.prompts import build_messages
    from fgrpo_core.records import PromptInput, SamplingSettings
    from fgrpo_core.train.policy import encode_prompt
    from fgrpo_core.train.scoring import score_rollouts
    from fgrpo_core.train.update import PolicyUpdater, UpdateSettings
    from tests.support.replay import ReplayEngine

    samples = generate_samples(SyntheticDataParams(), n=args.prompts, split="rl", with_trace=True)
    settings = UpdateSettings.from_params(
        FGRPOParams(lr=1e-5, update_batch=args.prompts // 2, micro_batch=8, freeze_vision=False), RolloutParams())
    n = args.prompts * args.group
    print(f"batch: {args.prompts} prompts x G={args.group}, <= {args.tokens} tokens, update_batch "
          f"{settings.update_batch} prompts, micro_batch {settings.micro_batch}, {settings.aggregation} "
          f"(TRL loss_type {LOSS_TYPE[settings.aggregation]}); "
          f"median of {args.repeats}, torch threads {torch.get_num_threads()}\n")
    rows_out, checks = [], []
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny_model(Path(tmp) / size, TinyModelParams(**SIZES[size]))
            proc = load_processor(path)
            pad = proc.tokenizer.pad_token_id
            engine = ReplayEngine({s.id: (s.trace, s.answer, list(s.choices)) for s in samples}, proc.tokenizer)
            prompts = [PromptInput(s.id, build_messages(s.question, s.choices), s.image) for s in samples]
            batch = engine.generate(prompts, SamplingSettings(n=args.group, max_tokens=args.tokens, seed=0))
            scores = score_rollouts(batch.rollouts, {s.id: s for s in samples}, ExactJudge())
            task, cons, gid = scores.tensors()
            enc = {p.prompt_id: encode_prompt(proc, p) for p in prompts}
            rows = [enc[r.prompt_id] for r in batch.rollouts]
            comps = [r.token_ids for r in batch.rollouts]
            base = load_policy(path)
            state = base.state_dict()
            n_params = sum(p.numel() for p in base.parameters()) / 1e6
            modes = {
                "grpo_t": (AdvantageMode.grpo_task, []),
                "fgrpo": (AdvantageMode.fgrpo, ["consistency", "semantic", "spatial"]),
            }
            adv = {name: compute_advantages(mode, task, {k: cons[k] for k in active}, {k: 1.0 for k in active},
                                            group_ids=gid).float() for name, (mode, active) in modes.items()}
            trainer = build_grpo_trainer(copy.deepcopy(base), proc, settings, n, args.group, Path(tmp) / "trl")
            assert all(torch.equal(a, b) for a, b in zip(trainer.ref_model.state_dict().values(), state.values())), \
                "TRL's reference model does not hold the base weights"
            n_steps = len(minibatch_order(gid, settings.update_batch, settings.epochs, torch.Generator()))

            def ours():
                return PolicyUpdater(copy.deepcopy(base), copy.deepcopy(base), pad, settings)

            # ---- loss and gradient agreement (not timed)
            checks.append((size, check_agreement(trainer, base, rows, comps, adv["fgrpo"], gid, settings, pad,
                                                 args.prompts)))

            def step_args():  # a fresh seeded generator each time: the mini-batch order is drawn from it
                return rows, comps, adv["fgrpo"], gid, torch.Generator().manual_seed(0)

            # ---- timing: interleaved repeats, fresh weights and optimiser each time
            times: dict[str, list[float]] = {"grpo_t": [], "fgrpo": [], "trl": [], "old_pass": []}
            for _ in range(args.repeats):
                for name in ("grpo_t", "fgrpo", "trl"):
                    if name == "trl":
                        reset(trainer, state, n_steps)
                        t1 = time.perf_counter()
                        trl_step(trainer, *step_args(), settings, pad)
                    else:
                        up = ours()
                        t1 = time.perf_counter()
                        up.step(rows, comps, adv[name], gid, torch.Generator().manual_seed(0))
                    times[name].append(time.perf_counter() - t1)
                # our old-log-prob pass alone (TRL skips it when one optimiser step takes the whole round)
                t1 = time.perf_counter()
                up.sequence_logprobs(up.model, rows, comps)
                times["old_pass"].append(time.perf_counter() - t1)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows_out.append((size, n_params, med))
            del trainer

    print(f"{'size':8} {'params':>8} {'GRPO-T s':>9} {'FGRPO s':>9} {'TRL s':>9} "
          f"{'FGRPO/GRPO-T':>13} {'FGRPO/TRL':>10} {'our old pass s':>15}")
    for size, n_params, m in rows_out:
        print(f"{size:8} {n_params:7.1f}M {m['grpo_t']:9.2f} {m['fgrpo']:9.2f} {m['trl']:9.2f} "
              f"{m['fgrpo'] / m['grpo_t']:13.3f} {m['fgrpo'] / m['trl']:10.3f} {m['old_pass']:15.2f}")
    print("\ngoal: FGRPO/GRPO-T <= 1.05, FGRPO/TRL <= 1.0")
    print("both sides pass mm_token_type_ids (M-RoPE image positions).\n"
          "our old pass: a no-grad policy pass over the whole round, for scale; PolicyUpdater runs it on every\n"
          "mini-batch but the first (whose own log-probs are the old ones); TRL skips it when one optimiser\n"
          "step takes the whole round (num_iterations 1), else runs it on everything.")
    print("\nagreement with TRL from the same weights (loss values; gradient: max |g_ours - g_TRL| / max |g_TRL|):")
    print(f"{'size':8} {'1st micro ours':>14} {'TRL x f':>10} {'f':>7} {'|diff|':>8}   {'round ours':>10} "
          f"{'TRL':>10} {'|diff|':>8} {'grad diff':>9}   {'control: TRL 1-D grad diff':>26}")
    for size, a in checks:
        print(f"{size:8} {a.first_loss_ours:14.6f} {a.first_loss_trl:10.6f} {a.scale:7.4f} "
              f"{abs(a.first_loss_ours - a.first_loss_trl):8.1e}   {a.round_loss_ours:10.6f} {a.round_loss_trl:10.6f} "
              f"{abs(a.round_loss_ours - a.round_loss_trl):8.1e} {a.grad_rel_diff:9.1e}   "
              f"{a.grad_rel_diff_1d:26.1e}")
    print("1st micro: the bench's settings, before any step; f: TRL 'dapo' divides by the round's tokens per "
          "optimiser step,\n  ours by the mini-batch's own tokens (f = 1 for the other aggregations).\n"
          "round: one mini-batch holding the round (f = 1), summed loss and the clipped gradient after the step.\n"
          "control: TRL fed no mm_token_type_ids (transformers then gives the image tokens 1-D positions,\n"
          "  another function); it must differ far more than 'grad diff', or the gradient check is blind.")

if __name__ == "__main__":
    main()

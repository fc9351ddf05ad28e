"""One policy update on the same rollout batch: FGRPO (three constraints, adaptive lambda) against
the same step with constraints off (GRPO-T), at two model sizes.

    .venv/bin/python bench/update.py [--sizes tiny,medium] [--prompts 8] [--group 4] [--tokens 96]

Both arms score the same replayed rollouts (the synthetic SFT traces of the prompts, see
tests/replay.py) with the real grader and exact judge, compute their advantages, and run
``PolicyUpdater.step`` (old/ref log-probs, clipped surrogate + KL, AdamW) from the same weights.
Prints seconds per update (median of interleaved repeats) and the ratio (goal <= 1.05).
Not yet measured here: TRL GRPOTrainer's loss + backward on the same batch (issue #7).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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

    from fgrpo_core.advantages import compute_advantages
    from fgrpo_core.config import AdvantageMode, SyntheticDataParams, TinyModelParams
    from fgrpo_core.data.synthetic import generate_samples
    from fgrpo_core.judges.exact import ExactJudge
    from fgrpo_core.models.loading import load_policy, load_processor
    from fgrpo_core.models.tiny import build_tiny_model
    from fgrpo_core.prompts import build_messages
    from fgrpo_core.records import PromptInput, SamplingSettings
    from fgrpo_core.train.policy import encode_prompt
    from fgrpo_core.train.scoring import score_rollouts
    from fgrpo_core.train.update import PolicyUpdater, UpdateSettings
    from tests.replay import ReplayEngine

    samples = generate_samples(SyntheticDataParams(), n=args.prompts, split="rl", with_trace=True)
    print(f"batch: {args.prompts} prompts x G={args.group}, <= {args.tokens} tokens; median of {args.repeats}\n")
    print(f"{'size':8} {'params':>8} {'GRPO-T s':>9} {'FGRPO s':>9} {'FGRPO/GRPO-T':>13}")
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny_model(Path(tmp) / size, TinyModelParams(**SIZES[size]))
            proc = load_processor(path)
            engine = ReplayEngine({s.id: (s.trace, s.answer, list(s.choices)) for s in samples}, proc.tokenizer)
            prompts = [PromptInput(s.id, build_messages(s.question, s.choices), s.image) for s in samples]
            batch = engine.generate(prompts, SamplingSettings(n=args.group, max_tokens=args.tokens, seed=0))
            scores = score_rollouts(batch.rollouts, {s.id: s for s in samples}, ExactJudge())
            task, cons, gid = scores.tensors()
            enc = {p.prompt_id: encode_prompt(proc, p) for p in prompts}
            rows = [enc[r.prompt_id] for r in batch.rollouts]
            comps = [r.token_ids for r in batch.rollouts]
            base = load_policy(path)
            n_params = sum(p.numel() for p in base.parameters()) / 1e6
            arms = {
                "grpo_t": (AdvantageMode.grpo_task, []),
                "fgrpo": (AdvantageMode.fgrpo, ["consistency", "semantic", "spatial"]),
            }
            times: dict[str, list[float]] = {k: [] for k in arms}
            for _ in range(args.repeats):
                for name, (mode, active) in arms.items():
                    adv = compute_advantages(mode, task, {k: cons[k] for k in active}, {k: 1.0 for k in active},
                                             group_ids=gid).float()
                    up = PolicyUpdater(copy.deepcopy(base), copy.deepcopy(base), proc.tokenizer.pad_token_id,
                                       UpdateSettings(lr=1e-5, update_batch=args.prompts // 2, micro_batch=8))
                    t1 = time.perf_counter()
                    up.step(rows, comps, adv, gid, torch.Generator().manual_seed(0))
                    times[name].append(time.perf_counter() - t1)
            g, f = statistics.median(times["grpo_t"]), statistics.median(times["fgrpo"])
            print(f"{size:8} {n_params:7.1f}M {g:9.2f} {f:9.2f} {f / g:13.3f}")
    print("\ngoal: FGRPO/GRPO-T <= 1.05")


if __name__ == "__main__":
    main()

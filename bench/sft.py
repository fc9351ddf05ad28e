"""Benchmark: our SFT stage (TRL SFTTrainer as ``fgrpo_core.train.sft`` sets it up) against a bare
torch loop over the same batches.

    python bench/sft.py [--samples 128] [--batch 8] [--repeats 2] [--threads N] [--trl-default]

- ``bare``: forward + backward + AdamW step + zero_grad over batches collated beforehand (no data
  work, no logging, no scheduler, no clipping): the floor for this model and these batches.
- ``ours``: ``build_sft_trainer(...).trainer.train()`` — the stage's training loop as it runs in
  the pipeline (collation, logging every step, cosine schedule, clipping, TRL's loss and metrics).
- ``trl-default`` (with ``--trl-default``): ``SFTTrainer`` with TRL's defaults for a vision
  dataset (per-step chat-template rendering in its collator, bf16 autocast, gradient
  checkpointing): where we started (issue 6 measured it at ~40x the bare loop).

The bare loop takes its batches from the trainer's own dataloader (same order as training), and
its loss on the first batch must equal the trainer's first logged loss (checked to 1e-4), so both
compute the same thing. Timings are interleaved (bare, ours, bare, ours, ...) and the best of
``--repeats`` is reported, as wall-clock and as process CPU time (the CPU is shared here).
Model/processor loading and the one-time encoding are reported separately: they are paid once
per stage, not per step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=128, help="SFT samples (one epoch)")
    ap.add_argument("--batch", type=int, default=8, help="batch size (no accumulation)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--trl-default", action="store_true", help="also time SFTTrainer with TRL defaults")
    ap.add_argument("--profile", help="write a cProfile of one 'ours' run to this file")
    args = ap.parse_args(argv)

    import torch

    from fgrpo_core.config import SFTParams, SyntheticDataParams
    from fgrpo_core.data.schema import to_dataset
    from fgrpo_core.data.synthetic import generate_split
    from fgrpo_core.models.loading import load_policy
    from fgrpo_core.models.tiny import build_tiny_model
    from fgrpo_core.train.sft import build_sft_trainer, freeze_vision_tower

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    try:
        model_dir = build_tiny_model(work / "tiny")
        data_dir = work / "sft"
        samples = generate_split(SyntheticDataParams(), "sft", args.samples, 28 * 28 * 4, 28 * 28 * 1280, with_trace=True)
        to_dataset(samples).save_to_disk(str(data_dir))
        params = SFTParams(
            epochs=1.0, lr=1e-3, warmup_ratio=0.0, per_device_batch_size=args.batch,
            effective_batch_size=args.batch, save_steps=10**6, logging_steps=1, max_length=2048,
        )

        def setup(i: int):
            return build_sft_trainer(params, model_dir, [data_dir], work / f"run-{i}")

        first, setup_wall, _ = _timed(lambda: setup(0))
        batches = list(first.trainer.get_train_dataloader())  # the order train() draws them in
        n = sum(len(b["input_ids"]) for b in batches)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)

        def bare():
            model = load_policy(model_dir, dtype=torch.float32)
            freeze_vision_tower(model)
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.lr,
                                    weight_decay=params.weight_decay)

            def loop():
                losses = []
                for b in batches:
                    loss = model(**b).loss
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss.detach())
                return [float(x) for x in losses]

            return _timed(loop)

        def ours(i: int, s=None):
            s = s or setup(i)
            if args.profile and i == 1:
                import cProfile

                prof = cProfile.Profile()
                out = _timed(lambda: prof.runcall(s.trainer.train))
                prof.dump_stats(args.profile)
            else:
                out = _timed(s.trainer.train)
            return s, out[1], out[2]

        results: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
        check = None
        for r in range(args.repeats):
            losses, w, c = bare()
            results["bare"].append((w, c))
            s, w, c = ours(r + 1, first if r == 0 else None)
            results["ours"].append((w, c))
            if check is None:
                logged = next(e["loss"] for e in s.trainer.state.log_history if "loss" in e)
                check = (losses[0], logged)
        if args.trl_default:
            results["trl-default"] = [_trl_default(model_dir, data_dir, params, samples[: n])]

        print(f"tiny Qwen2.5-VL, {n} samples in batches of {args.batch} ({len(batches)} steps, "
              f"{tokens / n:.0f} tokens/sample), torch threads {torch.get_num_threads()}, "
              f"load avg {os.getloadavg()[0]:.1f}")
        print(f"first-batch loss: bare {check[0]:.6f}  ours (trainer's first logged) {check[1]:.6f}")
        if abs(check[0] - check[1]) > 1e-4:
            print("LOSS MISMATCH: the two loops do not compute the same loss")
            return 1
        print(f"setup of ours (load model + processor, encode {n} samples once, build trainer): {setup_wall:.1f} s")
        best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in results.items()}
        print(f"{'loop':<12} {'samples/s (wall)':>17} {'samples/s (cpu)':>16} {'vs bare (wall)':>15} {'vs bare (cpu)':>14}")
        for k, (w, c) in best.items():
            print(f"{k:<12} {n / w:>17.1f} {n / c:>16.1f} {best['bare'][0] / w:>14.2f}x {best['bare'][1] / c:>13.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _trl_default(model_dir, data_dir, params, samples) -> tuple[float, float]:
    """SFTTrainer as TRL sets it up for a vision chat dataset, on the same samples."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from fgrpo_core.models.loading import load_policy, load_processor
    from fgrpo_core.train.sft import freeze_vision_tower
    from fgrpo_core.train.sft_data import sft_messages

    ds = datasets.Dataset.from_list(
        [{"messages": sft_messages(s.question, s.choices, s.trace), "images": [s.image]} for s in samples]
    )
    model = load_policy(model_dir)
    freeze_vision_tower(model)
    cfg = SFTConfig(
        output_dir=str(Path(data_dir).parent / "trl-default"), per_device_train_batch_size=params.per_device_batch_size,
        learning_rate=params.lr, num_train_epochs=1, assistant_only_loss=True, max_length=None,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=load_processor(model_dir))
    _, w, c = _timed(trainer.train)
    return w, c


if __name__ == "__main__":
    raise SystemExit(main())

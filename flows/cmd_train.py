"""``fgrpo train``: FGRPO rounds from the SFT checkpoint, resuming where a run stopped.

    fgrpo train --params FILE [--set key=value ...] [--rounds R] [--fresh]

Writes ``fgrpo.run_dir`` (round-r/rollouts.parquet, round-r/scores.parquet, multipliers.csv,
train_metrics.csv) and ``fgrpo.out_dir/round-r`` checkpoints. A rerun continues from the newest
complete checkpoint; ``--fresh`` starts over (after moving the old outputs aside).

Several GPUs: ``accelerate launch --config_file configs/accelerate/fsdp.yaml -m flows.cli train
--params FILE`` (or ddp.yaml for models that fit every GPU; docs/training.md): the main process samples, scores and writes; the policy
update is sharded over the ranks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from fgrpo_core.config import ParamsError, load_params


def init_path(params) -> Path:
    """fgrpo.init_from, else the SFT stage's final model (``fgrpo_core.checkpoints``)."""
    from fgrpo_core import checkpoints

    return checkpoints.init_path(params.fgrpo.init_from, params.sft.out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo train", description="FGRPO rounds (rollout -> score -> update)")
    ap.add_argument("--params", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rounds", type=int, help="stop after this many rounds in total (default fgrpo.rounds)")
    ap.add_argument("--fresh", action="store_true", help="ignore existing checkpoints (moved to *.old-<time>)")
    args = ap.parse_args(list(argv or []))
    if args.rounds is not None and args.rounds < 1:
        print(f"fgrpo train: --rounds = {args.rounds}: must be >= 1", file=sys.stderr)
        return 2
    from flows.judge_keys import endpoint_in_use, export_judge_key

    try:
        params = load_params(args.params, args.overrides)
        export_judge_key(endpoint_in_use(params.judges))  # from a Prefect Secret block, if the params name one
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    from fgrpo_core.train.setup import create_trainer
    from fgrpo_core.train.update import process_state
    from flows.stages import guard_outputs

    fp = params.fgrpo
    state = process_state()  # under `accelerate launch`: one of several ranks; only the main one writes
    if state.is_main_process:
        if args.fresh:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for d in (Path(fp.out_dir), Path(fp.run_dir)):
                if d.exists():
                    shutil.move(str(d), f"{d}.old-{stamp}")
        # Never resume rounds that other params, code or inputs produced (dvc.yaml keeps them: persist).
        guard_outputs("train", params, [fp.out_dir, fp.run_dir])
    state.wait_for_everyone()
    try:
        trainer = create_trainer(fgrpo=fp, rollout=params.rollout, model=params.model, judges=params.judges,
                                 init_path=init_path(params), data_dir=params.data.out_dir, seed=fp.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"fgrpo train: {err}", file=sys.stderr)
        return 2
    done = trainer.resume()
    if done and state.is_main_process:
        print(f"resuming after round {done} from {trainer.layout.checkpoint(done)}")
    trainer.run(args.rounds, progress=state.is_main_process)
    last = trainer.history[-1] if trainer.history else {}
    if state.is_main_process:
        print(f"done: {trainer.round} rounds; last round acc {last.get('reward_acc', float('nan')):.3f}, "
              f"lambdas {trainer.dual.lambdas}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""FGRPO rounds under ``accelerate launch`` (run by tests/test_rounds_ddp.py).

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 ... tests/support/ddp_rounds_worker.py CASE OUT

CASE is a ``torch.save`` of the params, the staged data and tiny model directories and the replay
traces. Every rank runs round 1, drops its trainer ("killed"), builds a new one, resumes and runs
round 2, then round 3 with a sampler that raises on the main process. Rank 0 writes
OUT/ranks.json: per rank, what it saw (lambdas, the multiplier history, the metrics rows without
timings), whether it held an engine and a judge, every file write it made (``_atomic_file`` for
CSV/parquet, ``_write_checkpoint`` for checkpoints) and the error round 3 raised there.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

TIMING = ("rollout_s", "score_s", "update_s", "tokens_per_s")


def main(case_path: str, out_dir: str) -> int:
    from accelerate.utils import gather_object

    from fgrpo_core.models.loading import load_processor
    from fgrpo_core.train import rounds as rounds_mod
    from fgrpo_core.train.setup import create_trainer
    from fgrpo_core.train.update import process_state
    from tests.support import fsdp_cpu
    from tests.support.replay import ReplayEngine

    torch.set_num_threads(1)
    case = torch.load(case_path, weights_only=False)
    p, run = case["params"], Path(case["run"])
    if fsdp_cpu.requested():
        fsdp_cpu.enable()
    state = process_state()
    if state.num_processes != 2:  # `accelerate launch --cpu` starts a single process: fail loudly
        raise RuntimeError(f"expected 2 processes, got {state.num_processes} ({state.distributed_type})")

    writes: list[str] = []
    real_atomic, real_ckpt = rounds_mod._atomic_file, rounds_mod.FGRPOTrainer._write_checkpoint

    def atomic(path, write):
        writes.append(str(Path(path).relative_to(run)))
        return real_atomic(path, write)

    def checkpoint(self, r, *args):
        writes.append(f"checkpoint round-{r}")
        return real_ckpt(self, r, *args)

    rounds_mod._atomic_file = atomic
    rounds_mod.FGRPOTrainer._write_checkpoint = checkpoint

    from accelerate import Accelerator

    gathers = []  # full-weight gathers of the shards (FSDP): one a round serves push and checkpoint
    real_gather = Accelerator.get_state_dict

    def gather(self, *args, **kwargs):
        gathers.append(1)
        return real_gather(self, *args, **kwargs)

    Accelerator.get_state_dict = gather

    def trainer():
        engine = ReplayEngine(case["traces"], load_processor(case["model_dir"]).tokenizer)
        return create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                              init_path=case["model_dir"], data_dir=case["data_dir"], seed=0, engine=engine,
                              run_dir=run / "runs", ckpt_dir=run / "ckpt")

    first = trainer()
    first.run(1, progress=False)
    del first
    tr = trainer()
    resumed = tr.resume()
    tr.run(2, progress=False)
    # Round 3 with a sampler that fails on the main process: every rank must raise, none may hang.
    if tr.is_main:
        def broken(*args, **kwargs):
            raise ConnectionError("sampler down")

        tr.engine.generate = broken
    try:
        tr.run_round(3)
        failure = None
    except Exception as err:  # noqa: BLE001 (recorded for the test)
        failure = f"{type(err).__name__}: {err}"
    seen = {
        "rank": state.process_index, "resumed": resumed, "engine": tr.engine is not None,
        "judge": tr.judge is not None, "lambdas": tr.dual.lambdas,
        "multipliers": [asdict(rec) for rec in tr.dual.history],
        "metrics": [{k: v for k, v in row.items() if k not in TIMING} for row in tr.history],
        "writes": writes, "failure": failure, "sharded": tr.updater.sharded, "gathers": len(gathers),
    }
    every = gather_object([seen])
    if state.is_main_process:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        ordered = sorted(every, key=lambda e: e["rank"])
        (Path(out_dir) / "ranks.json").write_text(json.dumps(ordered, default=str))
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

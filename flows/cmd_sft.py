"""``fgrpo sft --params FILE [--set key=value ...]``: the SFT warm start (``fgrpo_core.train.sft``).

Reads the staged SFT split (``<data.out_dir>/sft`` unless ``--data`` names others), trains the
policy at ``model.path`` with ``params.sft`` and writes ``<sft.out_dir>/model`` plus the training
log. Re-running after an interruption resumes from the newest checkpoint in ``sft.out_dir``.
Multi-GPU: ``accelerate launch -m flows.cli sft --params FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo sft", description="SFT warm start with TRL's SFTTrainer.")
    ap.add_argument("--params", required=True, help="params file, e.g. params/tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key, e.g. --set sft.lr=1e-5 (repeatable)")
    ap.add_argument("--data", action="append", default=None, metavar="DIR",
                    help="staged SFT split directory (repeatable; default <data.out_dir>/sft)")
    args = ap.parse_args(argv)

    from fgrpo_core.config import ParamsError, load_params

    try:
        params = load_params(args.params, args.overrides)
    except ParamsError as err:
        print(f"fgrpo sft: {err}", file=sys.stderr)
        return 2

    from flows.cmd_model import ensure_model
    from flows.stages import guard_outputs
    from fgrpo_core.train.sft import run_sft

    model_path = ensure_model(params.model)
    # Never resume checkpoints that other params, code or inputs produced (dvc.yaml keeps them: persist).
    guard_outputs("sft", params, [params.sft.out_dir])
    data = [Path(d) for d in args.data] if args.data else [Path(params.data.out_dir) / "sft"]
    result = run_sft(
        params.sft,
        model_path,
        data,
        params.sft.out_dir,
        dtype=params.model.dtype,
        trust_remote_code=params.model.trust_remote_code,
        min_pixels=params.model.min_pixels,
        max_pixels=params.model.max_pixels,
    )
    resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
    print(
        f"SFT done: {result.global_step} steps{resumed} on {result.n_train} samples "
        f"({result.n_dropped} over max_length dropped); loss {result.first_loss:.3f} -> {result.final_loss:.3f}; "
        f"{result.samples_per_s:.1f} samples/s\n"
        f"  model: {result.model_dir}\n  log:   {result.log_csv}, {result.plot_png}\n  summary: {result.summary_json}"
    )
    return 0

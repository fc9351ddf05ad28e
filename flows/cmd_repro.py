"""``fgrpo repro``: the paper's ablation table at toy scale, from one shared SFT checkpoint.

    fgrpo repro --params params/repro-tiny.yaml [--variants grpo_t,fgrpo] [--seeds 0,1] [--set k=v ...]

Every row of FGRPO.md section 7 is one params switch (``VARIANTS``); all rows start from the same
SFT checkpoint, see the same data and the same budget, and are evaluated by the same code as
``fgrpo evaluate``. One vLLM engine serves every row (weights reset to the SFT policy in place
before each), so the whole table costs one engine start. Rows already trained and evaluated are
skipped, so an interrupted table resumes.

Outputs: ``<repro_dir>/<row>-s<seed>/{runs,checkpoints}``, ``metrics/repro/<row>-s<seed>.json``,
``reports/repro/`` (the table as markdown, per-benchmark bars, the multiplier curriculum of the
FGRPO rows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fgrpo_core.config import ParamsError, load_params

# The ablation table (FGRPO.md section 7), one params switch per row.
VARIANTS: dict[str, list[str]] = {
    "grpo_t": ["fgrpo.mode=grpo_task"],
    "reward_sum": ["fgrpo.mode=reward_sum", "fgrpo.constraints=[consistency, spatial]"],
    "gate": ["fgrpo.mode=gate", "fgrpo.constraints=[consistency, spatial]"],
    "fgrpo_consistency": ["fgrpo.mode=fgrpo", "fgrpo.constraints=[consistency]"],
    "fgrpo_fixed": ["fgrpo.mode=fgrpo_fixed"],
    "fgrpo": ["fgrpo.mode=fgrpo"],
}
LABELS = {
    "sft": "SFT (start)",
    "grpo_t": "GRPO-T (task reward only)",
    "reward_sum": "R_C, R_G added to the reward",
    "gate": "R_C, R_G as multiplicative gates",
    "fgrpo_consistency": "FGRPO, consistency constraint only",
    "fgrpo_fixed": "FGRPO, fixed lambda = 1",
    "fgrpo": "FGRPO (adaptive lambda)",
}


def _row_overrides(name: str, seed: int, root: Path) -> list[str]:
    d = root / f"{name}-s{seed}"
    return VARIANTS[name] + [
        f"fgrpo.seed={seed}",
        f"fgrpo.run_dir={d / 'runs'}",
        f"fgrpo.out_dir={d / 'checkpoints'}",
        f"eval.out_path=metrics/repro/{name}-s{seed}.json",
        f"eval.samples_path=metrics/repro/{name}-s{seed}_samples.jsonl",
        f"eval.report_dir=reports/repro/{name}-s{seed}",
    ]


def _evaluate(engine, params, splits, name: str, run_dir: Path | None):
    from fgrpo_core.eval.outputs import write_eval_outputs
    from fgrpo_core.eval.runner import EvalSettings, run_eval
    from fgrpo_core.judges.factory import build_judge

    ep, f = params.eval, params.fgrpo
    result = run_eval(engine, build_judge(params.judges), splits, EvalSettings.from_params(ep))
    write_eval_outputs(
        result, ep.out_path, ep.samples_path, ep.report_dir, run_name=LABELS.get(name, name),
        about=[f"Ablation row `{name}` of `fgrpo repro` (preset {params.name})"],
        multipliers_csv=run_dir / "multipliers.csv" if run_dir else None,
        train_metrics_csv=run_dir / "train_metrics.csv" if run_dir else None,
        taus={"consistency": f.tau_consistency, "semantic": f.tau_semantic, "spatial": f.tau_spatial},
    )
    m = result.metrics.mean
    print(f"[{name}] accuracy {m.accuracy.value:.3f}  IR {m.inconsistency_rate.value:.3f}  "
          f"semantic {m.semantic_grounding.value:.3f}  spatial {m.spatial_grounding.value:.3f}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo repro", description="the ablation table from one SFT checkpoint")
    ap.add_argument("--params", default="params/repro-tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"rows to run ({', '.join(VARIANTS)})")
    ap.add_argument("--seeds", default="0", help="comma-separated RL seeds (same SFT checkpoint)")
    ap.add_argument("--dir", default="runs/repro", help="where each row's runs and checkpoints go")
    args = ap.parse_args(list(argv or []))
    rows = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in rows if v not in VARIANTS]
    if unknown:
        print(f"fgrpo repro: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    from flows.judge_keys import endpoint_in_use, export_judge_key

    try:
        base = load_params(args.params, args.overrides)
        export_judge_key(endpoint_in_use(base.judges))  # from a Prefect Secret block, if the params name one
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2

    from flows import cmd_data, cmd_sft
    from flows.cmd_model import ensure_model
    from flows.cmd_train import init_path
    from fgrpo_core.eval.runner import load_test_splits
    from fgrpo_core.train.setup import create_trainer, make_engine

    # 1. The shared start: base model, data, one SFT checkpoint (the same commands as the pipeline).
    ensure_model(base.model)
    common = ["--params", args.params] + [x for o in args.overrides for x in ("--set", o)]
    if not (Path(base.data.out_dir) / "manifest.json").is_file() and cmd_data.main(common):
        return 1
    init = init_path(base)
    if not (init / "config.json").is_file() and cmd_sft.main(common):
        return 1
    splits = load_test_splits(base.data.out_dir, base.eval.benchmarks, base.eval.limit)

    # 2. One engine for every row; each row starts from the SFT weights.
    engine = make_engine(init, base.rollout, base.model, base.seed)
    root = Path(args.dir)
    done: list[tuple[str, Path]] = []
    try:
        sft_params = load_params(args.params, args.overrides + [
            "eval.out_path=metrics/repro/sft.json", "eval.samples_path=metrics/repro/sft_samples.jsonl",
            "eval.report_dir=reports/repro/sft"])
        if not Path(sft_params.eval.out_path).is_file():
            _evaluate(engine, sft_params, splits, "sft", None)
        done.append(("sft", Path(sft_params.eval.out_path)))
        for seed in seeds:
            for name in rows:
                p = load_params(args.params, args.overrides + _row_overrides(name, seed, root))
                out = Path(p.eval.out_path)
                if not out.is_file():
                    engine.load_weights_from(init)
                    trainer = create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                                             init_path=init, data_dir=p.data.out_dir, seed=seed, engine=engine)
                    trainer.resume()
                    print(f"[{name} seed {seed}] training {p.fgrpo.rounds} rounds", flush=True)
                    trainer.run()
                    _evaluate(engine, p, splits, name, Path(p.fgrpo.run_dir))
                done.append((f"{name}-s{seed}", out))
    finally:
        engine.close()

    # 3. The table: every row against GRPO-T (the paper's baseline) when it ran, else the SFT start.
    from flows.cmd_eval import compare_main

    order = sorted(done, key=lambda x: (not x[0].startswith("grpo_t"), x[0] != "sft"))
    Path("reports/repro").mkdir(parents=True, exist_ok=True)
    return compare_main([str(m) for _, m in order] + ["--names", ",".join(n for n, _ in order),
                                                       "--out", "reports/repro/table.md",
                                                       "--plot", "reports/repro/benchmarks.png",
                                                       "--bootstrap", str(base.eval.bootstrap)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

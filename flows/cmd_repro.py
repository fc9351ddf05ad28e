"""``fgrpo repro``: the paper's ablation table at toy scale, from one shared SFT checkpoint.

    fgrpo repro --params params/repro-tiny.yaml [--variants grpo_t,fgrpo] [--seeds 0,1,2,3,4] [--set k=v ...]

Every row of the paper's ablation table (docs/method.md#ablation-rows) is one params switch (``VARIANTS``); all rows start from the same
SFT checkpoint, see the same data and the same budget, and are evaluated by the same code as
``fgrpo evaluate``. One vLLM engine serves every row (weights reset to the SFT policy in place
before each), so the whole table costs one engine start. Rows already trained and evaluated are
skipped, so an interrupted table resumes.

Before any RL row, the SFT start is evaluated on the val split (greedy, every option order, the
same grader) and the table refuses to train when its per-order accuracy is not above chance by
``eval.min_sft_margin`` (:func:`fgrpo_core.eval.repro.sft_check`; the error names both figures).
Every RL row is paired by seed with GRPO-T: the summary reports the paired differences with
intervals from a bootstrap over seeds and test prompts (``fgrpo_core.eval.paired``).

Rows already trained and evaluated with the same settings (``<row>.identity.json``: hashes of the
fgrpo/rollout/judges/eval/data sections and of the SFT checkpoint) are reused; a row stored with
other settings is an error, never silently mixed into the table.

Outputs (defaults, all under ``repro/`` beside its ``dvc.yaml``): ``repro/runs/<row>-s<seed>/{runs,checkpoints}``;
``repro/metrics/<row>-s<seed>.json`` (+ samples, identity) and ``repro/metrics/summary.json`` (seed means, target check: DVC metrics);
``repro/reports/``: ``table.md`` (every row paired against GRPO-T, bootstrap intervals),
``summary.md`` (seed means and the issue's target), ``curves.csv``/``curves.png`` (per-round batch
means), ``multipliers.png`` (lambda trajectories of the FGRPO rows), ``benchmarks.png`` and one
report folder per row.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fgrpo_core.config import ParamsError, load_params

# The ablation table (docs/method.md#ablation-rows), one params switch per row.
VARIANTS: dict[str, list[str]] = {
    "grpo_t": ["fgrpo.mode=grpo_task"],
    "reward_sum": ["fgrpo.mode=reward_sum", "fgrpo.constraints=[consistency, spatial]"],
    "gate": ["fgrpo.mode=gate", "fgrpo.constraints=[consistency, spatial]"],
    "fgrpo_consistency": ["fgrpo.mode=fgrpo", "fgrpo.constraints=[consistency]"],
    "fgrpo_fixed": ["fgrpo.mode=fgrpo_fixed"],
    "fgrpo": ["fgrpo.mode=fgrpo"],
}
DEFAULT_SEEDS = [0, 1, 2, 3, 4]  # RL seeds per row, each paired with GRPO-T's run on the same seed
LABELS = {
    "sft": "SFT (start)",
    "grpo_t": "GRPO-T (task reward only)",
    "reward_sum": "R_C, R_G added to the reward",
    "gate": "R_C, R_G as multiplicative gates",
    "fgrpo_consistency": "FGRPO, consistency constraint only",
    "fgrpo_fixed": "FGRPO, fixed lambda = 1",
    "fgrpo": "FGRPO (adaptive lambda)",
}


def _row_overrides(name: str, seed: int, root: Path, metrics_dir: Path, report_dir: Path) -> list[str]:
    d = root / f"{name}-s{seed}"
    return VARIANTS[name] + [
        f"fgrpo.seed={seed}",
        f"fgrpo.run_dir={d / 'runs'}",
        f"fgrpo.out_dir={d / 'checkpoints'}",
        f"eval.out_path={metrics_dir / f'{name}-s{seed}.json'}",
        f"eval.samples_path={metrics_dir / f'{name}-s{seed}_samples.jsonl'}",
        f"eval.report_dir={report_dir / f'{name}-s{seed}'}",
    ]


def _evaluate(engine, params, splits, name: str, run_dir: Path | None):
    from fgrpo_core.eval.outputs import write_eval_outputs
    from fgrpo_core.eval.runner import EvalSettings, run_eval
    from fgrpo_core.judges.factory import build_judge

    ep, f = params.eval, params.fgrpo
    result = run_eval(engine, build_judge(params.judges), splits, EvalSettings.from_params(ep))
    write_eval_outputs(
        result, ep.out_path, ep.samples_path, ep.report_dir, run_name=LABELS.get(name.split("-s")[0], name),
        about=[f"Ablation row `{name}` of `fgrpo repro` (preset {params.name})"],
        multipliers_csv=run_dir / "multipliers.csv" if run_dir else None,
        train_metrics_csv=run_dir / "train_metrics.csv" if run_dir else None,
        taus={"consistency": f.tau_consistency, "semantic": f.tau_semantic, "spatial": f.tau_spatial},
    )
    m = result.metrics.mean
    print(f"[{name}] accuracy {m.accuracy.value:.3f}  IR {m.inconsistency_rate.value:.3f}  "
          f"semantic {m.semantic_grounding.value:.3f}  spatial {m.spatial_grounding.value:.3f}", flush=True)


def row_identity(params, init: Path, trained: bool = True) -> dict[str, str]:
    """What a finished row's results depend on: the sections that shape its training (``trained``)
    and evaluation, and the bytes of the starting checkpoint. A stored row with another identity
    is not reused."""
    import hashlib
    import json

    from flows.stages import content_hash

    sections = ("fgrpo", "rollout", "judges", "eval", "data") if trained else ("judges", "eval", "data")
    ident = {}
    for k in sections:
        blob = {f: v for f, v in getattr(params, k).model_dump(mode="json").items() if f not in _WHERE}
        ident[k] = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
    return {**ident, "init": content_hash([init])}


# Where outputs go, not what they hold: moving a table's folders keeps its rows reusable.
_WHERE = {"out_dir", "run_dir", "out_path", "samples_path", "report_dir", "cache_dir", "init_from",
          "min_sft_margin"}  # (the last one decides whether rows run, not what they hold)


def _check_identity(path: Path, identity: dict[str, str], row: str) -> bool:
    """True when the row's results exist for this identity; an error when they exist for another."""
    import json

    if not path.is_file():
        return False
    stored = json.loads(path.read_text())
    diff = sorted(k for k in identity if stored.get(k) != identity[k])
    if diff:
        raise RuntimeError(f"{path}: row {row} was trained with other {', '.join(diff)} settings or another "
                           f"SFT checkpoint; remove that row's outputs or choose another --dir/--metrics-dir")
    return True


class SFTAtChance(RuntimeError):
    """The SFT start is not above chance on the val split: the RL rows are not trained."""


def _sft_on_val(engine, params_file: str, overrides: Sequence[str], init: Path, metrics_dir: Path,
                report_dir: Path):
    """SFT on the val split (greedy, every option order, the same grader and judge), reused when
    stored with the same settings; returns :class:`fgrpo_core.eval.repro.SFTCheck`."""
    import json

    from fgrpo_core.eval.repro import sft_check
    from fgrpo_core.eval.results import read_samples
    from fgrpo_core.train.setup import load_split

    p = load_params(params_file, list(overrides) + [
        f"eval.out_path={metrics_dir / 'sft_val.json'}", f"eval.samples_path={metrics_dir / 'sft_val_samples.jsonl'}",
        f"eval.report_dir={report_dir / 'sft_val'}", "eval.circular=[val]"])
    ident_path, ident = metrics_dir / "sft_val.identity.json", row_identity(p, init, trained=False)
    if not (_check_identity(ident_path, ident, "sft_val") and Path(p.eval.samples_path).is_file()):
        val = load_split(p.data.out_dir, "val")
        if p.eval.limit is not None:
            val = val[: p.eval.limit]
        engine.load_weights_from(init)
        _evaluate(engine, p, {"val": val}, "sft_val", None)
        ident_path.write_text(json.dumps(ident, indent=1))
    rows = read_samples(p.eval.samples_path)
    return sft_check([r.rotations_correct for r in rows], [r.rotations for r in rows], p.eval.min_sft_margin,
                     n_boot=max(p.eval.bootstrap, 1000), confidence=p.eval.confidence, seed=p.eval.seed)


@dataclass(frozen=True)
class TableOutputs:
    table: Path  # paired comparison of every row (markdown)
    summary: Path  # mean over seeds, target check (markdown)
    metrics: Path  # DVC metrics: seed means per variant (JSON)
    curves: Path  # per-round batch means of every row (CSV, DVC plots)
    figures: tuple[Path, ...]


def run_table(params_file: str, overrides: Sequence[str], rows: Sequence[str], seeds: Sequence[int],
              root: Path, metrics_dir: Path, report_dir: Path, engine=None) -> TableOutputs:
    """Train and evaluate every (row, seed) from the shared SFT start, then write the table.

    ``engine``: a live rollout engine to use (tests share one); by default one is started and
    closed here. Rows whose results exist for the same identity are reused, so a table resumes.
    """
    import json

    from flows import cmd_data, cmd_sft
    from flows.cmd_model import ensure_model
    from flows.cmd_train import init_path
    from fgrpo_core.eval.runner import load_test_splits
    from fgrpo_core.train.setup import create_trainer, make_engine

    base = load_params(params_file, list(overrides))
    # 1. The shared start: base model, data, one SFT checkpoint (the same commands as the pipeline).
    ensure_model(base.model)
    common = ["--params", params_file] + [x for o in overrides for x in ("--set", o)]
    if not (Path(base.data.out_dir) / "manifest.json").is_file() and cmd_data.main(common):
        raise RuntimeError("fgrpo repro: staging the data failed (see above)")
    init = init_path(base)
    if not (init / "config.json").is_file() and cmd_sft.main(common):
        raise RuntimeError("fgrpo repro: the SFT warm start failed (see above)")
    splits = load_test_splits(base.data.out_dir, base.eval.benchmarks, base.eval.limit)

    # 2. One engine for every row; each row starts from the SFT weights.
    own_engine = engine is None
    if own_engine:
        engine = make_engine(init, base.rollout, base.model, base.seed)
    done: list[tuple[str, Path]] = []
    try:
        check = _sft_on_val(engine, params_file, overrides, init, metrics_dir, report_dir)
        if not check.passed:
            raise SFTAtChance(check.message())  # main() prints it once, on stderr
        print(check.message(), flush=True)
        sft_params = load_params(params_file, list(overrides) + [
            f"eval.out_path={metrics_dir / 'sft.json'}", f"eval.samples_path={metrics_dir / 'sft_samples.jsonl'}",
            f"eval.report_dir={report_dir / 'sft'}"])
        ident_path = metrics_dir / "sft.identity.json"
        ident = row_identity(sft_params, init, trained=False)
        if not (_check_identity(ident_path, ident, "sft") and Path(sft_params.eval.out_path).is_file()):
            engine.load_weights_from(init)
            _evaluate(engine, sft_params, splits, "sft", None)
            ident_path.write_text(json.dumps(ident, indent=1))
        done.append(("sft", Path(sft_params.eval.out_path)))
        for seed in seeds:
            for name in rows:
                p = load_params(params_file, list(overrides) + _row_overrides(name, seed, root, metrics_dir, report_dir))
                row, out = f"{name}-s{seed}", Path(p.eval.out_path)
                ident_path, ident = metrics_dir / f"{row}.identity.json", row_identity(p, init)
                if not (_check_identity(ident_path, ident, row) and out.is_file()):
                    engine.load_weights_from(init)
                    trainer = create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                                             init_path=init, data_dir=p.data.out_dir, seed=seed, engine=engine)
                    trainer.resume()
                    print(f"[{row}] training {p.fgrpo.rounds} rounds", flush=True)
                    trainer.run()
                    _evaluate(engine, p, splits, row, Path(p.fgrpo.run_dir))
                    ident_path.write_text(json.dumps(ident, indent=1))
                done.append((row, out))
    finally:
        if own_engine:
            engine.close()
        else:
            engine.load_weights_from(init)  # hand a shared engine back holding the start policy

    # 3. The table: every row against GRPO-T (the paper's baseline) when it ran, else the SFT start.
    from flows.cmd_eval import compare_main

    order = sorted(done, key=lambda x: (not x[0].startswith("grpo_t"), x[0] != "sft"))
    report_dir.mkdir(parents=True, exist_ok=True)
    table = report_dir / "table.md"
    if compare_main([str(m) for _, m in order] + ["--names", ",".join(n for n, _ in order),
                                                  "--out", str(table), "--plot", str(report_dir / "benchmarks.png"),
                                                  "--bootstrap", str(base.eval.bootstrap)]):
        raise RuntimeError("fgrpo repro: the comparison table failed (see above)")
    return _summarise(base, rows, seeds, root, metrics_dir, report_dir, table, check)


def _summarise(base, rows, seeds, root: Path, metrics_dir: Path, report_dir: Path, table: Path,
               sft=None) -> TableOutputs:
    """Seed means, paired differences against GRPO-T, the target check, per-round curves and the
    multiplier trajectories."""
    import csv
    import json

    from fgrpo_core.eval.curves import read_multipliers, read_train_metrics
    from fgrpo_core.eval.paired import chance_level, paired_differences
    from fgrpo_core.eval.repro import (
        RowEvidence, ir_of_judged, plot_multiplier_trajectories, plot_round_curves, rotation_accuracy, seed_stats,
        summary_markdown, target_check)
    from fgrpo_core.eval.results import JudgeOutcome, read_samples

    def mean_block(row: str) -> dict:
        blob = json.loads((metrics_dir / f"{row}.json").read_text())
        m = blob["mean"]
        m["ir_judged"] = ir_of_judged(blob["benchmarks"])
        with (metrics_dir / f"{row}_samples.jsonl").open() as f:
            m["rotation_accuracy"] = rotation_accuracy([json.loads(line) for line in f if line.strip()])
        return m

    means = {"sft": [mean_block("sft")]}
    for name in rows:
        means[name] = [mean_block(f"{name}-s{s}") for s in seeds]
    stats = {name: seed_stats(runs) for name, runs in means.items()}

    # Paired by seed against GRPO-T (same SFT start, same seed, same test prompts).
    samples = {(name, s): read_samples(metrics_dir / f"{name}-s{s}_samples.jsonl") for name in rows for s in seeds}
    ev = base.eval
    paired = {}
    if "grpo_t" in rows:
        paired = {name: paired_differences([(samples[(name, s)], samples[("grpo_t", s)]) for s in seeds],
                                           n_boot=max(ev.bootstrap, 1000), confidence=ev.confidence, seed=ev.seed)
                  for name in rows if name != "grpo_t"}

    def evidence(name: str) -> RowEvidence:
        runs = [samples[(name, s)] for s in seeds]
        return RowEvidence(
            rotation_accuracy=stats[name]["rotation_accuracy"].mean, chance=chance_level(runs[0]),
            well_formed=stats[name]["well_formed"].mean,
            consistency_judged=sum(r.consistency_status is JudgeOutcome.ok for run in runs for r in run),
            semantic_judged=sum(r.semantic_status is JudgeOutcome.ok and not math.isnan(r.semantic)
                                for run in runs for r in run))

    check = None
    if {"grpo_t", "fgrpo"} <= set(rows):
        check = target_check(stats["grpo_t"], stats["fgrpo"], paired.get("fgrpo"),
                             (evidence("grpo_t"), evidence("fgrpo")), margin=ev.min_sft_margin)
    summary = report_dir / "summary.md"
    summary.write_text(summary_markdown(stats, LABELS, check, seeds, paired, ev.confidence, sft))

    def num(x: float):
        return x if math.isfinite(x) else None  # JSON has no NaN/inf

    metrics = metrics_dir / "summary.json"
    blob = {name: {m: st.mean for m, st in s.items()} for name, s in stats.items()}
    blob["paired"] = {name: {m: {"diff": num(d.value), "lo": num(d.lo), "hi": num(d.hi), "seed_lo": num(d.seed_lo),
                                 "seed_hi": num(d.seed_hi), "per_seed": [num(x) for x in d.per_seed],
                                 "n_prompts": d.n_prompts} for m, d in ds.items()}
                      for name, ds in paired.items()}
    if check is not None:
        blob["target"] = {"ir_ratio": num(check.ir_ratio), "acc_gap": check.acc_gap, "semantic_gain": check.semantic_gain,
                          "acc_gap_lo": num(check.acc_lo), "semantic_gain_lo": num(check.semantic_lo),
                          **{f"{k}_verdict": getattr(check, k).status for k in ("ir", "acc", "semantic")},
                          **{f"{k}_reason": getattr(check, k).reason for k in ("ir", "acc", "semantic")}}
    if sft is not None:
        blob["sft_val"] = {"per_order_accuracy": sft.accuracy, "lo": sft.lo, "hi": sft.hi, "chance": sft.chance,
                           "margin": sft.margin, "questions": sft.n, "passed": sft.passed}
    metrics.write_text(json.dumps(blob, indent=1, sort_keys=True) + "\n")

    curves_by_variant, histories, long_rows = {}, {}, []
    for name in rows:
        runs = []
        for s in seeds:
            run_dir = root / f"{name}-s{s}" / "runs"
            c = read_train_metrics(run_dir / "train_metrics.csv")
            runs.append(c)
            for i, r in enumerate(c.rounds):
                long_rows.append({"variant": name, "seed": s, "round": int(r),
                                  **{k: float(v[i]) for k, v in sorted(c.series.items())}})
            if name.startswith("fgrpo"):
                histories[f"{name}-s{s}"] = read_multipliers(run_dir / "multipliers.csv")
        curves_by_variant[name] = runs
    curves = report_dir / "curves.csv"
    with curves.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(long_rows[0]) if long_rows else ["variant", "seed", "round"])
        w.writeheader()
        w.writerows(long_rows)
    figures = [plot_round_curves(curves_by_variant, report_dir / "curves.png",
                                 title=f"{base.name}: per-round batch means (mean over seeds {list(seeds)})")]
    if histories:
        figures.append(plot_multiplier_trajectories(histories, report_dir / "multipliers.png",
                                                    title=f"{base.name}: Lagrange multipliers of the FGRPO rows"))
    print(summary.read_text(), flush=True)
    return TableOutputs(table, summary, metrics, curves, tuple(figures))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo repro", description="the ablation table from one SFT checkpoint")
    ap.add_argument("--params", default="params/repro-tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"rows to run ({', '.join(VARIANTS)})")
    ap.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated RL seeds (same SFT checkpoint)")
    ap.add_argument("--dir", default="repro/runs", help="where each row's runs and checkpoints go")
    ap.add_argument("--metrics-dir", default="repro/metrics", help="eval JSON per row, summary.json")
    ap.add_argument("--report-dir", default="repro/reports", help="table, summary, curves and figures")
    args = ap.parse_args(list(argv or []))
    rows = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in rows if v not in VARIANTS]
    if unknown or not rows:
        print(f"fgrpo repro: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"fgrpo repro: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    from flows.judge_keys import endpoint_in_use, export_judge_key

    try:
        base = load_params(args.params, args.overrides)
        export_judge_key(endpoint_in_use(base.judges))  # from a Prefect Secret block, if the params name one
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    metrics_dir, report_dir = Path(args.metrics_dir), Path(args.report_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_table(args.params, args.overrides, rows, seeds, Path(args.dir), metrics_dir, report_dir)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

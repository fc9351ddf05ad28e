"""``fgrpo evaluate``, ``fgrpo compare`` and ``fgrpo eval-gate``.

    fgrpo evaluate --params FILE [--checkpoint PATH] [--name NAME] [--set key=value ...]
        greedy pass@1 on every configured test split -> eval.json, per-sample JSONL, report, PNGs
    fgrpo compare RUN_A RUN_B ... [--names A,B,...] [--out FILE.md] [--plot FILE.png]
        one table across runs (ablation layout), differences vs RUN_A with intervals
    fgrpo eval-gate BASELINE.json CURRENT.json [--params FILE] [--tol metric=value ...]
        exit 1 and name the metric when CURRENT regresses beyond a tolerance

A RUN is an eval.json file or a directory holding ``eval.json`` or ``metrics/eval.json``; its
per-sample results are read from ``<stem>_samples.jsonl`` beside it when present (paired
intervals for the differences).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from fgrpo_core import checkpoints
from fgrpo_core.checkpoints import policy_version
from fgrpo_core.constraints import taus
from fgrpo_core.config import JudgeParams, Params, ParamsError, load_params
from fgrpo_core.eval.compare import RunEval, compare_runs, comparison_markdown
from fgrpo_core.eval.gate import regression_gate
from fgrpo_core.eval.metrics import SPECS
from fgrpo_core.eval.report import read_metrics_json
from fgrpo_core.eval.results import read_samples
from fgrpo_core.judges.factory import RoutedJudge, build_judge  # noqa: F401  (re-exported)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
def newest_checkpoint(params: Params) -> Path:
    """The highest ``round-N`` under ``fgrpo.out_dir`` holding safetensors, else the SFT output."""
    return checkpoints.newest_checkpoint(params.fgrpo.out_dir, params.sft.out_dir)


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgrpo evaluate", description="greedy pass@1 on every test split")
    p.add_argument("--params", required=True, help="params preset (YAML)")
    p.add_argument("--checkpoint", help="policy to evaluate (default: newest round checkpoint, else SFT)")
    p.add_argument("--name", help="run name shown in the report (default: the checkpoint's folder name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key, e.g. eval.limit=16 (repeatable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _evaluate_parser().parse_args(argv)
    from flows.judge_keys import endpoint_in_use, export_judge_key

    try:
        params = load_params(args.params, args.overrides)
        checkpoint = Path(args.checkpoint) if args.checkpoint else newest_checkpoint(params)
        export_judge_key(endpoint_in_use(params.judges))  # from a Prefect Secret block, if the params name one
    except (ParamsError, FileNotFoundError) as err:
        print(f"fgrpo evaluate: {err}", file=sys.stderr)
        return 2
    from fgrpo_core.eval.outputs import write_eval_outputs
    from fgrpo_core.eval.runner import EvalSettings, generate, load_test_splits, score
    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    ep = params.eval
    try:
        splits = load_test_splits(params.data.out_dir, ep.benchmarks, ep.limit)
    except FileNotFoundError as err:
        print(f"fgrpo evaluate: {err}", file=sys.stderr)
        return 2
    print(f"evaluating {checkpoint} on {', '.join(f'{b} ({len(s)})' for b, s in splits.items())}", flush=True)

    def start_engine(path: str | Path) -> VLLMEngine:
        return VLLMEngine.from_params(path, params.rollout, params.model, params.seed)

    settings = EvalSettings.from_params(ep)
    # Generate, then free the policy's engine before a vLLM judge (if any) takes the accelerator.
    engine = start_engine(checkpoint)
    engine.policy_version = policy_version(checkpoint)  # round-4 holds policy 4; a fresh engine counts from 0
    try:
        generated = generate(engine, splits, settings)
    finally:
        engine.close()
    judge_engines: list[VLLMEngine] = []

    def judge_llm(model: str) -> Any:
        judge_engines.append(start_engine(model))
        return judge_engines[-1].llm

    try:
        result = score(generated, build_judge(params.judges, judge_llm), settings)
    finally:
        for e in judge_engines:
            e.close()
    run_dir = Path(params.fgrpo.run_dir)
    f = params.fgrpo
    out = write_eval_outputs(
        result, ep.out_path, ep.samples_path, ep.report_dir,
        run_name=args.name or checkpoint.name,
        about=[f"Checkpoint: `{checkpoint}`", f"Params: `{args.params}` (preset {params.name})",
               f"Judges: consistency={params.judges.consistency}, semantic={params.judges.semantic}, "
               f"scope={ep.judge_scope}"],
        multipliers_csv=run_dir / "multipliers.csv", train_metrics_csv=run_dir / "train_metrics.csv",
        taus=taus(f),
    )
    m = result.metrics.mean
    print(f"mean accuracy {m.accuracy.value:.3f}  IR {m.inconsistency_rate.value:.3f}  "
          f"semantic {m.semantic_grounding.value:.3f}  spatial {m.spatial_grounding.value:.3f}")
    print(f"wrote {out.metrics}, {out.headline}, {out.samples}, {out.table}, {out.report}"
          + "".join(f", {p}" for p in out.plots))
    return 0


# --------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------
def resolve_run(arg: str) -> tuple[str, Path, Path | None]:
    """(name, eval.json, per-sample JSONL or None) of a RUN argument."""
    p = Path(arg)
    if p.is_dir():
        for cand in (p / "eval.json", p / "metrics" / "eval.json"):
            if cand.is_file():
                metrics, name = cand, p.name
                break
        else:
            raise FileNotFoundError(f"{p}: no eval.json or metrics/eval.json inside")
    elif p.is_file():
        metrics = p
        name = p.parent.parent.name if p.parent.name == "metrics" else p.parent.name or p.stem
    else:
        raise FileNotFoundError(f"run not found: {p}")
    samples = metrics.with_name(f"{metrics.stem}_samples.jsonl")
    return name, metrics, samples if samples.is_file() else None


def compare_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fgrpo compare", description="one table across runs")
    p.add_argument("runs", nargs="+", help="eval.json files or run directories; the first is the baseline")
    p.add_argument("--names", help="comma-separated run names (default: folder names)")
    p.add_argument("--out", help="write the markdown table here (default: print only)")
    p.add_argument("--plot", help="write the per-benchmark bar chart here (PNG)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the difference intervals")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        resolved = [resolve_run(r) for r in args.runs]
        names = args.names.split(",") if args.names else [n for n, _, _ in resolved]
        if len(names) != len(resolved):
            raise ValueError(f"--names gives {len(names)} names for {len(resolved)} runs")
        runs = [
            RunEval(name, read_metrics_json(m), read_samples(s) if s else None)
            for name, (_, m, s) in zip(names, resolved)
        ]
        table = comparison_markdown(compare_runs(runs, args.bootstrap, args.confidence, args.seed))
    except (FileNotFoundError, ValueError) as err:
        print(f"fgrpo compare: {err}", file=sys.stderr)
        return 2
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.plot:
        from fgrpo_core.eval.plots import plot_benchmark_bars

        plot_benchmark_bars([(r.name, r.metrics) for r in runs], args.plot, title="Runs compared per benchmark")
    return 0


# --------------------------------------------------------------------------------------------
# eval-gate
# --------------------------------------------------------------------------------------------
def gate_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fgrpo eval-gate", description="fail on a metric regression")
    p.add_argument("baseline", help="the last accepted eval.json")
    p.add_argument("current", help="the new eval.json")
    p.add_argument("--params", help="take eval.tolerances from this preset")
    p.add_argument("--tol", action="append", default=[], metavar="METRIC=VALUE",
                   help=f"tolerance override (fraction), metrics: {', '.join(SPECS)}")
    args = p.parse_args(argv)
    try:
        from fgrpo_core.config import EvalParams

        tolerances = dict((load_params(args.params).eval if args.params else EvalParams()).tolerances)
        for item in args.tol:
            if "=" not in item:
                raise ValueError(f"--tol {item!r} is not METRIC=VALUE")
            k, v = item.split("=", 1)
            tolerances[k.strip()] = float(v)
        result = regression_gate(read_metrics_json(args.baseline), read_metrics_json(args.current), tolerances)
    except (FileNotFoundError, ValueError, ParamsError) as err:
        print(f"fgrpo eval-gate: {err}", file=sys.stderr)
        return 2
    for c in result.checks:
        print(("REGRESSION " if c.regressed else "ok         ") + c.reason)
    if not result.passed:
        names = ", ".join(c.label for c in result.regressions)
        print(f"fgrpo eval-gate: regression in {names}", file=sys.stderr)
        return 1
    print(f"fgrpo eval-gate: passed ({len(result.checks)} checks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write one evaluation's artifacts to explicit paths: metrics JSON, per-sample JSONL, report, plots."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from fgrpo_core.eval.curves import read_multipliers, read_train_metrics
from fgrpo_core.eval.headline import headline_metrics, write_headline_json
from fgrpo_core.eval.plots import plot_benchmark_bars, plot_curriculum, plot_training_curves
from fgrpo_core.eval.report import markdown_report, write_benchmark_table, write_metrics_json
from fgrpo_core.eval.results import write_samples
from fgrpo_core.eval.runner import EvalResult

CURRICULUM_PNG = "eval-curriculum.png"
TRAINING_PNG = "eval-training.png"
BENCHMARKS_PNG = "eval-benchmarks.png"
REPORT_MD = "eval.md"


@dataclass(frozen=True)
class EvalOutputs:
    metrics: Path
    samples: Path
    table: Path
    report: Path
    plots: list[Path] = field(default_factory=list)
    headline: Path | None = None


def write_eval_outputs(
    result: EvalResult,
    metrics_path: str | Path,
    samples_path: str | Path,
    report_dir: str | Path,
    run_name: str = "this run",
    about: Sequence[str] = (),
    multipliers_csv: str | Path | None = None,
    train_metrics_csv: str | Path | None = None,
    taus: Mapping[str, float] | None = None,
    n_examples: int = 1,
) -> EvalOutputs:
    """eval.json, the per-sample JSONL, ``<metrics stem>_benchmarks.csv`` (one row per benchmark,
    for DVC plots) and ``<metrics stem>_headline.json`` (the few numbers DVC shows as metrics,
    with the final λ of ``multipliers_csv``) beside eval.json, ``report_dir/eval.md`` and its PNGs.

    Training histories are plotted when their paths are given and exist (an evaluation of a
    checkpoint that was not trained here has none).
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = write_metrics_json(result.metrics, metrics_path)
    samples = write_samples(result.samples, samples_path)
    table = write_benchmark_table(result.metrics, benchmark_table_path(metrics_path))
    plots: list[tuple[str, Path]] = [
        ("Per benchmark", plot_benchmark_bars([(run_name, result.metrics)], report_dir / BENCHMARKS_PNG))
    ]
    rows = []
    if multipliers_csv is not None and Path(multipliers_csv).is_file():
        rows = read_multipliers(multipliers_csv)
        if rows:
            plots.append(("Multiplier curriculum", plot_curriculum(rows, report_dir / CURRICULUM_PNG)))
    if train_metrics_csv is not None and Path(train_metrics_csv).is_file():
        curves = read_train_metrics(train_metrics_csv)
        if len(curves.rounds):
            plots.append(("Training signals per round",
                          plot_training_curves(curves, report_dir / TRAINING_PNG, taus=taus)))
    examples = []
    for r in result.samples:
        if sum(b == r.benchmark for b, _, _ in examples) < n_examples:
            examples.append((r.benchmark, r.sample_id, r.text))
    t = result.timings
    about = [*about, f"Policy version {result.policy_version}; {t.completions} completions, "
             f"{t.generated_tokens} tokens; generate {t.generate_s:.1f} s, grade {t.grade_s:.1f} s, "
             f"judge {t.judge_s:.1f} s."]
    text = markdown_report(
        result.metrics, title=f"Evaluation: {run_name}", about=about,
        plots=[(c, os.path.relpath(p, report_dir)) for c, p in plots], examples=examples,
    )
    report = report_dir / REPORT_MD
    report.write_text(text)
    headline = write_headline_json(headline_metrics(result.metrics, rows), headline_path(metrics_path))
    return EvalOutputs(metrics, samples, table, report, [p for _, p in plots], headline)


def benchmark_table_path(metrics_path: str | Path) -> Path:
    """metrics/eval.json -> metrics/eval_benchmarks.csv"""
    p = Path(metrics_path)
    return p.with_name(f"{p.stem}_benchmarks.csv")


def headline_path(metrics_path: str | Path) -> Path:
    """metrics/eval.json -> metrics/eval_headline.json (the DVC metrics file)"""
    p = Path(metrics_path)
    return p.with_name(f"{p.stem}_headline.json")

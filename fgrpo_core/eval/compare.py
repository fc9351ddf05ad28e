"""Several runs side by side (the paper's Table 2 and ablation layout), with differences.

Differences are against the first run (the baseline, e.g. GRPO-T), per benchmark and for the
macro mean: d = metric(run) - metric(first). Their intervals come from per-sample results:

- **paired** when both runs answered the same sample ids of a benchmark: one set of bootstrap
  weights resamples the *samples*, and both runs are scored on it (the usual case: same test
  split, different checkpoints; the interval is much tighter than two independent ones);
- **unpaired** otherwise: each run resampled on its own;
- **none** when a run has no per-sample results: the difference of the point values only.

The mean's difference resamples every common benchmark and averages, as metrics.py does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fgrpo_core.eval.bootstrap import Estimate, estimates, group_rng, ratios, resample_weights
from fgrpo_core.eval.metrics import METRIC_NAMES, EvalMetrics, MetricSet, metric_arrays
from fgrpo_core.eval.report import LABELS, PERCENT, _table, fmt_estimate
from fgrpo_core.eval.results import SampleResult

SUMMARY_METRICS = ("accuracy", "inconsistency_rate", "semantic_grounding", "spatial_grounding")


@dataclass(frozen=True)
class RunEval:
    """One run's evaluation: its metrics file and, when available, its per-sample results."""

    name: str
    metrics: EvalMetrics
    samples: list[SampleResult] | None = None


@dataclass(frozen=True)
class Difference:
    """run - first run, per benchmark and for the mean; ``pairing`` per benchmark."""

    benchmarks: dict[str, MetricSet]
    mean: MetricSet
    pairing: dict[str, str] = field(default_factory=dict)  # benchmark -> paired/unpaired/none


@dataclass(frozen=True)
class Comparison:
    runs: list[RunEval]
    differences: list[Difference | None]  # None for the first run
    benchmarks: list[str]  # union, sorted


def _by_bench(samples: Sequence[SampleResult]) -> dict[str, list[SampleResult]]:
    out: dict[str, list[SampleResult]] = {}
    for r in samples:
        out.setdefault(r.benchmark, []).append(r)
    return {b: sorted(rs, key=lambda r: r.sample_id) for b, rs in out.items()}


def _point_diff(a: MetricSet, b: MetricSet) -> MetricSet:
    return MetricSet(*[
        Estimate(b.get(k).value - a.get(k).value, math.nan, math.nan, min(a.get(k).n, b.get(k).n))
        for k in METRIC_NAMES
    ])


def difference(first: RunEval, other: RunEval, n_boot: int, confidence: float, seed: int) -> Difference:
    """other - first, per common benchmark and for the macro mean over common benchmarks."""
    common = sorted(set(first.metrics.benchmarks) & set(other.metrics.benchmarks))
    if first.samples is None or other.samples is None:
        benches = {b: _point_diff(first.metrics.benchmarks[b].overall.metrics,
                                  other.metrics.benchmarks[b].overall.metrics) for b in common}
        return Difference(benches, _point_diff(first.metrics.mean, other.metrics.mean), {b: "none" for b in common})
    sa, sb = _by_bench(first.samples), _by_bench(other.samples)
    benches, pairing = {}, {}
    boots_a, boots_b, pts_a, pts_b, ns = [], [], [], [], []
    for b in common:
        ra, rb = sa.get(b, []), sb.get(b, [])
        if not ra or not rb:
            raise ValueError(f"benchmark {b!r} is in the metrics but has no per-sample results")
        (na, da), (nb, db) = metric_arrays(ra), metric_arrays(rb)
        paired = [r.sample_id for r in ra] == [r.sample_id for r in rb]
        if paired:
            w = resample_weights(len(ra), n_boot, group_rng(seed, "diff", b))  # [B, n] shared
            wa, wb = w, w
        else:
            wa = resample_weights(len(ra), n_boot, group_rng(seed, "diff-a", b))
            wb = resample_weights(len(rb), n_boot, group_rng(seed, "diff-b", b))
        pa, pb = ratios(na, da), ratios(nb, db)  # [M]
        ba, bb = ratios(na, da, wa), ratios(nb, db, wb)  # [B, M]
        n_def = np.minimum(da.sum(1), db.sum(1))
        benches[b] = MetricSet(*estimates(pb - pa, bb - ba, n_def, confidence))
        pairing[b] = "paired" if paired else "unpaired"
        pts_a.append(pa), pts_b.append(pb), boots_a.append(ba), boots_b.append(bb), ns.append(n_def)
    with warnings.catch_warnings():  # all-NaN columns are undefined metrics
        warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(np.stack(pts_b), 0) - np.nanmean(np.stack(pts_a), 0)
        boot = np.nanmean(np.stack(boots_b), 0) - np.nanmean(np.stack(boots_a), 0)
    mean = MetricSet(*estimates(point, boot, np.stack(ns).sum(0), confidence))
    return Difference(benches, mean, pairing)


def compare_runs(runs: Sequence[RunEval], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Comparison:
    if len(runs) < 1:
        raise ValueError("compare_runs: no runs")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"compare_runs: run names must be distinct, got {names}")
    diffs: list[Difference | None] = [None] + [difference(runs[0], r, n_boot, confidence, seed) for r in runs[1:]]
    benchmarks = sorted({b for r in runs for b in r.metrics.benchmarks})
    return Comparison(list(runs), diffs, benchmarks)


def _fmt_diff(name: str, e: Estimate) -> str:
    if not e.defined:
        return "—"
    scale = 100.0 if name in PERCENT else 1.0
    s = f"{e.value * scale:+.1f}"
    if not math.isnan(e.lo):
        s += f" [{e.lo * scale:+.1f}, {e.hi * scale:+.1f}]"
    return s


def comparison_markdown(c: Comparison, title: str = "Comparison") -> str:
    """Summary (ablation layout), then per-benchmark accuracy and IR (Table 2 layout)."""
    first = c.runs[0].name
    lines = [f"# {title}", "",
             f"Values in %, [interval] = bootstrap interval; Δ = run − {first} "
             "(paired over the same samples where possible).", ""]
    header = ["Run"]
    for k in SUMMARY_METRICS:
        header += [LABELS[k], f"Δ{LABELS[k]}"]
    rows = []
    for run, d in zip(c.runs, c.differences):
        row = [run.name]
        for k in SUMMARY_METRICS:
            row += [fmt_estimate(k, run.metrics.mean.get(k)), "—" if d is None else _fmt_diff(k, d.mean.get(k))]
        rows.append(row)
    lines += ["## Mean over benchmarks", "", *_table(header, rows), ""]
    for metric in ("accuracy", "inconsistency_rate", "semantic_grounding", "spatial_grounding"):
        header = ["Run"] + c.benchmarks + ["mean"]
        rows = []
        for run, d in zip(c.runs, c.differences):
            row = [run.name]
            for b in c.benchmarks:
                bm = run.metrics.benchmarks.get(b)
                cell = "—" if bm is None else fmt_estimate(metric, bm.overall.metrics.get(metric), interval=False)
                if d is not None and b in d.benchmarks and cell != "—":
                    cell += f" ({_fmt_diff(metric, d.benchmarks[b].get(metric))})"
                row.append(cell)
            row.append(fmt_estimate(metric, run.metrics.mean.get(metric), interval=False))
            rows.append(row)
        lines += [f"## {LABELS[metric]} per benchmark (Δ vs {first} with interval)", "", *_table(header, rows), ""]
    pairings = {f"{r.name}": d.pairing for r, d in zip(c.runs, c.differences) if d is not None}
    if pairings:
        lines += ["Pairing of differences: " + "; ".join(
            f"{n}: " + ", ".join(f"{b} {p}" for b, p in ps.items()) for n, ps in pairings.items()), ""]
    return "\n".join(lines)

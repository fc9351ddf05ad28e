"""Benchmark metrics from per-sample results (docs/method.md#evaluation), with bootstrap intervals.

Over the N samples of one benchmark (or one task family of it):

    accuracy            = #correct / N                       (circular: all rotations right)
    inconsistency_rate  = #inconsistent / (N - #C_failed)    (unjudgeable counts as inconsistent)
    inconsistency_upper = (#inconsistent + #C_failed) / N     (every failed verdict counted against)
    semantic_grounding  = mean R_S over samples where R_S is defined or unjudgeable (as 0)
    spatial_grounding   = mean R_G over samples with ground-truth boxes
    well_formed         = #(R_fmt = 1) / N
    truncated           = #(hit max_tokens) / N
    response_len        = mean generated tokens

IR, precisely **[ours where the paper is silent]**. The paper defines IR = inconsistent samples /
all samples. A sample is *inconsistent* when the consistency judge answered and said 0. A sample
the judge was never asked about (no parsable reasoning/answer, or outside the judge scope) is
not inconsistent and stays in the denominator, as "all samples" says. A sample whose verdict
*failed* (unparseable or no answer) is unknown: it is neither counted as consistent nor as
inconsistent, so it leaves both numerator and denominator (``N - #C_failed``); the failed count
is reported beside IR, and ``inconsistency_upper`` gives the worst case in which every failed
verdict was an inconsistency. With no judge failures the two agree with the paper's definition.

No escape hatches **[ours]**: a sample inside the judge scope whose completion has no parsable
reasoning or answer is ``unjudgeable`` and counts as *inconsistent* (numerator and denominator);
one with no checkable sentence (K' = 0, or every sentence SKIP) counts 0 in semantic grounding.
Training counts the same cases the same way (``train.scoring``), so neither breaking the format
nor writing nothing checkable lowers IR or raises grounding. A group in which no sample was
judged or unjudgeable at all (nothing in scope, or every verdict failed) has IR undefined (NaN,
shown as "—"), not 0.

The mean over benchmarks is the macro average (the paper's "mean over 7 benchmarks"): each
benchmark weighs the same whatever its size. Its interval resamples every benchmark
independently (a stratified bootstrap) and averages the resampled benchmark values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np

from fgrpo_core.eval.bootstrap import (
    Estimate,
    estimates,
    group_rng,
    ratios,
    resample_weights,
    widen_degenerate,
)
from fgrpo_core.eval.results import JudgeOutcome, SampleResult


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool | None  # None: neither (response length)
    binary: bool  # per-sample values are 0/1 (a proportion)
    num: Callable[[SampleResult], float]
    den: Callable[[SampleResult], float]
    doc: str


def _finite(x: float) -> float:
    return 0.0 if math.isnan(x) else x


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", True, True, lambda r: float(r.correct), lambda r: 1.0, "share answered right"),
    MetricSpec(
        "inconsistency_rate", False, True, lambda r: float(r.inconsistent),
        lambda r: 0.0 if r.consistency_status.is_failure else 1.0,
        "inconsistent / (all - judge failures)",
    ),
    MetricSpec(
        "inconsistency_upper", False, True,
        lambda r: float(r.inconsistent or r.consistency_status.is_failure), lambda r: 1.0,
        "(inconsistent + judge failures) / all",
    ),
    MetricSpec(
        "semantic_grounding", True, False, lambda r: _finite(r.semantic),
        lambda r: float(not math.isnan(r.semantic) or r.semantic_status is JudgeOutcome.unjudgeable),
        "mean share of CORRECT sentences (nothing checkable: 0)",
    ),
    MetricSpec(
        "spatial_grounding", True, False, lambda r: _finite(r.spatial),
        lambda r: float(not math.isnan(r.spatial)), "mean R_G where boxes exist",
    ),
    MetricSpec("well_formed", True, True, lambda r: float(r.well_formed), lambda r: 1.0, "share with R_fmt = 1"),
    MetricSpec("truncated", False, True, lambda r: float(r.truncated), lambda r: 1.0, "share cut at max_tokens"),
    MetricSpec("response_len", None, False, lambda r: float(r.response_tokens), lambda r: 1.0, "mean tokens"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}
# Column labels of every table and plot that shows these metrics (reports, Prefect artifacts).
LABELS: dict[str, str] = {
    "accuracy": "Acc", "inconsistency_rate": "IR", "inconsistency_upper": "IR (worst)",
    "semantic_grounding": "Semantic", "spatial_grounding": "Spatial", "well_formed": "Well-formed",
    "truncated": "Truncated", "response_len": "Len (tok)",
}


@dataclass(frozen=True)
class MetricSet:
    """One estimate per metric of :data:`METRICS` (same names, same order)."""

    accuracy: Estimate
    inconsistency_rate: Estimate
    inconsistency_upper: Estimate
    semantic_grounding: Estimate
    spatial_grounding: Estimate
    well_formed: Estimate
    truncated: Estimate
    response_len: Estimate

    def get(self, name: str) -> Estimate:
        if name not in SPECS:
            raise KeyError(f"unknown metric {name!r}; known: {list(METRIC_NAMES)}")
        return getattr(self, name)


assert tuple(f.name for f in fields(MetricSet)) == METRIC_NAMES  # one list, two views


@dataclass(frozen=True)
class Counts:
    """How many samples fell where: the denominators behind the metrics."""

    n: int
    correct: int
    inconsistent: int
    consistency_judged: int  # verdict ok
    consistency_failed: int  # asked, unparseable or failed
    consistency_not_asked: int
    semantic_defined: int  # R_S a number
    semantic_failed: int  # asked, unparseable or failed
    semantic_not_asked: int
    spatial_defined: int  # samples with ground-truth boxes
    consistency_unjudgeable: int = 0  # in scope, no parsable reasoning or answer (counted inconsistent)
    semantic_unjudgeable: int = 0  # in scope, no checkable sentence (counted 0)


@dataclass(frozen=True)
class GroupMetrics:
    metrics: MetricSet
    counts: Counts


@dataclass(frozen=True)
class BenchmarkMetrics:
    name: str
    overall: GroupMetrics
    tasks: dict[str, GroupMetrics] = field(default_factory=dict)
    circular: bool = False


@dataclass(frozen=True)
class EvalMetrics:
    """Metrics of one evaluation: per benchmark (and task), plus the macro mean."""

    benchmarks: dict[str, BenchmarkMetrics]
    mean: MetricSet
    n_boot: int
    confidence: float
    seed: int


# --------------------------------------------------------------------------------------------
_IR = METRIC_NAMES.index("inconsistency_rate")
_IR_UPPER = METRIC_NAMES.index("inconsistency_upper")


def metric_arrays(results: Sequence[SampleResult]) -> tuple[np.ndarray, np.ndarray]:
    """num, den [M, n]: each metric's per-sample numerator and denominator.

    IR is undefined (den = 0) for a group in which no sample was judged or unjudgeable, and IR
    (worst) where none was in the judge scope: "0% inconsistent" must not be read off zero evidence.
    """
    num = np.array([[m.num(r) for r in results] for m in METRICS], dtype=np.float64).reshape(len(METRICS), -1)
    den = np.array([[m.den(r) for r in results] for m in METRICS], dtype=np.float64).reshape(len(METRICS), -1)
    if not any(r.consistency_status in (JudgeOutcome.ok, JudgeOutcome.unjudgeable) for r in results):
        den[_IR] = 0.0
    if all(r.consistency_status is JudgeOutcome.not_asked for r in results):
        den[_IR_UPPER] = 0.0
    return num, den


def count(results: Sequence[SampleResult]) -> Counts:
    def n_status(attr: str, pred: Callable[[JudgeOutcome], bool]) -> int:
        return sum(pred(getattr(r, attr)) for r in results)

    return Counts(
        n=len(results),
        correct=sum(r.correct for r in results),
        inconsistent=sum(r.inconsistent for r in results),
        consistency_judged=n_status("consistency_status", lambda s: s is JudgeOutcome.ok),
        consistency_failed=n_status("consistency_status", lambda s: s.is_failure),
        consistency_not_asked=n_status("consistency_status", lambda s: s is JudgeOutcome.not_asked),
        semantic_defined=sum(not math.isnan(r.semantic) for r in results),
        semantic_failed=n_status("semantic_status", lambda s: s.is_failure),
        semantic_not_asked=n_status("semantic_status", lambda s: s is JudgeOutcome.not_asked),
        spatial_defined=sum(not math.isnan(r.spatial) for r in results),
        consistency_unjudgeable=n_status("consistency_status", lambda s: s is JudgeOutcome.unjudgeable),
        semantic_unjudgeable=n_status("semantic_status", lambda s: s is JudgeOutcome.unjudgeable),
    )


BINARY = np.array([m.binary for m in METRICS])  # [M]


@dataclass(frozen=True)
class _Boot:
    point: np.ndarray  # [M] metric on the samples
    boot: np.ndarray  # [B, M] metric on each resample
    n_def: np.ndarray  # [M] samples each metric is defined on (sum den)
    total: np.ndarray  # [M] sum num (successes, for binary metrics)


def _bootstrap_group(results: Sequence[SampleResult], n_boot: int, rng: np.random.Generator) -> _Boot:
    num, den = metric_arrays(results)
    w = resample_weights(len(results), n_boot, rng)  # [B, n]
    return _Boot(ratios(num, den), ratios(num, den, w), den.sum(1), (num * den).sum(1))


def _metric_set(b: _Boot, confidence: float) -> MetricSet:
    ests = estimates(b.point, b.boot, b.n_def, confidence)
    return MetricSet(*widen_degenerate(ests, b.total, BINARY, confidence))


def group_metrics(
    results: Sequence[SampleResult], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
    key: str = "",
) -> GroupMetrics:
    """Metrics of one group of samples (``key`` names the group in its resample seed)."""
    b = _bootstrap_group(results, n_boot, group_rng(seed, key))
    return GroupMetrics(_metric_set(b, confidence), count(results))


def macro_mean(groups: list[_Boot], confidence: float) -> MetricSet:
    """Mean over groups of per-group values, NaN-aware (a group lacking a metric is left out)."""
    m = len(METRICS)
    if not groups:
        nan = np.full(m, np.nan)
        return _metric_set(_Boot(nan, nan[None, :], np.zeros(m), np.zeros(m)), confidence)
    p, b = np.stack([g.point for g in groups]), np.stack([g.boot for g in groups])  # [K, M], [K, B, M]
    with warnings.catch_warnings():  # an all-NaN column is an undefined metric, not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(p, axis=0)  # [M]
        boot = np.nanmean(b, axis=0)  # [B, M]
    n_def = np.stack([g.n_def for g in groups]).sum(0)
    total = np.stack([g.total for g in groups]).sum(0)
    return _metric_set(_Boot(point, boot, n_def, total), confidence)


def compute_metrics(
    results: Sequence[SampleResult],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    circular: Sequence[str] = (),
) -> EvalMetrics:
    """Per benchmark, per task family, and the macro mean over benchmarks."""
    by_bench: dict[str, list[SampleResult]] = {}
    for r in results:
        by_bench.setdefault(r.benchmark, []).append(r)
    _check_unique_ids(by_bench)
    benchmarks: dict[str, BenchmarkMetrics] = {}
    boots: list[_Boot] = []
    for name in sorted(by_bench):
        rows = by_bench[name]
        boots.append(_bootstrap_group(rows, n_boot, group_rng(seed, name)))
        by_task: dict[str, list[SampleResult]] = {}
        for r in rows:
            by_task.setdefault(r.task, []).append(r)
        tasks = {
            t: group_metrics(by_task[t], n_boot, confidence, seed, key=f"{name}/{t}") for t in sorted(by_task)
        }
        benchmarks[name] = BenchmarkMetrics(
            name=name,
            overall=GroupMetrics(_metric_set(boots[-1], confidence), count(rows)),
            tasks=tasks,
            circular=name in circular,
        )
    return EvalMetrics(benchmarks, macro_mean(boots, confidence), n_boot, confidence, seed)


def _check_unique_ids(by_bench: dict[str, list[SampleResult]]) -> None:
    for name, rows in by_bench.items():
        seen: set[str] = set()
        for r in rows:
            if r.sample_id in seen:
                raise ValueError(f"benchmark {name!r}: sample id {r.sample_id!r} appears twice")
            seen.add(r.sample_id)

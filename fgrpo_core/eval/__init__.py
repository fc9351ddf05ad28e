"""Evaluation: greedy pass@1 per benchmark, metrics with bootstrap intervals, reports, plots,
run comparisons and the regression gate (docs/method.md#evaluation). See docs/eval.md."""

from fgrpo_core.eval.bootstrap import Estimate
from fgrpo_core.eval.compare import Comparison, RunEval, compare_runs, comparison_markdown
from fgrpo_core.eval.gate import GateCheck, GateResult, regression_gate
from fgrpo_core.eval.metrics import METRIC_NAMES, EvalMetrics, MetricSet, compute_metrics, group_metrics
from fgrpo_core.eval.report import read_metrics_json, write_metrics_json
from fgrpo_core.eval.results import JudgeOutcome, SampleResult, read_samples, write_samples

__all__ = [
    "Comparison", "Estimate", "EvalMetrics", "GateCheck", "GateResult", "JudgeOutcome", "METRIC_NAMES",
    "MetricSet", "RunEval", "SampleResult", "compare_runs", "comparison_markdown", "compute_metrics",
    "group_metrics", "read_metrics_json", "read_samples", "regression_gate", "write_metrics_json",
    "write_samples",
]

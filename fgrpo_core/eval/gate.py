"""Regression gate: does a new evaluation fall behind a baseline by more than a tolerance?

For every metric named in the tolerances, on every baseline benchmark and on the macro mean:

    higher is better (accuracy, grounding, well_formed):  regression iff new < base - tol
    lower is better  (inconsistency_rate, truncated):     regression iff new > base + tol

Tolerances are in the metric's own units (fractions: 0.02 = 2 points). A metric defined in the
baseline but undefined or absent in the new run is a regression (it vanished); a benchmark of
the baseline missing from the new run is a regression too. A metric undefined in the baseline
is not checked. ``response_len`` has no good direction and cannot be gated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from fgrpo_core.eval.metrics import SPECS, EvalMetrics, MetricSet

MEAN = "mean"


@dataclass(frozen=True)
class GateCheck:
    benchmark: str  # benchmark name, or "mean"
    metric: str
    baseline: float
    current: float
    tolerance: float
    regressed: bool
    reason: str  # one line a person reads

    @property
    def label(self) -> str:
        return f"{self.benchmark}.{self.metric}"


@dataclass(frozen=True)
class GateResult:
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return not any(c.regressed for c in self.checks)

    @property
    def regressions(self) -> list[GateCheck]:
        return [c for c in self.checks if c.regressed]


def _check_tolerances(tolerances: Mapping[str, float]) -> None:
    for name, tol in tolerances.items():
        if name not in SPECS:
            raise ValueError(f"tolerance for unknown metric {name!r}; known: {sorted(SPECS)}")
        if SPECS[name].higher_is_better is None:
            raise ValueError(f"metric {name!r} has no better direction and cannot be gated")
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tolerance for {name!r} must be a finite number >= 0, got {tol!r}")


def _compare(bench: str, metric: str, base: MetricSet, new: MetricSet | None, tol: float) -> GateCheck | None:
    b = base.get(metric)
    if not b.defined:
        return None
    higher = SPECS[metric].higher_is_better
    if new is None or not new.get(metric).defined:
        why = "benchmark missing from the new run" if new is None else "metric undefined in the new run"
        return GateCheck(bench, metric, b.value, math.nan, tol, True, f"{bench}.{metric}: {why} (baseline {b.value:.4f})")
    c = new.get(metric).value
    change = c - b.value
    worse = -change if higher else change  # > 0 means worse
    regressed = worse > tol + 1e-12
    direction = "drop" if higher else "rise"
    reason = (
        f"{bench}.{metric}: {b.value:.4f} -> {c:.4f} ({change:+.4f}; allowed {direction} {tol:.4f})"
    )
    return GateCheck(bench, metric, b.value, c, tol, regressed, reason)


def regression_gate(baseline: EvalMetrics, current: EvalMetrics, tolerances: Mapping[str, float]) -> GateResult:
    """Check every toleranced metric on every baseline benchmark and on the mean."""
    _check_tolerances(tolerances)
    checks: list[GateCheck] = []
    for metric, tol in tolerances.items():
        for name, b in baseline.benchmarks.items():
            new = current.benchmarks.get(name)
            c = _compare(name, metric, b.overall.metrics, None if new is None else new.overall.metrics, tol)
            if c is not None:
                checks.append(c)
        c = _compare(MEAN, metric, baseline.mean, current.mean, tol)
        if c is not None:
            checks.append(c)
    return GateResult(checks)

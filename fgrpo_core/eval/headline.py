"""The headline metrics: the few numbers `dvc metrics show` / `dvc metrics diff` print.

eval.json holds every metric of every benchmark and task family with its interval (hundreds of
values); DVC prints each as a column (`show`) or a row (`diff`). The headline file keeps what a
reader compares between two runs, nested so DVC flattens it to short names:

    {
      "synthetic": {"accuracy": 0.41, "IR": 0.12, "semantic": 0.88, "spatial": 0.35},   # per benchmark
      "mean":      {...the same four...},          # only with two or more benchmarks
      "lambda":    {"consistency": 1.0, "semantic": 0.95, "spatial": 1.2}   # final multipliers
    }

Values are point estimates (fractions in [0, 1]); JSON null where a metric is undefined (spatial
grounding on a benchmark without boxes). λ is each constraint's ``lambda_after`` at its last
dual step in the multiplier history; absent when no history is given (an SFT checkpoint).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from fgrpo_core.eval.curves import CONSTRAINT_ORDER, MultiplierRow
from fgrpo_core.eval.metrics import EvalMetrics, MetricSet

# headline name -> metric name in eval.json
HEADLINE = {"accuracy": "accuracy", "IR": "inconsistency_rate", "semantic": "semantic_grounding",
            "spatial": "spatial_grounding"}
RESERVED = ("mean", "lambda")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def _four(ms: MetricSet) -> dict[str, float | None]:
    return {short: _num(ms.get(name).value) for short, name in HEADLINE.items()}


def final_multipliers(rows: Sequence[MultiplierRow]) -> dict[str, float]:
    """Each constraint's λ after its last dual step (highest step), in constraint order."""
    last: dict[str, MultiplierRow] = {}
    for r in rows:
        if r.constraint not in last or r.step >= last[r.constraint].step:
            last[r.constraint] = r
    order = [c for c in CONSTRAINT_ORDER if c in last] + sorted(set(last) - set(CONSTRAINT_ORDER))
    return {c: round(float(last[c].lambda_after), 6) for c in order}


def headline_metrics(metrics: EvalMetrics, multipliers: Sequence[MultiplierRow] = ()) -> dict[str, Any]:
    """Accuracy, IR, semantic and spatial grounding per benchmark (+ their mean when there are
    several benchmarks) and the final λ per constraint."""
    out: dict[str, Any] = {}
    for name, b in metrics.benchmarks.items():
        if name in RESERVED:
            raise ValueError(f"benchmark name {name!r} clashes with the headline key {name!r}; rename the benchmark")
        out[name] = _four(b.overall.metrics)
    if len(metrics.benchmarks) > 1:
        out["mean"] = _four(metrics.mean)
    lam = final_multipliers(multipliers)
    if lam:
        out["lambda"] = lam
    return out


def write_headline_json(headline: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(headline, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path

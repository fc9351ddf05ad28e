"""metrics/eval.json (DVC metrics) and the markdown report.

eval.json layout (flat enough for ``dvc metrics show``; fractions in [0, 1], JSON null where a
metric is undefined, e.g. spatial grounding on a benchmark without boxes):

    {
      "mean":       {"accuracy": 0.61, "accuracy_lo": 0.55, "accuracy_hi": 0.66, ...},
      "benchmarks": {
        "synthetic": {"circular": false, "accuracy": ..., "accuracy_lo": ..., "accuracy_hi": ...,
                      ..., "counts": {"n": 128, "correct": ..., ...},
                      "tasks": {"counting": {... same keys as a benchmark, without tasks ...}}}
      },
      "bootstrap": {"n_boot": 1000, "confidence": 0.95, "seed": 0}
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any, Sequence

from fgrpo_core.eval.bootstrap import UNDEFINED, Estimate
from fgrpo_core.eval.metrics import (
    LABELS,
    METRIC_NAMES,
    METRICS,
    BenchmarkMetrics,
    Counts,
    EvalMetrics,
    GroupMetrics,
    MetricSet,
)


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _metric_dict(ms: MetricSet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRIC_NAMES:
        e = ms.get(name)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _num(e.value), _num(e.lo), _num(e.hi)
    return out


def _group_dict(g: GroupMetrics) -> dict[str, Any]:
    return {**_metric_dict(g.metrics), "counts": asdict(g.counts)}


def metrics_to_dict(m: EvalMetrics) -> dict[str, Any]:
    return {
        "mean": _metric_dict(m.mean),
        "benchmarks": {
            name: {"circular": b.circular, **_group_dict(b.overall),
                   "tasks": {t: _group_dict(g) for t, g in b.tasks.items()}}
            for name, b in m.benchmarks.items()
        },
        "bootstrap": {"n_boot": m.n_boot, "confidence": m.confidence, "seed": m.seed},
    }


def write_metrics_json(m: EvalMetrics, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(metrics_to_dict(m), indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def write_benchmark_table(m: EvalMetrics, path: str | Path) -> Path:
    """One CSV row per benchmark and one for the macro mean (for DVC bar plots).

    Columns: benchmark, n, then every metric with its _lo/_hi (fractions; empty where undefined).
    """
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [c for k in METRIC_NAMES for c in (k, f"{k}_lo", f"{k}_hi")]
    rows = [(name, b.overall.counts.n, _metric_dict(b.overall.metrics)) for name, b in m.benchmarks.items()]
    rows.append(("mean", sum(b.overall.counts.n for b in m.benchmarks.values()), _metric_dict(m.mean)))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["benchmark", "n", *cols])
        for name, n, d in rows:
            w.writerow([name, n, *("" if d[c] is None else d[c] for c in cols)])
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Reading back (gate, compare)
# --------------------------------------------------------------------------------------------
def _defined_n(name: str, c: Counts) -> int:
    return {
        "inconsistency_rate": c.n - c.consistency_failed,
        "semantic_grounding": c.semantic_defined + c.semantic_unjudgeable,
        "spatial_grounding": c.spatial_defined,
    }.get(name, c.n)


def _read_estimate(d: dict, name: str, n: int, where: str) -> Estimate:
    try:
        vals = [d[name], d[f"{name}_lo"], d[f"{name}_hi"]]
    except KeyError as err:
        raise ValueError(f"{where}: missing key {err.args[0]!r}") from None
    if vals[0] is None:
        return UNDEFINED
    try:
        v, lo, hi = (math.nan if x is None else float(x) for x in vals)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} is not a number (got {vals!r})") from None
    return Estimate(v, lo, hi, n)


def _read_group(d: dict, where: str) -> GroupMetrics:
    try:
        raw = d["counts"]
        counts = Counts(**{f.name: int(raw[f.name] if f.default is MISSING else raw.get(f.name, f.default))
                           for f in fields(Counts)})
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad or missing counts ({err})") from None
    ests = [_read_estimate(d, name, _defined_n(name, counts), where) for name in METRIC_NAMES]
    return GroupMetrics(MetricSet(*ests), counts)


def metrics_from_dict(d: dict[str, Any], source: str = "<dict>") -> EvalMetrics:
    """Inverse of :func:`metrics_to_dict`; a missing or malformed key raises naming it."""
    for key in ("mean", "benchmarks", "bootstrap"):
        if key not in d:
            raise ValueError(f"{source}: not an eval metrics file (no '{key}' key)")
    benchmarks = {}
    for name, b in d["benchmarks"].items():
        where = f"{source}: benchmarks.{name}"
        tasks = {t: _read_group(g, f"{where}.tasks.{t}") for t, g in (b.get("tasks") or {}).items()}
        benchmarks[name] = BenchmarkMetrics(name, _read_group(b, where), tasks, bool(b.get("circular", False)))
    n_mean = sum(b.overall.counts.n for b in benchmarks.values())
    mean = MetricSet(*[_read_estimate(d["mean"], k, n_mean, f"{source}: mean") for k in METRIC_NAMES])
    bs = d["bootstrap"]
    return EvalMetrics(benchmarks, mean, int(bs["n_boot"]), float(bs["confidence"]), int(bs["seed"]))


def read_metrics_json(path: str | Path) -> EvalMetrics:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    return metrics_from_dict(d, str(path))


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
PERCENT = {"accuracy", "inconsistency_rate", "inconsistency_upper", "semantic_grounding",
           "spatial_grounding", "well_formed", "truncated"}
TABLE_METRICS = ("accuracy", "inconsistency_rate", "semantic_grounding", "spatial_grounding",
                 "well_formed", "response_len")


def fmt_estimate(name: str, e: Estimate, interval: bool = True) -> str:
    """"61.2 [55.0, 66.4]" (percent for shares), "—" when undefined."""
    if not e.defined:
        return "—"
    scale, digits = (100.0, 1) if name in PERCENT else (1.0, 1)
    v = f"{e.value * scale:.{digits}f}"
    if interval and not math.isnan(e.lo):
        v += f" [{e.lo * scale:.{digits}f}, {e.hi * scale:.{digits}f}]"
    return v


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def markdown_report(
    m: EvalMetrics,
    title: str = "Evaluation",
    about: Sequence[str] = (),
    plots: Sequence[tuple[str, str]] = (),
    examples: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The report: summary, per benchmark, per task, judge counts, definitions, plots, examples.

    ``about``: extra lines (checkpoint, params); ``plots``: (caption, relative path);
    ``examples``: (benchmark, sample id, completion text).
    """
    pct = int(round(m.confidence * 100))
    lines = [f"# {title}", ""]
    lines += [f"- {a}" for a in about]
    lines += [f"- Intervals: {pct}% bootstrap percentile, {m.n_boot} resamples, seed {m.seed}.", ""]
    header = ["Benchmark", "n"] + [LABELS[k] for k in TABLE_METRICS]
    rows = []
    for name, b in m.benchmarks.items():
        label = name + (" (circular)" if b.circular else "")
        rows.append([label, str(b.overall.counts.n)] + [fmt_estimate(k, b.overall.metrics.get(k)) for k in TABLE_METRICS])
    rows.append(["**mean**", str(sum(b.overall.counts.n for b in m.benchmarks.values()))]
                + [fmt_estimate(k, m.mean.get(k)) for k in TABLE_METRICS])
    lines += ["## Per benchmark (mean = macro average over benchmarks)", "", *_table(header, rows), ""]

    rows = [
        [name, t, str(g.counts.n)] + [fmt_estimate(k, g.metrics.get(k)) for k in TABLE_METRICS]
        for name, b in m.benchmarks.items() for t, g in b.tasks.items()
    ]
    lines += ["## Per task family", "", *_table(["Benchmark", "Task", "n"] + header[2:], rows), ""]

    cheader = ["Benchmark", "n", "correct", "inconsistent", "C judged", "C failed", "C nothing to judge",
               "C not asked", "S defined", "S failed", "S nothing checkable", "S not asked", "with boxes"]
    rows = []
    for name, b in m.benchmarks.items():
        c = b.overall.counts
        rows.append([name] + [str(x) for x in (c.n, c.correct, c.inconsistent, c.consistency_judged,
                                               c.consistency_failed, c.consistency_unjudgeable,
                                               c.consistency_not_asked, c.semantic_defined, c.semantic_failed,
                                               c.semantic_unjudgeable, c.semantic_not_asked, c.spatial_defined)])
    lines += ["## Judge outcomes (C = consistency, S = semantic)", "", *_table(cheader, rows), ""]
    lines += [
        "## Definitions", "",
        *[f"- **{LABELS[s.name]}** (`{s.name}`): {s.doc}." for s in METRICS],
        "- IR leaves samples whose consistency verdict failed (unparseable or no answer) out of "
        "numerator and denominator; samples in the judge scope with no parsable reasoning or answer "
        "count as inconsistent (C nothing to judge), samples outside the scope as not inconsistent. "
        "Semantic grounding counts a sample with no checkable sentence as 0 (S nothing checkable). "
        "*IR (worst)* counts every failed verdict as inconsistent. IR is undefined (—) where no "
        "sample was judged or had nothing to judge.",
        "- Circular benchmarks ask every rotation of the options; a sample is correct only if all "
        "rotations are. Other metrics use rotation 0 (the staged option order).",
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        for caption, rel in plots:
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    if examples:
        lines += ["## Example completions", ""]
        for bench, sid, text in examples:
            shown = text if len(text) <= 600 else text[:600] + " …"
            lines += [f"**{bench} / {sid}**", "", "```", shown.replace("```", "'''"), "```", ""]
    return "\n".join(lines)

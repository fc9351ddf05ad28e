"""Markdown for Prefect artifacts: a round's constraints vs tau, the final metrics, plot paths."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from fgrpo_core.constraints import CONSTRAINTS  # noqa: E402


def _f(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else f"{x:.3f}"


def round_summary_markdown(m: Mapping, taus: Mapping[str, float], active: Sequence[str]) -> str:
    """One round: each constraint's batch mean against its threshold, and lambda before/after.

    ``m`` is the round's row of train_metrics.csv (``RoundOutcome.metrics``).
    """
    r = m["round"]
    lines = [
        f"## FGRPO round {r} ({m.get('mode', '')})",
        f"task reward {_f(m.get('reward_task'))} (acc {_f(m.get('reward_acc'))}, format {_f(m.get('reward_fmt'))}); "
        f"loss {_f(m.get('loss'))}, KL {_f(m.get('kl'))}, {m.get('rollouts', '?')} rollouts of {m.get('prompts', '?')} prompts",
        "",
        "| constraint | mean c̄ | τ | c̄ − τ | applicable | λ used | λ next | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in CONSTRAINTS:
        mean, tau = m.get(f"reward_{k}", math.nan), taus[k]
        if k not in active:
            status = "inactive"
        elif mean is None or (isinstance(mean, float) and math.isnan(mean)):
            status = "no applicable rollouts"
        else:
            status = "met" if float(mean) >= tau else "violated"
        slack = float(mean) - tau if status in ("met", "violated") else math.nan
        lines.append(f"| {k} | {_f(mean)} | {tau:.2f} | {_f(slack)} | {m.get(f'count_{k}', 0)} | "
                     f"{_f(m.get(f'lambda_{k}'))} | {_f(m.get(f'lambda_next_{k}'))} | {status} |")
    return "\n".join(lines)


def metrics_table_markdown(benchmarks_csv: str | Path, title: str) -> str:
    """The eval's per-benchmark table (``eval_benchmarks.csv``) with intervals, mean row last."""
    import pandas as pd

    df = pd.read_csv(benchmarks_csv)
    from fgrpo_core.eval.metrics import LABELS

    cols = [(m, LABELS[m]) for m in ("accuracy", "inconsistency_rate", "semantic_grounding", "spatial_grounding",
                                     "well_formed")]
    lines = [f"## {title}", "", "| benchmark | n | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c, _ in cols:
            v, lo, hi = row.get(c), row.get(f"{c}_lo"), row.get(f"{c}_hi")
            cells.append(_f(v) if _f(v) == "—" else f"{_f(v)} [{_f(lo)}, {_f(hi)}]")
        lines.append(f"| {row['benchmark']} | {int(row['n'])} | " + " | ".join(cells) + " |")
    lines.append("\nIR = inconsistency rate (lower is better); intervals are bootstrap percentiles.")
    return "\n".join(lines)


def plots_markdown(report_dir: str | Path) -> str:
    """Links to the report and every PNG beside it (absolute paths: they open from the UI's host)."""
    d = Path(report_dir).resolve()
    files = sorted(d.glob("*.md")) + sorted(d.glob("*.png"))
    if not files:
        return f"## Plots\n\nnothing in `{d}`"
    return "\n".join(["## Report and plots", *[f"- [{f.name}](file://{f}) `{f}`" for f in files]])


def gate_markdown(checks, baseline: str, current: str) -> str:
    """The regression gate's checks, regressions first."""
    bad = [c for c in checks if c.regressed]
    head = (f"## Regression: {len(bad)} metric(s) fell behind `{baseline}`" if bad
            else f"## No regression against `{baseline}`")
    lines = [head, f"current: `{current}`", "", "| check | baseline | current | tolerance | result |",
             "|---|---|---|---|---|"]
    for c in sorted(checks, key=lambda c: not c.regressed):
        lines.append(f"| {c.label} | {_f(c.baseline)} | {_f(c.current)} | {c.tolerance:.3f} | "
                     f"{'**REGRESSION**' if c.regressed else 'ok'} |")
    return "\n".join(lines)

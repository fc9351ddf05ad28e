"""PNG figures: the multiplier curriculum, training curves, and benchmark bars across runs.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot, no
global backend switch, safe in worker threads). Each function takes its data and an explicit
output path, and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fgrpo_core.eval.curves import MultiplierRow, TrainCurves, by_constraint
from fgrpo_core.eval.metrics import EvalMetrics

PRETTY = {"consistency": "Consistency R_C", "semantic": "Semantic grounding R_S", "spatial": "Spatial grounding R_G"}
MEAN_COLOUR, TAU_COLOUR, LAMBDA_COLOUR = "tab:blue", "tab:red", "tab:orange"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def plot_curriculum(rows: Sequence[MultiplierRow], path: str | Path, title: str = "") -> Path:
    """One panel per constraint: its batch mean and tau (dashed) per step, lambda on a second axis.

    The paper's "emergent curriculum": lambda rises while a constraint is violated (mean < tau)
    and falls once it is met. Steps whose dual update was skipped are marked with a cross.
    """
    groups = by_constraint(list(rows))
    if not groups:
        raise ValueError("plot_curriculum: no multiplier rows to plot")
    k = len(groups)
    fig = Figure(figsize=(5.2 * k, 3.8), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    lam_max = max(max(r.lambda_before, r.lambda_after) for r in rows)
    for ax, (name, rs) in zip(axes, groups.items()):
        step = np.array([r.step for r in rs])
        mean = np.array([r.mean for r in rs])
        tau = np.array([r.threshold for r in rs])
        lam = np.array([r.lambda_after for r in rs])
        skipped = np.array([r.skipped for r in rs])
        ax.plot(step, mean, "-o", color=MEAN_COLOUR, ms=3, lw=1.5, label="batch mean c̄")
        if skipped.any():
            ax.plot(step[skipped], np.nan_to_num(mean[skipped], nan=0.0), "x", color="gray", ms=6,
                    label="λ step skipped")
        ax.step(step, tau, where="mid", ls="--", color=TAU_COLOUR, lw=1.5, label=f"τ = {tau[-1]:g}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("policy step (round)")
        ax.set_ylabel("constraint mean", color=MEAN_COLOUR)
        ax.set_title(PRETTY.get(name, name))
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(step, lam, "-s", color=LAMBDA_COLOUR, ms=3, lw=1.5, label="λ (after step)")
        ax2.set_ylim(0, max(lam_max * 1.1, 1.1))
        ax2.set_ylabel("λ", color=LAMBDA_COLOUR)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8, framealpha=0.85)
    fig.suptitle(title or "Constraint means against τ, and λ, per step")
    return _save(fig, path)


_PANELS = (
    ("Task rewards", ("reward_task", "reward_acc", "reward_fmt"), ()),
    ("Consistency", ("reward_consistency", "inconsistency_rate"), ("consistency",)),
    ("Grounding", ("reward_semantic", "reward_spatial"), ("semantic", "spatial")),
    # no escape hatches: shares of rollouts that gave a judge nothing to rule on (counted as 0)
    ("Nothing to judge", ("semantic_undefined_share", "consistency_unjudged_share", "unparsable_share"), ()),
)
_TAU_SUB = {"consistency": "C", "semantic": "S", "spatial": "G"}
_LABEL = {
    "reward_task": "R_task", "reward_acc": "R_acc", "reward_fmt": "R_fmt",
    "reward_consistency": "R_C (judged)", "inconsistency_rate": "IR", "reward_semantic": "R_S",
    "reward_spatial": "R_G",
    "semantic_undefined_share": "no checkable sentence (of correct)",
    "consistency_unjudged_share": "no reasoning (of correct)", "unparsable_share": "unparsable (of all)",
}


def plot_training_curves(
    curves: TrainCurves, path: str | Path, taus: Mapping[str, float] | None = None, title: str = ""
) -> Path:
    """Reward, consistency/IR and grounding means per round (tau dashed where given)."""
    panels = [(t, [c for c in cols if c in curves.series], ks) for t, cols, ks in _PANELS]
    panels = [p for p in panels if p[1]]
    if "response_len" in curves.series or "kl" in curves.series:
        panels.append(("Length and KL", [c for c in ("response_len", "kl") if c in curves.series], ()))
    if not panels:
        raise ValueError(f"plot_training_curves: none of the known columns present ({sorted(curves.series)})")
    fig = Figure(figsize=(4.8 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = curves.rounds
    for ax, (ptitle, cols, tau_keys) in zip(axes, panels):
        if ptitle == "Length and KL":
            _length_kl_panel(ax, x, curves)
            continue
        for c in cols:
            ax.plot(x, curves.series[c], "-o", ms=3, lw=1.5, label=_LABEL.get(c, c))
        for k in tau_keys:
            if taus and k in taus:
                ax.axhline(taus[k], ls="--", lw=1.2, color=TAU_COLOUR if k != "spatial" else "tab:purple",
                           label=f"τ_{_TAU_SUB[k]} = {taus[k]:g}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("round")
        ax.set_ylabel("mean over the round's rollouts")
        ax.set_title(ptitle)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.suptitle(title or "Training signals per round")
    return _save(fig, path)


def _length_kl_panel(ax, x: np.ndarray, curves: TrainCurves) -> None:
    handles = []
    if "response_len" in curves.series:
        handles += ax.plot(x, curves.series["response_len"], "-o", ms=3, color="tab:green", label="response length")
        ax.set_ylabel("tokens", color="tab:green")
    if "kl" in curves.series:
        ax2 = ax.twinx() if handles else ax
        handles += ax2.plot(x, curves.series["kl"], "-s", ms=3, color="tab:brown", label="KL to reference")
        ax2.set_ylabel("KL", color="tab:brown")
    ax.set_xlabel("round")
    ax.set_title("Length and KL")
    ax.grid(alpha=0.3)
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="best")


BAR_METRICS = (
    ("accuracy", "Accuracy (%)"),
    ("inconsistency_rate", "Inconsistency rate (%), lower is better"),
    ("semantic_grounding", "Semantic grounding (%)"),
    ("spatial_grounding", "Spatial grounding (%)"),
)


def plot_benchmark_bars(
    runs: Sequence[tuple[str, EvalMetrics]], path: str | Path, title: str = ""
) -> Path:
    """Per benchmark (and the macro mean): one bar per run, with bootstrap-interval error bars."""
    if not runs:
        raise ValueError("plot_benchmark_bars: no runs")
    names = sorted({b for _, m in runs for b in m.benchmarks}) + ["mean"]
    fig = Figure(figsize=(max(10.0, 0.45 * len(names) * (len(runs) + 1) * 2), 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    width = 0.8 / len(runs)
    x = np.arange(len(names))
    for ax, (metric, label) in zip(axes, BAR_METRICS):
        for j, (run, m) in enumerate(runs):
            est = [m.mean.get(metric) if b == "mean" else
                   (m.benchmarks[b].overall.metrics.get(metric) if b in m.benchmarks else None) for b in names]
            val = np.array([e.value * 100 if e is not None and e.defined else np.nan for e in est])
            lo = np.array([e.lo * 100 if e is not None and e.defined else np.nan for e in est])
            hi = np.array([e.hi * 100 if e is not None and e.defined else np.nan for e in est])
            err = np.nan_to_num(np.stack([val - lo, hi - val]), nan=0.0).clip(min=0)
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, np.nan_to_num(val), width, yerr=err, capsize=3, label=run, color=f"C{j}")
            for p, v in zip(pos, val):
                if math.isnan(v):
                    ax.text(p, 1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="gray")
        ax.set_xticks(x, names, rotation=20 if len(names) > 5 else 0)
        ax.set_ylabel(label.split(" (")[0] + " (%)")
        ax.set_title(label)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 6), fontsize=9)
    fig.suptitle(title or "Per benchmark, with bootstrap intervals")
    return _save(fig, path)

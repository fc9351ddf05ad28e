"""The ablation table over RL seeds (``fgrpo repro``), its target check and its figures.

Every row of the table (a variant of docs/method.md#ablation-rows) is trained from the same SFT checkpoint
with S seeds. Per variant and metric m over its seeds s = 1..S:

    mean_m = (1/S) sum_s m_s          spread: [min_s m_s, max_s m_s],  sd_m = std(m_s, ddof=1)

With one seed the spread is the run's bootstrap interval instead (over test prompts).

The issue's target (FGRPO against GRPO-T, on the seed means):

    IR ratio       = IR(GRPO-T) / IR(FGRPO)           goal >= 5
    accuracy gap   = acc(FGRPO) - acc(GRPO-T)         goal >= -0.02  (within 2 points)
    semantic gain  = sem(FGRPO) - sem(GRPO-T)         goal > 0

An IR of 0 for FGRPO makes the ratio infinite; it is reported as such, never as a number.
Figures take their data and an explicit output path (no hidden I/O), like ``eval/plots.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from fgrpo_core.eval.curves import MultiplierRow, TrainCurves, by_constraint
from fgrpo_core.eval.plots import PRETTY, _save

METRICS = ("accuracy", "rotation_accuracy", "inconsistency_rate", "ir_judged", "semantic_grounding",
           "spatial_grounding", "well_formed")
SHORT = {"accuracy": "Acc", "rotation_accuracy": "Acc per order", "inconsistency_rate": "IR",
         "ir_judged": "IR of judged", "semantic_grounding": "Semantic", "spatial_grounding": "Spatial",
         "well_formed": "Well-formed"}


def ir_of_judged(benchmarks: Mapping[str, Mapping]) -> float:
    """Inconsistent among the samples the consistency judge answered, pooled over benchmarks:
    ``sum inconsistent / sum consistency_judged``.

    The paper's IR divides by *all* samples, so a policy whose completions stop parsing (never
    judged) lowers its IR without becoming more consistent; this one does not move that way.
    """
    judged = sum(int(b["counts"].get("consistency_judged", 0)) for b in benchmarks.values())
    bad = sum(int(b["counts"].get("inconsistent", 0)) for b in benchmarks.values())
    return bad / judged if judged else math.nan


def rotation_accuracy(samples: Sequence[Mapping]) -> float:
    """Share of (question, option order) pairs answered right: ``mean_i rotations_correct_i / rotations_i``.

    Under circular evaluation ``accuracy`` counts a question only when every order is right; this
    is the plain accuracy averaged over the orders, which a letter-biased guesser cannot inflate
    either (each option sits at each letter once).
    """
    fr = [s["rotations_correct"] / s["rotations"] for s in samples if s.get("rotations")]
    return float(np.mean(fr)) if fr else math.nan


@dataclass(frozen=True)
class SeedStat:
    """One metric of one variant over its seeds."""

    mean: float
    lo: float  # min over seeds (one seed: the bootstrap interval's low end)
    hi: float
    sd: float  # NaN with one seed
    n_seeds: int


@dataclass(frozen=True)
class TargetCheck:
    ir_ratio: float  # IR(GRPO-T) / IR(FGRPO); inf when FGRPO's IR is 0
    acc_gap: float  # acc(FGRPO) - acc(GRPO-T)
    semantic_gain: float  # sem(FGRPO) - sem(GRPO-T)

    @property
    def ir_met(self) -> bool:
        return self.ir_ratio >= 5.0

    @property
    def acc_met(self) -> bool:
        return self.acc_gap >= -0.02

    @property
    def semantic_met(self) -> bool:
        return self.semantic_gain > 0


def _num(x) -> float:
    return math.nan if x is None else float(x)  # JSON writes an undefined metric (NaN) as null


def seed_stats(runs: Sequence[Mapping[str, float | None]]) -> dict[str, SeedStat]:
    """Per metric over the seeds' ``mean`` blocks of their eval JSON (keys ``m``, ``m_lo``, ``m_hi``)."""
    if not runs:
        raise ValueError("seed_stats: no runs")
    out: dict[str, SeedStat] = {}
    for m in METRICS:
        vals = np.array([_num(r.get(m)) for r in runs], dtype=np.float64)  # [S]
        ok = vals[~np.isnan(vals)]
        if ok.size == 0:
            out[m] = SeedStat(math.nan, math.nan, math.nan, math.nan, 0)
        elif len(runs) == 1:
            r = runs[0]
            out[m] = SeedStat(float(ok[0]), _num(r.get(f"{m}_lo")), _num(r.get(f"{m}_hi")),
                              math.nan, 1)
        else:
            out[m] = SeedStat(float(ok.mean()), float(ok.min()), float(ok.max()),
                              float(ok.std(ddof=1)) if ok.size > 1 else math.nan, int(ok.size))
    return out


def target_check(baseline: Mapping[str, SeedStat], fgrpo: Mapping[str, SeedStat]) -> TargetCheck:
    ir_b, ir_f = baseline["inconsistency_rate"].mean, fgrpo["inconsistency_rate"].mean
    ratio = math.inf if ir_f == 0 and ir_b > 0 else (math.nan if ir_f == 0 else ir_b / ir_f)
    return TargetCheck(ratio, fgrpo["accuracy"].mean - baseline["accuracy"].mean,
                       fgrpo["semantic_grounding"].mean - baseline["semantic_grounding"].mean)


def _pct(s: SeedStat) -> str:
    if math.isnan(s.mean):
        return "—"
    spread = f" [{100 * s.lo:.1f}, {100 * s.hi:.1f}]" if not math.isnan(s.lo) else ""
    return f"{100 * s.mean:.1f}{spread}"


def summary_markdown(stats: Mapping[str, Mapping[str, SeedStat]], labels: Mapping[str, str],
                     check: TargetCheck | None, seeds: Sequence[int]) -> str:
    """The table (rows in ``stats`` order), then the target check against the issue's goals."""
    spread = "min–max over seeds" if len(seeds) > 1 else "bootstrap interval over test prompts"
    lines = [
        "# The ablation table at toy scale",
        "",
        f"Values in %, mean over RL seeds {list(seeds)} [{spread}]; IR lower is better.",
        "",
        "| Variant | " + " | ".join(SHORT[m] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name, st in stats.items():
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(_pct(st[m]) for m in METRICS) + " |")
    if check is not None:
        ratio = "∞ (FGRPO IR = 0)" if math.isinf(check.ir_ratio) else f"{check.ir_ratio:.2f}×"
        yes = {True: "met", False: "not met"}
        lines += [
            "",
            "## Target (issue #11), FGRPO against GRPO-T",
            "",
            "| quantity | measured | goal | |",
            "|---|---|---|---|",
            f"| IR(GRPO-T) / IR(FGRPO) | {ratio} | ≥ 5× | {yes[check.ir_met]} |",
            f"| accuracy, FGRPO − GRPO-T | {100 * check.acc_gap:+.1f} pts | ≥ −2 pts | {yes[check.acc_met]} |",
            f"| semantic grounding, FGRPO − GRPO-T | {100 * check.semantic_gain:+.1f} pts | > 0 | "
            f"{yes[check.semantic_met]} |",
        ]
    return "\n".join(lines) + "\n"


def plot_multiplier_trajectories(histories: Mapping[str, Sequence[MultiplierRow]], path: str | Path,
                                 title: str = "") -> Path:
    """One panel per constraint: λ after each step for every run (label -> its multipliers.csv rows),
    and the constraint's batch mean on a lower panel with τ dashed. λ should rise while the mean
    is below τ and fall once it is above."""
    per_run = {name: by_constraint(list(rows)) for name, rows in histories.items() if rows}
    constraints = [c for c in PRETTY if any(c in g for g in per_run.values())]
    if not constraints:
        raise ValueError("plot_multiplier_trajectories: no multiplier rows to plot")
    fig = Figure(figsize=(5.0 * len(constraints), 6.4), layout="constrained")
    axes = fig.subplots(2, len(constraints), squeeze=False, sharex="col")
    colours = {name: f"C{i % 10}" for i, name in enumerate(per_run)}
    for j, c in enumerate(constraints):
        top, bottom = axes[0][j], axes[1][j]
        tau = None
        for name, groups in per_run.items():
            rows = groups.get(c)
            if not rows:
                continue
            step = np.array([r.step for r in rows]) + 1  # [T] rounds, 1-based
            top.plot(step, [r.lambda_after for r in rows], "-", color=colours[name], lw=1.4, label=name)
            bottom.plot(step, [r.mean for r in rows], "-", color=colours[name], lw=1.0, alpha=0.8)
            tau = rows[-1].threshold
        top.set_title(PRETTY.get(c, c))
        top.set_ylabel("λ after the step")
        bottom.set_ylabel("batch mean c̄")
        bottom.set_xlabel("round")
        bottom.set_ylim(-0.03, 1.03)
        if tau is not None:
            bottom.axhline(tau, ls="--", color="tab:red", lw=1.2, label=f"τ = {tau:g}")
            bottom.legend(fontsize=7, loc="lower right")
        if j == 0:
            top.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


CURVE_PANELS = (("reward_acc", "accuracy reward"), ("reward_consistency", "consistency R_C (correct rollouts)"),
                ("reward_semantic", "semantic grounding R_S"), ("reward_spatial", "spatial grounding R_G"))


def plot_round_curves(curves: Mapping[str, Sequence[TrainCurves]], path: str | Path, title: str = "") -> Path:
    """Per-round batch means, one line per variant (mean over its seeds; band = min–max)."""
    if not curves:
        raise ValueError("plot_round_curves: no runs")
    fig = Figure(figsize=(4.4 * len(CURVE_PANELS), 3.6), layout="constrained")
    axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    for i, (name, runs) in enumerate(curves.items()):
        n = min(len(r.rounds) for r in runs)
        x = runs[0].rounds[:n]
        for ax, (col, label) in zip(axes, CURVE_PANELS):
            ys = np.array([r.series.get(col, np.full(len(r.rounds), np.nan))[:n] for r in runs])  # [S, R]
            if np.isnan(ys).all():
                continue
            with warnings.catch_warnings():  # all-NaN rounds (nothing applicable) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
            ax.plot(x, mean, "-", color=f"C{i % 10}", lw=1.5, label=name)
            if len(runs) > 1:
                ax.fill_between(x, lo, hi, color=f"C{i % 10}", alpha=0.12, lw=0)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("round")
            ax.set_ylim(-0.03, 1.03)
    axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path)

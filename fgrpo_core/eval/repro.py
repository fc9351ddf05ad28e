"""The ablation table over RL seeds (``fgrpo repro``), its target check and its figures.

Every row of the table (a variant of docs/method.md#ablation-rows) is trained from the same SFT checkpoint
with S seeds. Per variant and metric m over its seeds s = 1..S:

    mean_m = (1/S) sum_s m_s          spread: [min_s m_s, max_s m_s],  sd_m = std(m_s, ddof=1)

With one seed the spread is the run's bootstrap interval instead (over test prompts).

The issue's target (FGRPO against GRPO-T, on the seed means and the paired differences of
``eval.paired``):

    IR ratio       = IR(GRPO-T) / IR(FGRPO)           goal >= 5
    accuracy gap   = acc(FGRPO) - acc(GRPO-T)         goal: lower end of its paired interval >= -0.02
    semantic gain  = sem(FGRPO) - sem(GRPO-T)         goal: lower end of its paired interval > 0

(Without paired intervals the point values are compared.) An IR of 0 for FGRPO makes the ratio
infinite; it is reported as such, never as a number.

A target is never "met" on no evidence. Each is **not testable**, with the reason, when
- accuracy: both rows answer at chance (per-order accuracy below chance + ``eval.min_sft_margin``,
  the margin taken as 0 when negative: a row below chance is never testable);
- IR ratio: both rows' IR is ~0 (below ``IR_FLOOR``): nothing to divide; or both policies are
  mostly unparsable (well-formed below ``UNPARSABLE``); or a row got no consistency verdict;
- semantic grounding: a row had no sentence judged.

Before any RL row is trained, :func:`sft_check` asks for an SFT policy that is above chance on
the val split by ``eval.min_sft_margin``: RL from a policy that cannot see has nothing to make
faithful, and its table would measure which letter each run collapses onto.
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
from fgrpo_core.eval.paired import PairedDiff, diff_markdown, pct
from fgrpo_core.eval.plots import PRETTY, _save

METRICS = ("accuracy", "rotation_accuracy", "inconsistency_rate", "ir_judged", "semantic_grounding",
           "spatial_grounding", "well_formed")
SHORT = {"accuracy": "Acc", "rotation_accuracy": "Acc per order", "inconsistency_rate": "IR",
         "ir_judged": "IR of judged", "semantic_grounding": "Semantic", "spatial_grounding": "Spatial",
         "well_formed": "Well-formed"}


def ir_of_judged(benchmarks: Mapping[str, Mapping]) -> float:
    """Inconsistent among the samples the consistency judge answered, pooled over benchmarks:
    ``sum (inconsistent - consistency_unjudgeable) / sum consistency_judged``.

    IR itself counts a sample with nothing to judge as inconsistent (metrics.py); this one is the
    judge's verdicts alone, the share of reasoned answers that do not follow from their reasoning.
    """
    judged = sum(int(b["counts"].get("consistency_judged", 0)) for b in benchmarks.values())
    bad = sum(int(b["counts"].get("inconsistent", 0)) - int(b["counts"].get("consistency_unjudgeable", 0))
              for b in benchmarks.values())
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


IR_FLOOR = 0.01  # an IR below 1% in both rows is "~0": a ratio of two such values says nothing
UNPARSABLE = 0.5  # a row with fewer well-formed answers than this is "mostly unparsable"


@dataclass(frozen=True)
class Verdict:
    status: str  # "met" | "not met" | "not testable"
    reason: str = ""  # why not testable (or what decided it)


@dataclass(frozen=True)
class RowEvidence:
    """What a row's targets can rest on (seed means; counts summed over seeds and benchmarks)."""

    rotation_accuracy: float  # per-order accuracy
    chance: float  # mean 1/k over the test questions (NaN: no multi-option question)
    well_formed: float
    consistency_judged: int  # samples the consistency judge answered
    semantic_judged: int  # samples with a semantic score from judged sentences


@dataclass(frozen=True)
class TargetCheck:
    ir_ratio: float  # IR(GRPO-T) / IR(FGRPO); inf when FGRPO's IR is 0
    acc_gap: float  # acc(FGRPO) - acc(GRPO-T)
    semantic_gain: float  # sem(FGRPO) - sem(GRPO-T)
    ir: Verdict = Verdict("not testable", "not checked")
    acc: Verdict = Verdict("not testable", "not checked")
    semantic: Verdict = Verdict("not testable", "not checked")
    acc_lo: float = math.nan  # lower end of the paired interval of acc_gap (NaN: none)
    semantic_lo: float = math.nan

    @property
    def ir_met(self) -> bool:
        return self.ir.status == "met"

    @property
    def acc_met(self) -> bool:
        return self.acc.status == "met"

    @property
    def semantic_met(self) -> bool:
        return self.semantic.status == "met"


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


def target_check(baseline: Mapping[str, SeedStat], fgrpo: Mapping[str, SeedStat],
                 paired: Mapping[str, PairedDiff] | None = None,
                 evidence: tuple[RowEvidence, RowEvidence] | None = None, margin: float = 0.10) -> TargetCheck:
    """The issue's three targets, FGRPO against GRPO-T (``evidence``: (GRPO-T, FGRPO))."""
    ir_b, ir_f = baseline["inconsistency_rate"].mean, fgrpo["inconsistency_rate"].mean
    ratio = math.inf if ir_f == 0 and ir_b > 0 else (math.nan if ir_f == 0 else ir_b / ir_f)
    gap = fgrpo["accuracy"].mean - baseline["accuracy"].mean
    gain = fgrpo["semantic_grounding"].mean - baseline["semantic_grounding"].mean
    acc_lo = paired["accuracy"].lo if paired else math.nan
    sem_lo = paired["semantic_grounding"].lo if paired else math.nan

    def decide(ok: bool, why: str) -> Verdict:
        return Verdict("met" if ok else "not met", why)

    # IR
    if evidence and all(e.well_formed < UNPARSABLE for e in evidence):
        ir = Verdict("not testable", f"both policies mostly unparsable (well-formed {pct(evidence[0].well_formed)}% "
                                     f"and {pct(evidence[1].well_formed)}%)")
    elif evidence and any(e.consistency_judged == 0 for e in evidence):
        who = "GRPO-T" if evidence[0].consistency_judged == 0 else "FGRPO"
        ir = Verdict("not testable", f"no consistency verdict in {who}")
    elif not (math.isnan(ir_b) or math.isnan(ir_f)) and ir_b < IR_FLOOR and ir_f < IR_FLOOR:
        ir = Verdict("not testable", f"both IRs ~0 ({pct(ir_b)}% and {pct(ir_f)}%, below {pct(IR_FLOOR)}%): "
                                     f"nothing to reduce")
    elif math.isnan(ratio):
        ir = Verdict("not testable", "IR undefined")
    else:
        ir = decide(ratio >= 5.0, "")
    # accuracy
    chance = evidence[0].chance if evidence else math.nan
    margin = max(margin, 0.0)  # a turned-off SFT check (-1) does not make a row below chance testable
    if evidence and not math.isnan(chance) and all(e.rotation_accuracy < chance + margin for e in evidence):
        acc = Verdict("not testable", f"both rows answer at chance: per-order accuracy {pct(evidence[0].rotation_accuracy)}% "
                                      f"and {pct(evidence[1].rotation_accuracy)}% vs chance {pct(chance)}% "
                                      f"(+{pct(margin)} pts margin)")
    elif math.isnan(gap):
        acc = Verdict("not testable", "accuracy undefined")
    elif not math.isnan(acc_lo):
        acc = decide(acc_lo >= -0.02, f"lower end of the paired interval {100 * acc_lo:+.1f} pts")
    else:
        acc = decide(gap >= -0.02, "point values (no paired interval)")
    # semantic grounding
    if evidence and any(e.semantic_judged == 0 for e in evidence):
        who = "GRPO-T" if evidence[0].semantic_judged == 0 else "FGRPO"
        sem = Verdict("not testable", f"no sentence judged in {who}")
    elif math.isnan(gain):
        sem = Verdict("not testable", "semantic grounding undefined")
    elif not math.isnan(sem_lo):
        sem = decide(sem_lo > 0, f"lower end of the paired interval {100 * sem_lo:+.1f} pts")
    else:
        sem = decide(gain > 0, "point values (no paired interval)")
    return TargetCheck(ratio, gap, gain, ir, acc, sem, acc_lo, sem_lo)


@dataclass(frozen=True)
class SFTCheck:
    """SFT's per-order accuracy on the val split against chance (see :func:`sft_check`)."""

    accuracy: float  # mean over questions of right orders / orders
    lo: float  # percentile bootstrap interval over the questions
    hi: float
    chance: float  # mean of 1/k over the questions
    margin: float  # eval.min_sft_margin
    n: int  # questions
    confidence: float = 0.95

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.chance + self.margin

    def message(self) -> str:
        head = (f"SFT per-order accuracy on the val split {pct(self.accuracy)}% "
                f"[{100 * self.confidence:g}% CI {pct(self.lo)}, {pct(self.hi)}] over {self.n} questions, "
                f"chance {pct(self.chance)}% (mean 1/k)")
        if self.margin <= -1.0:
            return f"{head}: the check is off (eval.min_sft_margin = -1); RL rows go ahead"
        if self.passed:
            return f"{head}: above chance by {100 * (self.accuracy - self.chance):.1f} pts (>= {pct(self.margin)}); RL rows go ahead"
        return (f"fgrpo repro: {head}: not above chance by eval.min_sft_margin = {pct(self.margin)} pts; "
                f"the RL rows are not trained (a policy at chance has nothing for RL to make faithful). "
                f"Improve the SFT stage, or lower eval.min_sft_margin")


def sft_check(rotations_correct: Sequence[int], rotations: Sequence[int], margin: float,
              n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> SFTCheck:
    """Per-question (right orders, orders asked) of a circular val evaluation -> :class:`SFTCheck`.

    Every question is asked in all k orders of its options (circular), so a letter-biased guesser
    scores exactly 1/k per question: chance = mean 1/k. The interval is scipy's percentile
    bootstrap of the mean over questions.
    """
    rc, k = np.asarray(rotations_correct, dtype=np.float64), np.asarray(rotations, dtype=np.float64)
    if rc.shape != k.shape:
        raise ValueError(f"sft_check: {rc.size} right-order counts vs {k.size} order counts")
    keep = k > 1
    if not keep.any():
        raise ValueError("sft_check: no question was asked in more than one option order: evaluate the val split "
                         "circularly (every rotation of the options) to know its chance level")
    frac, chance = rc[keep] / k[keep], float(np.mean(1.0 / k[keep]))
    acc = float(frac.mean())
    if frac.size >= 2 and np.ptp(frac) > 0:
        from scipy.stats import bootstrap

        ci = bootstrap((frac,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                       random_state=np.random.default_rng(seed)).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
    else:  # one question, or all alike: every resample is that value
        lo = hi = acc
    return SFTCheck(acc, lo, hi, chance, margin, int(frac.size), confidence)


def _pct(s: SeedStat) -> str:
    if math.isnan(s.mean):
        return "—"
    spread = f" [{100 * s.lo:.1f}, {100 * s.hi:.1f}]" if not math.isnan(s.lo) else ""
    return f"{100 * s.mean:.1f}{spread}"


def summary_markdown(stats: Mapping[str, Mapping[str, SeedStat]], labels: Mapping[str, str],
                     check: TargetCheck | None, seeds: Sequence[int],
                     paired: Mapping[str, Mapping[str, PairedDiff]] | None = None, confidence: float = 0.95,
                     sft: SFTCheck | None = None) -> str:
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
    if paired:
        lines += ["", "## Paired differences against GRPO-T", "", *diff_markdown(paired, labels, confidence)]
    if check is not None:
        ratio = "∞ (FGRPO IR = 0)" if math.isinf(check.ir_ratio) else (
            "—" if math.isnan(check.ir_ratio) else f"{check.ir_ratio:.2f}×")

        def interval(lo: float) -> str:
            return "" if math.isnan(lo) else f" (paired interval from {100 * lo:+.1f})"

        def verdict(v: Verdict) -> str:
            return f"not testable: {v.reason}" if v.status == "not testable" else v.status

        lines += [
            "",
            "## Target, FGRPO against GRPO-T",
            "",
            "| quantity | measured | goal | |",
            "|---|---|---|---|",
            f"| IR(GRPO-T) / IR(FGRPO) | {ratio} | ≥ 5× | {verdict(check.ir)} |",
            f"| accuracy, FGRPO − GRPO-T | {100 * check.acc_gap:+.1f} pts{interval(check.acc_lo)} | ≥ −2 pts | "
            f"{verdict(check.acc)} |",
            f"| semantic grounding, FGRPO − GRPO-T | {100 * check.semantic_gain:+.1f} pts"
            f"{interval(check.semantic_lo)} | > 0 | {verdict(check.semantic)} |",
        ]
    if sft is not None:
        lines += ["", "## SFT start on the val split", "", sft.message()]
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
                ("reward_semantic", "semantic grounding R_S"), ("reward_spatial", "spatial grounding R_G"),
                ("semantic_undefined_share", "no checkable sentence (share of correct)"),
                ("consistency_unjudged_share", "no reasoning to judge (share of correct)"))


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

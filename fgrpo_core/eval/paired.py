"""Paired differences of two ablation rows over RL seeds and test prompts, with bootstrap intervals.

Every RL row of ``fgrpo repro`` is trained from the same SFT checkpoint with the same seeds as
GRPO-T, and every run answers the same test prompts. The quantity of interest is

    d_m = E_seed E_prompt [ m(row) - m(GRPO-T) ]

for a metric m (accuracy, per-order accuracy, IR, semantic grounding). Its point estimate is the
mean over seeds of the per-seed difference d_s = m_s(row) - m_s(GRPO-T), each m_s computed on all
test prompts (macro mean over benchmarks, as ``eval.metrics``).

**Interval: a two-stage (cluster) bootstrap, resampling seeds and then prompts within each
drawn seed** (Davison & Hinkley 1997, section 3.8; Field & Welsh 2007). Why this one:

- Two sources of variation separate the rows: RL randomness (seed to seed, the larger one at toy
  scale: GRPO-T's IR moved 18-85% across seeds) and the finite test set. A bootstrap over the
  seeds' differences alone sees only the first, and with 5 seeds it has at most 126 distinct
  resamples: its percentile interval is coarse and too narrow in the tails. A bootstrap of
  per-prompt differences pooled over seeds sees only the second, treats 5 x 128 prompts as
  independent when they share 5 training runs, and is too narrow when seeds disagree.
- Resampling seeds (with replacement), then the prompts of each drawn seed (with replacement),
  keeps both; it is slightly conservative, which a verdict can afford.
- **Paired**: inside a seed the same prompt weights are applied to the row and to GRPO-T, so the
  difficulty of a prompt cancels (the pairing of ``eval.compare``).

Ratio metrics (IR, semantic grounding) are ratios of weighted sums on each resample
(``eval.bootstrap``); a resample on which one is undefined is left out of its percentiles and
counted (``undefined_share``). Beside it, the seed-level percentile interval of the d_s
(``scipy.stats.bootstrap``, 2+ seeds) is reported, so a reader sees how much of the width is
seed-to-seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fgrpo_core.eval.bootstrap import percentile_interval, ratios, resample_weights
from fgrpo_core.eval.metrics import SPECS, metric_arrays
from fgrpo_core.eval.results import SampleResult

PAIRED_METRICS = ("accuracy", "rotation_accuracy", "inconsistency_rate", "semantic_grounding")


@dataclass(frozen=True)
class PairedDiff:
    """row - baseline for one metric, over seeds and prompts."""

    metric: str
    value: float  # mean over seeds of the per-seed difference (NaN when undefined)
    lo: float  # two-stage bootstrap (seeds, then prompts) percentile interval
    hi: float
    seed_lo: float  # percentile interval over the seeds' differences alone (NaN with < 2 seeds)
    seed_hi: float
    per_seed: tuple[float, ...]  # d_s in seed order
    n_prompts: int  # paired prompts per seed (smallest over seeds)
    undefined_share: float  # resamples on which the difference was undefined

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def _arrays(results: Sequence[SampleResult]) -> tuple[np.ndarray, np.ndarray]:
    """num, den [len(PAIRED_METRICS), n] per prompt (``rotation_accuracy``: right orders / orders)."""
    num, den = metric_arrays(results)
    rows_n, rows_d = [], []
    for m in PAIRED_METRICS:
        if m == "rotation_accuracy":
            rows_n.append(np.array([r.rotations_correct / r.rotations if r.rotations else 0.0 for r in results]))
            rows_d.append(np.array([1.0 if r.rotations else 0.0 for r in results]))
        else:
            i = list(SPECS).index(m)
            rows_n.append(num[i])
            rows_d.append(den[i])
    return np.array(rows_n).reshape(len(PAIRED_METRICS), -1), np.array(rows_d).reshape(len(PAIRED_METRICS), -1)


def pair_by_prompt(row: Sequence[SampleResult], base: Sequence[SampleResult]) -> dict[str, tuple[list, list]]:
    """``{benchmark: (row results, base results)}`` on the prompts both answered, in one order."""
    b_by = {(r.benchmark, r.sample_id): r for r in base}
    out: dict[str, tuple[list, list]] = {}
    for r in sorted(row, key=lambda x: (x.benchmark, x.sample_id)):
        other = b_by.get((r.benchmark, r.sample_id))
        if other is not None:
            a, b = out.setdefault(r.benchmark, ([], []))
            a.append(r)
            b.append(other)
    return out


def _macro(per_bench: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():  # a metric undefined on every benchmark stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(per_bench), axis=0)


def paired_differences(
    seeds: Sequence[tuple[Sequence[SampleResult], Sequence[SampleResult]]],  # per seed: (row, baseline)
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedDiff]:
    """Paired row - baseline differences of :data:`PAIRED_METRICS` (see the module docstring)."""
    if not seeds:
        raise ValueError("paired_differences: no seeds")
    rng = np.random.default_rng(seed)
    m = len(PAIRED_METRICS)
    # per seed, per benchmark: (num_row, den_row, num_base, den_base), each [M, n]
    data = []
    for i, (row, base) in enumerate(seeds):
        pairs = pair_by_prompt(row, base)
        if not pairs:
            raise ValueError(f"paired_differences: seed #{i}: the two runs share no test prompt")
        data.append({k: (*_arrays(a), *_arrays(b)) for k, (a, b) in sorted(pairs.items())})
    n_prompts = min(sum(v[0].shape[1] for v in d.values()) for d in data)

    def seed_diff(d: dict, w: dict | None) -> np.ndarray:  # [M] or [B, M]
        ra = [ratios(v[0], v[1], None if w is None else w[k]) for k, v in d.items()]
        rb = [ratios(v[2], v[3], None if w is None else w[k]) for k, v in d.items()]
        return _macro(ra) - _macro(rb)

    per_seed = np.stack([seed_diff(d, None) for d in data])  # [S, M]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(per_seed, axis=0)  # [M]

    s = len(data)
    drawn = rng.integers(0, s, size=(n_boot, s))  # stage 1: which seed fills each of the S slots
    total = np.zeros((n_boot, m))
    for j in range(s):  # stage 2: fresh prompt weights for every slot, paired across the two rows
        vals = np.stack([seed_diff(d, {k: resample_weights(v[0].shape[1], n_boot, rng) for k, v in d.items()})
                         for d in data])  # [S, B, M]
        total += vals[drawn[:, j], np.arange(n_boot)]
    boot = total / s  # [B, M]; NaN where any slot was undefined
    lo, hi = percentile_interval(boot, confidence)
    undefined = np.isnan(boot).mean(0)

    seed_lo, seed_hi = np.full(m, np.nan), np.full(m, np.nan)
    if s >= 2:
        from scipy.stats import bootstrap

        for i in range(m):
            x = per_seed[:, i]
            x = x[~np.isnan(x)]
            if x.size >= 2 and np.ptp(x) > 0:
                res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                                method="percentile", random_state=np.random.default_rng([seed, i]))
                seed_lo[i], seed_hi[i] = res.confidence_interval
            elif x.size >= 2:  # every seed alike: the resampled mean is that value
                seed_lo[i] = seed_hi[i] = float(x[0])
    return {
        name: PairedDiff(name, float(point[i]), float(lo[i]), float(hi[i]), float(seed_lo[i]), float(seed_hi[i]),
                         tuple(float(v) for v in per_seed[:, i]), n_prompts, float(undefined[i]))
        for i, name in enumerate(PAIRED_METRICS)
    }


def chance_level(results: Sequence[SampleResult]) -> float:
    """Per-order accuracy of a guesser: mean of 1/k over the questions asked in k option orders."""
    ks = [r.rotations for r in results if r.rotations > 1]
    return float(np.mean([1.0 / k for k in ks])) if ks else math.nan


def pct(x: float, digits: int = 1) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def diff_markdown(diffs: Mapping[str, Mapping[str, PairedDiff]], labels: Mapping[str, str],
                  confidence: float) -> list[str]:
    """One row per RL row: each metric's paired difference (points) with both intervals."""
    short = {"accuracy": "Acc (circular)", "rotation_accuracy": "Acc per order", "inconsistency_rate": "IR",
             "semantic_grounding": "Semantic"}
    c = f"{100 * confidence:g}%"
    lines = [
        f"Paired difference row − GRPO-T in points, mean over seeds; [{c} interval, bootstrap over seeds "
        f"and test prompts] (over seeds alone).",
        "",
        "| Row | " + " | ".join(short[m] for m in PAIRED_METRICS) + " | seeds | prompts |",
        "|---|" + "---|" * (len(PAIRED_METRICS) + 2),
    ]

    def cell(d: PairedDiff) -> str:
        if math.isnan(d.value):
            return "—"
        seed = "" if math.isnan(d.seed_lo) else f" ({100 * d.seed_lo:+.1f}, {100 * d.seed_hi:+.1f})"
        return f"{100 * d.value:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]{seed}"

    for name, ds in diffs.items():
        first = next(iter(ds.values()))
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cell(ds[m]) for m in PAIRED_METRICS)
                     + f" | {first.n_seeds} | {first.n_prompts} |")
    return lines

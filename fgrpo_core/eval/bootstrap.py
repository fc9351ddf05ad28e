"""Bootstrap intervals for ratio metrics, vectorised over resamples and metrics.

Every metric of the evaluation is a ratio of per-sample sums over one benchmark's samples:

    m = sum_i num_i / sum_i den_i                   (accuracy: num = correct, den = 1;
                                                      semantic: num = R_S or 0, den = [R_S defined])

A bootstrap resample draws n samples with replacement; it is written as multinomial counts
w [B, n] (w_bi = how often sample i was drawn in resample b), so all B resamples of all M
metrics come out of two matrix products:

    m_b = (w @ num.T) / (w @ den.T)                 [B, M]

The interval is the percentile interval of m_b ((1 - confidence) / 2 in each tail); resamples in
which a metric is undefined (sum den = 0) are left out of its percentiles. Paired comparisons
reuse the same w for two runs' results on the same samples, so the interval of the difference
is the interval of the paired differences. Seeds are explicit (same seed, same intervals).

Where every sample of a binary metric is alike (0 of 30 inconsistent), every resample is too and
the percentile interval collapses to a point; such intervals are replaced by Wilson's score
interval (:func:`widen_degenerate`), so a small split never reads as certain.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (all NaN when undefined)."""

    value: float
    lo: float
    hi: float
    n: int  # samples the metric is defined on (sum of den)

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)


UNDEFINED = Estimate(math.nan, math.nan, math.nan, 0)


def group_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by (seed, keys): a group's intervals do not depend on group order."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[B, n] multinomial counts: row b says how often each sample was drawn in resample b."""
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def ratios(num: np.ndarray, den: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Ratio metrics. num, den [M, n]; weights [B, n] (None = the sample itself) -> [B, M] or [M].

    NaN where the denominator is 0 (metric undefined on that resample).
    """
    if weights is None:
        top, bottom = num.sum(1), den.sum(1)  # [M]
    else:
        top, bottom = weights @ num.T, weights @ den.T  # [B, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)


def percentile_interval(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """[B, M] resampled values -> (lo [M], hi [M]); NaN-aware, NaN where no resample is defined."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo = np.full(boot.shape[1], np.nan)
    hi = np.full(boot.shape[1], np.nan)
    ok = ~np.isnan(boot).all(0)  # [M]
    if ok.any():
        q = np.nanpercentile(boot[:, ok], [tail, 100.0 - tail], axis=0)  # [2, M_ok]
        lo[ok], hi[ok] = q[0], q[1]
    return lo, hi


def estimates(point: np.ndarray, boot: np.ndarray, counts: np.ndarray, confidence: float) -> list[Estimate]:
    """Bundle point [M], boot [B, M] and defined-counts [M] into M estimates."""
    lo, hi = percentile_interval(boot, confidence)
    return [
        Estimate(float(p), float(a), float(b), int(c)) if not math.isnan(p) else UNDEFINED
        for p, a, b, c in zip(point, lo, hi, counts)
    ]


def wilson_interval(successes: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (used where the bootstrap degenerates).

    A bootstrap of 0 successes out of 30 resamples only zeros and claims the interval [0, 0];
    Wilson's gives [0, z^2 / (n + z^2)] = [0, 11.4%] at 95%, which is what 30 samples can say.
    """
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def widen_degenerate(
    ests: list[Estimate], successes: np.ndarray, binary: np.ndarray, confidence: float
) -> list[Estimate]:
    """Binary metrics whose bootstrap interval collapsed (every sample alike) get Wilson's."""
    out = []
    for e, k, is_binary in zip(ests, successes, binary):
        if is_binary and e.defined and e.lo == e.hi:
            lo, hi = wilson_interval(float(k), float(e.n), confidence)
            e = Estimate(e.value, lo, hi, e.n)
        out.append(e)
    return out

"""Lagrange multipliers of FGRPO's constraints, updated by projected dual ascent (docs/method.md#dual-ascent).

    maximise E[R_task]  subject to  E[R_k] >= tau_k,   k in {consistency, semantic, spatial}
    L(theta, lambda) = E[R_task] + sum_k lambda_k (E[R_k] - tau_k)
    c_k    = sum m_k R_k / sum m_k                 masked batch mean (m_k = R_k is not NaN)
    lambda_k <- clip(lambda_k + lr (tau_k - c_k), 0, lambda_max)     once per policy step

Plain additive arithmetic, not an optimiser: Adam on a scalar moves it by about +-lr whatever
the violation, and log-lambda SGD never reaches 0 (docs/method.md#dual-step-as-arithmetic). A step is skipped
for a constraint with fewer than ``min_count`` applicable rollouts, or a NaN mean. The advantage
of step t uses lambda from the end of step t-1 **[ours]**: call ``update`` after the primal step.
``fixed=True`` (mode ``fgrpo_fixed``) keeps lambda at its initial value and still records every
step. The records are the multiplier history, a versioned artifact (``write_history_csv``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple

import torch
from torch import Tensor

from fgrpo_core.config import AdvantageMode, FGRPOParams

SkipReason = Literal["", "fixed", "few_rollouts", "nan_mean"]


@dataclass(frozen=True)
class MultiplierRecord:
    """One constraint's dual step (one row of the multiplier history)."""

    step: int  # policy step whose batch gave `mean` (0-based)
    name: str  # constraint name
    mean: float  # c_k, masked batch mean of R_k (NaN when nothing applied)
    count: int  # applicable rollouts behind `mean`
    threshold: float  # tau_k
    lambda_before: float
    lambda_after: float
    skipped: bool  # lambda was not moved
    reason: SkipReason = ""  # why it was skipped ("" when it was not)

    @property
    def slack(self) -> float:
        """c_k - tau_k: negative while the constraint is violated."""
        return self.mean - self.threshold


class ConstraintStats(NamedTuple):
    """Masked batch means and counts, in the form ``DualAscent.update(*stats)`` takes."""

    means: dict[str, float]
    counts: dict[str, int]


def constraint_stats(constraints: Mapping[str, Tensor]) -> ConstraintStats:
    """c_k = sum m_k R_k / sum m_k and count_k = sum m_k from [B, G] (or any shape) tensors with NaN."""
    means, counts = {}, {}
    for name, r in constraints.items():
        ok = ~torch.isnan(r)
        n = int(ok.sum())
        counts[name] = n
        means[name] = float(r[ok].double().mean()) if n else math.nan
    return ConstraintStats(means, counts)


class DualAscent:
    """The multipliers lambda_k and their update; state_dict() holds everything needed to resume."""

    def __init__(
        self,
        thresholds: Mapping[str, float],  # tau_k per constraint name
        *,  # no defaults: the paper's values live once, in FGRPOParams (from_params)
        lr: float,  # eta_lambda (fgrpo.lambda_lr)
        init: float | Mapping[str, float],  # lambda_k(0) (fgrpo.lambda_init)
        max_value: float,  # lambda_max (fgrpo.lambda_max)
        min_count: int,  # fewer applicable rollouts -> no step (fgrpo.lambda_min_count)
        fixed: bool = False,  # fgrpo_fixed: never move lambda
    ):
        if lr < 0 or max_value < 0:
            raise ValueError(f"lr ({lr}) and max_value ({max_value}) must be >= 0")
        self.thresholds = {k: float(v) for k, v in thresholds.items()}
        self.lr, self.max_value, self.min_count, self.fixed = float(lr), float(max_value), int(min_count), fixed
        start = init if isinstance(init, Mapping) else {k: init for k in self.thresholds}
        missing = sorted(set(self.thresholds) - set(start))
        if missing:
            raise ValueError(f"init has no value for constraint(s) {missing}")
        self._lambdas = {k: min(max(float(start[k]), 0.0), self.max_value) for k in self.thresholds}
        self.step = 0  # policy steps seen so far
        self.history: list[MultiplierRecord] = []

    @classmethod
    def from_params(cls, p: FGRPOParams) -> "DualAscent":
        """The multipliers of an ablation row: adaptive only in mode ``fgrpo``.

        Every other mode gets a fixed instance, so the history still records each step's
        constraint means (comparable across rows) while lambda stays at ``lambda_init``.
        """
        taus = {"consistency": p.tau_consistency, "semantic": p.tau_semantic, "spatial": p.tau_spatial}
        return cls(
            {k: taus[k] for k in p.constraints},
            lr=p.lambda_lr,
            init=p.lambda_init,
            max_value=p.lambda_max,
            min_count=p.lambda_min_count,
            fixed=p.mode is not AdvantageMode.fgrpo,
        )

    @property
    def lambdas(self) -> dict[str, float]:
        """Current lambda per constraint (a copy)."""
        return dict(self._lambdas)

    def update(self, means: Mapping[str, float], counts: Mapping[str, int]) -> list[MultiplierRecord]:
        """One dual step from this policy step's masked constraint means; returns its records.

        ``means``/``counts`` may hold other signals; only the constraints in ``thresholds`` are
        updated, and each of them must be present.
        """
        missing = sorted(k for k in self.thresholds if k not in means or k not in counts)
        if missing:
            raise ValueError(f"update: no mean/count for constraint(s) {missing}")
        records = []
        for name, tau in self.thresholds.items():
            mean, count, before = float(means[name]), int(counts[name]), self._lambdas[name]
            reason: SkipReason = ""
            if self.fixed:
                reason = "fixed"
            elif count < self.min_count:
                reason = "few_rollouts"
            elif math.isnan(mean):
                reason = "nan_mean"
            after = before
            if not reason:  # docs/method.md#dual-ascent
                after = min(max(before + self.lr * (tau - mean), 0.0), self.max_value)
                self._lambdas[name] = after
            records.append(
                MultiplierRecord(self.step, name, mean, count, tau, before, after, bool(reason), reason)
            )
        self.step += 1
        self.history.extend(records)
        return records

    def state_dict(self) -> dict[str, Any]:
        return {
            "lambdas": dict(self._lambdas),
            "step": self.step,
            "thresholds": dict(self.thresholds),
            "history": [asdict(r) for r in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore lambdas, step and history (hyper-parameters stay as constructed)."""
        if set(state["lambdas"]) != set(self.thresholds):
            raise ValueError(
                f"state has constraints {sorted(state['lambdas'])}, this DualAscent has {sorted(self.thresholds)}"
            )
        self._lambdas = {k: float(v) for k, v in state["lambdas"].items()}
        self.step = int(state["step"])
        self.history = [MultiplierRecord(**r) for r in state.get("history", [])]


# The CSV calls the constraint's name "constraint" (issue #7's column; plots and DVC read it).
_COLUMNS = ["constraint" if f.name == "name" else f.name for f in fields(MultiplierRecord)]


def write_history_csv(records: list[MultiplierRecord], path: str | Path) -> None:
    """Write the whole multiplier history to ``path`` (rewritten whole: DVC outputs are never appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_COLUMNS)
        w.writeheader()
        for r in records:
            row = asdict(r)
            row["constraint"] = row.pop("name")
            w.writerow(row)


def read_history_csv(path: str | Path) -> list[MultiplierRecord]:
    """Read a history written by ``write_history_csv``; a bad row is an error naming file and row."""
    path = Path(path)
    out = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
            try:
                out.append(
                    MultiplierRecord(
                        step=int(row["step"]),
                        name=row["constraint"],
                        mean=float(row["mean"]),
                        count=int(row["count"]),
                        threshold=float(row["threshold"]),
                        lambda_before=float(row["lambda_before"]),
                        lambda_after=float(row["lambda_after"]),
                        skipped=row["skipped"] == "True",
                        reason=row["reason"],  # type: ignore[arg-type]
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: line {i}: bad multiplier record {row!r} ({err})") from None
    return out

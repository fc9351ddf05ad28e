"""Training histories the trainer writes, read into typed records for plots and reports.

``multipliers.csv`` (one row per step and constraint; docs/method.md#dual-ascent), columns:
    step, constraint, mean, count, threshold, lambda_before, lambda_after, skipped
``mean`` may be empty or ``nan`` when no rollout was applicable (then ``skipped`` is true).

``train_metrics.csv`` (one row per round): the column ``round`` is required; the plots read
these optional columns when present (others are ignored):
    reward_task, reward_fmt, reward_acc, reward_consistency, reward_semantic, reward_spatial,
    inconsistency_rate, kl, clip_frac, response_len, lambda_<constraint>,
    semantic_undefined_share, consistency_unjudged_share, unparsable_share
A bad cell raises naming the file, the row (1 = first data row), the column and the value.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MULTIPLIER_COLUMNS = ("step", "constraint", "mean", "count", "threshold", "lambda_before", "lambda_after", "skipped")
TRAIN_COLUMNS = (
    "reward_task", "reward_fmt", "reward_acc", "reward_consistency", "reward_semantic", "reward_spatial",
    "inconsistency_rate", "kl", "clip_frac", "response_len",
    "semantic_undefined_share", "consistency_unjudged_share", "unparsable_share",
)
from fgrpo_core.constraints import CONSTRAINTS as CONSTRAINT_ORDER  # noqa: E402


@dataclass(frozen=True)
class MultiplierRow:
    step: int
    constraint: str
    mean: float  # masked constraint mean c_k of the step (NaN when nothing applied)
    count: int  # applicable rollouts
    threshold: float  # tau_k
    lambda_before: float
    lambda_after: float
    skipped: bool  # dual step skipped (too few applicable rollouts)


@dataclass(frozen=True)
class TrainCurves:
    rounds: np.ndarray  # [R] int
    series: dict[str, np.ndarray]  # column -> [R] float (NaN for empty cells)


class CurveFileError(ValueError):
    pass


def _cell(path: Path, row: int, col: str, raw: str, kind: str):
    raw = (raw or "").strip()
    try:
        if kind == "int":
            return int(float(raw))
        if kind == "float":
            return math.nan if raw.lower() in ("", "nan", "none", "null") else float(raw)
        if kind == "bool":
            low = raw.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no", ""):
                return False
            raise ValueError(raw)
        return raw
    except ValueError:
        raise CurveFileError(f"{path}: row {row}: column '{col}': not a {kind} (got {raw!r})") from None


def _read_csv(path: str | Path, required: tuple[str, ...]) -> tuple[Path, list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training history not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise CurveFileError(f"{path}: missing columns {missing} (has {header})")
        return path, list(reader)


def read_multipliers(path: str | Path) -> list[MultiplierRow]:
    path, rows = _read_csv(path, MULTIPLIER_COLUMNS)
    kinds = {"step": "int", "constraint": "str", "mean": "float", "count": "int", "threshold": "float",
             "lambda_before": "float", "lambda_after": "float", "skipped": "bool"}
    out = [
        MultiplierRow(**{c: _cell(path, i, c, row[c], kinds[c]) for c in MULTIPLIER_COLUMNS})
        for i, row in enumerate(rows, start=1)
    ]
    for i, r in enumerate(out, start=1):
        if not r.constraint:
            raise CurveFileError(f"{path}: row {i}: column 'constraint': empty")
    return out


def read_train_metrics(path: str | Path) -> TrainCurves:
    path, rows = _read_csv(path, ("round",))
    header = list(rows[0].keys()) if rows else []
    cols = [c for c in header if c in TRAIN_COLUMNS or c.startswith("lambda_")]
    rounds = np.array([_cell(path, i, "round", r["round"], "int") for i, r in enumerate(rows, start=1)], dtype=np.int64)
    series = {
        c: np.array([_cell(path, i, c, r[c], "float") for i, r in enumerate(rows, start=1)], dtype=np.float64)
        for c in cols
    }
    return TrainCurves(rounds, series)


def by_constraint(rows: list[MultiplierRow]) -> dict[str, list[MultiplierRow]]:
    """Rows per constraint, in the canonical order (consistency, semantic, spatial, others), by step."""
    groups: dict[str, list[MultiplierRow]] = {}
    for r in rows:
        groups.setdefault(r.constraint, []).append(r)
    order = [c for c in CONSTRAINT_ORDER if c in groups] + sorted(set(groups) - set(CONSTRAINT_ORDER))
    return {c: sorted(groups[c], key=lambda r: r.step) for c in order}

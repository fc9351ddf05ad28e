"""The SFT run's record: loss curve as CSV and PNG, and a small JSON summary.

Rows come from ``Trainer.state.log_history``, which a resumed run restores from its checkpoint,
so the curve of an interrupted-then-resumed run is whole. Each file is written to a temporary
name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

LOG_CSV = "train_log.csv"
LOSS_PNG = "loss.png"
SUMMARY_JSON = "summary.json"
# Columns in this order; any other numeric key TRL logs is appended after them.
COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "mean_token_accuracy", "entropy", "num_tokens"]


@dataclass(frozen=True)
class TrainingLog:
    rows: list[dict[str, float]]  # one per logged optimiser step, in step order
    first_loss: float
    final_loss: float
    csv_path: Path
    png_path: Path
    summary_path: Path


def loss_rows(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Training-loss entries of a Trainer log history (one per step; a repeated step keeps the
    last entry, as after a resume that re-logs its first step)."""
    by_step: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue  # eval entries and the final train summary
        by_step[int(entry["step"])] = {k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
    return [by_step[s] for s in sorted(by_step)]


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    tmp.replace(path)


def _write_csv(rows: list[dict[str, float]], path: Path) -> None:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    columns = [c for c in COLUMNS if any(c in r for r in rows)] + extra

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({c: (int(r[c]) if c == "step" else r[c]) if c in r else "" for c in columns})

    _replace(path, write)


def _plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", label="loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("assistant-token cross-entropy")
    ax.grid(alpha=0.3)
    if any("learning_rate" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("learning_rate", math.nan) for r in rows], color="tab:orange", lw=1, label="lr")
        ax2.set_ylabel("learning rate", color="tab:orange")
    ax.set_title("SFT training loss")
    fig.tight_layout()
    _replace(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_training_log(
    log_history: Sequence[dict[str, Any]], out_dir: str | Path, summary: dict[str, Any], write: bool = True
) -> TrainingLog:
    """Write ``train_log.csv``, ``loss.png`` and ``summary.json`` (first/final loss added) into
    ``out_dir``; ``write=False`` (non-main processes) only computes the record."""
    out_dir = Path(out_dir)
    rows = loss_rows(log_history)
    first = rows[0]["loss"] if rows else math.nan
    final = rows[-1]["loss"] if rows else math.nan
    log = TrainingLog(rows, first, final, out_dir / LOG_CSV, out_dir / LOSS_PNG, out_dir / SUMMARY_JSON)
    if write:
        _write_csv(rows, log.csv_path)
        if rows:
            _plot(rows, log.png_path)
        record = dict(summary, first_loss=first, final_loss=final, logged_steps=len(rows))
        _replace(log.summary_path, lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str)))
    return log

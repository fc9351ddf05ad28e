"""Per-sample evaluation results: what one benchmark question produced, scored.

A :class:`SampleResult` is the unit every metric, interval and paired comparison is computed
from. It holds no image and no policy object: it can be written to JSONL, read back, and
re-aggregated later (``fgrpo compare`` pairs two runs' results by ``(benchmark, sample_id)``).

Judge outcomes keep their status (docs/method.md#a-missing-reward: a judge failure is counted, never a score):

- ``ok``: the judge answered; the score is a number (consistency) or a number/NaN (semantic:
  NaN when every labelled sentence was SKIP).
- ``unparseable`` / ``failed``: the judge was asked and did not deliver; score NaN.
- ``unjudgeable``: the sample is in the judge scope but gave the judge nothing to rule on (no
  parsable reasoning or answer; for semantic grounding: no checkable sentence, or every sentence
  SKIP); score NaN. It counts as *inconsistent* in IR and as 0 in semantic grounding, as training
  counts it (``train.scoring``): a policy cannot lower its IR or raise its grounding by writing
  nothing checkable or by breaking the format.
- ``not_asked``: the judge was not asked (outside the judge scope: a wrong answer under scope
  ``correct``); score NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Iterable


class JudgeOutcome(str, Enum):
    ok = "ok"
    unparseable = "unparseable"
    failed = "failed"
    unjudgeable = "unjudgeable"
    not_asked = "not_asked"

    @property
    def is_failure(self) -> bool:
        """The judge was asked and gave no usable verdict."""
        return self in (JudgeOutcome.unparseable, JudgeOutcome.failed)


@dataclass(frozen=True)
class SampleResult:
    """One evaluated benchmark question (for circular benchmarks: all its rotations)."""

    benchmark: str  # test split name without "test_", e.g. "synthetic", "sat"
    task: str  # task family
    sample_id: str
    correct: bool  # R_acc = 1 (circular: on every rotation)
    well_formed: bool  # R_fmt = 1 (circular: of rotation 0, the staged option order)
    response_tokens: int  # generated tokens (rotation 0)
    truncated: bool  # generation hit max_tokens (rotation 0)
    spatial: float  # R_G of rotation 0; NaN when the sample has no ground-truth box
    consistency_status: JudgeOutcome
    consistency: float  # R_C in {0, 1} when status is ok, else NaN
    semantic_status: JudgeOutcome
    semantic: float  # R_S in [0, 1]; NaN unless ok and at least one non-SKIP sentence
    semantic_sentences: int = 0  # checkable sentences sent to the semantic judge
    rotations: int = 1  # option orders asked (1 unless circular)
    rotations_correct: int = 0  # how many of them were answered right
    predicted: str | None = None  # extracted answer of rotation 0
    text: str = ""  # completion of rotation 0

    def __post_init__(self) -> None:
        for name in ("consistency", "semantic", "spatial"):
            v = getattr(self, name)
            if not (math.isnan(v) or 0.0 <= v <= 1.0):
                raise ValueError(f"sample {self.sample_id!r}: {name} must be in [0, 1] or NaN, got {v}")
        for name in ("consistency", "semantic"):
            status: JudgeOutcome = getattr(self, f"{name}_status")
            if status is not JudgeOutcome.ok and not math.isnan(getattr(self, name)):
                raise ValueError(
                    f"sample {self.sample_id!r}: {name} has a score but status {status.value}"
                )
        if self.consistency_status is JudgeOutcome.ok and math.isnan(self.consistency):
            raise ValueError(f"sample {self.sample_id!r}: consistency status ok without a score")
        if not 0 <= self.rotations_correct <= self.rotations:
            raise ValueError(
                f"sample {self.sample_id!r}: rotations_correct {self.rotations_correct} "
                f"outside 0..{self.rotations}"
            )
        if self.correct != (self.rotations_correct == self.rotations):
            raise ValueError(
                f"sample {self.sample_id!r}: correct={self.correct} but "
                f"{self.rotations_correct}/{self.rotations} rotations right"
            )

    @property
    def inconsistent(self) -> bool:
        """The consistency judge said the answer does not follow from the reasoning, or there was no
        parsable reasoning or answer to judge (unjudgeable counts against, never for, the policy)."""
        if self.consistency_status is JudgeOutcome.unjudgeable:
            return True
        return self.consistency_status is JudgeOutcome.ok and self.consistency == 0.0


# --------------------------------------------------------------------------------------------
# JSONL (NaN is written as null: JSON has no NaN)
# --------------------------------------------------------------------------------------------
_FLOATS = ("spatial", "consistency", "semantic")


def _to_json(r: SampleResult) -> dict:
    row = asdict(r)
    row["consistency_status"] = r.consistency_status.value
    row["semantic_status"] = r.semantic_status.value
    for k in _FLOATS:
        row[k] = None if math.isnan(row[k]) else row[k]
    return row


def _from_json(row: dict, where: str) -> SampleResult:
    names = {f.name for f in fields(SampleResult)}
    unknown = sorted(set(row) - names)
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}")
    try:
        row = dict(row)
        for k in _FLOATS:
            row[k] = math.nan if row.get(k) is None else float(row[k])
        row["consistency_status"] = JudgeOutcome(row["consistency_status"])
        row["semantic_status"] = JudgeOutcome(row["semantic_status"])
        return SampleResult(**row)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def write_samples(results: Iterable[SampleResult], path: str | Path) -> Path:
    """Write one JSON object per line (rewritten whole, never appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in results:
            f.write(json.dumps(_to_json(r), sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_samples(path: str | Path) -> list[SampleResult]:
    """Inverse of :func:`write_samples`; a bad line raises naming the file and line."""
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {i}: not JSON ({err})") from None
        out.append(_from_json(row, f"{path}: line {i}"))
    return out

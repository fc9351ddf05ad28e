"""How well a model judge agrees with a reference judge (the exact verifier on synthetic data).

Per signal, over the units both judges decided:

- consistency: one unit per request, labels CONSISTENT / INCONSISTENT;
- semantic grounding: one unit per sentence, labels CORRECT / INCORRECT / SKIP.

accuracy = share of units with the same label; Cohen's kappa corrects it for chance:

    kappa = (p_o - p_e) / (1 - p_e),   p_o = accuracy,   p_e = sum_c p_ref(c) * p_cand(c)

where p_ref(c), p_cand(c) are the shares of label c given by each judge. kappa is NaN when it
is undefined (no units, or p_e = 1: both judges gave one and the same label to everything).
Units where either judge is not ``ok`` are not compared; they are counted instead, so a judge
that mostly fails cannot look good on the few verdicts it managed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

from fgrpo_core.judges.base import (
    ConsistencyRequest,
    ConsistencyVerdict,
    Judge,
    SemanticRequest,
    SemanticVerdict,
    VerdictStatus,
)
from fgrpo_core.judges.sentences import checkable_sentences
from fgrpo_core.parsing import parse_completion


def cohen_kappa(reference: Sequence[str], candidate: Sequence[str]) -> float:
    """Cohen's kappa of two label sequences (see the module docstring); NaN when undefined."""
    if len(reference) != len(candidate):
        raise ValueError(f"cohen_kappa: {len(reference)} reference labels vs {len(candidate)} candidate labels")
    n = len(reference)
    if n == 0:
        return math.nan
    p_o = sum(a == b for a, b in zip(reference, candidate)) / n
    ref, cand = Counter(reference), Counter(candidate)
    p_e = sum(ref[c] * cand[c] for c in ref) / (n * n)
    if p_e == 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


@dataclass
class SignalAgreement:
    """Agreement of a candidate judge with the reference on one signal."""

    signal: str
    requests: int  # requests both judges were given
    units: int  # units compared (requests for consistency, sentences for semantic)
    accuracy: float  # share of compared units with the same label (NaN if none)
    kappa: float  # Cohen's kappa (NaN if undefined)
    candidate_ok: int
    candidate_unparseable: int
    candidate_failed: int
    reference_not_ok: int  # requests the reference could not decide (not compared)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # reference label -> candidate label -> n


def _status_counts(verdicts: Sequence[ConsistencyVerdict | SemanticVerdict]) -> Counter[VerdictStatus]:
    return Counter(v.status for v in verdicts)


def _agreement(signal: str, pairs: list[tuple[str, str]], ref_verdicts, cand_verdicts) -> SignalAgreement:
    counts = _status_counts(cand_verdicts)
    confusion: dict[str, dict[str, int]] = {}
    for r, c in pairs:
        confusion.setdefault(r, {}).setdefault(c, 0)
        confusion[r][c] += 1
    ref_labels, cand_labels = [r for r, _ in pairs], [c for _, c in pairs]
    return SignalAgreement(
        signal=signal,
        requests=len(ref_verdicts),
        units=len(pairs),
        accuracy=sum(r == c for r, c in pairs) / len(pairs) if pairs else math.nan,
        kappa=cohen_kappa(ref_labels, cand_labels),
        candidate_ok=counts[VerdictStatus.ok],
        candidate_unparseable=counts[VerdictStatus.unparseable],
        candidate_failed=counts[VerdictStatus.failed],
        reference_not_ok=sum(v.status is not VerdictStatus.ok for v in ref_verdicts),
        confusion=confusion,
    )


def _check_lengths(ref: Sequence[object], cand: Sequence[object], what: str) -> None:
    if len(ref) != len(cand):
        raise ValueError(f"{what}: {len(ref)} reference verdicts vs {len(cand)} candidate verdicts")


def consistency_agreement(
    reference: Sequence[ConsistencyVerdict], candidate: Sequence[ConsistencyVerdict]
) -> SignalAgreement:
    _check_lengths(reference, candidate, "consistency agreement")
    label = {True: "CONSISTENT", False: "INCONSISTENT"}
    pairs = [
        (label[bool(r.consistent)], label[bool(c.consistent)])
        for r, c in zip(reference, candidate)
        if r.status is VerdictStatus.ok and c.status is VerdictStatus.ok
    ]
    return _agreement("consistency", pairs, reference, candidate)


def semantic_agreement(reference: Sequence[SemanticVerdict], candidate: Sequence[SemanticVerdict]) -> SignalAgreement:
    _check_lengths(reference, candidate, "semantic agreement")
    pairs: list[tuple[str, str]] = []
    for i, (r, c) in enumerate(zip(reference, candidate)):
        if r.status is VerdictStatus.ok and c.status is VerdictStatus.ok:
            if len(r.labels) != len(c.labels):
                raise ValueError(f"semantic request #{i}: {len(r.labels)} reference labels vs {len(c.labels)}")
            pairs += [(a.value, b.value) for a, b in zip(r.labels, c.labels)]
    return _agreement("semantic", pairs, reference, candidate)


@dataclass
class AgreementReport:
    reference: str  # judge name/version
    candidate: str
    consistency: SignalAgreement
    semantic: SignalAgreement

    def to_json(self) -> str:
        def clean(x: object) -> object:  # JSON has no NaN: write null
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return x

        return json.dumps(clean(asdict(self)), indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        def f(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{x:.3f}"

        rows = [
            f"Judge agreement: candidate `{self.candidate}` vs reference `{self.reference}`",
            "",
            "| signal | requests | units compared | accuracy | Cohen's kappa | ok | unparseable | failed | reference not ok |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in (self.consistency, self.semantic):
            rows.append(
                f"| {a.signal} | {a.requests} | {a.units} | {f(a.accuracy)} | {f(a.kappa)} | {a.candidate_ok} "
                f"| {a.candidate_unparseable} | {a.candidate_failed} | {a.reference_not_ok} |"
            )
        return "\n".join(rows) + "\n"


def compare_judges(
    reference: Judge,
    candidate: Judge,
    consistency: Sequence[ConsistencyRequest],
    semantic: Sequence[SemanticRequest],
) -> AgreementReport:
    """Run both judges on the same requests and report their agreement."""
    return AgreementReport(
        reference=f"{reference.name}@{reference.version}",
        candidate=f"{candidate.name}@{candidate.version}",
        consistency=consistency_agreement(reference.consistency(consistency), candidate.consistency(consistency)),
        semantic=semantic_agreement(reference.semantic(semantic), candidate.semantic(semantic)),
    )


def trace_requests(
    question: str, choices: Sequence[str], completion: str, image, scene
) -> tuple[ConsistencyRequest | None, SemanticRequest | None]:
    """The judge requests of one completion, built as scoring builds them (parse, split, filter).

    ``None`` where there is nothing to ask: no reasoning or answer (consistency), no checkable
    sentence (semantic).
    """
    parsed = parse_completion(completion)
    if not parsed.think or not parsed.answer:
        return None, None
    c = ConsistencyRequest(question, tuple(choices), parsed.think, parsed.answer, scene)
    sentences = tuple(checkable_sentences(parsed.think))
    s = SemanticRequest(question, tuple(choices), sentences, image, scene) if sentences else None
    return c, s

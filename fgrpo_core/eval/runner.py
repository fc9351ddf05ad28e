"""Greedy pass@1 on every test split: generate, grade, judge, aggregate.

    for each benchmark split, for each sample, for each option order (circular: all rotations):
        one greedy completion (temperature 0, n = 1)
    grade every completion with the training grader      (docs/method.md#code-principles: one grader)
    judge rotation 0's reasoning: consistency (R_C) and semantic grounding (R_S)
    aggregate into SampleResults, then metrics with bootstrap intervals (metrics.py)

The judge scope decides which completions are judged:
``all`` (default) judges every completion that has both a reasoning and an answer; ``correct``
judges only correct ones, as the training reward masks R_C and R_S (docs/method.md#rewards). Asking
and settling verdicts is ``judges/asking.py``, shared with training. Under
``correct`` a wrong answer is never inconsistent, so IR reads as "right answer, wrong reason".

Inside the scope, a completion that gives a judge nothing to rule on is ``unjudgeable``, not
skipped: no parsable reasoning or answer (consistency; it counts as inconsistent in IR), no
checkable sentence or every sentence SKIP (semantic grounding; it counts 0). The training scores
count the same cases the same way (``train.scoring``).

Judge calls go to rotation 0 only (the staged option order): one verdict per sample, and
circular benchmarks cost no extra judge calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Mapping, Sequence

from fgrpo_core.config import EvalParams
from fgrpo_core.data.schema import Sample, from_dataset
from fgrpo_core.eval.circular import OptionOrder, option_orders
from fgrpo_core.eval.metrics import EvalMetrics, compute_metrics
from fgrpo_core.eval.results import JudgeOutcome, SampleResult
from fgrpo_core.judges.asking import Trace, ask_judges
from fgrpo_core.judges.base import Judge
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, Rollout, SamplingSettings
from fgrpo_core.rewards.grader import Grade, grade_completions
from fgrpo_core.rollout.base import RolloutEngine

TEST_PREFIX = "test_"


@dataclass(frozen=True)
class EvalSettings:
    """What one evaluation needs (the fields of ``EvalParams`` that the runner reads)."""

    max_tokens: int = 1024
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    limit: int | None = None
    circular: tuple[str, ...] = ("sat",)
    judge_scope: Literal["all", "correct"] = "all"

    @classmethod
    def from_params(cls, p: EvalParams) -> "EvalSettings":
        return cls(
            max_tokens=p.max_tokens, n_boot=p.bootstrap, confidence=p.confidence, seed=p.seed,
            limit=p.limit, circular=tuple(p.circular), judge_scope=p.judge_scope,
        )


@dataclass(frozen=True)
class EvalTimings:
    generate_s: float
    grade_s: float
    judge_s: float
    completions: int  # rollouts generated (rotations included)
    generated_tokens: int


@dataclass(frozen=True)
class EvalResult:
    samples: list[SampleResult]
    metrics: EvalMetrics
    timings: EvalTimings
    policy_version: int


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def load_test_splits(
    data_dir: str | Path, benchmarks: Sequence[str] | None = None, limit: int | None = None
) -> dict[str, list[Sample]]:
    """``{benchmark: samples}`` from ``data_dir/test_<benchmark>`` (datasets ``save_to_disk``)."""
    import datasets

    data_dir = Path(data_dir)
    found = {p.name[len(TEST_PREFIX):]: p for p in sorted(data_dir.glob(f"{TEST_PREFIX}*")) if p.is_dir()}
    wanted = list(found) if benchmarks is None else list(benchmarks)
    missing = [b for b in wanted if b not in found]
    if missing:
        raise FileNotFoundError(
            f"no test split for {missing} under {data_dir} (found: {sorted(found) or 'none'})"
        )
    if not wanted:
        raise FileNotFoundError(f"no {TEST_PREFIX}* split under {data_dir}")
    out = {}
    for name in wanted:
        ds = datasets.load_from_disk(str(found[name]))
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        out[name] = from_dataset(ds)
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ask:
    benchmark: str
    sample: Sample
    order: OptionOrder
    text: str = ""  # the completion, once generated

    @property
    def prompt_id(self) -> str:
        return f"{self.benchmark}/{self.sample.id}#r{self.order.shift}"


@dataclass(frozen=True)
class Generated:
    """Every completion of one evaluation, before grading and judging."""

    asks: list[_Ask]  # one per (sample, option order), with its completion text
    rollouts: list[Rollout]  # aligned with asks
    policy_version: int
    generate_s: float


def generate(engine: RolloutEngine, splits: Mapping[str, Sequence[Sample]], settings: EvalSettings) -> Generated:
    """Greedy pass@1: one completion per sample and option order (all rotations if circular)."""
    asks: list[_Ask] = []
    for bench, samples in splits.items():
        samples = list(samples)[: settings.limit] if settings.limit is not None else list(samples)
        circular = bench in settings.circular
        for s in samples:
            asks += [_Ask(bench, s, o) for o in option_orders(s.choices, s.answer, circular)]
    ids = [a.prompt_id for a in asks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate sample id in the test splits: {dup}")

    t0 = time.perf_counter()
    prompts = [
        PromptInput(a.prompt_id, build_messages(a.sample.question, a.order.choices), a.sample.image) for a in asks
    ]
    sampling = SamplingSettings(n=1, temperature=0.0, max_tokens=settings.max_tokens, seed=settings.seed)
    batch = engine.generate(prompts, sampling)
    by_id: dict[str, Rollout] = {r.prompt_id: r for r in batch.rollouts}
    lost = [i for i in ids if i not in by_id]
    if lost or len(batch.rollouts) != len(asks):
        raise RuntimeError(f"engine returned {len(batch.rollouts)} rollouts for {len(asks)} prompts; missing {lost[:3]}")
    rollouts = [by_id[i] for i in ids]
    asks = [replace(a, text=r.text) for a, r in zip(asks, rollouts)]
    return Generated(asks, rollouts, batch.policy_version, time.perf_counter() - t0)


def score(gen: Generated, judge: Judge, settings: EvalSettings) -> EvalResult:
    """Grade every completion (the training grader), judge rotation 0, aggregate, add intervals."""
    asks, rollouts = gen.asks, gen.rollouts
    t1 = time.perf_counter()
    grades = grade_completions(
        [r.text for r in rollouts],
        [a.order.answer for a in asks],
        [a.order.choices for a in asks],
        [[b.as_list() for b in a.sample.boxes] for a in asks],
    )

    t2 = time.perf_counter()
    first = [i for i, a in enumerate(asks) if a.order.shift == 0]  # one per sample
    consistency, semantic, n_sentences = _judge(judge, [asks[i] for i in first], [grades[i] for i in first],
                                                settings.judge_scope)
    t3 = time.perf_counter()

    # Aggregate rotations into one result per sample.
    groups: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(asks):
        groups.setdefault((a.benchmark, a.sample.id), []).append(i)
    results = []
    for j, i0 in enumerate(first):
        a, g, r = asks[i0], grades[i0], rollouts[i0]
        members = groups[(a.benchmark, a.sample.id)]
        right = sum(grades[k].acc > 0 for k in members)
        c_status, c_score = consistency[j]
        s_status, s_score = semantic[j]
        results.append(
            SampleResult(
                benchmark=a.benchmark,
                task=a.sample.task,
                sample_id=a.sample.id,
                correct=right == len(members),
                well_formed=g.fmt > 0,
                response_tokens=len(r.token_ids),
                truncated=r.finish_reason == "length",
                spatial=g.spatial,
                consistency_status=c_status,
                consistency=c_score,
                semantic_status=s_status,
                semantic=s_score,
                semantic_sentences=n_sentences[j],
                rotations=len(members),
                rotations_correct=right,
                predicted=g.parsed.answer,
                text=r.text,
            )
        )
    metrics = compute_metrics(results, settings.n_boot, settings.confidence, settings.seed, settings.circular)
    timings = EvalTimings(
        generate_s=gen.generate_s, grade_s=t2 - t1, judge_s=t3 - t2, completions=len(rollouts),
        generated_tokens=sum(len(r.token_ids) for r in rollouts),
    )
    return EvalResult(results, metrics, timings, gen.policy_version)


def run_eval(
    engine: RolloutEngine,
    judge: Judge,
    splits: Mapping[str, Sequence[Sample]],
    settings: EvalSettings,
) -> EvalResult:
    """Evaluate ``engine``'s policy on every split (``{benchmark: samples}``).

    The two halves are also callable apart: a judge that needs the accelerator the policy holds
    (a vLLM model judge) is built after :func:`generate` and the policy engine is closed.
    """
    return score(generate(engine, splits, settings), judge, settings)


def _judge(
    judge: Judge, asks: list[_Ask], grades: list[Grade], scope: str
) -> tuple[list[tuple[JudgeOutcome, float]], list[tuple[JudgeOutcome, float]], list[int]]:
    """Consistency and semantic outcomes of each (rotation-0) completion, in order."""
    if scope not in ("all", "correct"):
        raise ValueError(f"judge scope must be 'all' or 'correct', got {scope!r}")
    v = ask_judges(judge, [None if scope == "correct" and g.acc <= 0 else
                           Trace(a.sample.question, a.order.choices, a.text, a.sample.image, a.sample.scene)
                           for a, g in zip(asks, grades)])

    def outcomes(status: list[str | None], score: list[float]) -> list[tuple[JudgeOutcome, float]]:
        return [(JudgeOutcome.not_asked if st is None else JudgeOutcome(st), sc) for st, sc in zip(status, score)]

    return outcomes(v.consistency_status, v.consistency), outcomes(v.semantic_status, v.semantic), v.sentences

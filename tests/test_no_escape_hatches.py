"""No escape hatches in training's scoring: a right answer that gives a judge nothing to rule on
(no reasoning, no checkable sentence, every sentence SKIP) scores 0 on the active constraint, so a
policy that writes nothing checkable or drops the reasoning never gets a better constraint mean
c_k (the number dual ascent reads) than an honest one. A judge *failure* stays NaN."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from fgrpo_core.data.schema import Sample
from fgrpo_core.judges.base import (
    ConsistencyVerdict,
    SemanticVerdict,
    SentenceLabel,
    VerdictStatus,
)
from fgrpo_core.lagrangian import constraint_stats
from fgrpo_core.records import Rollout
from fgrpo_core.train.scoring import score_rollouts


class StubJudge:
    """Deterministic on the text: 'hence B' is inconsistent with answer A, 'JUDGE-DOWN' fails;
    a sentence with 'red' is CORRECT, 'green' INCORRECT, 'purple' SKIP."""

    name, version = "stub", "1"

    def consistency(self, requests):
        out = []
        for r in requests:
            if "JUDGE-DOWN" in r.reasoning:
                out.append(ConsistencyVerdict(VerdictStatus.failed))
            else:
                out.append(ConsistencyVerdict(VerdictStatus.ok, consistent="hence B" not in r.reasoning))
        return out

    def semantic(self, requests):
        def label(s: str) -> SentenceLabel:
            if "red" in s:
                return SentenceLabel.correct
            return SentenceLabel.incorrect if "green" in s else SentenceLabel.skip

        return [SemanticVerdict(VerdictStatus.ok, [label(s) for s in r.sentences]) for r in requests]


def _sample(i: int) -> Sample:
    return Sample(id=f"s{i}", source="synthetic", task="relation", image=Image.new("RGB", (28, 28)),
                  question="Which is left?", choices=["cube", "ball"], answer="A")


def _score(texts_per_sample: list[list[str]]):
    samples = [_sample(i) for i in range(len(texts_per_sample))]
    rollouts = [Rollout(s.id, j, t, [1, 2, 3], None, "stop")
                for s, texts in zip(samples, texts_per_sample) for j, t in enumerate(texts)]
    return score_rollouts(rollouts, {s.id: s for s in samples}, StubJudge())


HONEST = [
    "<think>The red cube is on the left, so A.</think><answer>A</answer>",  # C 1, S 1
    "<think>The green cube is on the left, so A.</think><answer>A</answer>",  # C 1, S 0
    "<think>The red cube is on the left, hence B.</think><answer>A</answer>",  # C 0, S 1
    "<think>The red cube is on the right, so B.</think><answer>B</answer>",  # wrong: n/a
]
NO_REASONING = ["<answer>A</answer>"] * 3 + ["<answer>B</answer>"]  # right answers, nothing to judge
NOTHING_CHECKABLE = [
    "<think>Let me answer.</think><answer>A</answer>",  # K' = 0 after the trivial-sentence filter
    "<think>The purple cube is on the left, so A.</think><answer>A</answer>",  # every sentence SKIP
    "<think>Let me answer.</think><answer>A</answer>",
    "<think>The red cube is on the right, so B.</think><answer>B</answer>",
]


def _means(scores):
    task, cons, _ = scores.tensors()
    return constraint_stats({k: cons[k] for k in ("consistency", "semantic")})


def test_honest_policy_hand_computed():
    scores = _score([HONEST])
    means, counts = _means(scores)
    # applicable: the 3 right answers; C = (1, 1, 0) -> 2/3; S = (1, 0, 1) -> 2/3
    assert counts == {"consistency": 3, "semantic": 3}
    assert means["consistency"] == pytest.approx(2 / 3) and means["semantic"] == pytest.approx(2 / 3)
    e = scores.escapes
    assert (e.rollouts, e.correct, e.semantic_undefined, e.consistency_unjudged, e.unparsable) == (4, 3, 0, 0, 0)


def test_dropping_the_reasoning_does_not_pay():
    scores = _score([NO_REASONING])
    means, counts = _means(scores)
    # 3 right answers without a think part: R_C = R_S = 0 (unjudgeable), not NaN (which would leave
    # c_C undefined: the dual step skipped, lambda frozen, the constraint never enforced)
    assert counts == {"consistency": 3, "semantic": 3}
    assert means == {"consistency": 0.0, "semantic": 0.0}
    assert [s.consistency_status for s in scores.scores] == ["unjudgeable"] * 3 + ["not_applicable"]
    honest, _ = _means(_score([HONEST]))
    assert means["consistency"] < honest["consistency"] and means["semantic"] < honest["semantic"]
    e = scores.escapes
    # shares: of the 3 correct, 3 never judged, 3 without a checkable sentence; 4 of 4 unparsable
    assert (e.consistency_unjudged_share, e.semantic_undefined_share, e.unparsable_share) == (1.0, 1.0, 1.0)
    assert scores.judge_status == {"consistency": {}, "semantic": {}}  # the judge was never asked


def test_writing_nothing_checkable_does_not_pay():
    scores = _score([NOTHING_CHECKABLE])
    means, counts = _means(scores)
    # S: 'Let me answer.' x2 (K' = 0) and the all-SKIP one count 0: 0/3 (as NaN they would leave S
    # undefined, or, beside one honest rollout, 1.0: better than the honest policy's 2/3)
    assert counts["semantic"] == 3 and means["semantic"] == 0.0
    assert [s.semantic_status for s in scores.scores] == ["unjudgeable"] * 3 + ["not_applicable"]
    # C was judged (the stub finds nothing inconsistent in 'Let me answer.'): 3/3
    assert means["consistency"] == 1.0
    assert scores.escapes.semantic_undefined == 3 and scores.escapes.consistency_unjudged == 0
    # the judge was asked once (the all-SKIP request); its verdict is counted as the scores record it
    assert scores.judge_status["semantic"] == {"unjudgeable": 1}
    # mixed with one honest rollout, the escapes pull S down instead of hiding
    mixed, _ = _means(_score([[HONEST[0]] + NOTHING_CHECKABLE[:3]]))
    assert mixed["semantic"] == pytest.approx(1 / 4)  # (1 + 0 + 0 + 0) / 4


def test_judge_failure_stays_not_a_score():
    scores = _score([["<think>The red cube is on the left, JUDGE-DOWN.</think><answer>A</answer>"] + HONEST[:1]])
    s = scores.scores[0]
    assert math.isnan(s.consistency) and s.consistency_status == "failed"
    means, counts = _means(scores)
    assert counts["consistency"] == 1 and means["consistency"] == 1.0
    assert scores.judge_status["consistency"] == {"failed": 1, "ok": 1}


def test_inactive_constraints_are_not_scored():
    samples = [_sample(0)]
    rollouts = [Rollout("s0", 0, "<answer>A</answer>", [1], None, "stop")]
    scores = score_rollouts(rollouts, {"s0": samples[0]}, StubJudge(), constraints=("spatial",))
    s = scores.scores[0]
    assert math.isnan(s.consistency) and math.isnan(s.semantic)  # not active: nothing to enforce
    assert scores.escapes.consistency_unjudged == 1  # but still counted for the log


# --------------------------------------------------------------------------------------------
# Evaluation counts the same cases the same way (IR, semantic grounding)
# --------------------------------------------------------------------------------------------
def _eval(policy, scope="all"):
    from fgrpo_core.eval.runner import EvalSettings, run_eval
    from tests.test_eval_runner import ScriptedEngine

    splits = {"b": [_sample(i) for i in range(4)]}
    settings = EvalSettings(max_tokens=64, n_boot=50, circular=(), judge_scope=scope)
    return run_eval(ScriptedEngine(lambda pid, prompt: policy(int(pid.split("/s")[1].split("#")[0]))),
                    StubJudge(), splits, settings).metrics.benchmarks["b"].overall


@pytest.mark.parametrize("scope", ["all", "correct"])
def test_eval_escapes_never_beat_the_honest_policy(scope):
    honest = _eval(lambda i: HONEST[i % 3], scope)  # all right; C = (1, 1, 0, 1), S = (1, 0, 1, 1)
    # IR = 1/4 (sample 2 concludes B), semantic = 3/4
    assert honest.metrics.inconsistency_rate.value == pytest.approx(1 / 4)
    assert honest.metrics.semantic_grounding.value == pytest.approx(3 / 4)
    for escape, ir, sem, drops_reasoning in (
        (lambda i: "<answer>A</answer>", 1.0, 0.0, True),  # no reasoning: all inconsistent, grounding 0
        # the judge rules 'Let me answer.' consistent (its call), but nothing is checkable: S = 0
        (lambda i: NOTHING_CHECKABLE[i % 3], 0.0, 0.0, False),
        (lambda i: HONEST[0] if i == 0 else "<answer>A</answer>", 3 / 4, 1 / 4, True),
    ):
        m = _eval(escape, scope).metrics
        assert m.inconsistency_rate.value == pytest.approx(ir)
        assert m.semantic_grounding.value == pytest.approx(sem)
        assert sem < honest.metrics.semantic_grounding.value
        if drops_reasoning:
            assert ir > honest.metrics.inconsistency_rate.value
    # without the rule the half-escaping policy read IR 0 % and S 100 % (its one judged sample)
    m = _eval(lambda i: HONEST[0] if i == 0 else "<answer>A</answer>", scope)
    assert m.counts.consistency_unjudgeable == 3 and m.counts.semantic_unjudgeable == 3
    assert (m.counts.consistency_judged, m.counts.semantic_defined) == (1, 1)

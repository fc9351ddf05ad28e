"""One way to ask the judges and settle their verdicts, for training and evaluation alike.

Before ``judges/asking.py`` the two had their own copies, and only evaluation turned a consistency
verdict "ok" without a verdict (a judge bug: NaN score) into ``unparseable``; training kept it as
"ok" with a NaN score, so the round's judge-failure counts missed it.
"""

from __future__ import annotations

import math

import pytest

from fgrpo_core.config import SyntheticDataParams
from fgrpo_core.data.synthetic import generate_samples
from fgrpo_core.judges.asking import Trace, ask_judges, settle
from fgrpo_core.judges.base import ConsistencyVerdict, SemanticVerdict, SentenceLabel, VerdictStatus
from fgrpo_core.records import Rollout


class BuggyJudge:
    """Says "ok" for consistency without a verdict; labels every sentence CORRECT."""

    name, version = "buggy", "1"

    def consistency(self, requests):
        return [ConsistencyVerdict(VerdictStatus.ok, consistent=None) for _ in requests]

    def semantic(self, requests):
        return [SemanticVerdict(VerdictStatus.ok, [SentenceLabel.correct] * len(r.sentences)) for r in requests]


def _samples(n=2):
    return generate_samples(SyntheticDataParams(tasks=["relation_2d"]), n=n, split="test")


def _completion(sample) -> str:
    return (f"<think>The red object is in the scene. So the answer is {sample.answer}.</think>"
            f"<answer>{sample.answer}</answer>")


def test_settle_by_hand():
    assert settle(ConsistencyVerdict(VerdictStatus.ok, consistent=True)) == ("ok", 1.0)
    assert settle(ConsistencyVerdict(VerdictStatus.ok, consistent=False)) == ("ok", 0.0)
    status, score = settle(ConsistencyVerdict(VerdictStatus.ok, consistent=None))
    assert status == "unparseable" and math.isnan(score)
    status, score = settle(ConsistencyVerdict(VerdictStatus.failed))
    assert status == "failed" and math.isnan(score)
    # semantic "ok" with every sentence SKIP: not a failure, but nothing was checkable (K' = 0):
    # unjudgeable, which training scores 0 and evaluation counts as 0 grounding (docs/rewards.md)
    status, score = settle(SemanticVerdict(VerdictStatus.ok, [SentenceLabel.skip]))
    assert status == "unjudgeable" and math.isnan(score)
    assert settle(SemanticVerdict(VerdictStatus.ok, [SentenceLabel.correct, SentenceLabel.incorrect])) == ("ok", 0.5)


def test_ask_judges_skips_none_and_checks_the_count():
    s = _samples(1)[0]
    v = ask_judges(BuggyJudge(), [None, Trace(s.question, s.choices, _completion(s), s.image, s.scene)])
    assert v.consistency_status == [None, "unparseable"] and v.counts("consistency") == {"unparseable": 1}

    class Short(BuggyJudge):
        def consistency(self, requests):
            return []

    with pytest.raises(RuntimeError, match="consistency returned 0 verdicts for 1 requests"):
        ask_judges(Short(), [Trace(s.question, s.choices, _completion(s), s.image, s.scene)])


def test_training_and_evaluation_settle_alike():
    from fgrpo_core.eval.runner import EvalSettings, score, Generated, _Ask
    from fgrpo_core.eval.circular import option_orders
    from fgrpo_core.train.scoring import score_rollouts

    samples = _samples(2)
    rollouts = [Rollout(s.id, 0, _completion(s), [1, 2], None, "stop") for s in samples]
    train = score_rollouts(rollouts, {s.id: s for s in samples}, BuggyJudge())
    assert [r.consistency_status for r in train.scores] == ["unparseable"] * 2
    assert all(math.isnan(r.consistency) for r in train.scores)
    assert train.judge_status["consistency"] == {"unparseable": 2}
    assert [r.semantic for r in train.scores] == [1.0, 1.0]

    asks = [_Ask("synthetic", s, option_orders(s.choices, s.answer, False)[0], _completion(s)) for s in samples]
    ev = score(Generated(asks, rollouts, 0, 0.0), BuggyJudge(), EvalSettings(n_boot=10))
    assert [r.consistency_status.value for r in ev.samples] == ["unparseable"] * 2
    assert [r.semantic for r in ev.samples] == [1.0, 1.0]


# --------------------------------------------------------------------------------------------
# One answer matcher and one box reader for the reward and the exact judge
# --------------------------------------------------------------------------------------------
def test_the_exact_judge_reads_answers_as_the_accuracy_reward_does():
    # Before, the judge stripped punctuation ("left-of" -> "leftof") and knew no "B. right";
    # the reward counted "B. right" correct, the judge found it named no option: inconsistent.
    from fgrpo_core.judges.base import ConsistencyRequest
    from fgrpo_core.judges.exact import answer_option, check_consistency
    from fgrpo_core.parsing import parse_completion
    from fgrpo_core.rewards.answer import accuracy_reward, named_option

    choices = ["left", "right"]
    for answer in ("B", "(b)", "B.", "right", "B. right", "b right"):
        assert accuracy_reward(parse_completion(f"<think>x</think><answer>{answer}</answer>"), "B", choices) == 1.0
        assert answer_option(answer, choices) == named_option(answer, choices) == 1, answer
    assert named_option("left or right", choices) is None and named_option("", choices) is None
    req = ConsistencyRequest("Where?", tuple(choices), "The cube is on the right. So the answer is B.", "B. right")
    assert check_consistency(req).consistent is True


def test_the_exact_judge_reads_boxes_with_the_completion_parser():
    from fgrpo_core.parsing import parse_box

    assert parse_box("[1, 2, 30.5, 40]") == (1.0, 2.0, 30.5, 40.0)
    for bad in ("[1, 2, 3]", "[1, 2, inf, 4]", "[1e999, 0, 1, 1]", "(1, 2, 3, 4)", "[a, b, c, d]"):
        assert parse_box(bad) is None, bad


def test_opposites_have_one_home():
    import fgrpo_core.judges.exact as exact
    from fgrpo_core.data import scene_graph, synthetic, traces

    assert exact.OPPOSITE is synthetic.OPPOSITE is traces.OPPOSITE is scene_graph.OPPOSITE
    assert not hasattr(exact, "_OPP")
    assert all(scene_graph.OPPOSITE[scene_graph.OPPOSITE[r]] == r for r in scene_graph.RELATIONS)

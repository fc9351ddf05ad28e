"""run_eval without a model: a scripted engine answers, the real grader and the exact judge
score. Circular evaluation, judge scope, judge failures, and IR against traces whose faults
are known (the synthetic SFT traces record which ones conclude another option)."""

import math
import re
from dataclasses import replace

import pytest
from PIL import Image

from fgrpo_core.config import ModelParams, SyntheticDataParams
from fgrpo_core.data.schema import Box, Sample
from fgrpo_core.eval.circular import option_orders, rotate
from fgrpo_core.eval.results import JudgeOutcome
from fgrpo_core.eval.runner import EvalSettings, run_eval
from fgrpo_core.judges.base import ConsistencyVerdict, VerdictStatus
from fgrpo_core.judges.exact import ExactJudge
from fgrpo_core.prompts import LETTERS
from fgrpo_core.records import Rollout, RolloutBatch

SETTINGS = EvalSettings(max_tokens=64, n_boot=100, circular=("sat",))


class ScriptedEngine:
    """The RolloutEngine interface with a policy written as a function of the prompt."""

    policy_version = 7

    def __init__(self, policy):
        self.policy = policy  # (prompt_id, question_text_with_options) -> completion text
        self.prompts = []

    def generate(self, prompts, sampling):
        assert sampling.temperature == 0.0 and sampling.n == 1  # greedy pass@1
        self.prompts += prompts
        out = []
        for p in prompts:
            text = self.policy(p.prompt_id, p.messages[-1]["content"][1]["text"])
            n_tok = len(text.split())
            out.append(Rollout(p.prompt_id, 0, text, list(range(n_tok)), None,
                               "length" if n_tok >= sampling.max_tokens else "stop"))
        return RolloutBatch(out, policy_version=self.policy_version)


class CountingJudge:
    """Wraps a judge; records requests; optionally fails chosen consistency requests."""

    name, version = "counting", "1"

    def __init__(self, inner, fail_every=0):
        self.inner, self.fail_every = inner, fail_every
        self.c_requests, self.s_requests = [], []

    def consistency(self, requests):
        self.c_requests += requests
        out = self.inner.consistency(requests)
        if self.fail_every:
            out = [ConsistencyVerdict(VerdictStatus.failed, None, "timeout") if i % self.fail_every == 0 else v
                   for i, v in enumerate(out)]
        return out

    def semantic(self, requests):
        self.s_requests += requests
        return self.inner.semantic(requests)


def _sample(sid, choices, answer, task="relation_2d", boxes=(), scene=None):
    return Sample(id=sid, source="x", task=task, image=Image.new("RGB", (56, 56), (120, 30, 30)),
                  question=f"Question {sid}?", choices=list(choices), answer=answer, boxes=list(boxes), scene=scene)


def _options(prompt_text):
    """The lettered options shown in the prompt, in order."""
    return re.findall(r"^[A-J]\. (.*)$", prompt_text, flags=re.M)


def say(answer, think="The red circle is left of the blue square."):
    return f"<think>{think}</think><answer>{answer}</answer>"


# --------------------------------------------------------------------------------------------
# Circular evaluation
# --------------------------------------------------------------------------------------------
def test_rotation_by_hand():
    # ["a", "b", "c"], answer "B" (= "b"): shift 1 -> ["b", "c", "a"], answer "A"; shift 2 -> "C"
    assert rotate(["a", "b", "c"], "B", 0).choices == ("a", "b", "c")
    assert rotate(["a", "b", "c"], "B", 1) == rotate(["a", "b", "c"], "B", 4)
    r1, r2 = rotate(["a", "b", "c"], "B", 1), rotate(["a", "b", "c"], "B", 2)
    assert (r1.choices, r1.answer) == (("b", "c", "a"), "A")
    assert (r2.choices, r2.answer) == (("c", "a", "b"), "C")
    with pytest.raises(ValueError, match="not one of the option letters"):
        rotate(["a", "b"], "C", 0)


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_every_rotation_keeps_the_answer_text(k):
    choices = [f"opt{i}" for i in range(k)]
    for gold in range(k):
        orders = option_orders(choices, LETTERS[gold], circular=True)
        assert [o.shift for o in orders] == list(range(k))
        # each order points at the same option text; across orders the gold takes every position
        assert {o.choices[LETTERS.index(o.answer)] for o in orders} == {f"opt{gold}"}
        assert sorted(LETTERS.index(o.answer) for o in orders) == list(range(k))
    assert len(option_orders(choices, "A", circular=False)) == 1
    assert len(option_orders([], "seven", circular=True)) == 1  # free-form: one order


def test_circular_counts_correct_only_if_all_rotations_are():
    splits = {
        "sat": [_sample("q1", ["left", "right", "above"], "A")],
        "plain": [_sample("q2", ["left", "right", "above"], "A")],
    }

    def always_a(pid, prompt):  # letter "A" whatever the options: right only where gold is first
        return say("A")

    def reads_options(pid, prompt):  # finds "left" among the shown options and names its letter
        return say(LETTERS[_options(prompt).index("left")])

    def one_slip(pid, prompt):  # right except on rotation 2 (options above/left/right: "C" is wrong)
        return say("C" if pid.endswith("#r2") else LETTERS[_options(prompt).index("left")])

    judge = CountingJudge(ExactJudge())
    engine = ScriptedEngine(always_a)
    res = {r.benchmark: r for r in run_eval(engine, judge, splits, SETTINGS).samples}
    # sat: 3 rotations asked, only rotation 0 right -> not correct; plain: one order, right
    assert len(engine.prompts) == 3 + 1
    assert (res["sat"].rotations, res["sat"].rotations_correct, res["sat"].correct) == (3, 1, False)
    assert (res["plain"].rotations, res["plain"].correct) == (1, True)
    assert len(judge.c_requests) == 2  # one judge call per sample (rotation 0), not per rotation

    out = run_eval(ScriptedEngine(reads_options), judge, splits, SETTINGS)
    assert all(r.correct for r in out.samples)
    assert out.metrics.benchmarks["sat"].circular and not out.metrics.benchmarks["plain"].circular
    sat = {r.benchmark: r for r in run_eval(ScriptedEngine(one_slip), judge, splits, SETTINGS).samples}["sat"]
    assert (sat.rotations_correct, sat.correct) == (2, False)
    # answering with the option text is right under every rotation (same matcher as training)
    out = run_eval(ScriptedEngine(lambda pid, p: say("left")), judge, splits, SETTINGS)
    assert all(r.correct for r in out.samples)


def test_rotated_prompts_show_rotated_options():
    engine = ScriptedEngine(lambda pid, p: say("A"))
    run_eval(engine, CountingJudge(ExactJudge()), {"sat": [_sample("q", ["x", "y"], "B")]}, SETTINGS)
    shown = {p.prompt_id: _options(p.messages[-1]["content"][1]["text"]) for p in engine.prompts}
    assert shown == {"sat/q#r0": ["x", "y"], "sat/q#r1": ["y", "x"]}


# --------------------------------------------------------------------------------------------
# Judges inside the run
# --------------------------------------------------------------------------------------------
def test_judge_scope_and_not_asked():
    splits = {"b": [_sample("right", ["left", "right"], "A"), _sample("wrong", ["left", "right"], "A"),
                    _sample("noparse", ["left", "right"], "A")]}

    def policy(pid, prompt):
        if "noparse" in pid:
            return "I think it is A"  # no think/answer tags: nothing to judge
        # concludes B in the reasoning; answers A (right sample) or B (wrong sample)
        return say("A" if "/right#" in pid else "B", think="The red circle is left. So the answer is B.")

    judge = CountingJudge(ExactJudge())
    res = {r.sample_id: r for r in run_eval(ScriptedEngine(policy), judge, splits, SETTINGS).samples}
    # scope all: both parsed completions judged; "right" concluded B but answered A -> inconsistent
    assert res["right"].consistency_status is JudgeOutcome.ok and res["right"].consistency == 0.0
    assert res["wrong"].consistency == 1.0  # concluded B, answered B: consistent (though wrong)
    # in scope but nothing to judge: counted inconsistent (breaking the format never lowers IR)
    assert res["noparse"].consistency_status is JudgeOutcome.unjudgeable and res["noparse"].inconsistent
    assert res["noparse"].semantic_status is JudgeOutcome.unjudgeable
    assert not res["noparse"].well_formed
    out = run_eval(ScriptedEngine(policy), judge, splits, SETTINGS).metrics.benchmarks["b"].overall
    m = out.metrics
    assert m.inconsistency_rate.value == pytest.approx(2 / 3)  # (right + noparse) / 3 samples (none failed)
    assert (out.counts.consistency_unjudgeable, out.counts.semantic_unjudgeable) == (1, 1)

    judge = CountingJudge(ExactJudge())
    res = {r.sample_id: r for r in
           run_eval(ScriptedEngine(policy), judge, splits, replace(SETTINGS, judge_scope="correct")).samples}
    assert len(judge.c_requests) == 1  # only the correct answer is judged (the training mask)
    assert res["wrong"].consistency_status is JudgeOutcome.not_asked
    assert res["noparse"].consistency_status is JudgeOutcome.not_asked  # wrong (no answer): outside the scope


def test_judge_failures_are_counted_not_scored():
    splits = {"b": [_sample(f"s{i}", ["left", "right"], "A") for i in range(6)]}
    policy = lambda pid, p: say("A", think="The red circle is left. So the answer is B.")  # all inconsistent
    judge = CountingJudge(ExactJudge(), fail_every=3)  # requests 0 and 3 fail
    out = run_eval(ScriptedEngine(policy), judge, splits, SETTINGS)
    c = out.metrics.benchmarks["b"].overall.counts
    assert (c.consistency_failed, c.inconsistent) == (2, 4)
    m = out.metrics.benchmarks["b"].overall.metrics
    assert m.inconsistency_rate.value == pytest.approx(4 / (6 - 2))  # failed leave the denominator
    assert m.inconsistency_upper.value == pytest.approx(6 / 6)


def test_semantic_needs_a_scene_for_the_exact_judge():
    # a real-image sample (no scene graph): the exact judge cannot check sentences -> failed, counted
    out = run_eval(ScriptedEngine(lambda pid, p: say("A")), ExactJudge(), {"b": [_sample("r", ["l", "r"], "A")]},
                   SETTINGS)
    r = out.samples[0]
    assert r.semantic_status is JudgeOutcome.failed and math.isnan(r.semantic)
    assert out.metrics.benchmarks["b"].overall.counts.semantic_failed == 1
    assert not out.metrics.benchmarks["b"].overall.metrics.semantic_grounding.defined


def test_engine_that_drops_a_rollout_is_an_error():
    class Lossy(ScriptedEngine):
        def generate(self, prompts, sampling):
            b = super().generate(prompts, sampling)
            return RolloutBatch(b.rollouts[:-1])

    with pytest.raises(RuntimeError, match="returned 1 rollouts for 2 prompts"):
        run_eval(Lossy(lambda pid, p: say("A")), ExactJudge(), {"b": [_sample("a", ["l", "r"], "A"),
                                                                        _sample("c", ["l", "r"], "A")]}, SETTINGS)


def test_spatial_and_length_come_from_the_grader():
    # GT box [10, 10, 30, 30]; the completion cites exactly it -> R_G = 1; a second sample cites none -> 0
    box = Box("red circle", 10, 10, 30, 30)
    splits = {"b": [_sample("hit", ["l", "r"], "A", boxes=[box]), _sample("miss", ["l", "r"], "A", boxes=[box]),
                    _sample("nobox", ["l", "r"], "A")]}

    def policy(pid, prompt):
        think = "The red circle is at <bbox>[10, 10, 30, 30]</bbox>." if "hit" in pid else "The red circle is left."
        return say("A", think=think)

    res = {r.sample_id: r for r in run_eval(ScriptedEngine(policy), ExactJudge(), splits, SETTINGS).samples}
    assert res["hit"].spatial == pytest.approx(1.0)
    assert res["miss"].spatial == 0.0
    assert math.isnan(res["nobox"].spatial)
    assert res["hit"].response_tokens == len(policy("b/hit#r0", "").split())


# --------------------------------------------------------------------------------------------
# IR against known faults (synthetic SFT traces as the policy)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def traced_samples():
    from fgrpo_core.data.synthetic import generate_split

    mp = ModelParams()
    params = SyntheticDataParams(inconsistent_share=0.4, hallucination_share=0.3, bad_box_share=0.0)
    return generate_split(params, "sft", 21, mp.min_pixels, mp.max_pixels, with_trace=True)


def test_ir_matches_injected_inconsistencies(traced_samples):
    traces = {s.id: s.trace for s in traced_samples}
    engine = ScriptedEngine(lambda pid, p: traces[pid.split("/")[1].split("#")[0]])
    out = run_eval(engine, ExactJudge(), {"synthetic": traced_samples}, SETTINGS)
    n = len(traced_samples)
    n_bad = sum("inconsistent" in s.trace_faults for s in traced_samples)
    assert 0 < n_bad < n
    m = out.metrics.benchmarks["synthetic"].overall.metrics
    assert m.accuracy.value == 1.0 and m.well_formed.value == 1.0  # every trace answers right
    assert m.inconsistency_rate.value == pytest.approx(n_bad / n)
    by_id = {r.sample_id: r for r in out.samples}
    for s in traced_samples:
        r = by_id[s.id]
        assert r.inconsistent == ("inconsistent" in s.trace_faults), s.id
        if "hallucination" in s.trace_faults:
            assert r.semantic < 1.0, s.id  # an absent object was described
        elif not s.trace_faults:
            assert r.semantic == 1.0, s.id
    # per task family: the tasks partition the samples
    tasks = out.metrics.benchmarks["synthetic"].tasks
    assert sum(g.counts.n for g in tasks.values()) == n
    assert sum(g.counts.inconsistent for g in tasks.values()) == n_bad

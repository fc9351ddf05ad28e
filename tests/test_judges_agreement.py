"""Judge agreement: Cohen's kappa by hand, non-ok verdicts counted and never compared."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import pytest

from fgrpo_core.judges.agreement import (
    cohen_kappa,
    compare_judges,
    consistency_agreement,
    semantic_agreement,
    trace_requests,
)
from fgrpo_core.judges.base import ConsistencyVerdict, SemanticVerdict, SentenceLabel, VerdictStatus

OK, UNP, FAIL = VerdictStatus.ok, VerdictStatus.unparseable, VerdictStatus.failed
C, I, S = SentenceLabel.correct, SentenceLabel.incorrect, SentenceLabel.skip


def test_kappa_small_hand_example():
    # ref A A B B, cand A B B B: p_o = 3/4; p_e = .5*.25 + .5*.75 = .5; kappa = (.75-.5)/.5 = .5
    assert cohen_kappa("AABB", "ABBB") == pytest.approx(0.5)


def test_kappa_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 35/50 = .7;
    # ref yes 25/50, cand yes 30/50: p_e = .5*.6 + .5*.4 = .5; kappa = (.7-.5)/(1-.5) = .4
    ref = ["y"] * 25 + ["n"] * 25
    cand = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(ref, cand) == pytest.approx(0.4)


def test_kappa_limits():
    assert cohen_kappa("ABAB", "ABAB") == 1.0
    assert cohen_kappa("ABAB", "BABA") == pytest.approx(-1.0)  # p_o 0, p_e .5 -> -1
    assert math.isnan(cohen_kappa("", ""))
    assert math.isnan(cohen_kappa("AAA", "AAA"))  # p_e = 1: undefined, not 1 and not 0
    with pytest.raises(ValueError, match="3 reference labels vs 2"):
        cohen_kappa("AAB", "AB")


def test_kappa_matches_confusion_matrix_loop():
    rng = random.Random(0)
    labels = "XYZ"
    for _ in range(50):
        n = rng.randint(1, 30)
        ref = [rng.choice(labels) for _ in range(n)]
        cand = [rng.choice(labels) for _ in range(n)]
        # loop over the confusion matrix: p_o = trace / n, p_e = sum_c row_c * col_c / n^2
        m = {(a, b): 0 for a, b in itertools.product(labels, labels)}
        for a, b in zip(ref, cand):
            m[a, b] += 1
        p_o = sum(m[c, c] for c in labels) / n
        p_e = sum(sum(m[c, x] for x in labels) * sum(m[x, c] for x in labels) for c in labels) / n**2
        expected = math.nan if p_e == 1 else (p_o - p_e) / (1 - p_e)
        got = cohen_kappa(ref, cand)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_consistency_agreement_compares_only_where_both_are_ok():
    ref = [
        ConsistencyVerdict(OK, True),
        ConsistencyVerdict(OK, True),
        ConsistencyVerdict(OK, False),
        ConsistencyVerdict(OK, False),
        ConsistencyVerdict(OK, True),  # candidate unparseable: not compared
        ConsistencyVerdict(OK, False),  # candidate failed: not compared
        ConsistencyVerdict(FAIL, None),  # reference failed: not compared
    ]
    cand = [
        ConsistencyVerdict(OK, True),
        ConsistencyVerdict(OK, False),
        ConsistencyVerdict(OK, False),
        ConsistencyVerdict(OK, False),
        ConsistencyVerdict(UNP, None, "garbage"),
        ConsistencyVerdict(FAIL, None, "timeout"),
        ConsistencyVerdict(OK, True),
    ]
    a = consistency_agreement(ref, cand)
    # compared: (C,C) (C,I) (I,I) (I,I) -> same as the "AABB" vs "ABBB" example: acc .75, kappa .5
    assert (a.requests, a.units) == (7, 4)
    assert a.accuracy == 0.75 and a.kappa == pytest.approx(0.5)
    assert (a.candidate_ok, a.candidate_unparseable, a.candidate_failed, a.reference_not_ok) == (5, 1, 1, 1)
    assert a.confusion == {"CONSISTENT": {"CONSISTENT": 1, "INCONSISTENT": 1}, "INCONSISTENT": {"INCONSISTENT": 2}}


def test_all_unparseable_candidate_has_no_agreement_figures():
    ref = [ConsistencyVerdict(OK, True)] * 3
    cand = [ConsistencyVerdict(UNP, None, "x")] * 3
    a = consistency_agreement(ref, cand)
    assert a.units == 0 and math.isnan(a.accuracy) and math.isnan(a.kappa)  # never 0 or 1
    assert a.candidate_unparseable == 3


def test_semantic_agreement_is_per_sentence():
    ref = [SemanticVerdict(OK, [C, I, S]), SemanticVerdict(OK, [C]), SemanticVerdict(OK, [I, I])]
    cand = [SemanticVerdict(OK, [C, C, S]), SemanticVerdict(OK, [C]), SemanticVerdict(UNP, [], "?")]
    a = semantic_agreement(ref, cand)
    # sentences compared: (C,C) (I,C) (S,S) (C,C): p_o = 3/4
    # ref: C 2, I 1, S 1; cand: C 3, S 1 -> p_e = (2*3 + 1*0 + 1*1) / 16 = 7/16
    # kappa = (12/16 - 7/16) / (9/16) = 5/9
    assert (a.requests, a.units) == (3, 4)
    assert a.accuracy == 0.75 and a.kappa == pytest.approx(5 / 9)
    assert a.candidate_unparseable == 1


def test_semantic_agreement_rejects_misaligned_labels():
    with pytest.raises(ValueError, match="#0: 2 reference labels vs 1"):
        semantic_agreement([SemanticVerdict(OK, [C, C])], [SemanticVerdict(OK, [C])])


def test_trace_requests_parse_split_and_filter():
    completion = (
        "<think>Let me look at the image. The red circle is at <bbox>[1, 2, 30, 40]</bbox>. "
        "It is left of the blue square. So the answer is A.</think><answer>A</answer>"
    )
    c, s = trace_requests("Where?", ["left", "right"], completion, None, {"objects": []})
    assert c is not None and c.answer == "A" and c.choices == ("left", "right")
    assert c.reasoning.startswith("Let me look") and c.scene == {"objects": []}
    assert s is not None
    assert "Let me look at the image." not in s.sentences  # filler with no visual word: dropped
    assert any("red circle" in x for x in s.sentences)
    assert trace_requests("Where?", ["a"], "no tags at all", None, None) == (None, None)


# ------------------------------------------------------------------------------ on synthetic traces
def _synthetic_requests(n: int):
    from fgrpo_core.config import SyntheticDataParams
    from fgrpo_core.data.synthetic import generate_item

    params = SyntheticDataParams(inconsistent_share=0.4, hallucination_share=0.4, bad_box_share=0.2)
    c_reqs, s_reqs = [], []
    for i in range(n):
        smp = generate_item(params, "val", i, 28 * 28 * 4, 28 * 28 * 1280, with_trace=True).sample
        c, s = trace_requests(smp.question, smp.choices, smp.trace, smp.image, smp.scene)
        c_reqs += [c] if c else []
        s_reqs += [s] if s else []
    return c_reqs, s_reqs


def test_exact_judge_agrees_with_itself_on_synthetic_traces():
    from fgrpo_core.judges.exact import ExactJudge

    c_reqs, s_reqs = _synthetic_requests(24)
    assert len(c_reqs) == 24 and s_reqs
    report = compare_judges(ExactJudge(), ExactJudge(), c_reqs, s_reqs)
    for a in (report.consistency, report.semantic):
        assert a.accuracy == 1.0 and a.units > 0
        assert a.kappa == 1.0  # both labels occur (faults injected), so kappa is defined
    assert '"kappa": 1.0' in report.to_json()
    assert "| consistency | 24 | 24 | 1.000 | 1.000 |" in report.to_markdown()


class FlippingJudge:
    """The exact judge with its consistency verdict flipped on the first ``k`` requests."""

    name, version = "flipping", "1"

    def __init__(self, k: int):
        from fgrpo_core.judges.exact import ExactJudge

        self.exact, self.k = ExactJudge(), k

    def consistency(self, requests):
        out = self.exact.consistency(requests)
        return [ConsistencyVerdict(OK, not v.consistent, v.raw) if i < self.k else v for i, v in enumerate(out)]

    def semantic(self, requests):
        return self.exact.semantic(requests)


def test_flipped_verdicts_give_the_hand_computed_accuracy_and_kappa():
    """Agreement with itself (above) is 1 whatever the arithmetic; here the candidate disagrees on
    exactly 6 of 24 consistency verdicts, and Cohen's kappa is recomputed from the counts."""
    from fgrpo_core.judges.exact import ExactJudge

    c_reqs, s_reqs = _synthetic_requests(24)
    ref = [v.consistent for v in ExactJudge().consistency(c_reqs)]
    cand = [not r if i < 6 else r for i, r in enumerate(ref)]
    report = compare_judges(ExactJudge(), FlippingJudge(6), c_reqs, s_reqs)
    n = len(ref)
    p_o = sum(a == b for a, b in zip(ref, cand)) / n
    p_ref, p_cand = sum(ref) / n, sum(cand) / n
    p_e = p_ref * p_cand + (1 - p_ref) * (1 - p_cand)
    assert p_o == 18 / 24 and p_e < 1
    assert report.consistency.accuracy == pytest.approx(0.75, abs=1e-12)
    assert report.consistency.kappa == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-12)
    assert report.consistency.kappa < 0.75  # chance agreement is taken out
    assert report.semantic.accuracy == 1.0 and report.semantic.kappa == 1.0  # untouched


class ConstantJudge:
    """Says CONSISTENT and CORRECT to everything (a lazy judge)."""

    name, version = "constant", "1"

    def consistency(self, requests):
        return [ConsistencyVerdict(OK, True, "VERDICT: CONSISTENT") for _ in requests]

    def semantic(self, requests):
        return [SemanticVerdict(OK, [C] * len(r.sentences), "") for r in requests]


def test_a_constant_judge_has_zero_kappa_whatever_its_accuracy():
    from fgrpo_core.judges.exact import ExactJudge

    c_reqs, s_reqs = _synthetic_requests(24)
    ref = ExactJudge().consistency(c_reqs)
    share_consistent = sum(v.consistent for v in ref) / len(ref)
    report = compare_judges(ExactJudge(), ConstantJudge(), c_reqs, s_reqs)
    # cand always C: p_o = p_ref(C), p_e = p_ref(C) * 1 -> kappa = 0 exactly
    assert report.consistency.accuracy == pytest.approx(share_consistent)
    assert 0 < share_consistent < 1
    assert report.consistency.kappa == pytest.approx(0.0, abs=1e-12)
    assert report.semantic.kappa == pytest.approx(0.0, abs=1e-12)
    assert report.semantic.accuracy < 1.0  # the injected hallucinations are missed


def test_agreement_command_rejects_params_without_a_model_judge(tmp_path, capsys):
    from flows.cmd_judges import agreement_main

    params = tmp_path / "p.yaml"
    params.write_text("name: t\n")
    assert agreement_main(["--params", str(params)]) == 2
    assert "judges.model_judge is not set" in capsys.readouterr().err
    assert agreement_main(["--params", str(params), "--set", "judges.nonsense=1"]) == 2
    assert "unknown key 'judges.nonsense'" in capsys.readouterr().err


def test_agreement_set_is_the_staged_val_split_and_drift_is_caught(tmp_path):
    from fgrpo_core.config import Params
    from fgrpo_core.data.schema import to_dataset
    from flows.cmd_judges import agreement_samples, check_against_staged

    params = Params()
    samples = agreement_samples(params, limit=6)
    assert [s.id for s in samples] == [f"synthetic-val-{i:06d}" for i in range(6)]
    assert all(s.trace and s.scene for s in samples)
    # staged val (no traces) holds the same scenes and questions: accepted
    staged = [dataclasses.replace(s, trace="", trace_faults=[]) for s in samples]
    to_dataset(staged).save_to_disk(str(tmp_path / "val"))
    check_against_staged(samples, tmp_path / "val")
    # staged with other params: the differing sample is named
    staged[3] = dataclasses.replace(staged[3], question="Something else?")
    to_dataset(staged).save_to_disk(str(tmp_path / "val2"))
    with pytest.raises(ValueError, match="synthetic-val-000003 differs"):
        check_against_staged(samples, tmp_path / "val2")

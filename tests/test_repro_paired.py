"""The verdict of the ablation table: paired differences by seed (fgrpo_core/eval/paired.py), the SFT
check against chance, and targets that are "not testable" rather than "met" on no evidence."""

from __future__ import annotations

import math

import pytest

from fgrpo_core.eval.paired import chance_level, paired_differences
from fgrpo_core.eval.repro import (
    RowEvidence, SeedStat, sft_check, summary_markdown, target_check)
from fgrpo_core.eval.results import JudgeOutcome, SampleResult

OK, NOT_ASKED = JudgeOutcome.ok, JudgeOutcome.not_asked


def _res(i: int, correct: int, consistent: float = 1.0, semantic: float = 1.0, k: int = 2, bench="syn"):
    """One test question asked in its k orders; right in all of them or in exactly one."""
    return SampleResult(benchmark=bench, task="t", sample_id=f"q{i}", correct=bool(correct), well_formed=True,
                        response_tokens=10, truncated=False, spatial=math.nan,
                        consistency_status=OK, consistency=consistent, semantic_status=OK, semantic=semantic,
                        rotations=k, rotations_correct=k if correct else 1)


def _run(correct, consistent=None, semantic=None):
    consistent = consistent or [1.0] * len(correct)
    semantic = semantic or [1.0] * len(correct)
    return [_res(i, c, k_c, s) for i, (c, k_c, s) in enumerate(zip(correct, consistent, semantic))]


def _seeds():
    # seed 0: row correct (1,1,0,1) = 0.75, GRPO-T (1,0,0,1) = 0.50 -> d = +0.25
    # seed 1: row (1,1,1,1) = 1.00, GRPO-T (1,1,0,0) = 0.50 -> d = +0.50;  mean d = +0.375
    # per order (k = 2; a wrong question is right in 1 of 2 orders):
    #   seed 0: row (1+1+.5+1)/4 = .875, GRPO-T (1+.5+.5+1)/4 = .75 -> +.125
    #   seed 1: row 1.0, GRPO-T (1+1+.5+.5)/4 = .75 -> +.25;  mean +.1875
    # IR: row 0 everywhere; GRPO-T seed 0 (1 of 4) .25, seed 1 (2 of 4) .50 -> d = -.25, -.50; mean -.375
    # semantic: row 1.0, GRPO-T 0.5 everywhere -> d = +.5 on every resample
    row0, base0 = _run([1, 1, 0, 1]), _run([1, 0, 0, 1], [0, 1, 1, 1], [0.5] * 4)
    row1, base1 = _run([1, 1, 1, 1]), _run([1, 1, 0, 0], [0, 0, 1, 1], [0.5] * 4)
    base0.append(_res(99, 1))  # a prompt only GRPO-T answered: not paired, left out
    return [(row0, base0), (row1, base1)]


def test_paired_differences_by_hand():
    d = paired_differences(_seeds(), n_boot=2000, seed=0)
    assert d["accuracy"].per_seed == pytest.approx((0.25, 0.5)) and d["accuracy"].value == pytest.approx(0.375)
    assert d["rotation_accuracy"].value == pytest.approx(0.1875)
    assert d["inconsistency_rate"].per_seed == pytest.approx((-0.25, -0.5))
    assert d["inconsistency_rate"].value == pytest.approx(-0.375)
    s = d["semantic_grounding"]
    assert (s.value, s.lo, s.hi) == pytest.approx((0.5, 0.5, 0.5))  # paired: the same on every resample
    assert d["accuracy"].n_prompts == 4 and d["accuracy"].n_seeds == 2
    # over seeds alone (scipy, percentile): means of resampled (0.25, 0.5) lie in {0.25, 0.375, 0.5}
    a = d["accuracy"]
    assert (a.seed_lo, a.seed_hi) == pytest.approx((0.25, 0.5))
    # seeds, then prompts: the test-prompt variation widens it (seed 0's per-prompt d = (0, 1, 0, 0)
    # resamples to 0 with probability (3/4)^4 = 0.32)
    assert a.lo < 0.25 and a.hi >= 0.5 and a.lo <= a.value <= a.hi
    assert paired_differences(_seeds(), n_boot=2000, seed=0) == d  # seeded: same intervals


def test_identical_rows_differ_by_zero_and_undefined_metrics_stay_undefined():
    run = _run([1, 0, 1, 0])
    d = paired_differences([(run, run), (run, run)], n_boot=200)
    for m in ("accuracy", "rotation_accuracy", "inconsistency_rate", "semantic_grounding"):
        assert (d[m].value, d[m].lo, d[m].hi) == (0.0, 0.0, 0.0), m
    unjudged = [SampleResult(**{**r.__dict__, "consistency_status": NOT_ASKED, "consistency": math.nan}) for r in run]
    d = paired_differences([(unjudged, unjudged)], n_boot=50)
    assert math.isnan(d["inconsistency_rate"].value) and d["inconsistency_rate"].undefined_share == 1.0
    with pytest.raises(ValueError, match="share no test prompt"):
        paired_differences([(run, [_res(7, 1, bench="other")])])


def test_chance_level():
    # k = 2, 2, 4: (1/2 + 1/2 + 1/4) / 3 = 0.416667; a 1-order question is left out
    rows = [_res(0, 1, k=2), _res(1, 0, k=2), _res(2, 1, k=4), _res(3, 1, k=1)]
    assert chance_level(rows) == pytest.approx(1.25 / 3)


# --------------------------------------------------------------------------------------------
# The SFT check
# --------------------------------------------------------------------------------------------
def test_sft_at_chance_is_refused_naming_both_figures():
    # a fixed-letter policy on 2-option questions asked in both orders: right in exactly 1 of 2 -> 0.5
    # per question; 4-option ones: 1 of 4 -> 0.25. Chance = mean 1/k = the same numbers.
    rc, k = [1] * 20 + [1] * 10, [2] * 20 + [4] * 10
    c = sft_check(rc, k, margin=0.10)
    assert c.accuracy == pytest.approx((20 * 0.5 + 10 * 0.25) / 30) and c.chance == pytest.approx(c.accuracy)
    assert (c.lo, c.hi) == pytest.approx((c.accuracy, c.accuracy), abs=0.2) and c.lo <= c.accuracy <= c.hi
    assert not c.passed
    msg = c.message()
    assert "per-order accuracy on the val split 41.7%" in msg and "chance 41.7%" in msg
    assert "eval.min_sft_margin = 10.0 pts" in msg and "[95% CI" in msg


def test_sft_above_chance_by_the_margin_passes():
    # 2-option questions: 16 of 20 right in both orders (1.0), 4 in one (0.5): (16 + 2) / 20 = 0.9
    c = sft_check([2] * 16 + [1] * 4, [2] * 20, margin=0.10)
    assert c.accuracy == pytest.approx(0.9) and c.chance == 0.5 and c.passed
    assert c.lo < 0.9 < c.hi and "RL rows go ahead" in c.message()
    # 2-option questions right in both orders: x of 100, the rest in one: accuracy 0.5 + 0.5 x / 100
    under, over = sft_check([2] * 18 + [1] * 82, [2] * 100, 0.10), sft_check([2] * 22 + [1] * 78, [2] * 100, 0.10)
    assert under.accuracy == pytest.approx(0.59) and not under.passed  # 0.59 < 0.5 + 0.10
    assert over.accuracy == pytest.approx(0.61) and over.passed
    off = sft_check([1] * 100, [2] * 100, margin=-1.0)
    assert off.passed and "the check is off" in off.message()  # -1 turns the check off
    with pytest.raises(ValueError, match="circularly"):
        sft_check([1, 0], [1, 1], margin=0.1)


# --------------------------------------------------------------------------------------------
# Targets: never "met" on no evidence
# --------------------------------------------------------------------------------------------
def _stats(acc, ir, sem, rot=0.8, wf=1.0):
    return {m: SeedStat(v, v, v, math.nan, 5) for m, v in
            (("accuracy", acc), ("inconsistency_rate", ir), ("semantic_grounding", sem), ("rotation_accuracy", rot),
             ("well_formed", wf), ("spatial_grounding", math.nan), ("ir_judged", ir))}


def _ev(rot=0.8, wf=1.0, c_judged=100, s_judged=100, chance=0.5):
    return RowEvidence(rotation_accuracy=rot, chance=chance, well_formed=wf, consistency_judged=c_judged,
                       semantic_judged=s_judged)


def test_a_real_difference_is_met():
    base, fg = _stats(0.60, 0.30, 0.40), _stats(0.61, 0.05, 0.55)
    paired = paired_differences(_seeds(), n_boot=200)  # accuracy interval lower end < +0.25; semantic +0.5
    c = target_check(base, fg, paired, (_ev(), _ev()), margin=0.10)
    assert c.ir.status == "met" and c.ir_ratio == pytest.approx(6.0)
    assert c.acc.status == "met" and c.acc_lo == paired["accuracy"].lo
    assert c.semantic.status == "met" and c.semantic_lo == pytest.approx(0.5)
    md = summary_markdown({"grpo_t": base, "fgrpo": fg}, {}, c, seeds=[0, 1], paired={"fgrpo": paired})
    assert "| IR(GRPO-T) / IR(FGRPO) | 6.00× | ≥ 5× | met |" in md
    assert "## Paired differences against GRPO-T" in md and "+37.5 [" in md


def test_accuracy_at_chance_in_both_rows_is_not_testable():
    base, fg = _stats(0.01, 0.30, 0.40, rot=0.43), _stats(0.00, 0.05, 0.55, rot=0.45)
    c = target_check(base, fg, None, (_ev(rot=0.43, chance=0.43), _ev(rot=0.45, chance=0.43)), margin=0.10)
    assert c.acc.status == "not testable" and not c.acc_met
    assert "both rows answer at chance" in c.acc.reason and "43.0%" in c.acc.reason and "45.0%" in c.acc.reason
    md = summary_markdown({"grpo_t": base, "fgrpo": fg}, {}, c, seeds=[0])
    assert "not testable: both rows answer at chance" in md
    # with the SFT check turned off (margin -1), rows at or below chance are still not testable
    # (the smoke table once read "met" for two rows at 0% per-order accuracy vs chance 37.5%)
    c = target_check(base, fg, None, (_ev(rot=0.0, chance=0.375), _ev(rot=0.0, chance=0.375)), margin=-1.0)
    assert c.acc.status == "not testable"
    # one row above chance: testable again (and here met on the point values: -1 pt)
    c = target_check(base, fg, None, (_ev(rot=0.43, chance=0.43), _ev(rot=0.70, chance=0.43)), margin=0.10)
    assert c.acc.status == "met"


def test_ir_near_zero_or_unparsable_or_unjudged_is_not_testable():
    ev = (_ev(), _ev())
    c = target_check(_stats(0.6, 0.004, 0.4), _stats(0.6, 0.0, 0.5), None, ev)
    assert c.ir.status == "not testable" and "both IRs ~0" in c.ir.reason  # was "∞, met"
    c = target_check(_stats(0.6, 0.9, 0.4), _stats(0.6, 0.1, 0.5), None, (_ev(wf=0.1), _ev(wf=0.2)))
    assert c.ir.status == "not testable" and "mostly unparsable" in c.ir.reason
    c = target_check(_stats(0.6, 0.3, 0.4), _stats(0.6, 0.0, 0.5), None, (_ev(), _ev(c_judged=0)))
    assert c.ir.status == "not testable" and "no consistency verdict in FGRPO" in c.ir.reason
    # GRPO-T ~0 but FGRPO not: FGRPO is worse, that is testable and not met
    c = target_check(_stats(0.6, 0.004, 0.4), _stats(0.6, 0.2, 0.5), None, ev)
    assert c.ir.status == "not met"


def test_semantic_with_nothing_judged_is_not_testable():
    c = target_check(_stats(0.6, 0.3, 0.0), _stats(0.6, 0.05, 0.1), None, (_ev(s_judged=0), _ev()))
    assert c.semantic.status == "not testable" and "no sentence judged in GRPO-T" in c.semantic.reason
    assert not c.semantic_met

"""Evaluation metrics on hand-built per-sample results (arithmetic in the comments), bootstrap
intervals (vectorised == loop, contain the point, shrink with n, honest coverage, Wilson where
the bootstrap degenerates), and the eval.json / JSONL round trips."""

import json
import math

import numpy as np
import pytest

from fgrpo_core.eval.bootstrap import (
    group_rng,
    percentile_interval,
    ratios,
    resample_weights,
    wilson_interval,
)
from fgrpo_core.eval.metrics import METRIC_NAMES, compute_metrics, group_metrics, metric_arrays
from fgrpo_core.eval.report import markdown_report, metrics_to_dict, read_metrics_json, write_metrics_json
from fgrpo_core.eval.results import JudgeOutcome, SampleResult, read_samples, write_samples

NAN = math.nan
OK, FAILED, UNPARSEABLE, NOT_ASKED = (JudgeOutcome.ok, JudgeOutcome.failed, JudgeOutcome.unparseable,
                                      JudgeOutcome.not_asked)


def res(sid, correct=True, bench="bench", task="t", wf=True, tokens=10, trunc=False, spatial=NAN,
        c=(OK, 1.0), s=(OK, 1.0), rotations=1, text=""):
    return SampleResult(
        benchmark=bench, task=task, sample_id=sid, correct=correct, well_formed=wf, response_tokens=tokens,
        truncated=trunc, spatial=spatial, consistency_status=c[0], consistency=c[1], semantic_status=s[0],
        semantic=s[1], rotations=rotations, rotations_correct=rotations if correct else 0, text=text,
    )


# Five samples covering every judge outcome:
#   id  correct  wf  tokens  trunc  R_G   consistency       semantic
#   s1  yes      yes 10      no     0.5   ok 1              ok 1.0
#   s2  yes      yes 20      no     -     ok 0 (inconsist.) ok 0.5
#   s3  no       no  30      yes    0.0   not asked         not asked
#   s4  no       yes 40      no     -     failed            unparseable
#   s5  yes      yes 50      no     1.0   ok 0 (inconsist.) ok, all SKIP (NaN)
FIVE = [
    res("s1", True, tokens=10, spatial=0.5, c=(OK, 1.0), s=(OK, 1.0)),
    res("s2", True, tokens=20, c=(OK, 0.0), s=(OK, 0.5)),
    res("s3", False, wf=False, tokens=30, trunc=True, spatial=0.0, c=(NOT_ASKED, NAN), s=(NOT_ASKED, NAN)),
    res("s4", False, tokens=40, c=(FAILED, NAN), s=(UNPARSEABLE, NAN)),
    res("s5", True, tokens=50, spatial=1.0, c=(OK, 0.0), s=(OK, NAN)),
]


def test_every_metric_by_hand():
    g = group_metrics(FIVE, n_boot=200)
    m = g.metrics
    assert m.accuracy.value == pytest.approx(3 / 5)  # s1, s2, s5
    # IR = inconsistent (s2, s5) / (all 5 - 1 failed verdict (s4)) = 2/4; s3 (not asked) stays in.
    assert m.inconsistency_rate.value == pytest.approx(2 / 4)
    assert m.inconsistency_rate.n == 4
    # worst case: the failed verdict was an inconsistency too: (2 + 1) / 5
    assert m.inconsistency_upper.value == pytest.approx(3 / 5)
    # semantic over defined R_S only: (1.0 + 0.5) / 2; s5 (all SKIP), s3, s4 are undefined
    assert m.semantic_grounding.value == pytest.approx(0.75)
    assert m.semantic_grounding.n == 2
    # spatial over samples with boxes: (0.5 + 0.0 + 1.0) / 3
    assert m.spatial_grounding.value == pytest.approx(0.5)
    assert m.spatial_grounding.n == 3
    assert m.well_formed.value == pytest.approx(4 / 5)
    assert m.truncated.value == pytest.approx(1 / 5)
    assert m.response_len.value == pytest.approx((10 + 20 + 30 + 40 + 50) / 5)  # 30
    c = g.counts
    assert (c.n, c.correct, c.inconsistent) == (5, 3, 2)
    assert (c.consistency_judged, c.consistency_failed, c.consistency_not_asked) == (3, 1, 1)
    assert (c.semantic_defined, c.semantic_failed, c.semantic_not_asked) == (2, 1, 1)
    assert c.spatial_defined == 3


def test_failed_verdict_is_never_counted_as_consistent():
    # 4 samples: 1 inconsistent, 1 consistent, 2 failed. Counting failures as consistent would
    # give IR = 1/4; leaving them out gives 1/2, and the worst case 3/4.
    rows = [res("a", c=(OK, 0.0)), res("b", c=(OK, 1.0)), res("c", c=(FAILED, NAN)), res("d", c=(UNPARSEABLE, NAN))]
    m = group_metrics(rows, n_boot=100).metrics
    assert m.inconsistency_rate.value == pytest.approx(1 / 2)
    assert m.inconsistency_upper.value == pytest.approx(3 / 4)
    # all failed: IR undefined (not 0)
    m = group_metrics([res("x", c=(FAILED, NAN))], n_boot=50).metrics
    assert not m.inconsistency_rate.defined and math.isnan(m.inconsistency_rate.value)
    assert m.inconsistency_upper.value == 1.0


def test_ir_is_undefined_without_any_verdict():
    # nothing parsed, nothing judged: IR is not 0 ("perfectly consistent") but undefined
    rows = [res(f"r{i}", False, wf=False, c=(NOT_ASKED, NAN), s=(NOT_ASKED, NAN)) for i in range(4)]
    m = group_metrics(rows, n_boot=50).metrics
    assert not m.inconsistency_rate.defined and not m.inconsistency_upper.defined
    # one verdict is enough: 0 inconsistent of 4 samples (3 never judged) -> IR = 0/4
    rows[0] = res("r0", True, c=(OK, 1.0))
    assert group_metrics(rows, n_boot=50).metrics.inconsistency_rate.value == 0.0


def test_undefined_metrics_are_nan_not_zero():
    m = group_metrics([res("a", s=(NOT_ASKED, NAN))], n_boot=50).metrics
    assert not m.semantic_grounding.defined  # no R_S anywhere
    assert not m.spatial_grounding.defined  # no boxes anywhere
    assert m.accuracy.value == 1.0


def test_per_benchmark_task_and_macro_mean():
    # bench A: 1 of 2 right; bench B: 1 of 1 right. Macro mean (1/2 + 1/1) / 2 = 0.75,
    # not the pooled 2/3: every benchmark weighs the same (the paper's mean over benchmarks).
    rows = [res("a1", True, bench="A", task="x"), res("a2", False, bench="A", task="y"),
            res("b1", True, bench="B", task="x")]
    m = compute_metrics(rows, n_boot=200)
    assert sorted(m.benchmarks) == ["A", "B"]
    assert m.benchmarks["A"].overall.metrics.accuracy.value == 0.5
    assert m.benchmarks["A"].tasks["x"].metrics.accuracy.value == 1.0
    assert m.benchmarks["A"].tasks["y"].metrics.accuracy.value == 0.0
    assert m.mean.accuracy.value == pytest.approx(0.75)
    # a metric defined on one benchmark only: its mean is that benchmark's value
    rows = [res("a", bench="A", spatial=0.4), res("b", bench="B")]
    assert compute_metrics(rows, n_boot=50).mean.spatial_grounding.value == pytest.approx(0.4)


def test_point_estimates_ignore_order_and_text():
    shuffled = [FIVE[i] for i in (4, 2, 0, 3, 1)]
    a = group_metrics(FIVE, n_boot=50).metrics
    b = group_metrics([res_with_text(r) for r in shuffled], n_boot=50).metrics
    for name in METRIC_NAMES:
        x, y = a.get(name).value, b.get(name).value
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y), name


def res_with_text(r):
    from dataclasses import replace

    return replace(r, text="<think>anything</think><answer>Z</answer>", predicted="Z")


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="appears twice"):
        compute_metrics([res("a"), res("a")], n_boot=10)


def test_sample_result_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="has a score but status failed"):
        res("a", c=(FAILED, 1.0))
    with pytest.raises(ValueError, match="ok without a score"):
        res("a", c=(OK, NAN))
    with pytest.raises(ValueError, match="rotations right"):
        SampleResult("b", "t", "a", True, True, 1, False, NAN, OK, 1.0, OK, 1.0, rotations=3, rotations_correct=2)
    with pytest.raises(ValueError, match="spatial must be in"):
        res("a", spatial=1.5)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------
def test_vectorised_bootstrap_equals_loop():
    rng = np.random.default_rng(3)
    rows = [res(f"r{i}", correct=bool(rng.random() < 0.6), spatial=float(rng.random()) if i % 3 else NAN,
                s=(OK, float(rng.random())) if i % 4 else (NOT_ASKED, NAN),
                c=(OK, float(rng.random() < 0.8)) if i % 5 else (FAILED, NAN), tokens=int(rng.integers(5, 50)))
            for i in range(37)]
    num, den = metric_arrays(rows)  # [M, n]
    idx = np.random.default_rng(7).integers(0, len(rows), size=(60, len(rows)))  # [B, n] drawn samples
    w = np.stack([np.bincount(i, minlength=len(rows)) for i in idx]).astype(float)  # counts
    fast = ratios(num, den, w)  # [B, M]
    for b in range(60):  # the plain loop: recompute every metric on the resampled list
        picked = [rows[i] for i in idx[b]]
        slow = group_metrics(picked, n_boot=1).metrics  # its point values
        for j, name in enumerate(METRIC_NAMES):
            v = slow.get(name).value
            assert (math.isnan(v) and math.isnan(fast[b, j])) or fast[b, j] == pytest.approx(v), (b, name)


def test_resample_weights_are_multinomial_counts():
    w = resample_weights(10, 500, np.random.default_rng(0))
    assert w.shape == (500, 10)
    assert (w.sum(1) == 10).all()  # each resample draws n samples
    assert abs(w.mean() - 1.0) < 0.05  # each sample drawn once on average


def _binary(n, p, seed=0):
    rng = np.random.default_rng(seed)
    return [res(f"r{i}", correct=bool(rng.random() < p)) for i in range(n)]


def test_interval_contains_point_and_shrinks_with_n():
    widths = []
    for n in (20, 200, 2000):
        a = group_metrics(_binary(n, 0.3), n_boot=1000).metrics.accuracy
        assert a.lo <= a.value <= a.hi
        widths.append(a.hi - a.lo)
    # width ~ 2 * 1.96 * sqrt(p(1-p)/n): about 0.40, 0.13, 0.04; each tenfold n shrinks it ~3.2x
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 6
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 2000), rel=0.25)


def test_intervals_are_seeded():
    rows = _binary(50, 0.5)
    a = group_metrics(rows, n_boot=300, seed=1).metrics.accuracy
    b = group_metrics(rows, n_boot=300, seed=1).metrics.accuracy
    c = group_metrics(rows, n_boot=300, seed=2).metrics.accuracy
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert (a.lo, a.hi) != (c.lo, c.hi)
    # a group's resamples depend on its own key, not on which groups come before it
    assert group_rng(0, "x").integers(1 << 30) == group_rng(0, "x").integers(1 << 30)


def test_bootstrap_coverage_is_honest():
    # 200 splits of n = 60 with true accuracy 0.3: the 95% interval should cover 0.3 ~95% of the time.
    covered = 0
    for rep in range(200):
        a = group_metrics(_binary(60, 0.3, seed=100 + rep), n_boot=400, seed=rep).metrics.accuracy
        covered += a.lo <= 0.3 <= a.hi
    assert 0.88 <= covered / 200 <= 0.995


def test_wilson_interval_by_hand():
    # 0 of 30 at 95%: z = 1.95996, upper = z^2 / (n + z^2) = 3.84146 / 33.84146 = 0.113513
    lo, hi = wilson_interval(0, 30, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.113513, abs=1e-5)
    lo, hi = wilson_interval(30, 30, 0.95)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.113513, abs=1e-5)
    # 5 of 10: centre 0.5, half = z sqrt(0.025 + z^2/400) / (1 + z^2/10) = 0.3366 / 1.3841 -> [0.2366, 0.7634]
    lo, hi = wilson_interval(5, 10, 0.95)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))


def test_degenerate_bootstrap_is_widened_to_wilson():
    # 30 samples, none inconsistent, all well formed: a plain bootstrap says [0, 0] and [1, 1].
    m = group_metrics([res(f"r{i}") for i in range(30)], n_boot=300).metrics
    assert m.inconsistency_rate.value == 0.0
    assert m.inconsistency_rate.hi == pytest.approx(0.113513, abs=1e-5)
    assert m.well_formed.lo == pytest.approx(1 - 0.113513, abs=1e-5)
    # a non-binary metric that is constant stays a point (nothing to say about a proportion)
    assert m.response_len.lo == m.response_len.hi == 10.0


def test_percentile_interval_skips_undefined_resamples():
    boot = np.array([[np.nan, 1.0], [0.2, 2.0], [0.4, 3.0], [np.nan, 4.0]])  # [B=4, M=2]
    lo, hi = percentile_interval(boot, 0.5)  # 25th..75th percentile
    assert lo[0] == pytest.approx(0.25) and hi[0] == pytest.approx(0.35)  # of (0.2, 0.4) only
    assert lo[1] == pytest.approx(1.75) and hi[1] == pytest.approx(3.25)
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(boot, 1.0)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def test_metrics_json_round_trip(tmp_path):
    rows = [*FIVE, res("o1", bench="other", task="u", spatial=NAN), res("o2", False, bench="other", task="u")]
    m = compute_metrics(rows, n_boot=200, circular=("other",))
    path = write_metrics_json(m, tmp_path / "metrics" / "eval.json")
    raw = json.loads(path.read_text())  # valid JSON: NaN written as null
    assert raw["benchmarks"]["bench"]["accuracy"] == 0.6
    assert raw["benchmarks"]["other"]["spatial_grounding"] is None
    assert raw["benchmarks"]["other"]["circular"] is True
    assert raw["benchmarks"]["bench"]["counts"]["consistency_failed"] == 1
    assert raw["benchmarks"]["bench"]["tasks"]["t"]["inconsistency_rate"] == 0.5
    back = read_metrics_json(path)
    assert metrics_to_dict(back) == raw
    assert back.benchmarks["bench"].overall.metrics.inconsistency_rate.n == 4
    text = markdown_report(back, title="T")
    assert "| bench | 5 | 60.0 [" in text and "other (circular)" in text


def test_metrics_json_errors_name_the_key(tmp_path):
    p = tmp_path / "eval.json"
    p.write_text(json.dumps({"mean": {}, "benchmarks": {}}))
    with pytest.raises(ValueError, match="no 'bootstrap' key"):
        read_metrics_json(p)
    m = metrics_to_dict(compute_metrics(FIVE, n_boot=20))
    del m["benchmarks"]["bench"]["accuracy_lo"]
    p.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="benchmarks.bench: missing key 'accuracy_lo'"):
        read_metrics_json(p)


def test_samples_jsonl_round_trip(tmp_path):
    path = write_samples(FIVE, tmp_path / "s.jsonl")
    back = read_samples(path)
    assert len(back) == 5
    for a, b in zip(FIVE, back):
        for f in ("sample_id", "correct", "consistency_status", "semantic_status", "response_tokens"):
            assert getattr(a, f) == getattr(b, f)
        for f in ("spatial", "consistency", "semantic"):
            x, y = getattr(a, f), getattr(b, f)
            assert (math.isnan(x) and math.isnan(y)) or x == y
    path.write_text(path.read_text() + '{"benchmark": "b", "oops": 1}\n')
    with pytest.raises(ValueError, match=r"s.jsonl: line 6: unknown fields \['oops'\]"):
        read_samples(path)

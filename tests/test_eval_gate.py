"""Regression gate: passes within tolerance, fails beyond it and names the metric; IR is gated
upward (higher is worse); vanished benchmarks/metrics fail; the CLI exits 0 / 1 / 2."""

import json
import math

import pytest

from fgrpo_core.eval.gate import regression_gate
from fgrpo_core.eval.metrics import compute_metrics
from fgrpo_core.eval.report import metrics_to_dict, write_metrics_json
from fgrpo_core.eval.results import JudgeOutcome, SampleResult
from flows.cmd_eval import gate_main

OK = JudgeOutcome.ok


def _rows(bench, n, n_correct, n_inconsistent, spatial=math.nan):
    return [
        SampleResult(bench, "t", f"{bench}-{i}", i < n_correct, True, 10, False, spatial, OK,
                     0.0 if i < n_inconsistent else 1.0, OK, 1.0, rotations=1, rotations_correct=int(i < n_correct))
        for i in range(n)
    ]


def _metrics(acc_a, ir_a, acc_b=50, ir_b=10):
    # two benchmarks of 100 samples: counts are percentages
    return compute_metrics(_rows("a", 100, acc_a, ir_a) + _rows("b", 100, acc_b, ir_b), n_boot=50)


BASE = _metrics(60, 20)


def test_unchanged_passes():
    r = regression_gate(BASE, _metrics(60, 20), {"accuracy": 0.02, "inconsistency_rate": 0.02})
    assert r.passed
    # a, b and the mean, for each of the two metrics
    assert sorted(c.label for c in r.checks) == sorted(
        ["a.accuracy", "b.accuracy", "mean.accuracy", "a.inconsistency_rate", "b.inconsistency_rate",
         "mean.inconsistency_rate"])


def test_drop_within_tolerance_passes_beyond_fails_and_names_metric():
    # a: 60% -> 59% is a 1-point drop, allowed by 0.02
    assert regression_gate(BASE, _metrics(59, 20), {"accuracy": 0.02}).passed
    # a: 60% -> 57% is a 3-point drop; the mean drops (57+50)/2 - (60+50)/2 = 1.5 points: allowed
    r = regression_gate(BASE, _metrics(57, 20), {"accuracy": 0.02})
    assert not r.passed
    assert [c.label for c in r.regressions] == ["a.accuracy"]
    assert "0.6000 -> 0.5700" in r.regressions[0].reason


def test_inconsistency_rate_is_worse_when_it_rises():
    # IR a: 20% -> 10% is an improvement, never a regression
    assert regression_gate(BASE, _metrics(60, 10), {"inconsistency_rate": 0.02}).passed
    # 20% -> 25% rises by 5 points (> 2): regression, also on the mean (+2.5 points)
    r = regression_gate(BASE, _metrics(60, 25), {"inconsistency_rate": 0.02})
    assert sorted(c.label for c in r.regressions) == ["a.inconsistency_rate", "mean.inconsistency_rate"]
    # a higher accuracy is never a regression however large
    assert regression_gate(BASE, _metrics(90, 20), {"accuracy": 0.0}).passed


def test_missing_benchmark_or_metric_fails():
    only_a = compute_metrics(_rows("a", 100, 60, 20), n_boot=20)
    r = regression_gate(BASE, only_a, {"accuracy": 0.02})
    assert "b.accuracy" in [c.label for c in r.regressions]
    assert "missing" in next(c.reason for c in r.regressions if c.label == "b.accuracy")
    with_boxes = compute_metrics(_rows("a", 10, 5, 0, spatial=0.5), n_boot=20)
    without = compute_metrics(_rows("a", 10, 5, 0), n_boot=20)
    r = regression_gate(with_boxes, without, {"spatial_grounding": 0.1})
    assert [c.label for c in r.regressions] == ["a.spatial_grounding", "mean.spatial_grounding"]
    # undefined in the baseline: nothing to compare
    assert regression_gate(without, with_boxes, {"spatial_grounding": 0.1}).checks == []


def test_bad_tolerances_are_named():
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        regression_gate(BASE, BASE, {"acuracy": 0.02})
    with pytest.raises(ValueError, match="response_len.*cannot be gated"):
        regression_gate(BASE, BASE, {"response_len": 5})
    with pytest.raises(ValueError, match=">= 0"):
        regression_gate(BASE, BASE, {"accuracy": -0.1})


def test_cli_exit_codes_and_message(tmp_path, capsys):
    base = write_metrics_json(BASE, tmp_path / "base.json")
    same = write_metrics_json(_metrics(60, 20), tmp_path / "same.json")
    worse = write_metrics_json(_metrics(60, 30), tmp_path / "worse.json")
    assert gate_main([str(base), str(same)]) == 0
    assert "passed" in capsys.readouterr().out
    assert gate_main([str(base), str(worse)]) == 1  # default tolerances: IR 0.02
    out, err = capsys.readouterr()
    assert "REGRESSION a.inconsistency_rate: 0.2000 -> 0.3000" in out
    assert "regression in a.inconsistency_rate, mean.inconsistency_rate" in err
    # a looser override lets it through
    assert gate_main([str(base), str(worse), "--tol", "inconsistency_rate=0.2"]) == 0
    # tolerances from a params file
    params = tmp_path / "p.yaml"
    params.write_text("eval:\n  tolerances: {inconsistency_rate: 0.15}\n")
    assert gate_main([str(base), str(worse), "--params", str(params)]) == 0
    capsys.readouterr()
    # unreadable input: exit 2 naming the problem
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"benchmarks": {}}))
    assert gate_main([str(base), str(bad)]) == 2
    assert "no 'mean' key" in capsys.readouterr().err
    assert gate_main([str(base), str(tmp_path / "nope.json")]) == 2
    assert gate_main([str(base), str(same), "--tol", "acuracy=0.1"]) == 2


def test_dict_round_trip_feeds_the_gate():
    # the gate on metrics read back from JSON equals the gate on the computed ones
    from fgrpo_core.eval.report import metrics_from_dict

    cur = _metrics(57, 25)
    tol = {"accuracy": 0.02, "inconsistency_rate": 0.02}
    a = regression_gate(BASE, cur, tol)
    b = regression_gate(metrics_from_dict(metrics_to_dict(BASE)), metrics_from_dict(metrics_to_dict(cur)), tol)
    assert [c.label for c in a.regressions] == [c.label for c in b.regressions]

"""The headline metrics file DVC shows (fgrpo_core.eval.headline): values by hand, the final λ,
and that the evaluation writes it beside eval.json."""

from __future__ import annotations

import json
import math

import pytest

from fgrpo_core.eval.curves import MultiplierRow
from fgrpo_core.eval.headline import final_multipliers, headline_metrics
from fgrpo_core.eval.metrics import compute_metrics
from fgrpo_core.eval.results import JudgeOutcome, SampleResult

OK = JudgeOutcome.ok
NAN = math.nan


def sample(bench: str, i: int, correct: bool, consistency: float, semantic: float, spatial: float) -> SampleResult:
    return SampleResult(bench, "t", f"{bench}{i}", correct, True, 10, False, spatial, OK, consistency, OK, semantic,
                        semantic_sentences=1, rotations=1, rotations_correct=int(correct))


def two_benchmarks():
    # a: right 3 of 4 -> 0.75; inconsistent 1 of 4 -> IR 0.25; semantic (1+.5+.5+1)/4 = 0.75; no boxes
    a = [sample("a", 0, True, 1.0, 1.0, NAN), sample("a", 1, True, 1.0, 0.5, NAN),
         sample("a", 2, True, 0.0, 0.5, NAN), sample("a", 3, False, 1.0, 1.0, NAN)]
    # b: right 1 of 2 -> 0.5; IR 0; semantic 1.0; spatial (0.2+0.4)/2 = 0.3
    b = [sample("b", 0, True, 1.0, 1.0, 0.2), sample("b", 1, False, 1.0, 1.0, 0.4)]
    return compute_metrics(a + b, n_boot=20)


def history(*rows: tuple[int, str, float]) -> list[MultiplierRow]:
    return [MultiplierRow(step, c, 0.5, 4, 0.9, 1.0, lam, False) for step, c, lam in rows]


def test_headline_values_by_hand():
    m = two_benchmarks()
    h = headline_metrics(m, history((1, "spatial", 1.05), (1, "consistency", 0.95), (2, "consistency", 0.9),
                                    (2, "spatial", 1.1), (1, "semantic", 1.0), (2, "semantic", 0.95)))
    assert h["a"] == {"accuracy": 0.75, "IR": 0.25, "semantic": 0.75, "spatial": None}
    assert h["b"] == {"accuracy": 0.5, "IR": 0.0, "semantic": 1.0, "spatial": pytest.approx(0.3, abs=1e-12)}
    # two benchmarks: their macro mean is there too (the same numbers eval.json's "mean" holds)
    assert h["mean"]["accuracy"] == 0.625 and h["mean"]["IR"] == 0.125
    assert h["mean"]["spatial"] == round(m.mean.spatial_grounding.value, 4)
    # the last step's lambda_after per constraint, in constraint order
    assert h["lambda"] == {"consistency": 0.9, "semantic": 0.95, "spatial": 1.1}
    assert list(h["lambda"]) == ["consistency", "semantic", "spatial"]
    # small enough for a terminal: 4 numbers per benchmark (+ mean) and one per constraint
    flat = [(k, kk) for k, v in h.items() for kk in v]
    assert len(flat) == 4 * 3 + 3
    json.dumps(h, allow_nan=False)  # null, never NaN


def test_one_benchmark_has_no_mean_and_no_history_no_lambda():
    m = compute_metrics([sample("synthetic", 0, True, 1.0, 1.0, 0.5)], n_boot=5)
    assert headline_metrics(m) == {"synthetic": {"accuracy": 1.0, "IR": 0.0, "semantic": 1.0, "spatial": 0.5}}


def test_final_multipliers_takes_the_highest_step_whatever_the_row_order():
    rows = history((3, "semantic", 2.0), (5, "semantic", 0.0), (4, "semantic", 1.0))
    assert final_multipliers(rows) == {"semantic": 0.0}


def test_a_benchmark_named_like_a_headline_key_is_refused():
    m = compute_metrics([sample("lambda", 0, True, 1.0, 1.0, NAN)], n_boot=5)
    with pytest.raises(ValueError, match="'lambda'"):
        headline_metrics(m)


def test_evaluation_writes_the_headline_beside_eval_json(tmp_path):
    from fgrpo_core.eval.outputs import write_eval_outputs
    from fgrpo_core.eval.runner import EvalResult, EvalTimings

    m = two_benchmarks()
    mult = tmp_path / "multipliers.csv"
    mult.write_text("step,constraint,mean,count,threshold,lambda_before,lambda_after,skipped\n"
                    "1,consistency,0.9,4,0.95,1.0,1.0025,false\n2,consistency,0.8,4,0.95,1.0025,1.01,false\n")
    result = EvalResult([], m, EvalTimings(0.0, 0.0, 0.0, 0, 0), 0)
    out = write_eval_outputs(result, tmp_path / "metrics/eval.json", tmp_path / "metrics/eval_samples.jsonl",
                             tmp_path / "reports", multipliers_csv=mult)
    assert out.headline == tmp_path / "metrics/eval_headline.json"
    h = json.loads(out.headline.read_text())
    assert h["a"]["accuracy"] == 0.75 and h["lambda"] == {"consistency": 1.01}
    assert json.loads(out.metrics.read_text())["benchmarks"]["a"]["accuracy"] == 0.75

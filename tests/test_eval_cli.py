"""flows.cmd_eval helpers: the judge the params ask for, the checkpoint it picks, run resolution."""

import pytest

from fgrpo_core.config import JudgeEndpoint, JudgeParams, ParamsError, Params
from flows.cmd_eval import RoutedJudge, build_judge, newest_checkpoint, resolve_run


def test_build_judge_routes_and_never_reuses_the_policy_engine(tmp_path):
    from fgrpo_core.judges.cache import CachedJudge
    from fgrpo_core.judges.exact import ExactJudge

    assert isinstance(build_judge(JudgeParams()), ExactJudge)
    asked = []

    def judge_llm(model):  # records which model the judge engine is started for
        asked.append(model)
        return object()

    jp = JudgeParams(consistency="exact", semantic="model", cache_dir=str(tmp_path / "cache"),
                     model_judge=JudgeEndpoint(backend="vllm", model="judges/qwen-vl"))
    j = build_judge(jp, judge_llm)
    assert isinstance(j, RoutedJudge) and isinstance(j.c, ExactJudge) and isinstance(j.s, CachedJudge)
    assert asked == ["judges/qwen-vl"]  # the judge's own model, started on demand
    with pytest.raises(ParamsError, match="no way to start its engine"):
        build_judge(jp)
    with pytest.raises(ParamsError, match="model_judge is required"):
        build_judge(JudgeParams(consistency="model"))


def test_newest_checkpoint(tmp_path):
    p = Params.model_validate({"fgrpo": {"out_dir": str(tmp_path / "ck")}, "sft": {"out_dir": str(tmp_path / "sft")}})
    with pytest.raises(FileNotFoundError, match="pass --checkpoint"):
        newest_checkpoint(p)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model.safetensors").write_bytes(b"")
    assert newest_checkpoint(p) == tmp_path / "sft"
    for r in (2, 10, 9):
        (tmp_path / "ck" / f"round-{r}").mkdir(parents=True)
        (tmp_path / "ck" / f"round-{r}" / "model.safetensors").write_bytes(b"")
    (tmp_path / "ck" / "round-11").mkdir()  # no weights yet: not a checkpoint
    assert newest_checkpoint(p) == tmp_path / "ck" / "round-10"  # numeric, not lexicographic


def test_resolve_run(tmp_path):
    run = tmp_path / "grpo-t"
    (run / "metrics").mkdir(parents=True)
    (run / "metrics" / "eval.json").write_text("{}")
    assert resolve_run(str(run)) == ("grpo-t", run / "metrics" / "eval.json", None)
    (run / "metrics" / "eval_samples.jsonl").write_text("")
    assert resolve_run(str(run / "metrics" / "eval.json"))[::2] == ("grpo-t", run / "metrics" / "eval_samples.jsonl")
    with pytest.raises(FileNotFoundError, match="no eval.json"):
        resolve_run(str(tmp_path))


def test_compare_paired_difference_by_hand():
    import math

    from fgrpo_core.eval.compare import RunEval, compare_runs, comparison_markdown
    from fgrpo_core.eval.metrics import compute_metrics
    from fgrpo_core.eval.results import JudgeOutcome, SampleResult

    def rows(correct, prefix="q"):
        return [SampleResult("b", "t", f"{prefix}{i}", c, True, 5, False, math.nan, JudgeOutcome.ok, 1.0,
                             JudgeOutcome.ok, 1.0, rotations=1, rotations_correct=int(c)) for i, c in enumerate(correct)]

    # A right on q0..q5 (6/40), B right on q0..q7 (8/40): B - A = +2/40 = +0.05 exactly.
    a = rows([i < 6 for i in range(40)])
    b = rows([i < 8 for i in range(40)])
    runs = [RunEval("A", compute_metrics(a, 200), a), RunEval("B", compute_metrics(b, 200), b)]
    d = compare_runs(runs, n_boot=500).differences[1]
    acc = d.benchmarks["b"].accuracy
    assert d.pairing == {"b": "paired"} and acc.value == pytest.approx(0.05)
    # paired: B is never worse than A on any sample, so no resample can show a negative difference
    assert acc.lo >= 0.0
    # the same answers under other ids cannot be paired: the independent interval is much wider
    b2 = rows([i < 8 for i in range(40)], prefix="other")
    runs[1] = RunEval("B", compute_metrics(b2, 200), b2)
    d2 = compare_runs(runs, n_boot=500).differences[1]
    assert d2.pairing == {"b": "unpaired"} and d2.benchmarks["b"].accuracy.value == pytest.approx(0.05)
    assert d2.benchmarks["b"].accuracy.lo < 0.0 < d2.benchmarks["b"].accuracy.hi
    table = comparison_markdown(compare_runs(runs, n_boot=100))
    assert "| B | 20.0 [" in table and "+5.0 [" in table


def test_evaluate_reports_the_policy_version_of_the_checkpoint(tmp_path, monkeypatch):
    # A fresh engine counts weight pushes from 0; the report must name the checkpoint's policy
    # (round-4 holds the policy after 4 rounds), not the engine's push count.
    import yaml

    import fgrpo_core.rollout.vllm_engine as vllm_engine
    from fgrpo_core.config import load_params
    from fgrpo_core.data.stage import stage_data
    from fgrpo_core.records import Rollout, RolloutBatch
    from fgrpo_core.eval.outputs import REPORT_MD
    from flows.cmd_eval import main

    preset = {
        "data": {"out_dir": str(tmp_path / "staged"),
                 "synthetic": {"n_sft": 0, "n_rl": 0, "n_val": 0, "n_test": 3}},
        "fgrpo": {"out_dir": str(tmp_path / "ck"), "run_dir": str(tmp_path / "runs")},
        "sft": {"out_dir": str(tmp_path / "sft")},
        "eval": {"out_path": str(tmp_path / "m/eval.json"), "samples_path": str(tmp_path / "m/eval_samples.jsonl"),
                 "report_dir": str(tmp_path / "reports"), "bootstrap": 10},
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(preset))
    p = load_params(params_file)
    stage_data(p.data, p.model.min_pixels, p.model.max_pixels, p.data.out_dir)
    ckpt = tmp_path / "ck" / "round-4"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"")

    class Engine:  # stands in for vLLM: the report's policy version is what is tested
        def __init__(self, path, **kwargs):
            self.policy_version = 0

        @classmethod
        def from_params(cls, path, rollout, model, seed):
            return cls(path)

        def generate(self, prompts, sampling):
            return RolloutBatch([Rollout(q.prompt_id, 0, "<think>x</think><answer>A</answer>", [1], None, "stop")
                                 for q in prompts], policy_version=self.policy_version)

        def close(self):
            pass

    monkeypatch.setattr(vllm_engine, "VLLMEngine", Engine)
    assert main(["--params", str(params_file)]) == 0
    report = (tmp_path / "reports" / REPORT_MD).read_text()
    assert "Policy version 4;" in report, [line for line in report.splitlines() if "Policy version" in line]

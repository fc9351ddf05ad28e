"""`fgrpo evaluate` end to end on the tiny model: the session's vLLM engine, staged test splits
on disk (one circular), the exact judge, training histories -> eval.json, per-sample JSONL,
markdown report and PNGs; then `fgrpo compare` and `fgrpo eval-gate` on what it wrote."""

import csv
import json

import pytest
from PIL import Image

from fgrpo_core.config import ModelParams, SyntheticDataParams
from fgrpo_core.eval.report import read_metrics_json
from fgrpo_core.eval.results import read_samples

pytestmark = pytest.mark.engine

MAX_TOKENS = 16


class _Borrowed:
    """The session engine behind VLLMEngine's constructor; closing it is the session's job."""

    def __init__(self, engine, log):
        from fgrpo_core.rollout.vllm_engine import VLLMEngine  # the real class, before it is replaced

        self._engine, self._log, self._from_params = engine, log, VLLMEngine.from_params.__func__

    def __call__(self, path, **kwargs):
        self._log.append((str(path), kwargs))
        return self

    def from_params(self, model_path, rollout, model, seed, **kwargs):
        """The real ``VLLMEngine.from_params`` argument mapping, with this stand-in as the class."""
        return self._from_params(self, model_path, rollout, model, seed, **kwargs)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def close(self):
        pass


def _write_histories(run_dir):
    # 6 rounds, three constraints; spatial skipped in round 2 (too few applicable rollouts)
    run_dir.mkdir(parents=True)
    taus = {"consistency": 0.95, "semantic": 0.95, "spatial": 0.65}
    with (run_dir / "multipliers.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "constraint", "mean", "count", "threshold", "lambda_before", "lambda_after", "skipped"])
        lam = {k: 1.0 for k in taus}
        for step in range(1, 7):
            for k, tau in taus.items():
                mean, count = 0.5 + 0.08 * step, 40
                skipped = k == "spatial" and step == 2
                if skipped:
                    mean, count = "", 3
                after = lam[k] if skipped else min(5.0, max(0.0, lam[k] + 0.05 * (tau - mean)))
                w.writerow([step, k, mean, count, tau, lam[k], after, skipped])
                lam[k] = after
    with (run_dir / "train_metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "reward_task", "reward_fmt", "reward_acc", "reward_consistency", "reward_semantic",
                    "reward_spatial", "kl", "response_len", "lambda_consistency", "tokens_per_s"])
        for r in range(1, 7):
            w.writerow([r, 0.4 + 0.05 * r, 0.6 + 0.05 * r, 0.2 + 0.05 * r, 0.6 + 0.05 * r, 0.5 + 0.05 * r,
                        0.3 + 0.05 * r, 0.001 * r, 40 - r, 1.0, 100])
    return taus


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory, vllm_engine, tiny_model_dir):
    from fgrpo_core.data.schema import to_dataset
    from fgrpo_core.data.synthetic import generate_split

    root = tmp_path_factory.mktemp("tiny-eval")
    mp = ModelParams()
    synth = generate_split(SyntheticDataParams(), "test", 3, mp.min_pixels, mp.max_pixels)
    sat = generate_split(SyntheticDataParams(tasks=["relation_2d"], seed=5), "test", 1, mp.min_pixels, mp.max_pixels)
    sat[0].source, sat[0].id = "sat", "sat-0"
    to_dataset(synth).save_to_disk(str(root / "data" / "test_synthetic"))
    to_dataset(sat).save_to_disk(str(root / "data" / "test_sat"))
    _write_histories(root / "runs")
    params = root / "tiny.yaml"
    params.write_text(
        f"""name: tiny-eval
model: {{dtype: float32}}
data: {{out_dir: {root / 'data'}}}
fgrpo: {{run_dir: {root / 'runs'}, out_dir: {root / 'checkpoints'}}}
eval:
  out_path: {root / 'metrics' / 'eval.json'}
  samples_path: {root / 'metrics' / 'eval_samples.jsonl'}
  report_dir: {root / 'reports'}
  max_tokens: {MAX_TOKENS}
  bootstrap: 200
  circular: [sat]
"""
    )
    return root, params, synth, sat


def test_evaluate_command_writes_metrics_report_and_plots(tiny_eval, vllm_engine, tiny_model_dir, monkeypatch, capsys):
    import fgrpo_core.rollout.vllm_engine as vmod
    from flows.cmd_eval import main

    root, params, synth, sat = tiny_eval
    log = []
    monkeypatch.setattr(vmod, "VLLMEngine", _Borrowed(vllm_engine, log))
    assert main(["--params", str(params), "--checkpoint", str(tiny_model_dir), "--name", "tiny",
                 "--set", "eval.seed=3"]) == 0
    assert log and log[0][0] == str(tiny_model_dir) and log[0][1]["dtype"] == "float32"

    m = read_metrics_json(root / "metrics" / "eval.json")
    assert sorted(m.benchmarks) == ["sat", "synthetic"]
    assert m.benchmarks["sat"].circular and not m.benchmarks["synthetic"].circular
    assert m.benchmarks["synthetic"].overall.counts.n == 3 and m.benchmarks["sat"].overall.counts.n == 1
    assert m.seed == 3 and m.n_boot == 200
    assert m.benchmarks["synthetic"].overall.counts.spatial_defined == 3  # synthetic samples carry boxes
    for b in m.benchmarks.values():  # every metric of a benchmark is a number or honestly undefined
        assert 0.0 <= b.overall.metrics.accuracy.value <= 1.0
        assert b.overall.metrics.response_len.value <= MAX_TOKENS

    with (root / "metrics" / "eval_benchmarks.csv").open() as f:  # the DVC bar-plot table
        table = {r["benchmark"]: r for r in csv.DictReader(f)}
    assert sorted(table) == ["mean", "sat", "synthetic"]
    assert float(table["synthetic"]["accuracy"]) == m.benchmarks["synthetic"].overall.metrics.accuracy.value
    sem = m.benchmarks["synthetic"].overall.metrics.semantic_grounding
    assert (table["synthetic"]["semantic_grounding"] == "") == (not sem.defined)  # undefined -> empty cell

    rows = read_samples(root / "metrics" / "eval_samples.jsonl")
    assert len(rows) == 4
    by_id = {r.sample_id: r for r in rows}
    n_choices = len(sat[0].choices)
    assert by_id["sat-0"].rotations == n_choices  # circular: every option order asked
    for r in rows:
        assert r.response_tokens <= MAX_TOKENS
        assert r.truncated == (r.response_tokens == MAX_TOKENS)

    report = (root / "reports" / "eval.md").read_text()
    for section in ("# Evaluation: tiny", "## Per benchmark", "## Per task family", "## Judge outcomes",
                    "sat (circular)", "eval-curriculum.png", "eval-training.png", "eval-benchmarks.png"):
        assert section in report, section
    for name, min_size in (("eval-curriculum.png", (1000, 300)), ("eval-training.png", (1000, 300)),
                           ("eval-benchmarks.png", (800, 600))):
        with Image.open(root / "reports" / name) as im:
            assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1], name
    out = capsys.readouterr().out
    assert "mean accuracy" in out and "eval.json" in out


def test_greedy_evaluation_is_reproducible(tiny_eval, vllm_engine):
    # The same policy evaluated twice gives the same completions (greedy pass@1).
    from fgrpo_core.eval.runner import EvalSettings, run_eval
    from fgrpo_core.judges.exact import ExactJudge

    root, _, synth, sat = tiny_eval
    first = {r.sample_id: r.text for r in read_samples(root / "metrics" / "eval_samples.jsonl")}
    again = run_eval(vllm_engine, ExactJudge(), {"synthetic": synth, "sat": sat},
                     EvalSettings(max_tokens=MAX_TOKENS, n_boot=50, circular=("sat",)))
    assert {r.sample_id: r.text for r in again.samples} == first
    assert again.timings.completions == 3 + len(sat[0].choices)


def test_compare_and_gate_on_written_runs(tiny_eval, tmp_path, capsys):
    from flows.cmd_eval import compare_main, gate_main

    root, _, _, _ = tiny_eval
    metrics = root / "metrics" / "eval.json"
    out_md, out_png = tmp_path / "cmp.md", tmp_path / "cmp.png"
    assert compare_main([str(root), str(metrics), "--names", "A,B", "--out", str(out_md), "--plot", str(out_png),
                         "--bootstrap", "100"]) == 0
    table = out_md.read_text()
    assert "## Mean over benchmarks" in table and "| A |" in table and "| B |" in table
    assert "B: sat paired, synthetic paired" in table  # same samples: paired differences
    acc_row = next(line for line in table.splitlines() if line.startswith("| B |"))
    assert "+0.0 [+0.0, +0.0]" in acc_row  # a run compared with itself differs by exactly 0
    with Image.open(out_png) as im:
        assert im.format == "PNG"
    assert gate_main([str(metrics), str(metrics)]) == 0
    # a doctored copy with 50 points less synthetic accuracy fails the gate and names it
    raw = json.loads(metrics.read_text())
    base = raw["benchmarks"]["synthetic"]
    base["accuracy"] = base["accuracy_lo"] = base["accuracy_hi"] = min(1.0, (base["accuracy"] or 0) + 0.5)
    better = tmp_path / "better.json"
    better.write_text(json.dumps(raw))
    capsys.readouterr()
    assert gate_main([str(better), str(metrics)]) == 1
    assert "synthetic.accuracy" in capsys.readouterr().err
    assert compare_main([str(tmp_path / "missing")]) == 2

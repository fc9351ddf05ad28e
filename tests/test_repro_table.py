"""``fgrpo repro`` end to end on the tiny model and the session's live vLLM engine: two rows of the
ablation table from one start, the table, seed summary, curves and multiplier figure, reuse of
finished rows, and refusal to mix rows trained with other settings."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def table_setup(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("repro")
    params = {
        "name": "repro-test",
        "model": {"path": str(tiny_model_dir), "build_tiny": False, "dtype": "float32"},
        "data": {"out_dir": str(tmp / "data"),
                 "synthetic": {"n_sft": 4, "n_rl": 8, "n_val": 2, "n_test": 6, "inconsistent_share": 0.5}},
        "rollout": {"engine": "vllm", "group_size": 2, "max_tokens": 24, "max_model_len": 2048},
        "fgrpo": {"init_from": str(tiny_model_dir), "rounds": 2, "rollout_batch": 4, "update_batch": 2,
                  "micro_batch": 8, "lr": 1e-3, "lambda_min_count": 2, "lambda_lr": 0.5, "cpu_threads": 1},
        # the untrained tiny model answers at chance: the smoke test turns the SFT check off (-1)
        "eval": {"max_tokens": 24, "bootstrap": 50, "circular": ["synthetic"], "min_sft_margin": -1.0},
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return tmp, path


def _run(table_setup, engine, overrides=()):
    from flows.cmd_repro import run_table

    tmp, params = table_setup
    return run_table(str(params), list(overrides), ["grpo_t", "fgrpo"], [0], tmp / "runs", tmp / "metrics",
                     tmp / "reports", engine=engine)


def test_two_rows_from_one_start(table_setup, vllm_engine, restore_vllm_weights, capsys):
    tmp, _ = table_setup
    out = _run(table_setup, vllm_engine)
    log = capsys.readouterr().out
    assert "[grpo_t-s0] training 2 rounds" in log and "[fgrpo-s0] training 2 rounds" in log

    # Both rows started from the same weights: same seed, same prompts, so round 1 samples the
    # same completions (a row leaking the previous row's policy into the engine would differ).
    r1 = [pd.read_parquet(tmp / "runs" / f"{row}-s0" / "runs" / "round-1" / "rollouts.parquet")
          for row in ("grpo_t", "fgrpo")]
    assert list(r1[0]["text"]) == list(r1[1]["text"])
    r2 = [pd.read_parquet(tmp / "runs" / f"{row}-s0" / "runs" / "round-2" / "rollouts.parquet")
          for row in ("grpo_t", "fgrpo")]
    assert all(len(r) == 4 * 2 for r in r1 + r2)

    summary = json.loads(out.metrics.read_text())
    assert set(summary) == {"sft", "grpo_t", "fgrpo", "target", "paired", "sft_val"}
    for name in ("sft", "grpo_t", "fgrpo"):
        row = json.loads((tmp / "metrics" / f"{name if name == 'sft' else name + '-s0'}.json").read_text())
        assert summary[name]["accuracy"] == row["mean"]["accuracy"]  # one seed: the mean is that run
        assert row["benchmarks"]["synthetic"]["circular"] is True
    md = out.summary.read_text()
    assert "GRPO-T (task reward only)" in md and "FGRPO (adaptive lambda)" in md and "IR(GRPO-T) / IR(FGRPO)" in md
    assert "## Paired differences against GRPO-T" in md and "## SFT start on the val split" in md
    assert set(summary["paired"]["fgrpo"]) == {"accuracy", "rotation_accuracy", "inconsistency_rate",
                                               "semantic_grounding"}
    assert summary["paired"]["fgrpo"]["accuracy"]["n_prompts"] == 6
    assert {"ir_verdict", "acc_verdict", "semantic_verdict"} <= set(summary["target"])
    assert summary["sft_val"]["questions"] == 2 and summary["sft_val"]["passed"]  # margin -1: off
    table = out.table.read_text()
    assert "fgrpo-s0" in table and "sft" in table

    curves = pd.read_csv(out.curves)
    assert sorted(curves.groupby("variant")["round"].apply(list).items()) == [("fgrpo", [1, 2]), ("grpo_t", [1, 2])]
    hist = pd.read_csv(tmp / "runs" / "fgrpo-s0" / "runs" / "multipliers.csv")
    assert len(hist) == 2 * 3  # 2 rounds x 3 constraints
    assert {p.name for p in out.figures} == {"curves.png", "multipliers.png"}
    assert all(p.stat().st_size > 10_000 for p in out.figures)


def test_finished_rows_are_reused_and_other_settings_refused(table_setup, vllm_engine, restore_vllm_weights, capsys):
    tmp, _ = table_setup
    if not (tmp / "metrics" / "fgrpo-s0.identity.json").is_file():
        _run(table_setup, vllm_engine)
    before = (tmp / "metrics" / "fgrpo-s0.json").read_bytes()
    capsys.readouterr()
    _run(table_setup, vllm_engine)
    assert "training" not in capsys.readouterr().out
    assert (tmp / "metrics" / "fgrpo-s0.json").read_bytes() == before

    # Another budget for the same rows: an error naming the row and the section, nothing rewritten.
    with pytest.raises(RuntimeError, match=r"grpo_t-s0\.identity\.json: row grpo_t-s0 .*fgrpo"):
        _run(table_setup, vllm_engine, ["fgrpo.rounds=3"])
    assert (tmp / "metrics" / "fgrpo-s0.json").read_bytes() == before


def test_rl_rows_refused_when_sft_is_not_above_chance(table_setup, vllm_engine, restore_vllm_weights, capsys):
    tmp, _ = table_setup
    # a margin of 1.0 (accuracy >= chance + 100 points) cannot be met: nothing is trained
    with pytest.raises(RuntimeError, match=r"per-order accuracy on the val split .*% \[95% CI .*chance .*% \(mean 1/k\)"):
        _run(table_setup, vllm_engine, ["eval.min_sft_margin=1.0"])
    assert "training" not in capsys.readouterr().out
    assert (tmp / "metrics" / "sft_val_samples.jsonl").is_file()

"""Crash-resume: `fgrpo train` SIGKILLed at every point of a round, resumed each time, ends with
exactly what an uninterrupted run writes (docs/method.md#resume: N rounds == k rounds, kill,
resume, N - k rounds).

One run goes straight through 3 rounds. Another is killed five times, at a different point
each time (tests/faults/hooks.py stops it there; the test sends SIGKILL):

    process 1   round 1, mid-generation of the rollouts           -> nothing saved, starts over
    process 2   round 1, scoring (rollouts.parquet written)       -> starts over
    process 3   round 1, mid-update (1 of 2 optimiser steps)      -> starts over
    process 4   round 2, writing the checkpoint (state half-written) -> resumes after round 1
    process 5   round 3, rewriting train_metrics.csv (checkpoint 3 complete) -> resumes after 3
    process 6   nothing left to run: rewrites the histories from the round-3 state

Then every output the two runs share must be equal: train_metrics.csv (timings aside),
multipliers.csv, each round's rollouts.parquet and scores.parquet (token ids, sampler log-probs,
rewards), the round-3 weights and optimiser state bit for bit. Partial files are never read
back (a read of the half-written trainer_state.pt would crash the resume; a reused half CSV would
differ) and none is left behind.

The sampler is the real transformers engine on the tiny random policy. That policy earns no
task reward, so every advantage is 0 and the update is driven by the KL term and weight decay
through AdamW; the weights still move every round (checked), Adam's moments matter, lambda_G
moves every round, and a stale engine shows in the sampler log-probs. tests/test_rounds.py
checks resume with rewards that move (in-process, replayed completions).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.faults.conftest import TIMING_COLUMNS, TrainProcess, run_train, train_overrides

pytestmark = [pytest.mark.slow, pytest.mark.engine]

ROUNDS = 3
KILLS = [  # (pause point, rounds complete on disk after the kill)
    ("rollout@1", 0),
    ("score@1", 0),
    ("update@1", 0),
    ("checkpoint@2", 1),
    ("csv@3", 3),
]


def _hidden(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*"))


def test_killed_anywhere_resumes_to_the_uninterrupted_run(tmp_path, tiny_model_dir, faults_data):
    data_dir, _ = faults_data
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    # The uninterrupted run goes beside the interrupted one (one thread each).
    straight = TrainProcess(train_overrides(straight_dir, tiny_model_dir, data_dir), straight_dir, "straight")

    args = train_overrides(killed_dir, tiny_model_dir, data_dir)
    runs, ckpt = killed_dir / "runs", killed_dir / "ckpt"
    for k, (point, done_after) in enumerate(KILLS, 1):
        res = run_train(args, killed_dir, f"p{k}", pause=point)
        assert res.stopped_at == point and res.returncode == -9, f"{point} never reached\n{res.tail()}"
        if k > 1:  # this process resumed after what the previous kill left complete
            before = KILLS[k - 2][1]
            said = f"resuming after round {before}" if before else None
            assert (said in res.stdout) if said else ("resuming" not in res.stdout), res.tail()
        done = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("round-*")) if ckpt.exists() else []
        assert (done[-1] if done else 0) == done_after, (point, done)
        if point == "score@1":
            assert (runs / "round-1" / "rollouts.parquet").is_file()
            assert not (runs / "round-1" / "scores.parquet").exists()
        if point == "checkpoint@2":
            (partial,) = [p for p in ckpt.glob(".round-2.*")]
            assert (partial / "model.safetensors").is_file()
            state = (partial / "trainer_state.pt").read_bytes()
            with pytest.raises(Exception):  # really cut off: reading it back would have failed
                torch.load(partial / "trainer_state.pt", weights_only=True)
            assert len(state) > 0
        if point == "csv@3":
            (partial,) = list(runs.glob(".train_metrics.csv.*"))
            assert 0 < len(partial.read_text()) and pd.read_csv(runs / "train_metrics.csv")["round"].tolist() == [1, 2]

    last = run_train(args, killed_dir, "p6")
    assert last.returncode == 0 and "resuming after round 3" in last.stdout, last.tail()
    base = straight.finish()
    assert base.returncode == 0, base.tail()

    # No partial file or directory survives a resume.
    assert _hidden(runs) == [] and _hidden(ckpt) == []

    a_runs, b_runs = straight_dir / "runs", runs
    ma = pd.read_csv(a_runs / "train_metrics.csv")
    mb = pd.read_csv(b_runs / "train_metrics.csv")
    assert ma["round"].tolist() == list(range(1, ROUNDS + 1))
    assert ma["policy_version"].tolist() == list(range(1, ROUNDS + 1))
    pd.testing.assert_frame_equal(ma.drop(columns=TIMING_COLUMNS), mb.drop(columns=TIMING_COLUMNS), check_exact=True)

    ha, hb = pd.read_csv(a_runs / "multipliers.csv"), pd.read_csv(b_runs / "multipliers.csv")
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    spatial = ha[ha.constraint == "spatial"]["lambda_after"].tolist()
    assert len(set(spatial)) == ROUNDS, f"lambda_G never moved: {spatial}"  # the history is not trivial

    for r in range(1, ROUNDS + 1):
        for name in ("rollouts.parquet", "scores.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a_runs / f"round-{r}" / name),
                                          pd.read_parquet(b_runs / f"round-{r}" / name), check_exact=True,
                                          obj=f"round {r} {name}")

    wa = load_file(str(straight_dir / "ckpt" / f"round-{ROUNDS}" / "model.safetensors"))
    wb = load_file(str(ckpt / f"round-{ROUNDS}" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(wa[k], init[k]) for k in wa if k in init), "training never changed the weights"

    sa = torch.load(straight_dir / "ckpt" / f"round-{ROUNDS}" / "trainer_state.pt", weights_only=True)
    sb = torch.load(ckpt / f"round-{ROUNDS}" / "trainer_state.pt", weights_only=True)
    assert sa["cursor"] == sb["cursor"] and sa["dual"]["lambdas"] == sb["dual"]["lambdas"]
    pd.testing.assert_frame_equal(pd.DataFrame(sa["dual"]["history"]), pd.DataFrame(sb["dual"]["history"]))
    oa, ob = sa["updater"]["optimizer"]["state"], sb["updater"]["optimizer"]["state"]
    assert oa.keys() == ob.keys() and len(oa) > 0
    for i in oa:
        for name, value in oa[i].items():
            assert torch.equal(value, ob[i][name]), (i, name)
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])

"""What a user does, from a fresh `git clone` of the repository: write a small params.yaml with
the documented command, `fgrpo prefect up` (server on a free port of 127.0.0.1, work pool,
concurrency limit, `prefect deploy --all`, worker), `prefect deployment run fgrpo/full-pipeline`
(tiny preset, smallest sizes, 2 rounds, every stage for real), then the nightly evaluation
deployment: it passes against the stored metrics and fails loudly, with an artifact, against a
better baseline. Everything started is stopped in the fixture's finalizer (`fgrpo prefect down`,
then the pid files' process groups), every wait is bounded, no command reads stdin.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from flows.scratch import clone_project, scratch_env

pytestmark = [pytest.mark.slow, pytest.mark.engine]
BIN = Path(sys.executable).parent
PREFECT, FGRPO = str(BIN / "prefect"), str(BIN / "fgrpo")
WALL: dict[str, float] = {}  # wall times of the user's commands (printed by the last test)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prefect:
    def __init__(self, root: Path, env: dict, api: str, port: int):
        self.root, self.env, self.api, self.port = root, env, api, port
        self.logs = root / ".prefect-local"

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([PREFECT, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def fgrpo_prefect(self, action: str, step_timeout: float = 1200) -> subprocess.CompletedProcess:
        """`fgrpo prefect ACTION`; each of its steps may wait `step_timeout` s (a loaded 2-core CI
        machine needed > 300 s for `prefect deploy --all` alone), so 3 of them bound the call."""
        env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}  # before `source .prefect-local/env`
        return subprocess.run([FGRPO, "prefect", action, "--port", str(self.port), "--timeout", str(step_timeout)],
                              cwd=self.root, env=env, capture_output=True, text=True, timeout=3 * step_timeout + 60,
                              stdin=subprocess.DEVNULL)

    def post(self, path: str, body: dict) -> list | dict:
        r = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def artifact(self, key: str) -> str:
        arts = self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})
        assert arts, f"no artifact '{key}'"
        return arts[0]["data"]

    def run(self, deployment: str, params: dict | None = None, timeout: int = 1500) -> tuple[int, str]:
        """`prefect deployment run NAME [--params JSON] --watch`, as the README says; (exit code, run id)."""
        args = ["deployment", "run", deployment, *(["--params", json.dumps(params)] if params else []),
                "--watch", "--watch-timeout", str(timeout)]
        t0 = time.perf_counter()
        proc = self.cli(*args, timeout=timeout + 60, check=False)
        WALL.setdefault(f"prefect deployment run {deployment}", time.perf_counter() - t0)
        flow_run = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
        assert flow_run, proc.stdout + proc.stderr
        return proc.returncode, flow_run.group(1)

    def state(self, run_id: str) -> str:
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()["state"]["type"]


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    root = clone_project(tmp / "clone")
    port = _free_port()
    env = scratch_env(root, prefect_home=tmp / "prefect-home")
    for k in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH"):
        env.pop(k, None)
    p = Prefect(root, env, f"http://127.0.0.1:{port}/api", port)
    try:
        t0 = time.perf_counter()
        up = p.fgrpo_prefect("up")
        WALL["fgrpo prefect up (first)"] = time.perf_counter() - t0
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        p.first_up = up.stdout
        # what the user's shell does next: source .prefect-local/env
        assert (root / ".prefect-local/env").read_text() == f"export PREFECT_API_URL={p.api}\n"
        env["PREFECT_API_URL"] = p.api
        yield p
    finally:
        try:
            p.fgrpo_prefect("down", step_timeout=60)
        finally:
            for name in ("worker", "server"):  # whatever `down` could not stop
                try:
                    os.killpg(int((root / f".prefect-local/{name}.pid").read_text()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def _pids(root: Path) -> dict[str, int]:
    return {n: int((root / f".prefect-local/{n}.pid").read_text()) for n in ("server", "worker")}


def test_bring_up_made_everything_and_a_second_up_starts_nothing(prefect):
    first = prefect.first_up
    assert "work pool: created 'fgrpo-process' (process)" in first
    assert "concurrency limit: created 'fgrpo-gpu' (limit 1)" in first
    pids = _pids(prefect.root)

    t0 = time.perf_counter()
    again = prefect.fgrpo_prefect("up")
    WALL["fgrpo prefect up (second)"] = time.perf_counter() - t0
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"server: running at {prefect.api} (pid {pids['server']})" in again.stdout
    assert "work pool: 'fgrpo-process' exists" in again.stdout and "'fgrpo-gpu' exists (limit 1)" in again.stdout
    assert f"worker: online on 'fgrpo-process' (pid {pids['worker']})" in again.stdout
    assert "starting" not in again.stdout and _pids(prefect.root) == pids
    # one worker, one limit of 1 slot, the three deployments of prefect.yaml
    workers = prefect.post("/work_pools/fgrpo-process/workers/filter", {})
    assert [w["status"] for w in workers] == ["ONLINE"], workers
    assert httpx.get(f"{prefect.api}/v2/concurrency_limits/fgrpo-gpu", timeout=30).json()["limit"] == 1
    status = prefect.fgrpo_prefect("status")
    assert status.returncode == 0 and "answers" in status.stdout, status.stdout


def test_deployments_exist_with_the_nightly_schedule(prefect):
    deps = {d["name"]: d for d in prefect.post("/deployments/filter", {})}
    assert {"full-pipeline", "nightly"} <= set(deps)
    (sched,) = deps["nightly"]["schedules"]
    assert sched["schedule"]["cron"] == "30 2 * * *" and sched["schedule"]["timezone"] == "Europe/Berlin"
    assert deps["full-pipeline"]["work_pool_name"] == "fgrpo-process"
    assert deps["full-pipeline"]["parameters"] == {"params_file": "params.yaml", "overrides": []}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_full_pipeline_deployment_run(prefect):
    rc, run_id = prefect.run("fgrpo/full-pipeline")  # the deployment's defaults: params.yaml, no overrides
    worker_log = (prefect.logs / "worker.log").read_text()
    assert rc == 0, worker_log[-6000:]
    assert prefect.state(run_id) == "COMPLETED"
    assert "do not exist" not in worker_log  # the fgrpo-gpu limit exists: no concurrency warning

    root = prefect.root
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["fgrpo"]["rounds"] == 2
    assert (root / "models/tiny-qwen2.5-vl/config.json").is_file()
    assert json.loads((root / "data/staged/manifest.json").read_text())
    assert list((root / "checkpoints/sft/model").glob("*.safetensors"))
    assert list((root / "checkpoints/fgrpo/round-2").glob("*.safetensors"))
    assert (root / "runs/round-2/scores.parquet").is_file()

    # evaluation: 8 samples; accuracy is the share answered right; the headline repeats eval.json
    metrics = json.loads((root / "metrics/eval.json").read_text())
    syn = metrics["benchmarks"]["synthetic"]
    assert set(metrics["benchmarks"]) == {"synthetic"} and syn["counts"]["n"] == 8
    samples = [json.loads(line) for line in (root / "metrics/eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and syn["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 8, abs=1e-6)
    headline = json.loads((root / "metrics/eval_headline.json").read_text())
    for short, name in (("accuracy", "accuracy"), ("IR", "inconsistency_rate"), ("semantic", "semantic_grounding"),
                        ("spatial", "spatial_grounding")):  # null where undefined (no judge verdict, no box)
        assert headline["synthetic"][short] == (None if syn[name] is None else round(syn[name], 4)), short

    # multiplier history: 3 constraints, each step the dual rule clip(l + lr (tau - mean), 0, max)
    mult = pd.read_csv(root / "runs/multipliers.csv")
    f = params["fgrpo"]
    assert set(mult["constraint"]) == {"consistency", "semantic", "spatial"}
    assert len(mult) == 3 * mult["step"].nunique() and mult["step"].nunique() >= 2
    for c, rows in mult.sort_values("step").groupby("constraint"):
        assert rows["lambda_before"].iloc[0] == f["lambda_init"]
        assert (rows["lambda_before"].iloc[1:].to_numpy() == rows["lambda_after"].iloc[:-1].to_numpy()).all()
        for r in rows.itertuples():
            want = r.lambda_before if r.skipped else min(max(r.lambda_before + f["lambda_lr"] * (f[f"tau_{c}"] - r.mean),
                                                             0.0), f["lambda_max"])
            assert r.lambda_after == pytest.approx(want, abs=1e-9), (c, r)
        assert headline["lambda"][c] == pytest.approx(rows["lambda_after"].iloc[-1], abs=1e-6)
    assert pd.read_csv(root / "runs/train_metrics.csv")["round"].tolist() == [1, 2]

    # the run used exactly params.yaml, so it was versioned: dvc.lock holds these very outputs
    assert "Versioned with DVC" in prefect.artifact("versioning")
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=prefect.env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert "up to date" in status.stdout, status.stdout + status.stderr
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert list(lock) == ["tiny_model", "stage_data", "sft", "train", "evaluate"]
    outs = {o["path"]: o for st in lock.values() for o in st["outs"]}
    assert outs["runs"]["md5"].endswith(".dir")  # multipliers.csv is versioned inside the runs/ folder
    for path in ("metrics/eval_headline.json", "metrics/eval.json"):
        assert outs[path]["md5"] == _md5(root / path), path
    assert lock["train"]["params"]["params.yaml"]["fgrpo"]["rounds"] == 2
    # artifacts: per-round constraint summaries, final metrics table, plots, progress
    assert "| spatial |" in prefect.artifact("fgrpo-round-2")
    assert "| synthetic | 8 |" in prefect.artifact("eval-metrics")
    assert "eval-training.png" in prefect.artifact("eval-plots")
    assert float(prefect.artifact("fgrpo-rounds")) == 100.0


def _better_baseline(path: Path) -> str:
    """Stored metrics that the tiny random policy cannot match: every answer right."""
    from fgrpo_core.eval.metrics import compute_metrics
    from fgrpo_core.eval.report import write_metrics_json
    from fgrpo_core.eval.results import JudgeOutcome, SampleResult

    na = JudgeOutcome.not_asked
    rows = [SampleResult("synthetic", "t", f"s{i}", True, True, 10, False, math.nan, na, math.nan, na, math.nan,
                         rotations=1, rotations_correct=1) for i in range(8)]
    write_metrics_json(compute_metrics(rows, n_boot=20), path)
    return str(path)


def test_nightly_evaluation_passes_then_fails_loudly_on_a_regression(prefect):
    root = prefect.root
    rc, run_id = prefect.run("fgrpo-eval/nightly")  # newest checkpoint vs the stored metrics/eval.json
    assert rc == 0, (prefect.logs / "worker.log").read_text()[-6000:]
    assert prefect.state(run_id) == "COMPLETED"
    nightly = json.loads((root / "metrics/nightly/eval.json").read_text())["benchmarks"]["synthetic"]
    stored = json.loads((root / "metrics/eval.json").read_text())["benchmarks"]["synthetic"]
    assert nightly["counts"]["n"] == stored["counts"]["n"] == 8
    assert abs(nightly["accuracy"] - stored["accuracy"]) <= 0.02  # eval.tolerances.accuracy: the gate passed
    assert json.loads((root / "metrics/nightly/eval_headline.json").read_text())["synthetic"]["accuracy"] == round(
        nightly["accuracy"], 4)
    assert "checkpoints/fgrpo/round-2" in prefect.artifact("nightly-metrics")  # the newest round
    assert "No regression" in prefect.artifact("eval-regression-gate")

    baseline = _better_baseline(root / "metrics/baseline-all-right.json")
    rc, run_id = prefect.run("fgrpo-eval/nightly", {"baseline": "metrics/baseline-all-right.json"})
    assert rc == 1
    state = httpx.get(f"{prefect.api}/flow_runs/{run_id}", timeout=30).json()["state"]
    assert state["type"] == "FAILED"
    md = prefect.artifact("eval-regression-gate")
    assert "**REGRESSION**" in md and "synthetic.accuracy" in md and baseline.endswith("all-right.json")
    print("\nwall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in WALL.items()))

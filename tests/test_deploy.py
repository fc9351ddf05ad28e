"""What a user does: a real Prefect server on 127.0.0.1, a process work pool and worker,
`prefect deploy` from prefect.yaml, `prefect deployment run fgrpo/full-pipeline` on the tiny
preset (smallest sizes, every stage for real), then the nightly evaluation deployment: it passes
against the stored metrics and fails loudly, with an artifact, against a better baseline.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.scratch import make_scratch_project, scratch_env

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prefect:
    def __init__(self, root: Path, env: dict, api: str):
        self.root, self.env, self.api = root, env, api

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([PREFECT, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def post(self, path: str, body: dict) -> list | dict:
        r = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def artifact(self, key: str) -> str:
        arts = self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})
        assert arts, f"no artifact '{key}'"
        return arts[0]["data"]

    def run(self, deployment: str, params: dict, timeout: int = 1500) -> tuple[int, str]:
        proc = self.cli("deployment", "run", deployment, "--params", json.dumps(params), "--watch",
                        "--watch-timeout", str(timeout), timeout=timeout + 60, check=False)
        flow_run = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
        assert flow_run, proc.stdout
        return proc.returncode, flow_run.group(1)


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    root = make_scratch_project(tmp / "project")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = scratch_env(root, prefect_home=tmp / "prefect-home")
    env["PREFECT_API_URL"] = api
    env.pop("PREFECT_PROFILES_PATH", None)
    logs = tmp / "logs"
    logs.mkdir()
    procs = []
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    procs.append(subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=tmp, env=server_env, stdout=open(logs / "server.log", "w"),
                                  stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 240
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (logs / "server.log").read_text()[-3000:]
            assert procs[0].poll() is None, (logs / "server.log").read_text()[-3000:]
            time.sleep(1)
        p = Prefect(root, env, api)
        p.cli("work-pool", "create", "fgrpo-process", "--type", "process")
        p.cli("global-concurrency-limit", "create", "fgrpo-gpu", "--limit", "1")
        p.cli("--no-prompt", "deploy", "--all")
        procs.append(subprocess.Popen([PREFECT, "worker", "start", "--pool", "fgrpo-process"], cwd=root, env=env,
                                      stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
        p.logs = logs
        yield p
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_deployments_exist_with_the_nightly_schedule(prefect):
    deps = {d["name"]: d for d in prefect.post("/deployments/filter", {})}
    assert {"full-pipeline", "nightly"} <= set(deps)
    (sched,) = deps["nightly"]["schedules"]
    assert sched["schedule"]["cron"] == "30 2 * * *" and sched["schedule"]["timezone"] == "Europe/Berlin"
    assert deps["full-pipeline"]["work_pool_name"] == "fgrpo-process"
    assert deps["full-pipeline"]["parameters"] == {"params_file": "params.yaml", "overrides": []}


def test_full_pipeline_deployment_run(prefect):
    rc, run_id = prefect.run("fgrpo/full-pipeline", {"params_file": "params.yaml", "overrides": []})
    worker_log = (prefect.logs / "worker.log").read_text()
    assert rc == 0, worker_log[-6000:]
    state = httpx.get(f"{prefect.api}/flow_runs/{run_id}", timeout=30).json()["state"]
    assert state["type"] == "COMPLETED"

    root = prefect.root
    assert (root / "models/tiny-qwen2.5-vl/config.json").is_file()
    assert (root / "data/staged/manifest.json").is_file()
    assert list((root / "checkpoints/sft/model").glob("*.safetensors"))
    assert list((root / "checkpoints/fgrpo/round-2").glob("*.safetensors"))
    assert (root / "runs/round-2/scores.parquet").is_file()
    metrics = json.loads((root / "metrics/eval.json").read_text())
    assert set(metrics["benchmarks"]) == {"synthetic"} and metrics["benchmarks"]["synthetic"]["counts"]["n"] == 8
    # the run used exactly params.yaml, so it was versioned: dvc.lock agrees with the outputs
    assert "Versioned with DVC" in prefect.artifact("versioning")
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=prefect.env,
                            capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr
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
    rc, _ = prefect.run("fgrpo-eval/nightly", {})  # newest checkpoint vs the stored metrics/eval.json
    assert rc == 0, (prefect.logs / "worker.log").read_text()[-6000:]
    assert (root / "metrics/nightly/eval.json").is_file()
    assert "No regression" in prefect.artifact("eval-regression-gate")

    baseline = _better_baseline(root / "metrics/baseline-all-right.json")
    rc, run_id = prefect.run("fgrpo-eval/nightly", {"baseline": "metrics/baseline-all-right.json"})
    assert rc == 1
    state = httpx.get(f"{prefect.api}/flow_runs/{run_id}", timeout=30).json()["state"]
    assert state["type"] == "FAILED"
    md = prefect.artifact("eval-regression-gate")
    assert "**REGRESSION**" in md and "synthetic.accuracy" in md and baseline.endswith("all-right.json")

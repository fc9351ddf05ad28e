"""Secrets and loading.

- An endpoint key comes from the environment only (params name the variable, never hold the
  key), and a whole `fgrpo train` run with a planted key, whose judge really sends it (and whose
  server echoes it back in error bodies), leaves it in no file of the run directory, checkpoints,
  verdict cache or stage records, and in none of the captured output (logs at DEBUG).
- Or from a Prefect Secret block (``judges.model_judge.api_key_block``), exported into that
  variable before judges are built (the environment wins): a flow run of the train stage against
  a real Prefect server sends the block's key to the judge, and the key is in none of the flow
  run's Prefect logs (read through the API), the server's database and home folder (results,
  storage), the run's files or its captured output. A negative control logs a block's key on
  purpose and the same scans find it.
- Model weights load from safetensors only: a directory with only ``pytorch_model.bin`` is
  refused by every loader (policy, trainer, HF engine), and the vLLM engine and the vLLM judge
  server are told to read safetensors only.
- ``trust_remote_code`` is off unless the params turn it on: a model directory whose config
  points at its own code is loaded without running that code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from fgrpo_core.config import JudgeEndpoint, ParamsError, Params, load_params
from tests.faults.conftest import PRESET, ROOT, N_RL, child_env, run_train, train_overrides
from tests.test_judges_http import Reply, ScriptedServer

KEY_ENV = "FGRPO_PLANTED_JUDGE_KEY"
PLANTED = "sk-planted-4f1e9a77c3d2b5e8-NEVER-WRITE-ME"


# --------------------------------------------------------------------------------------------
# The key: environment only
# --------------------------------------------------------------------------------------------
def test_params_have_no_place_for_a_key():
    with pytest.raises(ValidationError, match="api_key"):
        JudgeEndpoint(model="m", api_key=PLANTED)
    with pytest.raises(ParamsError, match="unknown key 'judges.model_judge.api_key'"):
        load_params(PRESET, ["judges.model_judge.model=m", f"judges.model_judge.api_key={PLANTED}"])
    # the one key-related field holds a variable's name
    assert JudgeEndpoint.model_fields["api_key_env"].annotation == (str | None)


def _echoing_plan(i: int, body: dict) -> Reply:
    """Good verdicts, except that every 5th call from the 2nd fails with 500 and every 5th from
    the 4th with 400, each with an error body that echoes the planted key."""
    echo = json.dumps({"error": {"message": f"bad request from key {PLANTED}"}})
    text = next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")
    if i % 5 == 1:  # transient, echoing the key: retried, then logged
        return Reply(status=500, body=echo)
    if i % 5 == 3:  # client error, echoing the key: failed at once, logged
        return Reply(status=400, body=echo)
    if "Sentences (" in text:
        n = text.split("Sentences (", 1)[1].split(")", 1)[0]
        return Reply(text="\n".join(f"{k}: CORRECT" for k in range(1, int(n) + 1)))
    return Reply(text="VERDICT: CONSISTENT")


def _scan(root: Path, needle: bytes) -> tuple[list[Path], int]:
    hits, files = [], 0
    for p in root.rglob("*"):
        if p.is_file():
            files += 1
            if needle in p.read_bytes():
                hits.append(p)
    return hits, files


def _model_judge_run(tmp_path, tiny_model_dir, data_dir, server, **extra) -> list[str]:
    """One round whose consistency and semantic judges are the model judge at ``server``,
    its key read from the variable KEY_ENV (``extra``: more overrides, e.g. a Secret block)."""
    return train_overrides(tmp_path, tiny_model_dir, data_dir, **{
        "rollout.max_tokens": 128, "fgrpo.rollout_batch": N_RL, "fgrpo.update_batch": N_RL,
        "fgrpo.rounds": 1, "judges.consistency": "model", "judges.semantic": "model",
        "judges.model_judge.backend": "openai", "judges.model_judge.model": "judge-model",
        "judges.model_judge.base_url": server.base_url, "judges.model_judge.api_key_env": KEY_ENV,
        "judges.model_judge.max_retries": 1, "judges.model_judge.retry_backoff_s": 0.01, **extra,
    })


@pytest.mark.slow
def test_planted_key_is_written_nowhere(tmp_path, tiny_model_dir, faults_data):
    """A real run (the CLI in a subprocess, DEBUG logs captured) that uses the key on every call."""
    data_dir, traces = faults_data
    server = ScriptedServer(_echoing_plan, require_key=PLANTED)  # 401 unless the key is sent
    try:
        args = _model_judge_run(tmp_path, tiny_model_dir, data_dir, server)
        res = run_train(args, tmp_path, "secret", FGRPO_FAULTS_REPLAY=str(traces), FGRPO_FAULTS_LOG="DEBUG",
                        **{KEY_ENV: PLANTED})
    finally:
        server.close()
    assert res.returncode == 0, res.tail()

    # The key was really used: every call carried it, and the judge answered (ok verdicts).
    assert len(server.calls) > 0 and set(server.auth_headers) == {f"Bearer {PLANTED}"}
    import pandas as pd

    scores = pd.read_parquet(tmp_path / "runs" / "round-1" / "scores.parquet")
    assert (scores["consistency_status"] == "ok").any() and (scores["consistency_status"] == "failed").any()
    # The logs are there to scan (DEBUG from the HTTP stack, the judge's warnings with the
    # echoed key scrubbed), so a clean scan means something.
    assert "DEBUG" in res.stderr and "judge request failed" in res.stderr and "***" in res.stderr

    hits, files = _scan(tmp_path, PLANTED.encode())
    assert files > 10 and (tmp_path / "secret.stderr").is_file() and (tmp_path / "judge-cache").is_dir()
    assert hits == [], f"the planted key was written to {hits}"
    assert PLANTED not in res.stdout and PLANTED not in res.stderr


# --------------------------------------------------------------------------------------------
# The key from a Prefect Secret block
# --------------------------------------------------------------------------------------------
BLOCK = "fgrpo-planted-judge-key"
CONTROL = "sk-control-0d5c8b1e77aa-LOGGED-ON-PURPOSE"  # the negative control's key
CONTROL_BLOCK = "fgrpo-control-judge-key"
PREFECT = str(Path(sys.executable).parent / "prefect")


class PrefectServer:
    """`prefect server start` on 127.0.0.1 with its own home folder (database, storage)."""

    def __init__(self, home: Path, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.home, self.log, self.api = home, log, f"http://127.0.0.1:{port}/api"
        env = child_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        with log.open("w") as out:
            self.proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                          "--no-scheduler", "--no-late-runs"], cwd=home.parent, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_healthy(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.5)

    def settings(self):
        """In this process: talk to this server (the blocks, the logs)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings({PREFECT_API_URL: self.api})

    def env(self, **extra: str) -> dict[str, str]:
        """A flow run's process: this server, this home, the project's loggers sent to the API."""
        env = child_env(PREFECT_API_URL=self.api, PREFECT_HOME=str(self.home), PREFECT_LOGGING_LEVEL="DEBUG",
                        PREFECT_LOGGING_EXTRA_LOGGERS="fgrpo_core,openai", **extra)
        env.pop(KEY_ENV, None)  # the key must come from the block
        return env

    def logs(self, flow_run_id: str) -> list[str]:
        """Every log line Prefect stored for the flow run and its subflow runs (paged)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterParentFlowRunId,
            LogFilter,
            LogFilterFlowRunId,
        )

        with self.settings(), get_client(sync_client=True) as client:
            subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
            ids = [flow_run_id, *(str(r.id) for r in subflows)]
            lines: list[str] = []
            while True:
                page = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200,
                                        offset=len(lines))
                lines += [f"{logging.getLevelName(r.level)} {r.name}: {r.message}" for r in page]
                if len(page) < 200:
                    return lines

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """One real Prefect server for this module, holding the planted key and the control key as
    Secret blocks."""
    from prefect.blocks.system import Secret

    tmp = tmp_path_factory.mktemp("prefect")
    server = PrefectServer(tmp / "home", tmp / "server.log")
    try:
        server.wait_healthy()
        with server.settings():
            Secret(value=PLANTED).save(BLOCK, overwrite=True)
            Secret(value=CONTROL).save(CONTROL_BLOCK, overwrite=True)
        yield server
    finally:
        server.close()


def _block_endpoint(block: str, base_url: str = "http://127.0.0.1:1/v1") -> JudgeEndpoint:
    return JudgeEndpoint(model="judge-model", base_url=base_url, api_key_env=KEY_ENV, api_key_block=block)


def test_a_block_needs_a_variable():
    with pytest.raises(ValidationError, match="api_key_block 'b' needs api_key_env"):
        JudgeEndpoint(model="m", api_key_block="b")
    with pytest.raises(ParamsError, match="judges.model_judge: .*api_key_block 'b' needs api_key_env"):
        load_params(PRESET, ["judges.model_judge.model=m", "judges.model_judge.api_key_block=b"])
    # with the variable, the params hold the block's name (never the key)
    p = load_params(PRESET, ["judges.model_judge.model=m", "judges.model_judge.api_key_block=b",
                             f"judges.model_judge.api_key_env={KEY_ENV}"])
    assert (p.judges.model_judge.api_key_block, p.judges.model_judge.api_key_env) == ("b", KEY_ENV)


def test_block_key_is_exported_and_the_environment_wins(prefect_server, monkeypatch):
    from flows.judge_keys import export_judge_key

    said: list[str] = []
    monkeypatch.delenv(KEY_ENV, raising=False)  # restored (unset) after the test
    with prefect_server.settings():
        assert export_judge_key(_block_endpoint(BLOCK), log=said.append) is True
        assert os.environ[KEY_ENV] == PLANTED
        monkeypatch.setenv(KEY_ENV, "sk-from-the-environment")
        assert export_judge_key(_block_endpoint(BLOCK), log=said.append) is False
        assert os.environ[KEY_ENV] == "sk-from-the-environment"
        # no endpoint, or no block: nothing to do
        assert export_judge_key(None) is False
        assert export_judge_key(JudgeEndpoint(model="m", api_key_env=KEY_ENV)) is False
    assert said == [f"judge key: ${KEY_ENV} set from the Prefect Secret block {BLOCK!r}",
                    f"judge key: ${KEY_ENV} is set; the Prefect Secret block {BLOCK!r} "
                    "(judges.model_judge.api_key_block) is not read"]
    assert not any(PLANTED in m for m in said)


def test_a_missing_or_wrong_block_is_an_error_naming_it(prefect_server, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.judge_keys import export_judge_key

    monkeypatch.delenv(KEY_ENV, raising=False)
    with prefect_server.settings():
        with pytest.raises(ParamsError, match=r"judges.model_judge.api_key_block: no Prefect Secret block "
                                              r"named 'fgrpo-no-such-block'"):
            export_judge_key(_block_endpoint("fgrpo-no-such-block"))
        Secret(value={"user": "u", "password": "p"}).save("fgrpo-dict-secret", overwrite=True)
        with pytest.raises(ParamsError, match="'fgrpo-dict-secret' must hold a non-empty string key, it holds a dict"):
            export_judge_key(_block_endpoint("fgrpo-dict-secret"))
    assert KEY_ENV not in os.environ


@pytest.mark.parametrize("command", ["train", "evaluate", "repro", "judge-agreement"])
def test_every_judge_command_reads_the_block_first(command, prefect_server, monkeypatch, tmp_path, capsys):
    """Each command that builds a judge resolves the block before any work: a missing one stops
    it at once (exit 2), naming the block and the field."""
    from flows.cli import main

    monkeypatch.delenv(KEY_ENV, raising=False)
    sets = {"judges.consistency": "model", "judges.model_judge.model": "judge-model",
            "judges.model_judge.base_url": "http://127.0.0.1:1/v1", "judges.model_judge.api_key_env": KEY_ENV,
            "judges.model_judge.api_key_block": "fgrpo-no-such-block", "fgrpo.run_dir": tmp_path / "runs",
            "fgrpo.out_dir": tmp_path / "ckpt", "fgrpo.init_from": tmp_path / "no-model"}
    argv = [command, "--params", str(PRESET), *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    argv += {"evaluate": ["--checkpoint", str(tmp_path / "no-model")], "repro": ["--dir", str(tmp_path / "repro")]
             }.get(command, [])
    with prefect_server.settings():
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "judges.model_judge.api_key_block: no Prefect Secret block named 'fgrpo-no-such-block'" in err
    assert KEY_ENV not in os.environ


def _scan_prefect(server: PrefectServer, flow_run_id: str, needle: str, work: Path) -> dict[str, list]:
    """Where ``needle`` is: the flow runs' Prefect logs (through the API), any file of the Prefect
    home (the server's database with its WAL, result storage), the server's output, any file
    under ``work`` (run dir, checkpoints, verdict cache, the captured stdout/stderr).

    The database is scanned whole, the block table included: the server stores block data
    Fernet-encrypted (prefect/server/models/block_documents.py), so a Secret block's value is
    not there in plain text (the tests check the block is there and still holds the key).
    """
    hits_home, files_home = _scan(server.home, needle.encode())
    hits_work, files_work = _scan(work, needle.encode())
    logs = server.logs(flow_run_id)
    return {"logs": [line for line in logs if needle in line], "home": hits_home, "work": hits_work,
            "server_log": [server.log] if needle in server.log.read_text() else [],
            "scanned": [len(logs), files_home, files_work]}


def _flow_run(server: PrefectServer, which: str, args: list[str], work: Path, **env: str):
    out, err = work / f"{which}.stdout", work / f"{which}.stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.run([sys.executable, "-m", "tests.faults.secret_flow", which, *args], cwd=ROOT,
                              env=server.env(**env), stdout=o, stderr=e, stdin=subprocess.DEVNULL, timeout=400)
    stdout, stderr = out.read_text(), err.read_text()
    assert proc.returncode == 0, f"--- stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-3000:]}"
    flow_run_id = stdout.strip().splitlines()[-1].removeprefix("FLOW_RUN_ID ")
    return flow_run_id, stdout, stderr


@pytest.mark.slow
def test_block_key_reaches_the_judge_and_no_prefect_log(prefect_server, tmp_path, tiny_model_dir, faults_data):
    """A flow run of the train stage (the task the ``fgrpo`` flow runs) in its own process, its key
    only in a Secret block, its judge answering with error bodies that echo the key; the project's
    loggers and the HTTP client's log at DEBUG into Prefect."""
    import pandas as pd

    data_dir, traces = faults_data
    server = ScriptedServer(_echoing_plan, require_key=PLANTED)  # 401 unless the key is sent
    try:
        args = _model_judge_run(tmp_path, tiny_model_dir, data_dir, server,
                                **{"judges.model_judge.api_key_block": BLOCK})
        run_id, stdout, stderr = _flow_run(prefect_server, "train", args, tmp_path,
                                           FGRPO_FAULTS_REPLAY=str(traces))
    finally:
        server.close()

    # The key came from the block and reached the judge on every call (the process's environment
    # had no such variable); the judge answered: ok verdicts and failed ones.
    assert len(server.calls) > 0 and set(server.auth_headers) == {f"Bearer {PLANTED}"}
    scores = pd.read_parquet(tmp_path / "runs" / "round-1" / "scores.parquet")
    assert (scores["consistency_status"] == "ok").any() and (scores["consistency_status"] == "failed").any()

    found = _scan_prefect(prefect_server, run_id, PLANTED, tmp_path)
    logs = prefect_server.logs(run_id)
    # Prefect's logs of the run are there to scan, at the level where a key could show: the
    # task's export line, the judge's warnings with the echoed key scrubbed, the HTTP client's
    # DEBUG lines, the round subflow's lines.
    assert any(f"${KEY_ENV} set from the Prefect Secret block {BLOCK!r}" in line for line in logs)
    assert any("judge request failed" in line and "***" in line for line in logs)
    assert any(line.startswith("DEBUG openai") for line in logs)
    assert any("Executing flow 'fgrpo-round'" in line for line in logs)  # the subflow's own logs
    n_logs, files_home, files_work = found.pop("scanned")
    assert n_logs > 20 and files_home >= 2 and files_work > 10
    assert any(p.name.startswith("prefect.db") for p in prefect_server.home.iterdir())
    assert found == {"logs": [], "home": [], "work": [], "server_log": []}, f"the planted key was written: {found}"
    assert PLANTED not in stdout and PLANTED not in stderr
    with prefect_server.settings():  # the block is in the database, still holding the key
        from prefect.blocks.system import Secret

        assert Secret.load(BLOCK).get() == PLANTED


def test_the_scan_finds_a_block_key_that_is_logged(prefect_server, tmp_path):
    """Negative control: the same scans, on a flow run that exports a block's key as the train task
    does and then logs it on purpose, find it in Prefect's logs, its database and the output."""
    sets = {"judges.consistency": "model", "judges.model_judge.model": "judge-model",
            "judges.model_judge.api_key_env": KEY_ENV, "judges.model_judge.api_key_block": CONTROL_BLOCK}
    args = ["--params", str(PRESET), *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    run_id, stdout, stderr = _flow_run(prefect_server, "leak", args, tmp_path)
    found = _scan_prefect(prefect_server, run_id, CONTROL, tmp_path)
    assert len(found["logs"]) == 2  # the flow's logger, and a fgrpo_core logger in a task
    assert any(p.name.startswith("prefect.db") for p in found["home"])  # the log table
    assert {p.name for p in found["work"]} == {"leak.stderr"}  # the console handler
    assert CONTROL in stderr


# --------------------------------------------------------------------------------------------
# Safetensors only
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bin_only_model(tmp_path_factory, tiny_model_dir):
    """The tiny model with its weights as pytorch_model.bin (a pickle) and no safetensors."""
    out = tmp_path_factory.mktemp("bin-only") / "model"
    shutil.copytree(tiny_model_dir, out)
    state = load_file(str(out / "model.safetensors"))
    (out / "model.safetensors").unlink()
    torch.save(state, out / "pytorch_model.bin")
    return out


@pytest.mark.engine
def test_a_bin_only_model_is_refused(bin_only_model, tiny_model_dir, faults_data):
    from fgrpo_core.models.loading import load_policy
    from fgrpo_core.rollout.hf_engine import HFEngine
    from fgrpo_core.train.setup import create_trainer

    assert load_policy(tiny_model_dir) is not None  # the same directory with safetensors loads
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        load_policy(bin_only_model)
    with pytest.raises(OSError):
        HFEngine.from_pretrained(str(bin_only_model))
    p = Params()
    p.rollout.engine = "hf"
    with pytest.raises(OSError):
        create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                       init_path=bin_only_model, data_dir=faults_data[0], seed=0)
    engine = HFEngine.from_pretrained(str(tiny_model_dir))
    with pytest.raises(OSError):  # a resume never reads a .bin either
        engine.load_weights_from(bin_only_model)


def test_vllm_engine_and_judge_server_read_safetensors_only(monkeypatch, tmp_path):
    """What the engines ask vLLM for (a stand-in ``vllm.LLM`` records the arguments)."""
    from fgrpo_core.judges.vllm_server import VLLMServer
    from fgrpo_core.rollout.vllm_engine import VLLMEngine
    from tests.support.recording_vllm import install_recording_vllm

    seen = install_recording_vllm(monkeypatch)
    # VLLMEngine sets these in os.environ: undone after the test
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1"))
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    VLLMEngine(tmp_path / "m")
    assert seen["load_format"] == "safetensors" and seen["trust_remote_code"] is False
    VLLMEngine(tmp_path / "m", trust_remote_code=True)
    assert seen["trust_remote_code"] is True  # passed through when the params say so

    args = VLLMServer(tmp_path / "m", tmp_path / "log").args
    assert args[args.index("--load-format") + 1] == "safetensors"
    assert "--trust-remote-code" not in args


def test_engine_built_from_params_passes_trust_remote_code(monkeypatch, tmp_path):
    from fgrpo_core.train import setup

    seen = {}
    monkeypatch.setattr("fgrpo_core.rollout.hf_engine.HFEngine.from_pretrained",
                        classmethod(lambda cls, path, **kw: seen.update(kw)))
    p = Params()
    p.rollout.engine = "hf"
    setup.make_engine(tmp_path, p.rollout, p.model, 0)
    assert seen["trust_remote_code"] is False
    p.model.trust_remote_code = True
    setup.make_engine(tmp_path, p.rollout, p.model, 0)
    assert seen["trust_remote_code"] is True


# --------------------------------------------------------------------------------------------
# trust_remote_code off by default
# --------------------------------------------------------------------------------------------
def test_presets_keep_remote_code_off():
    assert Params().model.trust_remote_code is False
    for preset in sorted((ROOT / "params").glob("*.yaml")):
        assert load_params(preset).model.trust_remote_code is False, preset.name


@pytest.mark.engine
def test_remote_code_in_the_model_directory_is_not_run(tmp_path, tiny_model_dir, monkeypatch):
    import transformers.dynamic_module_utils as dmu

    from fgrpo_core.models.loading import load_policy

    model = tmp_path / "remote-code-model"
    shutil.copytree(tiny_model_dir, model)
    marker = tmp_path / "remote-code-ran"
    (model / "evil_model.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen2_5_VLForConditionalGeneration\n"
        "class EvilModel(Qwen2_5_VLForConditionalGeneration):\n"
        "    pass\n"
    )
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "evil_model.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    # transformers copies remote code into its modules cache: keep that inside tmp_path
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))

    policy = load_policy(model)  # default: trust_remote_code=False
    assert not marker.exists(), "the model directory's own code ran without trust_remote_code"
    assert type(policy).__name__ == "Qwen2_5_VLForConditionalGeneration"

    remote = load_policy(model, trust_remote_code=True)  # the switch works (the test can fail)
    assert marker.exists() and type(remote).__name__ == "EvilModel"

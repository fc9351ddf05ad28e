"""Secrets and loading.

- An endpoint key comes from the environment only (params name the variable, never hold the
  key), and a whole `fgrpo train` run with a planted key, whose judge really sends it (and whose
  server echoes it back in error bodies), leaves it in no file of the run directory, checkpoints,
  verdict cache or stage records, and in none of the captured output (logs at DEBUG).
- Model weights load from safetensors only: a directory with only ``pytorch_model.bin`` is
  refused by every loader (policy, trainer, HF engine), and the vLLM engine and the vLLM judge
  server are told to read safetensors only.
- ``trust_remote_code`` is off unless the params turn it on: a model directory whose config
  points at its own code is loaded without running that code.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from fgrpo_core.config import JudgeEndpoint, ParamsError, Params, load_params
from tests.faults.conftest import PRESET, ROOT, N_RL, run_train, train_overrides
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


def _scan(root: Path, needle: bytes) -> tuple[list[Path], int]:
    hits, files = [], 0
    for p in root.rglob("*"):
        if p.is_file():
            files += 1
            if needle in p.read_bytes():
                hits.append(p)
    return hits, files


@pytest.mark.slow
def test_planted_key_is_written_nowhere(tmp_path, tiny_model_dir, faults_data):
    """A real run (the CLI in a subprocess, DEBUG logs captured) that uses the key on every call."""
    data_dir, traces = faults_data
    echo = json.dumps({"error": {"message": f"bad request from key {PLANTED}"}})

    def plan(i: int, body: dict) -> Reply:
        text = next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")
        if i % 5 == 1:  # transient, echoing the key: retried, then logged
            return Reply(status=500, body=echo)
        if i % 5 == 3:  # client error, echoing the key: failed at once, logged
            return Reply(status=400, body=echo)
        if "Sentences (" in text:
            n = text.split("Sentences (", 1)[1].split(")", 1)[0]
            return Reply(text="\n".join(f"{k}: CORRECT" for k in range(1, int(n) + 1)))
        return Reply(text="VERDICT: CONSISTENT")

    server = ScriptedServer(plan, require_key=PLANTED)  # 401 unless the key is sent
    try:
        args = train_overrides(
            tmp_path, tiny_model_dir, data_dir, **{
                "rollout.max_tokens": 128, "fgrpo.rollout_batch": N_RL, "fgrpo.update_batch": N_RL,
                "fgrpo.rounds": 1, "judges.consistency": "model", "judges.semantic": "model",
                "judges.model_judge.backend": "openai", "judges.model_judge.model": "judge-model",
                "judges.model_judge.base_url": server.base_url, "judges.model_judge.api_key_env": KEY_ENV,
                "judges.model_judge.max_retries": 1, "judges.model_judge.retry_backoff_s": 0.01,
            })
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

    seen = {}

    class RecordingLLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_tokenizer(self):
            return None

    fake = types.ModuleType("vllm")
    fake.LLM = RecordingLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
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

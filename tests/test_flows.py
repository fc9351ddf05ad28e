"""Orchestration: stage keys agree with dvc.yaml, Prefect caching and reruns, the round subflow's
artifacts, resume safety, the regression gate, prefect.yaml.

Fast tests check the declarations (dvc.yaml, params.yaml, prefect.yaml) and the key functions.
Flow tests run under ONE session-scoped ``prefect_test_harness`` in a scratch copy of the project
(tiny model, smallest sizes; the round subflow uses transformers generate, so no vLLM start).
The whole flow through vLLM, SFT and evaluation runs in tests/test_deploy.py and
tests/test_dvc_pipeline.py.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import zoneinfo
from pathlib import Path

import pytest
import yaml

from fgrpo_core.config import load_params
from flows.stages import (
    StageIdentity,
    claim_outputs,
    content_hash,
    load_stages,
    param_value,
    params_hash,
    resolve,
)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------
def test_params_yaml_is_the_resolved_tiny_preset_with_every_key():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = load_params(ROOT / "params/tiny.yaml")
    # DVC reads values from the file only, so every key (defaults included) must be written out;
    # regenerate with: fgrpo pipeline --params params/tiny.yaml --write-params params.yaml
    assert raw == tiny.model_dump(mode="json"), "params.yaml is stale: regenerate it from params/tiny.yaml"


def test_every_dvc_params_key_exists():
    params = load_params(ROOT / "params.yaml")
    for stage in load_stages(ROOT).values():
        for key in stage.params:
            param_value(params, key)  # raises, naming the key, when it does not exist
        for templ in (*stage.inputs, *stage.outs):
            assert "${" not in resolve(templ, params)
    with pytest.raises(KeyError, match="fgrpo.nope"):
        param_value(params, "fgrpo.nope")


def test_stage_commands_are_the_fgrpo_commands_on_params_yaml():
    from flows.cli import COMMANDS

    stages = load_stages(ROOT)
    assert list(stages) == ["tiny_model", "stage_data", "sft", "train", "evaluate"]
    expected = {"tiny_model": "build-tiny-model", "stage_data": "stage-data", "sft": "sft", "train": "train",
                "evaluate": "evaluate"}
    for name, st in stages.items():
        words = st.cmd.split()
        assert words[0] == "fgrpo" and words[1] == expected[name] and words[1] in COMMANDS
        assert words[words.index("--params") + 1] == "params.yaml"


# Import graph: every module a stage's command imports is among that stage's code deps. Config
# defaults are covered by params.yaml (every value written out), so config.py is not a dep;
# cmd_model is only reached for build-tiny-model (-> models.tiny) and ensure_model, which builds
# nothing when the model exists; its rollout-demo imports are not part of any stage.
ENTRY = {"tiny_model": ["fgrpo_core.models.tiny"], "stage_data": ["flows.cmd_data"],
         "sft": ["flows.cmd_sft"], "train": ["flows.cmd_train"], "evaluate": ["flows.cmd_eval"]}
NOT_FOLLOWED = {"flows.cmd_model", "fgrpo_core.config", "flows.cli"}


def _module_file(name: str) -> Path | None:
    p = ROOT / Path(*name.split("."))
    for cand in (p.with_suffix(".py"), p / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("fgrpo_core", "flows")}


def import_closure(entries: list[str]) -> set[str]:
    files: set[Path] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name.endswith(".py"):
            f = ROOT / name
        elif name in NOT_FOLLOWED:
            continue
        else:
            f = _module_file(name)
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run their __init__
        if f is None or f in files:
            continue
        files.add(f)
        todo += sorted(_imports(f))
    # an __init__ without imports (docstring, version) changes no result
    return {str(f.relative_to(ROOT)) for f in files if f.name != "__init__.py" or _imports(f)}


def _covered(path: str, deps: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(ENTRY))
def test_dvc_code_deps_cover_the_imported_modules(stage):
    spec = load_stages(ROOT)[stage]
    closure = import_closure(ENTRY[stage])
    missing = sorted(p for p in closure if not _covered(p, spec.code))
    assert not missing, f"dvc.yaml stage '{stage}' misses code deps: {missing}"
    stale = [d for d in spec.code if not (ROOT / d).exists()]
    assert not stale, f"dvc.yaml stage '{stage}' lists code that does not exist: {stale}"


def test_import_closure_sees_the_trainer():
    # the checker itself must be able to fail: it reaches the round loop through cmd_train
    closure = import_closure(["flows.cmd_train"])
    assert "fgrpo_core/train/rounds.py" in closure and "fgrpo_core/loss.py" in closure
    assert not _covered("fgrpo_core/loss.py", ("fgrpo_core/train",))


def test_prefect_yaml_deployments():
    import inspect

    from prefect.utilities.importtools import import_object

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"full-pipeline", "nightly", "ablation-table"}  # the last: tests/test_repro_wiring.py
    full, nightly = deps["full-pipeline"], deps["nightly"]
    for d in (full, nightly):
        flow = import_object(str(ROOT / d["entrypoint"].split(":")[0]) + ":" + d["entrypoint"].split(":")[1])
        assert set(d["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        assert d["work_pool"]["name"] == "fgrpo-process"
    assert import_object(str(ROOT / "flows/pipeline.py") + ":fgrpo_pipeline").name == "fgrpo"
    assert import_object(str(ROOT / "flows/evaluation.py") + ":fgrpo_eval").name == "fgrpo-eval"
    assert set(full["parameters"]) == {"params_file", "overrides"}
    (schedule,) = nightly["schedules"]
    zoneinfo.ZoneInfo(schedule["timezone"])  # an IANA name
    from prefect.client.schemas.schedules import CronSchedule

    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # validates both
    assert cron.cron.split()[2:] == ["*", "*", "*"]  # every day


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------
def test_params_hash_changes_only_with_the_listed_keys():
    base = load_params(ROOT / "params/tiny.yaml")
    keys = load_stages(ROOT)["stage_data"].params  # data, model.{path,trust_remote_code,min_pixels,max_pixels}
    h = params_hash(base, keys)

    def changed(dotted: str, value) -> str:
        p = base.model_copy(deep=True)
        *path, last = dotted.split(".")
        setattr(param_value(p, ".".join(path)) if path else p, last, value)
        return params_hash(p, keys)

    assert changed("sft.lr", 0.5) == h  # not read by stage_data
    assert changed("model.dtype", "bfloat16") == h
    assert changed("model.max_pixels", 28 * 28 * 20) != h
    assert changed("data.synthetic.n_test", 3) != h
    assert params_hash(base, list(reversed(keys))) == h  # order of the list does not matter


def test_content_hash_sees_content_and_names_and_skips_dvcignored(tmp_path):
    (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    ck = tmp_path / "ck" / "round-1"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"w1")
    (ck / "trainer_state.pt").write_bytes(b"s1")
    h = content_hash(["ck"], tmp_path)
    (ck / "trainer_state.pt").write_bytes(b"s2")  # .dvcignore: trainer internals
    (tmp_path / "ck" / "checkpoint-3").mkdir()
    (tmp_path / "ck" / "checkpoint-3" / "optimizer.pt").write_bytes(b"x")
    assert content_hash(["ck"], tmp_path) == h
    (ck / "model.safetensors").write_bytes(b"w2")
    assert content_hash(["ck"], tmp_path) != h
    (ck / "model.safetensors").write_bytes(b"w1")
    assert content_hash(["ck"], tmp_path) == h
    (ck / "model.safetensors").rename(ck / "other.safetensors")
    assert content_hash(["ck"], tmp_path) != h
    with pytest.raises(FileNotFoundError):
        content_hash(["nope"], tmp_path)


def test_claim_outputs_resumes_same_key_and_sets_others_aside(tmp_path):
    out, runs = tmp_path / "ck", tmp_path / "runs"
    a = StageIdentity("train", "p1", "c1", {"sft": "h1"})
    b = StageIdentity("train", "p2", "c1", {"sft": "h1"})
    assert a.key != b.key and a.key == StageIdentity("train", "p1", "c1", {"sft": "h1"}).key
    assert claim_outputs(a, [out, runs], log=lambda m: None) is False  # nothing to resume yet
    (out / "round-1").mkdir()
    runs.mkdir()
    (runs / "multipliers.csv").write_text("a")
    assert claim_outputs(a, [out, runs], log=lambda m: None) is True
    assert (out / "round-1").is_dir()
    msgs = []
    assert claim_outputs(b, [out, runs], log=msgs.append) is False
    assert not (out / "round-1").exists() and not runs.exists()
    assert (tmp_path / "ck.stale" / "round-1").is_dir() and (tmp_path / "runs.stale" / "multipliers.csv").is_file()
    assert json.loads((out / "stage.json").read_text())["key"] == b.key
    assert "another stage key" in msgs[0]
    # an output without stage.json (unknown origin) is not resumed either
    (out / "stage.json").unlink()
    (out / "round-9").mkdir()
    assert claim_outputs(b, [out, runs], log=msgs.append) is False
    assert (tmp_path / "ck.stale" / "round-9").is_dir()  # one stale slot: the previous one replaced


# --------------------------------------------------------------------------------------------
# Flows under one prefect_test_harness
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project with the smoke params; tests chdir into it (the flow's paths are relative)."""
    from flows.scratch import make_scratch_project

    return make_scratch_project(tmp_path_factory.mktemp("flows") / "project", git_dvc=False)


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


def _read_artifacts(keys: list[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    latest: dict[str, object] = {}
    for a in sorted(arts, key=lambda a: a.created):
        latest[a.key] = a.data
    return latest


def _stages_flow():
    from prefect import flow

    from flows.pipeline import run_params, stage_identity
    from tasks.common import run_stage
    from tasks.stages import base_model, stage_data

    @flow(name="fgrpo-stages-under-test")
    def first_two(overrides: list[str]) -> list[str]:
        run = run_params("params.yaml", overrides)
        model = run_stage(base_model, run, stage_identity("tiny_model", run))
        data = run_stage(stage_data, run, stage_identity("stage_data", run))
        return [model.content_hash, data.content_hash]

    return first_two


def test_stage_cache_skips_unchanged_and_reruns_what_changed(harness, in_project):
    first_two = _stages_flow()
    manifest = in_project / "data/staged/manifest.json"
    model_cfg = in_project / "models/tiny-qwen2.5-vl/config.json"

    hashes = first_two([])
    t_data, t_model = manifest.stat().st_mtime_ns, model_cfg.stat().st_mtime_ns
    # the model is there before the data: prompts were counted by its processor, not the byte bound
    assert json.loads(manifest.read_text())["prompt_length"] == "exact: Qwen2_5_VLProcessor of models/tiny-qwen2.5-vl"

    assert first_two([]) == hashes  # cached: nothing rewritten
    assert (manifest.stat().st_mtime_ns, model_cfg.stat().st_mtime_ns) == (t_data, t_model)

    # outputs deleted behind the cache's back -> that stage runs again, the other stays cached
    import shutil

    shutil.rmtree(in_project / "data/staged")
    assert first_two([]) == hashes
    assert manifest.is_file() and model_cfg.stat().st_mtime_ns == t_model

    # outputs rewritten (e.g. by `dvc repro` with other params) -> rerun restores them
    t_data = manifest.stat().st_mtime_ns
    manifest.write_text("{}")
    assert first_two([]) == hashes
    assert json.loads(manifest.read_text())["content_hash"]

    # a params key stage_data reads -> only stage_data reruns
    t_data = manifest.stat().st_mtime_ns
    new = first_two(["data.synthetic.n_test=5"])
    assert new[0] == hashes[0] and new[1] != hashes[1]
    assert json.loads(manifest.read_text())["splits"]["test_synthetic"]["count"] == 5
    assert manifest.stat().st_mtime_ns != t_data and model_cfg.stat().st_mtime_ns == t_model
    first_two([])  # back to the smoke data for the next test


# Bytecode as dis.dis() prints it (an offset, an opcode name, its argument).
DISASSEMBLY = re.compile(r"\b(RESUME|LOAD_GLOBAL|LOAD_CONST|LOAD_FAST|RETURN_VALUE|PRECALL|CALL)\s+\d")


def _flow_run_logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_a_stage_log_shows_the_pipeline_not_its_dependencies(harness, in_project):
    # Under log_prints=True (as the pipeline flows run), the stage-data task used to log ~40 lines
    # of bytecode per dataset (datasets' fingerprint pickling disassembles functions into a
    # captured stdout that Prefect's print rerouting bypasses), and every GPU stage warned that the
    # fgrpo-gpu limit does not exist on a local API. Measured: without log_prints=False on the
    # stage-data task this test finds 24 disassembly lines (RESUME, LOAD_GLOBAL (pa), ...); with it, 0.
    from prefect import flow

    from flows.pipeline import run_params, stage_identity
    from tasks.common import GPU_LIMIT, gpu_slot, run_stage
    from tasks.stages import base_model, stage_data

    @flow(name="fgrpo-stage-logs-under-test", log_prints=True)
    def stage_with_prints(overrides: list[str]) -> str:
        run = run_params("params.yaml", overrides)
        run_stage(base_model, run, stage_identity("tiny_model", run))
        with gpu_slot():  # what sft, train and evaluate hold; no limit exists on the test API
            pass
        return run_stage(stage_data, run, stage_identity("stage_data", run)).content_hash

    state = stage_with_prints(["data.synthetic.n_test=6"], return_state=True)  # a key not cached: it runs
    assert state.is_completed(), state.message
    messages = _flow_run_logs(state.state_details.flow_run_id)
    assert any("Finished in state Completed" in m for m in messages), messages  # the logs were read
    assert json.loads((in_project / "data/staged/manifest.json").read_text())["splits"]["test_synthetic"]["count"] == 6
    bytecode = [m for m in messages if DISASSEMBLY.search(m)]
    assert not bytecode, f"{len(bytecode)} log lines of disassembly, e.g. {bytecode[:3]}"
    assert not [m for m in messages if "do not exist" in m and GPU_LIMIT in m]
    _stages_flow()([])  # back to the smoke data for the next tests


def test_gpu_slot_creates_the_missing_limit_and_holds_it(harness):
    """A GPU stage on an API without the ``fgrpo-gpu`` limit creates it (1 slot; no "limit does not
    exist" warning, and stages are serialised) and holds its one slot while it runs."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks.common import _LIMIT_CHECKED, GPU_LIMIT, gpu_limit_exists, gpu_slot

    @flow(name="fgrpo-gpu-slot-under-test")
    def hold() -> int:
        with gpu_slot():
            with get_client(sync_client=True) as client:
                return client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots

    with get_client(sync_client=True) as client:  # earlier stages of this session may have made it
        try:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            pass
    _LIMIT_CHECKED.clear()
    assert not gpu_limit_exists()
    try:
        assert hold() == 1  # the stage held the one slot while it ran
        assert gpu_limit_exists()
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
        _LIMIT_CHECKED.clear()


@pytest.mark.slow
def test_rounds_subflow_artifacts_cache_and_fresh_start(harness, in_project):
    """Two fgrpo-round subflows over one live trainer (transformers engine, policy = tiny model):
    a round summary per round, progress 100%, a cached rerun, a params change starts over."""
    import pandas as pd
    from prefect import flow

    from flows.pipeline import run_params, stage_identity
    from flows.rounds import train_rounds
    from tasks.common import run_stage

    _stages_flow()([])  # the tiny model and the staged data
    base = ["fgrpo.init_from=models/tiny-qwen2.5-vl", "rollout.engine=hf"]

    @flow(name="fgrpo-train-under-test")
    def train(overrides: list[str]):
        run = run_params("params.yaml", overrides)
        return run_stage(train_rounds, run, stage_identity("train", run))

    out = train(base)
    ckpt = in_project / "checkpoints/fgrpo/round-2"
    assert out.path == "checkpoints/fgrpo/round-2" and (ckpt / "trainer_state.pt").is_file()
    arts = _read_artifacts(["fgrpo-round-1", "fgrpo-round-2", "fgrpo-rounds"])
    hist = pd.read_csv(in_project / "runs/train_metrics.csv")
    assert hist["round"].tolist() == [1, 2]
    for r in (1, 2):
        md = arts[f"fgrpo-round-{r}"]
        row = hist[hist["round"] == r].iloc[0]
        assert f"FGRPO round {r}" in md
        # the spatial row: its batch mean, tau_G = 0.65 and the lambda it used, as train_metrics.csv has them
        spatial = next(line for line in md.splitlines() if line.startswith("| spatial"))
        cells = [c.strip() for c in spatial.strip("|").split("|")]
        assert cells[2] == "0.65"
        assert math.isclose(float(cells[1]), row["reward_spatial"], abs_tol=5e-4)
        assert math.isclose(float(cells[5]), row["lambda_spatial"], abs_tol=5e-4)
        assert math.isclose(float(cells[6]), row["lambda_next_spatial"], abs_tol=5e-4)
    assert float(arts["fgrpo-rounds"]) == 100.0

    t = (ckpt / "model.safetensors").stat().st_mtime_ns
    assert train(base) == out  # cached: no trainer, no engine
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == t

    @flow(name="fgrpo-train-uncached")
    def train_uncached(overrides: list[str]):  # as after `dvc repro`: no Prefect cache, outputs of this key
        run = run_params("params.yaml", overrides)
        return train_rounds.with_options(refresh_cache=True)(params=run, identity=stage_identity("train", run))

    assert train_uncached(base) == out  # every round of this key on disk: nothing retrained
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == t

    changed = train([*base, "fgrpo.lr=0.001"])  # another key: old rounds set aside, two fresh rounds
    assert changed.content_hash != out.content_hash
    assert (in_project / "checkpoints/fgrpo.stale/round-2").is_dir()
    assert pd.read_csv(in_project / "runs/train_metrics.csv")["round"].tolist() == [1, 2]


def _write_eval(path: Path, n_correct: int, n_inconsistent: int) -> str:
    from fgrpo_core.eval.metrics import compute_metrics
    from fgrpo_core.eval.report import write_metrics_json
    from fgrpo_core.eval.results import JudgeOutcome, SampleResult

    ok = JudgeOutcome.ok
    rows = [SampleResult("synthetic", "t", f"s{i}", i < n_correct, True, 10, False, math.nan, ok,
                         0.0 if i < n_inconsistent else 1.0, ok, 1.0, rotations=1,
                         rotations_correct=int(i < n_correct)) for i in range(50)]
    write_metrics_json(compute_metrics(rows, n_boot=20), path)
    return str(path)


def test_regression_gate_fails_loudly_with_an_artifact(harness, tmp_path):
    from prefect import flow

    from flows.evaluation import RegressionError, regression_gate

    base = _write_eval(tmp_path / "base.json", 30, 5)  # accuracy 0.60, IR 0.10
    same = _write_eval(tmp_path / "same.json", 30, 5)
    worse = _write_eval(tmp_path / "worse.json", 25, 5)  # accuracy 0.50: 10 points below
    tol = {"accuracy": 0.02, "inconsistency_rate": 0.02}

    @flow(name="gate-under-test")
    def gate(baseline: str, current: str) -> int:
        return regression_gate(baseline, current, tol)

    assert gate(base, same) == 4  # synthetic + mean, accuracy + IR
    assert "No regression" in _read_artifacts(["eval-regression-gate"])["eval-regression-gate"]

    state = gate(base, worse, return_state=True)
    assert state.is_failed()
    with pytest.raises(RegressionError, match=r"synthetic.accuracy: 0.6000 -> 0.5000"):
        state.result()
    md = _read_artifacts(["eval-regression-gate"])["eval-regression-gate"]
    assert "**REGRESSION**" in md and "synthetic.accuracy" in md

    assert gate(str(tmp_path / "missing.json"), same) == 0  # no stored metrics yet: nothing to compare


def test_sft_model_folder_is_where_train_and_evaluate_look():
    from fgrpo_core.train.sft import MODEL_SUBDIR
    from flows.cmd_train import init_path

    p = load_params(ROOT / "params.yaml")
    assert init_path(p) == Path(p.sft.out_dir) / MODEL_SUBDIR
    assert "${sft.out_dir}/" + MODEL_SUBDIR in load_stages(ROOT)["train"].inputs


@pytest.mark.slow
def test_repro_flow_writes_the_table_and_its_artifacts(harness, in_project):
    """The fgrpo-repro flow on the smoke params: cached stages, then `fgrpo repro` for two rows
    (its own engine, in a subprocess), then the summary, table and plots as artifacts."""
    from flows.repro import fgrpo_repro

    # eval.min_sft_margin=-1: the untrained tiny SFT is at chance, which the SFT check would refuse
    out = fgrpo_repro("params.yaml", ["fgrpo.rounds=1", "eval.circular=[synthetic]", "eval.min_sft_margin=-1"],
                      variants=["grpo_t", "fgrpo"], seeds=[0])
    assert out["metrics"] == "repro/metrics/summary.json"
    summary = json.loads((in_project / out["metrics"]).read_text())
    assert set(summary) == {"sft", "grpo_t", "fgrpo", "target", "paired", "sft_val"}
    for row in ("grpo_t-s0", "fgrpo-s0"):
        assert (in_project / "repro/runs" / row / "runs" / "round-1" / "rollouts.parquet").is_file()
    arts = _read_artifacts(["repro-summary", "repro-table", "repro-plots"])
    assert "IR(GRPO-T) / IR(FGRPO)" in arts["repro-summary"]
    assert "fgrpo-s0" in arts["repro-table"]
    assert "multipliers.png" in arts["repro-plots"] and "curves.png" in arts["repro-plots"]
    with pytest.raises(ValueError, match="unknown variant"):
        fgrpo_repro("params.yaml", [], variants=["grpo_t", "nope"])

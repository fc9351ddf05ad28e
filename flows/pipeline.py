"""The ``fgrpo`` flow: the whole pipeline, one stage after another.

    fgrpo(params_file, overrides)
      base model -> stage data -> SFT -> FGRPO rounds (one fgrpo-round subflow each) -> evaluate
      -> version (dvc commit, dvc push when a remote is configured)

Every stage is the ``dvc.yaml`` stage of the same name, run through the same code, and is
skipped when its stage key (params keys, code and input contents, ``flows/stages.py``) matches a
cached run whose outputs are still on disk. Run it with ``fgrpo pipeline --params FILE`` or
through the ``fgrpo/full-pipeline`` deployment (prefect.yaml), from the project folder.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from fgrpo_core.config import load_params
from flows.rounds import RUNNER_CODE, train_rounds
from flows.stages import StageIdentity, identity_from_disk, project_root
from tasks.common import run_stage
from tasks.stages import RunParams, base_model, evaluate, sft, stage_data
from tasks.version import default_remote, push, record_versions, remote_settings


def run_params(params_file: str, overrides: list[str] | None) -> RunParams:
    """The params of this run; the flow must run from the project folder (paths are relative)."""
    root = project_root()
    if root != Path.cwd().resolve():
        raise RuntimeError(f"run the flow from the project folder {root} (cwd is {Path.cwd()})")
    overrides = tuple(overrides or ())
    return RunParams(params_file, overrides, load_params(params_file, list(overrides)))


def stage_identity(stage: str, run: RunParams, **kw) -> StageIdentity:
    """The stage's key, from the inputs on disk now (after the stages before it ran)."""
    extra = {
        # Read by the Prefect side only: where the base model is and whether to build it.
        "tiny_model": dict(runner_params=("model.path", "model.build_tiny")),
        "train": dict(runner_code=RUNNER_CODE),
    }.get(stage, {})
    return identity_from_disk(stage, run.params, **extra, **kw)


@flow(name="fgrpo", log_prints=True)
def fgrpo_pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Stage data -> SFT -> FGRPO rounds -> evaluate -> version, for one params file (+ overrides)."""
    run = run_params(params_file, overrides)

    model = run_stage(base_model, run, stage_identity("tiny_model", run))
    data = run_stage(stage_data, run, stage_identity("stage_data", run))
    warm = run_stage(sft, run, stage_identity("sft", run))
    policy = run_stage(train_rounds, run, stage_identity("train", run))
    metrics = run_stage(evaluate, run, stage_identity("evaluate", run), checkpoint=policy.path)

    versioned = record_versions(run)
    remote = remote_settings(run.params.storage)  # None: the project's default DVC remote, if any
    pushed = bool(versioned and (remote or default_remote()))
    if pushed:
        push(remote)

    get_run_logger().info("done: policy %s, metrics %s", policy.path, metrics.path)
    return {"model": model.path, "data": data.path, "sft": warm.path, "policy": policy.path,
            "metrics": metrics.path, "versioned": versioned, "pushed": pushed}

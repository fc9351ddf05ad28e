"""The pipeline's stage tasks, one per ``dvc.yaml`` stage (rounds: ``tasks/rounds.py``).

Each is a thin wrapper: the same ``fgrpo_core`` call (or the same ``fgrpo`` command, as a
subprocess for the heavy ones) that the stage's ``dvc.yaml`` command makes, cached on the stage
key (``tasks/common.py``), with an artifact saying what it produced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from fgrpo_core.config import Params
from flows.stages import StageIdentity
from tasks.common import STAGE_CACHE, Output, fgrpo_argv, gpu_slot, run_command
from tasks.reports import metrics_table_markdown, plots_markdown


@dataclass(frozen=True)
class RunParams:
    """The params of one flow run: the file, the overrides, and what they resolve to."""

    file: str
    overrides: tuple[str, ...]
    params: Params


# --------------------------------------------------------------------------------------------
# 1. base model
# --------------------------------------------------------------------------------------------
@task(name="base-model", cache_policy=STAGE_CACHE)
def base_model(params: RunParams, identity: StageIdentity) -> Output:
    """The policy to start from; the tiny Qwen2.5-VL is built here when the params ask for it."""
    mp = params.params.model
    path = Path(mp.path)
    if mp.build_tiny:
        from fgrpo_core.models.tiny import build_tiny_model

        build_tiny_model(path, mp.tiny)
        get_run_logger().info("built the tiny Qwen2.5-VL at %s", path)
    elif not path.exists():
        raise FileNotFoundError(f"model.path {path} does not exist and model.build_tiny is false; "
                                "download the model there first")
    return Output.of("tiny_model", path)


# --------------------------------------------------------------------------------------------
# 2. data
# --------------------------------------------------------------------------------------------
# log_prints=False: `datasets` fingerprints each new dataset by pickling it with dill, whose
# function pickler disassembles bytecode with dis.dis() into a captured sys.stdout. The flows'
# log_prints=True reroutes print() to the run logger, past that capture: ~40 lines of bytecode in
# the task log per dataset. Staging logs through get_run_logger and its artifact, never print().
@task(name="stage-data", cache_policy=STAGE_CACHE, log_prints=False)
def stage_data(params: RunParams, identity: StageIdentity) -> Output:
    """Synthetic splits and imported benchmarks -> ``data.out_dir`` (+ manifest.json)."""
    import datasets

    from fgrpo_core.data.stage import stage_data as stage
    from fgrpo_core.data.stage import prompt_counter

    datasets.disable_progress_bars()
    p = params.params
    count, counted_by = prompt_counter(p.model)
    manifest = stage(p.data, p.model.min_pixels, p.model.max_pixels, p.data.out_dir,
                     prompt_tokens=count, prompt_length=counted_by)
    rows = [f"| {name} | {rep['count']} | {rep['dropped_overlong']} | {rep['faults'] or ''} |"
            for name, rep in manifest["splits"].items()]
    create_markdown_artifact(
        "\n".join([f"## Staged data: `{p.data.out_dir}`", f"content hash `{manifest['content_hash'][:16]}`",
                   f"prompt length: {manifest['prompt_length']}", "",
                   "| split | samples | dropped (over-long) | SFT trace faults |", "|---|---|---|---|", *rows]),
        key="staged-data", description="splits written by stage-data",
    )
    empty = [n for n, rep in manifest["splits"].items() if rep["count"] == 0]
    if empty:
        raise ValueError(f"stage-data: splits {empty} are empty (every prompt over data.max_prompt_tokens="
                         f"{p.data.max_prompt_tokens}?)")
    return Output.of("stage_data", p.data.out_dir)


# --------------------------------------------------------------------------------------------
# 3. SFT (subprocess: accelerate/TRL memory is freed when it ends)
# --------------------------------------------------------------------------------------------
_EPOCH = re.compile(r"'epoch':\s*'?([0-9.]+)")


@task(name="sft", cache_policy=STAGE_CACHE)
def sft(params: RunParams, identity: StageIdentity) -> Output:
    """``fgrpo sft`` as a subprocess, with a progress artifact from its log lines."""
    from fgrpo_core.train.sft import MODEL_SUBDIR

    sp = params.params.sft
    progress = create_progress_artifact(0.0, key="sft-progress", description="SFT epochs done (%)")

    def on_line(line: str) -> None:
        m = _EPOCH.search(line)
        if m and sp.epochs > 0:
            update_progress_artifact(progress, min(100.0, 100.0 * float(m.group(1)) / sp.epochs))

    with gpu_slot():
        run_command(fgrpo_argv("sft", params.file, params.overrides), on_line)
    update_progress_artifact(progress, 100.0)
    out_dir = Path(sp.out_dir)
    summary = json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").is_file() else {}
    create_markdown_artifact(
        "\n".join([
            f"## SFT warm start: `{out_dir / MODEL_SUBDIR}`",
            f"- steps: {summary.get('global_step', '?')}, samples: {summary.get('n_train', '?')} "
            f"(dropped over-long: {summary.get('n_dropped', '?')})",
            f"- loss curve: `{(out_dir / 'loss.png').resolve()}`, log: `{(out_dir / 'train_log.csv').resolve()}`",
        ]),
        key="sft-summary", description="SFT result",
    )
    return Output.of("sft", out_dir / MODEL_SUBDIR)


# --------------------------------------------------------------------------------------------
# 5. evaluate (subprocess: its own vLLM engine, freed when it ends)
# --------------------------------------------------------------------------------------------
@task(name="evaluate", cache_policy=STAGE_CACHE)
def evaluate(params: RunParams, identity: StageIdentity, checkpoint: str, artifact_key: str = "eval") -> Output:
    """``fgrpo evaluate --checkpoint C``; artifacts: the final metrics table and the plot paths."""
    from fgrpo_core.eval.outputs import benchmark_table_path, headline_path
    from flows.judge_keys import endpoint_in_use, export_judge_key

    ep = params.params.eval
    # the judge's key, if a Secret block holds it: the command below inherits this environment
    export_judge_key(endpoint_in_use(params.params.judges), log=get_run_logger().info)
    with gpu_slot():
        run_command(fgrpo_argv("evaluate", params.file, params.overrides, "--checkpoint", checkpoint))
    table = benchmark_table_path(ep.out_path)
    create_markdown_artifact(metrics_table_markdown(table, title=f"Evaluation of `{checkpoint}`"),
                             key=f"{artifact_key}-metrics", description="final metrics per benchmark")
    create_markdown_artifact(plots_markdown(ep.report_dir), key=f"{artifact_key}-plots",
                             description="report and plots")
    return Output.of("evaluate", ep.out_path, str(headline_path(ep.out_path)), ep.samples_path, str(table),
                     ep.report_dir)

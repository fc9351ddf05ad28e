"""The ``fgrpo-repro`` flow: the paper's ablation table at toy scale (issue #11).

    fgrpo-repro(params_file="params/repro-tiny.yaml", overrides, variants, seeds)
      base model -> stage data -> SFT          the pipeline's own cached stage tasks
      ablation rows                            ``fgrpo repro`` (one engine for every row and seed;
                                               finished rows with the same settings are reused)
      report                                   the seed summary with the target check, the paired
                                               table, and the figures, as Prefect artifacts

The same table is the DVC stage ``repro/dvc.yaml`` (``dvc repro repro/dvc.yaml``) and the
deployment ``fgrpo-repro/ablation-table`` (prefect.yaml).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.cmd_repro import DEFAULT_SEEDS, VARIANTS
from flows.pipeline import run_params, stage_identity
from tasks.common import fgrpo_argv, gpu_slot, run_command, run_stage
from tasks.reports import plots_markdown
from tasks.stages import RunParams, base_model, sft, stage_data

ROWS_DIR, METRICS_DIR, REPORT_DIR = "repro/runs", "repro/metrics", "repro/reports"


@task(name="ablation-rows")
def ablation_rows(run: RunParams, variants: list[str], seeds: list[int]) -> str:
    """``fgrpo repro`` as a subprocess (its engine's memory is freed when it ends)."""
    with gpu_slot():
        run_command(fgrpo_argv("repro", run.file, run.overrides, "--variants", ",".join(variants),
                               "--seeds", ",".join(str(s) for s in seeds), "--dir", ROWS_DIR, "--metrics-dir", METRICS_DIR,
                               "--report-dir", REPORT_DIR))
    return REPORT_DIR


@task(name="ablation-report")
def ablation_report(report_dir: str) -> str:
    d = Path(report_dir)
    create_markdown_artifact((d / "summary.md").read_text(), key="repro-summary",
                             description="the ablation table: seed means and the target check")
    create_markdown_artifact((d / "table.md").read_text(), key="repro-table",
                             description="every row paired against GRPO-T, bootstrap intervals")
    create_markdown_artifact(plots_markdown(d), key="repro-plots", description="curves and multiplier trajectories")
    return str(d / "summary.md")


@flow(name="fgrpo-repro", log_prints=True)
def fgrpo_repro(params_file: str = "params/repro-tiny.yaml", overrides: list[str] | None = None,
                variants: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """Every row of the ablation table from one SFT checkpoint, evaluated and compared."""
    variants = list(variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"fgrpo-repro: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    run = run_params(params_file, overrides)

    run_stage(base_model, run, stage_identity("tiny_model", run))
    run_stage(stage_data, run, stage_identity("stage_data", run))
    warm = run_stage(sft, run, stage_identity("sft", run))
    report_dir = ablation_rows(run, variants, list(seeds or DEFAULT_SEEDS))
    summary = ablation_report(report_dir)

    get_run_logger().info("done: %s (SFT start %s)", summary, warm.path)
    return {"sft": warm.path, "summary": summary, "metrics": f"{METRICS_DIR}/summary.json"}

"""The ``fgrpo-eval`` flow: evaluate the newest versioned checkpoint, gate against stored metrics.

    fgrpo-eval(params_file, overrides, checkpoint=None, rev=None, baseline=None)
      checkpoint   the newest round checkpoint (else the SFT model), or the one given, or the one
                   DVC versioned at git revision ``rev`` (fetched from the remote)
      evaluate     the evaluate stage with outputs under metrics/nightly/ and reports/nightly/,
                   so the stored metrics stay the baseline
      gate         every gated metric against the baseline (default: the stored eval.out_path)
                   with eval.tolerances; a regression writes an artifact and fails the run

The nightly deployment ``fgrpo-eval/nightly`` (prefect.yaml) runs it on a cron schedule.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import run_params, stage_identity
from tasks.common import run_stage
from tasks.reports import gate_markdown
from tasks.stages import RunParams, evaluate
from tasks.version import fetch_by_revision

NIGHTLY_METRICS = "metrics/nightly"
NIGHTLY_REPORTS = "reports/nightly"


class RegressionError(RuntimeError):
    """The new evaluation fell behind the stored metrics beyond a tolerance."""


def newest_round(folder: Path) -> Path:
    """The highest round-N below a fetched checkpoints folder."""
    from fgrpo_core.checkpoints import newest_checkpoint

    return newest_checkpoint(folder, sft_out_dir=folder)


def checkpoint_to_evaluate(run: RunParams, checkpoint: str | None, rev: str | None) -> str:
    if checkpoint:
        return checkpoint
    if rev:
        folder = fetch_by_revision(run.params.fgrpo.out_dir, rev, Path("checkpoints/fetched") / rev)
        return str(newest_round(folder))
    from fgrpo_core.checkpoints import newest_checkpoint

    return str(newest_checkpoint(run.params.fgrpo.out_dir, run.params.sft.out_dir))


@task(name="regression-gate")
def regression_gate(baseline: str, current: str, tolerances: dict[str, float]) -> int:
    """Compare the new metrics with the baseline; raise (after writing the artifact) on a regression."""
    from fgrpo_core.eval.gate import regression_gate as gate
    from fgrpo_core.eval.report import read_metrics_json

    logger = get_run_logger()
    if not Path(baseline).is_file():
        create_markdown_artifact(f"## No baseline\n\n`{baseline}` does not exist: nothing to compare "
                                 f"`{current}` with.", key="eval-regression-gate")
        logger.warning("no baseline metrics at %s; gate skipped", baseline)
        return 0
    result = gate(read_metrics_json(baseline), read_metrics_json(current), tolerances)
    create_markdown_artifact(gate_markdown(result.checks, baseline, current), key="eval-regression-gate",
                             description="new evaluation vs stored metrics")
    if not result.passed:
        raise RegressionError("regression against " + baseline + ": " +
                              "; ".join(c.reason for c in result.regressions))
    logger.info("no regression: %d checks against %s", len(result.checks), baseline)
    return len(result.checks)


@flow(name="fgrpo-eval", log_prints=True)
def fgrpo_eval(params_file: str = "params.yaml", overrides: list[str] | None = None, checkpoint: str | None = None,
               rev: str | None = None, baseline: str | None = None) -> dict:
    """Evaluate the newest (or given, or DVC revision's) checkpoint and gate it against stored metrics."""
    stored = run_params(params_file, overrides)
    run = run_params(params_file, [*(overrides or ()), f"eval.out_path={NIGHTLY_METRICS}/eval.json",
                                   f"eval.samples_path={NIGHTLY_METRICS}/eval_samples.jsonl",
                                   f"eval.report_dir={NIGHTLY_REPORTS}"])

    ckpt = checkpoint_to_evaluate(run, checkpoint, rev)
    identity = stage_identity("evaluate", run, replace_inputs={"${fgrpo.out_dir}": ckpt})
    current = run_stage(evaluate, run, identity, checkpoint=ckpt, artifact_key="nightly")
    checks = regression_gate(baseline or stored.params.eval.out_path, current.path, run.params.eval.tolerances)
    return {"checkpoint": ckpt, "metrics": current.path, "checks": checks}

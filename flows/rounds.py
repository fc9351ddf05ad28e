"""The FGRPO training stage: one ``fgrpo-round`` subflow per round, over one live trainer.

    train_rounds  (task, cached on the train stage key)
      open the trainer (policy, reference, vLLM engine) from the SFT checkpoint, resume
      for r in next..rounds:   fgrpo-round(r) = rollout -> score -> update   (+ round summary)

The rounds of one stage run in this process, because the trainer holds the live vLLM engine
(starting one costs tens of seconds); the engine is closed when the stage ends. A rerun with the
same stage key resumes after the newest complete round checkpoint; a run with another key moves
the old outputs aside first (``flows.stages.claim_outputs``), as ``fgrpo train`` does.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from fgrpo_core.constraints import taus
from flows.stages import StageIdentity, claim_outputs
from tasks.common import STAGE_CACHE, Output, gpu_slot
from tasks.reports import round_summary_markdown
from tasks.rounds import rollout, score, update
from tasks.stages import RunParams

# The Prefect side of the train stage: part of its cache key (flows.stages.StageIdentity.runner).
RUNNER_CODE = ("flows/rounds.py", "tasks/rounds.py")


@flow(name="fgrpo-round", persist_result=False, validate_parameters=False)
def fgrpo_round(trainer, r: int) -> dict:
    """One policy step: rollout -> score -> update, then the round's constraint summary."""
    batch, chosen, rollout_s = rollout(trainer, r)
    scores, score_s = score(trainer, r, batch, chosen)
    outcome = update(trainer, r, batch, chosen, scores, {"rollout_s": rollout_s, "score_s": score_s})
    fp = trainer.p
    create_markdown_artifact(
        round_summary_markdown(outcome.metrics, taus(fp), trainer.active),
        key=f"fgrpo-round-{r}", description=f"FGRPO round {r}: constraint means vs tau, lambda",
    )
    return outcome.metrics


@task(name="train", cache_policy=STAGE_CACHE)
def train_rounds(params: RunParams, identity: StageIdentity) -> Output:
    """FGRPO rounds 1..fgrpo.rounds (resuming a same-key run), each an ``fgrpo-round`` subflow."""
    from fgrpo_core.train.rounds import RunLayout
    from fgrpo_core.train.setup import create_trainer
    from fgrpo_core.checkpoints import init_path
    from flows.judge_keys import endpoint_in_use, export_judge_key

    logger = get_run_logger()
    p = params.params
    fp = p.fgrpo
    resumable = claim_outputs(identity, [fp.out_dir, fp.run_dir], log=logger.warning)
    layout = RunLayout(Path(fp.run_dir), Path(fp.out_dir))
    if resumable and fp.rounds in layout.completed_rounds():  # e.g. after `dvc repro`: nothing to train
        logger.info("all %d rounds of this stage key are on disk; not starting a trainer", fp.rounds)
        return Output.of("train", layout.checkpoint(fp.rounds), layout.multipliers, layout.metrics)
    export_judge_key(endpoint_in_use(p.judges), log=logger.info)  # the judge's key, if a Secret block holds it
    with gpu_slot():
        trainer = create_trainer(fgrpo=fp, rollout=p.rollout, model=p.model, judges=p.judges,
                                 init_path=init_path(fp.init_from, p.sft.out_dir), data_dir=p.data.out_dir, seed=fp.seed)
        try:
            done = trainer.resume()
            if done:
                logger.info("resuming after round %d from %s", done, trainer.layout.checkpoint(done))
            progress = create_progress_artifact(100.0 * done / fp.rounds, key="fgrpo-rounds",
                                                description=f"FGRPO rounds done of {fp.rounds} (%)")
            for r in range(done + 1, fp.rounds + 1):
                fgrpo_round(trainer, r)
                update_progress_artifact(progress, 100.0 * r / fp.rounds)
        finally:
            close = getattr(trainer.engine, "close", None)
            if close is not None:
                close()
    return Output.of("train", layout.checkpoint(trainer.round), layout.multipliers, layout.metrics)

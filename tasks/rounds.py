"""One FGRPO round as three tasks over the live trainer: rollout -> score -> update.

The trainer (policy, optimiser, the vLLM engine) lives in the flow's process and is handed from
task to task in memory: nothing here is cached or persisted (``persist_result=False``), since a
model or a batch of rollouts neither hashes stably nor belongs in a result store (docs/method.md#prefect-caching-and-gpu-stages).
What a round leaves on disk (rollouts.parquet, scores.parquet, the round checkpoint, the
multiplier history) the trainer writes itself, exactly as ``fgrpo train`` does.

No retries here: a model judge behind an endpoint already retries transient errors with backoff
in its client (``judges.model_judge.max_retries``), and a failed verdict is counted, never a
score; a second retry layer around the whole round would multiply into long stalls and replay
the rollouts (docs/method.md#judges-at-scale).
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

_IN_MEMORY = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="rollout", **_IN_MEMORY)
def rollout(trainer, r: int):
    """G completions per prompt from the engine's current policy -> round-r/rollouts.parquet."""
    batch, chosen, seconds = trainer.rollout_step(r)
    return batch, chosen, seconds


@task(name="score", **_IN_MEMORY)
def score(trainer, r: int, batch, chosen):
    """R_fmt, R_acc, R_task and the constraint signals (NaN = n/a) -> round-r/scores.parquet."""
    t0 = time.perf_counter()
    scores = trainer.score_step(r, batch, chosen)
    return scores, time.perf_counter() - t0


@task(name="update", **_IN_MEMORY)
def update(trainer, r: int, batch, chosen, scores, timings: dict[str, float]):
    """Advantages with lambda of round r-1, clipped-surrogate + KL steps, dual ascent, weight push,
    round checkpoint and the rewritten histories."""
    return trainer.update_step(r, batch, chosen, scores, timings)

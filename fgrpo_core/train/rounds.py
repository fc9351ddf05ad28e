"""FGRPO rounds: rollout -> score -> constrained update -> dual ascent, resumable.

One round is one policy step of the paper (docs/method.md#constrained-objective to #policy-step):

    prompts   the next ``rollout_batch`` RL prompts (seeded order, cursor kept across rounds)
    rollout   G completions each from the live vLLM engine            -> round-r/rollouts.parquet
    score     R_fmt, R_acc, R_task, R_C, R_S, R_G (masks, NaN = n/a)   -> round-r/scores.parquet
    update    advantages for the configured mode with lambda from the end of round r-1, then
              clipped-surrogate + KL steps (update.py)                 -> checkpoints/round-r/
    dual      lambda_k <- clip(lambda_k + eta (tau_k - c_k), 0, lambda_max)  -> multipliers.csv
    push      the new weights into the live engine (no restart)

Every random choice is derived from (seed, round), and the state needed to continue (policy,
optimiser, scheduler, lambda and its history, data cursor, RNG, per-round metrics) is saved with
each round's checkpoint, which appears under its final name only when complete (temporary
directory, then rename). A resumed run therefore replays exactly what an uninterrupted one does,
and the CSVs are rewritten whole from that state (DVC outputs are never appended to).

Several processes (``accelerate launch``): the main process alone holds the rollout engine and
the judge; it samples and scores each round and sends the rollouts and scores to every rank
(``accelerate.utils.broadcast_object_list``), so all ranks see the same batch, the same
advantages and the same constraint means (the dual step is identical everywhere without any
further exchange). The update is sharded across ranks (update.py). Only the main process writes
files (parquet, CSVs, checkpoints) and pushes weights into the engine; ranks meet after each
checkpoint (``wait_for_everyone``) and all read the checkpoint when resuming (one machine or a
shared filesystem). A failure on the main process is sent to the other ranks as an error rather
than leaving them waiting.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fgrpo_core.advantages import compute_advantages
from fgrpo_core.config import AdvantageMode, FGRPOParams, RolloutParams
from fgrpo_core.data.schema import Sample
from fgrpo_core.judges.base import Judge
from fgrpo_core.checkpoints import STATE_FILE, completed_rounds, round_checkpoint  # noqa: F401 (STATE_FILE re-exported)
from fgrpo_core.lagrangian import DualAscent, constraint_stats, write_history_csv
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, RolloutBatch, SamplingSettings
from fgrpo_core.train.policy import EncodedPrompt, encode_prompt
from fgrpo_core.train.scoring import CONSTRAINTS, RoundScores, score_rollouts
from fgrpo_core.train.threads import cpu_threads
from fgrpo_core.train.update import PolicyUpdater, UpdateSettings


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLayout:
    """Where a training run writes (all paths explicit; nothing else is touched)."""

    run_dir: Path  # rollouts, scores, multiplier history, metrics
    ckpt_dir: Path  # round checkpoints

    def round_dir(self, r: int) -> Path:
        return self.run_dir / f"round-{r}"

    def checkpoint(self, r: int) -> Path:
        return round_checkpoint(self.ckpt_dir, r)

    @property
    def multipliers(self) -> Path:
        return self.run_dir / "multipliers.csv"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "train_metrics.csv"

    def partial_files(self) -> list[Path]:
        """Temporary files of interrupted writes (``_atomic_file`` names them ``.<name>.<random>``)."""
        names = ("multipliers.csv", "train_metrics.csv", "rollouts.parquet", "scores.parquet")
        found = []
        for d in (self.run_dir, *self.run_dir.glob("round-*")):
            for name in names:
                found += [p for p in d.glob(f".{name}.*") if p.is_file()]
        return found

    def completed_rounds(self) -> list[int]:
        """Rounds whose checkpoint is complete (temporary directories start with '.')."""
        return list(completed_rounds(self.ckpt_dir, needs=STATE_FILE))


def _atomic_file(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pandas as pd

    _atomic_file(path, lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))


def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    _atomic_file(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------
@dataclass
class Cursor:
    """Position in the seeded prompt order; a new permutation each pass over the data."""

    epoch: int = 0
    position: int = 0


def next_prompts(n_samples: int, batch: int, cursor: Cursor, seed: int) -> tuple[list[int], Cursor]:
    """The next ``batch`` sample indices (no repeats within a batch) and the advanced cursor."""
    if batch > n_samples:
        raise ValueError(f"rollout_batch {batch} is larger than the RL split ({n_samples} prompts)")
    epoch, pos = cursor.epoch, cursor.position
    if pos + batch > n_samples:  # start the next pass rather than mix two permutations
        epoch, pos = epoch + 1, 0
    perm = torch.randperm(n_samples, generator=torch.Generator().manual_seed(_derive(seed, "data", epoch)))
    return perm[pos : pos + batch].tolist(), Cursor(epoch, pos + batch)


def _derive(seed: int, *keys) -> int:
    h = hashlib.sha256(":".join(map(str, (seed, *keys))).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
@dataclass
class RoundOutcome:
    """What one round produced (also one row of train_metrics.csv)."""

    metrics: dict
    multiplier_records: list = field(default_factory=list)


def _numpy_rng_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _nanmean(t: torch.Tensor) -> float:
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if ok.any() else math.nan


def _escape_shares(scores: RoundScores) -> dict[str, float]:
    e = scores.escapes
    if e is None:
        return {c: math.nan for c in ESCAPE_COLUMNS}
    return {"semantic_undefined_share": e.semantic_undefined_share,
            "consistency_unjudged_share": e.consistency_unjudged_share,
            "unparsable_share": e.unparsable_share}


ESCAPE_COLUMNS = ("semantic_undefined_share", "consistency_unjudged_share", "unparsable_share")


class FGRPOTrainer:
    """Runs rounds on a live rollout engine. Build with :meth:`create`, then :meth:`resume`,
    then :meth:`run_round` for each round (or :meth:`run`)."""

    def __init__(self, *, params: FGRPOParams, rollout: RolloutParams, engine, judge: Judge, model, ref_model,
                 processor, samples: Sequence[Sample], layout: RunLayout, seed: int, mixed_precision: str = "no"):
        self.p, self.rp = params, rollout
        self.engine, self.judge = engine, judge
        self.processor = processor
        self.samples = list(samples)
        ids = [s.id for s in self.samples]
        if len(set(ids)) != len(ids):
            raise ValueError("the RL split has duplicate sample ids")
        self.layout = layout
        self.seed = seed
        self.active = list(params.constraints)
        self.dual = DualAscent.from_params(params)
        if params.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.updater = PolicyUpdater(model, ref_model, processor.tokenizer.pad_token_id,
                                     UpdateSettings.from_params(params, rollout, mixed_precision))
        if self.is_main and engine is None:
            raise ValueError("the main process needs a rollout engine")
        self.cursor = Cursor()
        self.round = 0
        self.history: list[dict] = []  # train_metrics rows
        self._encoded: dict[str, EncodedPrompt] = {}

    # ------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Continue from the newest complete checkpoint, if any; returns the rounds done."""
        layout = self.layout
        if self.is_main:
            if layout.ckpt_dir.is_dir():
                for junk in layout.ckpt_dir.glob(".round-*"):  # an interrupted save
                    shutil.rmtree(junk, ignore_errors=True)
            for junk in layout.partial_files():  # an interrupted CSV/parquet write (never read)
                junk.unlink(missing_ok=True)
        self.updater.accelerator.wait_for_everyone()
        done = layout.completed_rounds()
        if not done:
            return 0
        r = done[-1]
        ckpt = layout.checkpoint(r)
        # mmap: under FSDP every rank reads the full optimiser state; the pages are shared, not copied
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
        # save_pretrained writes checkpoint-format names; let from_pretrained map them back.
        from fgrpo_core.models.loading import load_policy

        model = self.updater.accelerator.unwrap_model(self.updater.model)
        if self.is_main or not self.updater.sharded:  # sharded: the main process's copy is broadcast
            saved = load_policy(ckpt, dtype=next(model.parameters()).dtype).state_dict()
        else:
            saved = {}
        self.updater.load_weights(saved)
        del saved
        self.updater.load_state_dict(state["updater"])
        self.dual.load_state_dict(state["dual"])
        self.cursor = Cursor(**state["cursor"])
        self.round = int(state["round"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate((state["rng"]["python"][0], tuple(state["rng"]["python"][1]), state["rng"]["python"][2]))
        if self.is_main:
            self.engine.load_weights_from(ckpt)  # the engine samples the resumed policy, not the SFT one
            # Versions count the run's policy steps, not the engine's reloads: after resuming from
            # round r the engine holds policy r, as in an uninterrupted run (rollouts record it).
            self.engine.policy_version = self.round
            self._write_histories()
        return self.round

    # ------------------------------------------------------------------ one round
    def _prompt(self, s: Sample) -> PromptInput:
        return PromptInput(s.id, build_messages(s.question, s.choices), s.image)

    def rollout_step(self, r: int) -> tuple[RolloutBatch, list[Sample], float]:
        idx, self._next_cursor = next_prompts(len(self.samples), self.p.rollout_batch, self.cursor, self.seed)
        chosen = [self.samples[i] for i in idx]
        sampling = SamplingSettings(n=self.rp.group_size, temperature=self.rp.temperature, top_p=self.rp.top_p,
                                    max_tokens=self.rp.max_tokens, seed=_derive(self.seed, "sample", r))

        def sample() -> tuple[RolloutBatch, float]:
            t0 = time.perf_counter()
            batch = self.engine.generate([self._prompt(s) for s in chosen], sampling)
            seconds = time.perf_counter() - t0
            rows = [dict(asdict(x), round=r, policy_version=batch.policy_version) for x in batch.rollouts]
            _write_parquet(rows, self.layout.round_dir(r) / "rollouts.parquet")
            return batch, seconds

        batch, seconds = self._on_main(sample, f"round {r}: rollout")
        return batch, chosen, seconds

    def score_step(self, r: int, batch: RolloutBatch, chosen: Sequence[Sample]) -> RoundScores:
        def score() -> RoundScores:
            scores = score_rollouts(batch.rollouts, {s.id: s for s in chosen}, self.judge, self.active)
            _write_parquet([dict(row, round=r) for row in scores.rows()],
                           self.layout.round_dir(r) / "scores.parquet")
            return scores

        return self._on_main(score, f"round {r}: scoring")

    def update_step(self, r: int, batch: RolloutBatch, chosen: Sequence[Sample], scores: RoundScores,
                    timings: dict[str, float]) -> RoundOutcome:
        task, cons, gid = scores.tensors()
        lambdas_used = self.dual.lambdas  # from the end of round r-1 [ours]
        adv = compute_advantages(self.p.mode, task, cons, lambdas_used, active=self.active, eps=self.p.adv_eps,
                                 whiten=self.p.whiten, unbiased=self.p.adv_std_unbiased,
                                 group_ids=gid, parts=scores.task_rewards()).to(torch.float32)
        if not torch.isfinite(adv).all():
            raise FloatingPointError(f"round {r}: non-finite advantages")
        for s in chosen:
            if s.id not in self._encoded:
                self._encoded[s.id] = encode_prompt(self.processor, self._prompt(s))
        rollouts = batch.rollouts
        t0 = time.perf_counter()
        with cpu_threads(self.p.cpu_threads, field="fgrpo.cpu_threads"):
            stats = self.updater.step([self._encoded[x.prompt_id] for x in rollouts],
                                      [x.token_ids for x in rollouts], adv, gid,
                                      torch.Generator().manual_seed(_derive(self.seed, "update", r)))
        t_update = time.perf_counter() - t0
        means, counts = constraint_stats({k: cons[k] for k in self.active})
        records = self.dual.update(means, counts)  # after the primal step (docs/method.md#dual-ascent)
        # On every rank, once a round (under FSDP a gather of the shards): the push and the checkpoint.
        weights = dict(self.updater.named_weights())
        version = self._on_main(lambda: self.engine.update_weights(weights.items()), f"round {r}: weight push")

        n_tok = sum(len(x.token_ids) for x in rollouts)
        m = {
            "round": r, "mode": AdvantageMode(self.p.mode).value, "prompts": len(chosen), "rollouts": len(rollouts),
            "policy_version": version,
            **{f"reward_{k}": _nanmean(torch.tensor([getattr(s, k) for s in scores.scores], dtype=torch.float64))
               for k in ("task", "fmt", "acc")},
            **{f"reward_{k}": _nanmean(cons[k]) for k in CONSTRAINTS},
            **{f"count_{k}": int((~torch.isnan(cons[k])).sum()) for k in CONSTRAINTS},
            **{f"lambda_{k}": lambdas_used.get(k, math.nan) for k in CONSTRAINTS},
            **{f"lambda_next_{k}": self.dual.lambdas.get(k, math.nan) for k in CONSTRAINTS},
            **{f"slack_{k}": means[k] - self.dual.thresholds[k] for k in self.active},
            # no escape hatches (scoring.py): correct rollouts that gave a judge nothing to rule on
            **_escape_shares(scores),
            "adv_std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "loss": stats.loss, "pg_loss": stats.pg_loss, "kl": stats.kl, "clip_frac": stats.clip_frac,
            "ratio_mean": stats.ratio_mean, "grad_norm": stats.grad_norm, "optimizer_steps": stats.optimizer_steps,
            "response_len": n_tok / max(len(rollouts), 1),
            "truncated_share": sum(x.finish_reason == "length" for x in rollouts) / max(len(rollouts), 1),
            "tokens_per_s": n_tok / max(timings.get("rollout_s", 0.0), 1e-9),
            **{f"judge_{sig}_{st}": scores.judge_status.get(sig, {}).get(st, 0)
               for sig in ("consistency", "semantic") for st in ("ok", "unparseable", "failed")},
            "rollout_s": timings.get("rollout_s", math.nan), "score_s": timings.get("score_s", math.nan),
            "update_s": t_update,
        }
        self.history.append(m)
        self.cursor = self._next_cursor
        self.round = r
        self._save_checkpoint(r, weights)
        del weights
        self._write_histories()
        return RoundOutcome(metrics=m, multiplier_records=records)

    def run_round(self, r: int) -> RoundOutcome:
        if r != self.round + 1:
            raise ValueError(f"round {r} requested, but {self.round} rounds are done")
        batch, chosen, t_roll = self.rollout_step(r)
        t0 = time.perf_counter()
        scores = self.score_step(r, batch, chosen)
        t_score = time.perf_counter() - t0
        return self.update_step(r, batch, chosen, scores, {"rollout_s": t_roll, "score_s": t_score})

    def run(self, rounds: int | None = None, progress: bool = True) -> list[RoundOutcome]:
        from tqdm.auto import tqdm

        total = self.p.rounds if rounds is None else rounds
        out = []
        bar = tqdm(range(self.round + 1, total + 1), desc="FGRPO rounds", disable=not progress,
                   initial=self.round, total=total)
        for r in bar:
            res = self.run_round(r)
            m = res.metrics
            bar.set_postfix(acc=f"{m['reward_acc']:.2f}", task=f"{m['reward_task']:.2f}",
                            **{f"l_{k[:4]}": f"{self.dual.lambdas[k]:.2f}" for k in self.active})
            out.append(res)
        return out

    # ------------------------------------------------------------------ processes
    @property
    def is_main(self) -> bool:
        """The process that samples, scores and writes (the only one without ``accelerate launch``)."""
        return self.updater.accelerator.is_main_process

    def _on_main(self, work: Callable[[], object], what: str):
        """``work()`` on the main process, its result on every rank (one process: just ``work()``)."""
        acc = self.updater.accelerator
        if acc.num_processes == 1:
            return work()
        from accelerate.utils import broadcast_object_list

        box: list = [None]
        failure = None
        if acc.is_main_process:
            try:
                box[0] = ("ok", work())
            except BaseException as err:  # tell the other ranks instead of leaving them waiting
                failure = err
                box[0] = ("failed", f"{type(err).__name__}: {err}")
        broadcast_object_list(box, from_process=0)
        if failure is not None:
            raise failure
        status, value = box[0]
        if status != "ok":
            raise RuntimeError(f"{what} failed on the main process: {value}")
        return value

    # ------------------------------------------------------------------ persistence
    def _write_histories(self) -> None:
        if not self.is_main:
            return
        _atomic_file(self.layout.multipliers, lambda tmp: write_history_csv(self.dual.history, tmp))
        _write_csv(self.history, self.layout.metrics)

    def _save_checkpoint(self, r: int, weights: dict) -> None:
        """Written by the main process; every rank leaves only once the round's checkpoint is complete.
        ``weights``: the round's full weights (``named_weights``); the optimiser state is gathered on
        every rank here (collectives under FSDP)."""
        updater_state = self.updater.state_dict()
        if self.is_main:  # unsharded, save_pretrained takes the model's own (tied) parameters
            self._write_checkpoint(r, weights if self.updater.sharded else None, updater_state)
        del updater_state
        self.updater.accelerator.wait_for_everyone()

    def _write_checkpoint(self, r: int, weights: dict | None, updater_state: dict) -> None:
        final = self.layout.checkpoint(r)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            model = self.updater.accelerator.unwrap_model(self.updater.model)
            model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)  # None: the model's own
            self.processor.save_pretrained(tmp)
            torch.save(
                {
                    "round": r,
                    "cursor": asdict(self.cursor),
                    "dual": self.dual.state_dict(),
                    "updater": updater_state,
                    "history": self.history,
                    # plain lists, so the state loads with torch.load(weights_only=True)
                    "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(),
                            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]},
                },
                tmp / STATE_FILE,
            )
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.p.keep_checkpoints == "latest":
            for old in self.layout.completed_rounds():
                if old < r:
                    shutil.rmtree(self.layout.checkpoint(old), ignore_errors=True)

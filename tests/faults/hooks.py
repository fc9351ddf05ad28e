"""`fgrpo train` with test-only fault hooks: ``python -m tests.faults.hooks [fgrpo train args]``.

This is the real command (``flows.cli.main(["train", ...])``) with a few functions wrapped, so
that a test can stop the process at an exact point and SIGKILL it from outside. Nothing here is
imported by production code; the hooks are switched on by environment variables:

    FGRPO_FAULTS_PAUSE=PHASE@ROUND   stop in round ROUND at PHASE (below): write the marker file,
    FGRPO_FAULTS_MARKER=FILE         then sleep until the test's SIGKILL arrives
    FGRPO_FAULTS_REPLAY=FILE         sample with tests.support.replay.ReplayEngine (traces JSON) instead of
                                     the engine the params name (signals that move; see replay.py)
    FGRPO_FAULTS_LOG=DEBUG           configure the root logger at that level (captured by the test)

Phases, in the order a round reaches them:
    rollout     the engine is mid-generation: the 2nd prompt of the round is being encoded
                (HF engine), or the requests are being built (vLLM engine)
    score       rollouts.parquet is written; the grader has run, the judges not yet
    update      mid-update: the first of the round's optimiser steps is taken, not the second
    checkpoint  the round's checkpoint is being written: weights are in the hidden temporary
                directory and trainer_state.pt holds its first half only
    csv         the checkpoint is complete; train_metrics.csv is being rewritten: its temporary
                file holds the first half of the new text
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from pathlib import Path

PHASES = ("rollout", "score", "update", "checkpoint", "csv")


class _State:
    round = 0  # the round the trainer is in
    encodes = 0  # prompts encoded by the engine in this round
    minibatches = 0  # optimiser steps taken in this round


def _pause_spec() -> tuple[str, int] | None:
    spec = os.environ.get("FGRPO_FAULTS_PAUSE")
    if not spec:
        return None
    phase, r = spec.split("@")
    if phase not in PHASES:
        raise SystemExit(f"FGRPO_FAULTS_PAUSE: unknown phase {phase!r} (known: {PHASES})")
    return phase, int(r)


def _at(phase: str) -> bool:
    spec = _pause_spec()
    return spec is not None and spec == (phase, _State.round)


def _stop_here(phase: str) -> None:
    """Tell the test where we are, then wait for its SIGKILL (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    marker = Path(os.environ["FGRPO_FAULTS_MARKER"])
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(f"{phase}@{_State.round}\n")
    os.replace(tmp, marker)
    while True:
        time.sleep(3600)


def install() -> None:
    import pandas as pd
    import torch

    from fgrpo_core.rollout.hf_engine import HFEngine
    from fgrpo_core.train import rounds, scoring, setup, update

    run_round = rounds.FGRPOTrainer.run_round

    def run_round_hook(self, r):
        _State.round, _State.encodes, _State.minibatches = r, 0, 0
        return run_round(self, r)

    rounds.FGRPOTrainer.run_round = run_round_hook

    encode = HFEngine._inputs

    def encode_hook(self, prompt):
        _State.encodes += 1
        if _State.encodes == 2 and _at("rollout"):
            _stop_here("rollout")
        return encode(self, prompt)

    HFEngine._inputs = encode_hook
    try:  # the vLLM engine builds its requests before one batched generate call
        from fgrpo_core.rollout.vllm_engine import VLLMEngine

        request = VLLMEngine._request

        def request_hook(self, prompt):
            _State.encodes += 1
            if _State.encodes == 2 and _at("rollout"):
                _stop_here("rollout")
            return request(self, prompt)

        VLLMEngine._request = request_hook
    except ImportError:
        pass

    grade = scoring.grade_completions

    def grade_hook(*args, **kwargs):
        out = grade(*args, **kwargs)
        if _at("score"):
            _stop_here("score")
        return out

    scoring.grade_completions = grade_hook

    minibatch = update.PolicyUpdater._minibatch

    def minibatch_hook(self, *args, **kwargs):
        out = minibatch(self, *args, **kwargs)
        _State.minibatches += 1
        if _State.minibatches == 1 and _at("update"):
            _stop_here("update")
        return out

    update.PolicyUpdater._minibatch = minibatch_hook

    save = torch.save

    def save_hook(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).name == rounds.STATE_FILE and _at("checkpoint"):
            buf = io.BytesIO()
            save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(f, "wb") as fh:  # a write cut off half-way
                fh.write(data[: len(data) // 2])
            _stop_here("checkpoint")
        return save(obj, f, *args, **kwargs)

    torch.save = save_hook

    to_csv = pd.DataFrame.to_csv

    def to_csv_hook(self, path_or_buf=None, *args, **kwargs):
        if isinstance(path_or_buf, (str, os.PathLike)) and Path(path_or_buf).name.startswith(".train_metrics.csv.") \
                and _at("csv"):
            text = to_csv(self, None, *args, **kwargs)
            Path(path_or_buf).write_text(text[: len(text) // 2])
            _stop_here("csv")
        return to_csv(self, path_or_buf, *args, **kwargs)

    pd.DataFrame.to_csv = to_csv_hook

    replay = os.environ.get("FGRPO_FAULTS_REPLAY")
    if replay:
        from fgrpo_core.models.loading import load_processor
        from tests.support.replay import ReplayEngine

        traces = {k: tuple(v) for k, v in json.loads(Path(replay).read_text()).items()}

        def replay_engine(init_path, rollout, model, seed):
            return ReplayEngine(traces, load_processor(init_path).tokenizer)

        setup.make_engine = replay_engine


def main(argv: list[str]) -> int:
    level = os.environ.get("FGRPO_FAULTS_LOG")
    if level:
        logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install()
    from flows.cli import main as cli

    return cli(["train", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

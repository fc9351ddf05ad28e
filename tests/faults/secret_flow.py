"""Prefect flow runs for tests/faults/test_secrets_and_loading.py, each in its own process (as a
process work pool starts a flow run), against the Prefect API in ``PREFECT_API_URL``:

    python -m tests.faults.secret_flow train --params FILE [--set key=value ...]
        the train stage exactly as the ``fgrpo`` flow runs it (``run_params`` ->
        ``run_stage(train_rounds, ...)``: the judge's key is exported from its Secret block by
        the task), with the tests.faults.hooks installed (``FGRPO_FAULTS_REPLAY``: replayed
        completions, so the judges are really called)
    python -m tests.faults.secret_flow leak --params FILE [--set key=value ...]
        the negative control: exports the key the same way, then logs it on purpose (through the
        flow's logger and through a ``fgrpo_core`` logger in a task), so a test can show that
        its scan finds a key that reaches Prefect's logs

The project's loggers (``fgrpo_core``, ``openai``) are set to DEBUG; with
``PREFECT_LOGGING_EXTRA_LOGGERS=fgrpo_core,openai`` their records go to the Prefect API too.
The last line printed is ``FLOW_RUN_ID <uuid>``. Nothing here is imported by production code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from prefect import flow, get_run_logger, task

from flows.judge_keys import endpoint_in_use, export_judge_key
from flows.pipeline import run_params, stage_identity


@flow(name="fgrpo-train-secret-under-test")
def train_stage(params_file: str, overrides: list[str]) -> str:
    from flows.rounds import train_rounds
    from tasks.common import run_stage

    run = run_params(params_file, overrides)
    return run_stage(train_rounds, run, stage_identity("train", run)).path


@task(name="leak")
def _leak(var: str) -> None:
    logging.getLogger("fgrpo_core.judges.model").warning("deliberately logged key: %s", os.environ[var])


@flow(name="fgrpo-leak-control")
def leak(params_file: str, overrides: list[str]) -> None:
    run = run_params(params_file, overrides)
    endpoint = endpoint_in_use(run.params.judges)
    logger = get_run_logger()
    export_judge_key(endpoint, log=logger.info)
    logger.info("deliberately logged key: %s", os.environ[endpoint.api_key_env])
    _leak(endpoint.api_key_env)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.secret_flow")
    ap.add_argument("which", choices=["train", "leak"])
    ap.add_argument("--params", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    for name in ("fgrpo_core", "openai"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    if args.which == "train":
        from tests.faults.hooks import install

        install()
    state = {"train": train_stage, "leak": leak}[args.which](args.params, args.overrides, return_state=True)
    print(f"FLOW_RUN_ID {state.state_details.flow_run_id}", flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What every stage task shares: its key, what it returns, how heavy work runs, the GPU slot.

Cache policy (docs/method.md#prefect-caching-and-gpu-stages): a stage task is cached on its :class:`StageIdentity` only,
the hashes of the params keys, code and input contents that ``dvc.yaml`` lists for the stage
(``flows/stages.py``), never on Prefect's default (which holds the run id) nor on the task's own
source lines. The params object itself is passed too, but is not part of the key.

A cached result says where the outputs were and what they hashed to. Before trusting it,
:func:`run_stage` checks that the outputs on disk still hash the same (deleted, or rewritten by
``dvc repro`` with other params, or checked out at another revision); if not, it reruns the stage
with ``refresh_cache=True``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from prefect import get_run_logger
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.concurrency.sync import concurrency

from flows.stages import StageIdentity, content_hash

GPU_LIMIT = "fgrpo-gpu"  # global concurrency limit: `prefect gcl create fgrpo-gpu --limit 1`


@dataclass(frozen=True)
class Output:
    """What a stage left on disk: paths (relative to the project) and their content hash."""

    stage: str
    paths: tuple[str, ...]
    content_hash: str

    @classmethod
    def of(cls, stage: str, *paths: str | Path) -> "Output":
        ps = tuple(str(p) for p in paths)
        return cls(stage, ps, content_hash(ps))

    @property
    def path(self) -> str:
        return self.paths[0]

    def matches_disk(self) -> bool:
        try:
            return content_hash(self.paths) == self.content_hash
        except FileNotFoundError:
            return False


def _stage_key(_ctx: Any, inputs: dict[str, Any]) -> str:
    ident: StageIdentity = inputs["identity"]
    return f"fgrpo-{ident.stage}-{ident.cache_key}"


STAGE_CACHE = CacheKeyFnPolicy(cache_key_fn=_stage_key)


def run_stage(task, params: Any, identity: StageIdentity, **kwargs: Any) -> Output:
    """Call a stage task; rerun it (refreshing its cache) if a cached result's outputs changed."""
    state = task(params=params, identity=identity, return_state=True, **kwargs)
    out: Output = state.result()
    if state.name == "Cached" and not out.matches_disk():
        get_run_logger().warning(
            f"{identity.stage}: cached result {identity.cache_key} no longer matches {', '.join(out.paths)} "
            "on disk (deleted or rewritten); running the stage again"
        )
        out = task.with_options(refresh_cache=True)(params=params, identity=identity, **kwargs)
    return out


_LIMIT_CHECKED: set[str] = set()


def ensure_gpu_limit() -> None:
    """Create the ``fgrpo-gpu`` limit (1 slot) on the API this run talks to, when it is missing.

    ``fgrpo prefect up`` creates it on a server; a local ``fgrpo pipeline`` talks to a temporary
    API over the same database, where nobody did, and Prefect warned on every GPU stage that the
    limit does not exist (and serialised nothing). An existing limit keeps its value.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        if client.api_url and str(client.api_url) in _LIMIT_CHECKED:
            return
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
            except ObjectAlreadyExists:  # another flow run created it meanwhile
                pass
        _LIMIT_CHECKED.add(str(client.api_url))


def gpu_limit_exists() -> bool:
    """Whether the Prefect API this run talks to holds the ``fgrpo-gpu`` global concurrency limit."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            return False
    return True


@contextlib.contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold one slot of the ``fgrpo-gpu`` limit while a GPU stage runs.

    Serialises GPU stages across flow runs (the nightly evaluation and a training run); the
    limit is created (1 slot) when the API has none.
    """
    ensure_gpu_limit()
    with concurrency(GPU_LIMIT, occupy=1, strict=False):
        yield


def fgrpo_argv(command: str, params_file: str, overrides: Sequence[str], *extra: str) -> list[str]:
    """``python -m flows.cli COMMAND --params FILE --set k=v ...``: the command dvc.yaml runs."""
    argv = [sys.executable, "-m", "flows.cli", command, "--params", params_file]
    for o in overrides:
        argv += ["--set", o]
    return [*argv, *extra]


def run_command(argv: Sequence[str], on_line: Callable[[str], None] | None = None, tail: int = 40) -> None:
    """Run a stage command as a subprocess (its memory is freed when it ends), streaming its
    output to the task log; raise with the last lines of output when it fails."""
    logger = get_run_logger()
    logger.info("running: %s", shlex.join(argv))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    last: deque[str] = deque(maxlen=tail)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            last.append(line)
            if line.strip():
                logger.info(line)
            if on_line is not None:
                on_line(line)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"`{shlex.join(argv[2:])}` failed with exit code {rc}; last output:\n" + "\n".join(last))

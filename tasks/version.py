"""Versioning with DVC: record the run in dvc.lock and the cache, push to the remote, fetch back.

- ``dvc commit`` records the outputs a flow run made as the results of their ``dvc.yaml`` stages,
  which is true only when the run used exactly the params DVC reads (``params.yaml``); a run
  with other params or overrides is left unrecorded, and the artifact says why.
- The remote (S3 or any S3-compatible store) comes from ``storage.remote_url`` /
  ``storage.endpoint_url`` or the environment (``FGRPO_DVC_REMOTE``, ``FGRPO_S3_ENDPOINT``), and
  is written to ``.dvc/config`` (a URL, never a secret); else it is the project's default DVC
  remote when one is configured (``dvc remote add -d storage s3://bucket/fgrpo`` or a folder). Credentials come from the environment
  only (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` or ``AWS_PROFILE``),
  read by s3fs/boto when DVC talks to the store.
- Only talking to the remote can fail for outside reasons, so only those tasks retry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from fgrpo_core.config import ParamsError, StorageParams, load_params
from tasks.stages import RunParams

REMOTE_NAME = "storage"
DVC_PARAMS = "params.yaml"  # the params file dvc.yaml reads


def dvc(*args: str, cwd: str | Path = ".") -> str:
    """Run ``dvc ARGS`` (this interpreter's DVC); raise with DVC's own message on failure."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr or proc.stdout}")
    return proc.stdout


@dataclass(frozen=True)
class Remote:
    url: str
    endpoint_url: str | None


def remote_settings(storage: StorageParams) -> Remote | None:
    """The remote the params or the environment name (environment wins); None when neither does."""
    url = os.environ.get("FGRPO_DVC_REMOTE") or storage.remote_url
    endpoint = os.environ.get("FGRPO_S3_ENDPOINT") or storage.endpoint_url
    return Remote(url, endpoint) if url else None


def configure_remote(remote: Remote, root: str | Path = ".") -> None:
    """Make ``remote`` the default DVC remote of the project (URL and endpoint only)."""
    dvc("remote", "add", "--force", "--default", REMOTE_NAME, remote.url, cwd=root)
    if remote.endpoint_url:
        dvc("remote", "modify", REMOTE_NAME, "endpointurl", remote.endpoint_url, cwd=root)
    else:
        dvc("remote", "modify", "--unset", REMOTE_NAME, "endpointurl", cwd=root)


def default_remote(root: str | Path = ".") -> str | None:
    """The name of the project's default DVC remote (``dvc remote default``), None when unset."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def dvc_reads_same_params(run: RunParams) -> tuple[bool, str]:
    """Does ``params.yaml`` resolve to the params this run used? (else dvc.lock would lie)."""
    if not Path(DVC_PARAMS).is_file():
        return False, f"no {DVC_PARAMS} here"
    try:
        dvc_params = load_params(DVC_PARAMS)
    except ParamsError as err:
        return False, str(err)
    if dvc_params != run.params:
        a, b = dvc_params.model_dump(mode="json"), run.params.model_dump(mode="json")
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        return False, (f"this run's params ({run.file}, overrides {list(run.overrides)}) differ from "
                       f"{DVC_PARAMS} in section(s) {differ}")
    return True, ""


@task(name="dvc-commit")
def record_versions(run: RunParams) -> bool:
    """``dvc commit``: dvc.lock and the DVC cache now hold this run's outputs (when truthful)."""
    logger = get_run_logger()
    if not Path(".dvc").is_dir():
        create_markdown_artifact("## Not versioned\n\nno `.dvc/` here (run `dvc init`)", key="versioning")
        logger.warning("not a DVC project; outputs not versioned")
        return False
    same, why = dvc_reads_same_params(run)
    if not same:
        create_markdown_artifact(
            f"## Not versioned\n\n{why}.\n\nTo version such a run, write its params to `{DVC_PARAMS}` "
            f"(`fgrpo pipeline --params {run.file} --write-params {DVC_PARAMS} ...`) and rerun.",
            key="versioning")
        logger.warning("outputs not recorded in dvc.lock: %s", why)
        return False
    dvc("commit", "--force")
    status = dvc("status")
    create_markdown_artifact(f"## Versioned with DVC\n\n`dvc.lock` updated (commit it with git).\n\n"
                             f"`dvc status`:\n```\n{status.strip()}\n```", key="versioning")
    return True


@task(name="dvc-push", retries=3, retry_delay_seconds=[10, 30, 90])
def push(remote: Remote | None) -> str:
    """``dvc push`` to ``remote`` (made the default first), or to the default remote when None
    (retried: the store can be briefly unreachable)."""
    if remote is not None:
        configure_remote(remote)
    out = dvc("push")
    get_run_logger().info(out.strip())
    return out


@task(name="dvc-get", retries=3, retry_delay_seconds=[10, 30, 90])
def fetch_by_revision(path: str, rev: str, dest: str | Path) -> Path:
    """The DVC-tracked ``path`` as it was at git revision ``rev``, fetched from the remote."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    dvc("get", ".", path, "--rev", rev, "--out", str(dest))
    return dest

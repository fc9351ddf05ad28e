"""A scratch copy of the project for a whole-pipeline run (tests, bench/orchestration.py), or a
fresh ``git clone`` of it set up the way a user sets one up (:func:`clone_project`).

The copy holds the code, dvc.yaml, .dvcignore, prefect.yaml and a ``params.yaml`` resolved from a
preset plus overrides, inside a fresh git repository with DVC initialised, so ``dvc repro``,
``fgrpo pipeline`` and ``prefect deploy`` run there exactly as in a checkout. :func:`scratch_env`
gives the environment that makes commands run there import the copy's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from fgrpo_core.config import load_params
from flows.cmd_pipeline import write_params

PROJECT = Path(__file__).resolve().parents[1]
COPIED = ("fgrpo_core", "flows", "tasks", "dvc.yaml", ".dvcignore", "prefect.yaml")

# The smallest settings that still run every stage for real on the tiny model (CPU, ~3 min).
SMOKE_OVERRIDES = (
    "name=tiny-smoke",
    "data.synthetic.n_sft=16", "data.synthetic.n_rl=8", "data.synthetic.n_val=4", "data.synthetic.n_test=8",
    "sft.epochs=1", "sft.per_device_batch_size=8", "sft.effective_batch_size=8",
    "rollout.group_size=2", "rollout.max_tokens=16",
    "fgrpo.rounds=2", "fgrpo.rollout_batch=4", "fgrpo.update_batch=4", "fgrpo.micro_batch=8",
    "fgrpo.lambda_min_count=2",
    "eval.max_tokens=16", "eval.bootstrap=20", "eval.limit=8",
)


def scratch_env(project: str | Path, prefect_home: str | Path | None = None) -> dict[str, str]:
    """Environment for commands run in the scratch project: its code first, offline hub."""
    project = Path(project)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(project)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def _run(argv: Sequence[str], cwd: Path) -> None:
    subprocess.run(list(argv), cwd=cwd, check=True, capture_output=True, text=True)


def make_scratch_project(dest: str | Path, preset: str | Path = PROJECT / "params" / "tiny.yaml",
                         overrides: Sequence[str] = SMOKE_OVERRIDES, git_dvc: bool = True) -> Path:
    """Copy the project's code into ``dest`` with ``params.yaml`` = ``preset`` + ``overrides``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / name)
    write_params(load_params(preset, list(overrides)), dest / "params.yaml", str(preset), overrides)
    (dest / ".gitignore").write_text("__pycache__/\n*.pyc\n.prefect/\n*.stale/\n*.log\n")
    if git_dvc:
        _run(["git", "init", "-q"], dest)
        _run(["git", "config", "user.email", "scratch@fgrpo.invalid"], dest)
        _run(["git", "config", "user.name", "fgrpo scratch"], dest)
        _run([sys.executable, "-m", "dvc", "init", "-q"], dest)
        _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], dest)
        _run(["git", "add", "-A"], dest)
        _run(["git", "commit", "-q", "-m", "scratch project"], dest)
    return dest


def clone_project(dest: str | Path, overrides: Sequence[str] = SMOKE_OVERRIDES, source: str | Path = PROJECT) -> Path:
    """``git clone`` the project (its committed HEAD) into ``dest``, then what a user types there for
    a small run: ``fgrpo pipeline --params params/tiny.yaml --set ... --write-params params.yaml``.

    Nothing else is prepared: ``.dvc/``, ``dvc.yaml``, ``prefect.yaml`` and the code are the
    repository's. The clone gets a local git identity so commits work on a bare CI machine.
    """
    dest = Path(dest)
    _run(["git", "clone", "-q", str(source), str(dest)], dest.parent)
    _run(["git", "config", "user.email", "clone@fgrpo.invalid"], dest)
    _run(["git", "config", "user.name", "fgrpo clone"], dest)
    argv = [sys.executable, "-m", "flows.cli", "pipeline", "--params", "params/tiny.yaml"]
    for o in overrides:
        argv += ["--set", o]
    subprocess.run([*argv, "--write-params", "params.yaml"], cwd=dest, env=scratch_env(dest), check=True,
                   capture_output=True, text=True)
    return dest

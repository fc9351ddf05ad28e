"""Fast checks of the pieces the fresh-clone tests (test_dvc_pipeline, test_deploy) rely on: the
committed .dvc/, the flow's push to the project's default DVC remote (a local folder), and the
parts of `fgrpo prefect` that need no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_is_a_dvc_repository_without_a_lock():
    tracked = subprocess.run(["git", "ls-files", ".dvc", ".dvcignore", "dvc.lock"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert {".dvc/config", ".dvc/.gitignore", ".dvcignore"} <= set(tracked)
    assert "dvc.lock" not in tracked  # docs/orchestration.md, "dvc.lock: yours, not ours"
    assert {"/cache", "/tmp", "/config.local"} <= set((ROOT / ".dvc/.gitignore").read_text().split())


def _dvc(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_push_goes_to_the_default_remote_a_user_added(tmp_path, monkeypatch):
    from prefect.logging import disable_run_logger

    from tasks.version import default_remote, push

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo 42 > out.txt\n    outs:\n      - out.txt\n")
    _dvc(repo, "repro")
    assert default_remote(repo) is None

    store = tmp_path / "store"
    _dvc(repo, "remote", "add", "-d", "storage", str(store))  # the README's one line
    assert default_remote(repo) == "storage"
    monkeypatch.chdir(repo)
    with disable_run_logger():
        push.fn(None)  # what the flow does when neither params nor environment name a remote
    pushed = [p for p in store.rglob("*") if p.is_file()]
    assert len(pushed) == 1 and pushed[0].read_text() == "42\n"


def test_prefect_up_reads_the_pool_from_prefect_yaml_and_trusts_only_prefect_pids(tmp_path):
    from flows.cmd_prefect import _our_pid, deployments_pool

    assert deployments_pool(ROOT) == "fgrpo-process"
    pidfile = tmp_path / "x.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process that is not a prefect command
    assert _our_pid(pidfile) is None
    pidfile.write_text("not a pid\n")
    assert _our_pid(pidfile) is None
    assert _our_pid(tmp_path / "missing.pid") is None


def test_prefect_command_outside_the_project_is_refused(tmp_path, monkeypatch, capsys):
    from flows.cmd_prefect import main

    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 2
    assert "no prefect.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sideways"])

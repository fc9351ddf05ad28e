"""``fgrpo prefect up|down|status``: the local Prefect side of the project, in one command.

    fgrpo prefect up [--host 127.0.0.1] [--port 4200]
        1 server       `prefect server start` in the background (skipped when one answers there)
        2 work pool    `fgrpo-process`, type process (created when missing)
        3 limit        global concurrency limit `fgrpo-gpu` = 1 (created when missing; an existing
                       limit keeps the value it has)
        4 deployments  `prefect --no-prompt deploy --all` from prefect.yaml (updates them in place)
        5 worker       `prefect worker start --pool fgrpo-process` in the background (skipped
                       when the one it started is still running); waits until it is online
    fgrpo prefect down      stop the worker and the server it started (their process groups)
    fgrpo prefect status    what runs, with pids, logs and the API URL

Idempotent: a second ``up`` finds everything in place and starts nothing. Run it from the
project folder; the server and worker outlive the shell (own session), their pids and logs are
in ``.prefect-local/`` and ``.prefect-local/env`` holds ``export PREFECT_API_URL=...`` for the
shell that runs ``prefect deployment run``. The server keeps its database in ``PREFECT_HOME``
(default ``~/.prefect``). Exit codes: 0 done, 1 a step failed (the message names it and shows
the end of its log).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import httpx
import yaml

STATE_DIR = ".prefect-local"
POOL = "fgrpo-process"
LIMIT = "fgrpo-gpu"  # tasks/common.GPU_LIMIT (not imported: that module imports Prefect's engine)
PREFECT = str(Path(sys.executable).parent / "prefect")


class StepError(RuntimeError):
    pass


def _state(root: Path) -> Path:
    d = root / STATE_DIR
    d.mkdir(exist_ok=True)
    return d


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else "(no log)"


def _our_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` when that process still runs and is a prefect command (not a reused pid)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid if "prefect" in cmdline else None


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _start(argv: list[str], cwd: Path, env: dict, log: Path, pidfile: Path) -> subprocess.Popen:
    """Start ``argv`` in its own session (it outlives this shell), output to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def up_server(root: Path, host: str, port: int, timeout: float) -> str:
    state = _state(root)
    api = f"http://{host}:{port}/api"
    pidfile, log = state / "server.pid", state / "server.log"
    pid = _our_pid(pidfile)
    if _healthy(api):
        print(f"server: running at {api}" + (f" (pid {pid})" if pid else " (not started by fgrpo: using it)"))
        return api
    if pid is None:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        proc = _start([PREFECT, "server", "start", "--host", host, "--port", str(port)], state, env, log, pidfile)
        pid = proc.pid
        print(f"server: starting at {api} (pid {pid}, log {log})", flush=True)
    deadline = time.monotonic() + timeout
    while not _healthy(api):
        if _our_pid(pidfile) is None:
            raise StepError(f"server: exited before answering at {api}; end of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StepError(f"server: no answer at {api}/health after {timeout:.0f} s; end of {log}:\n{_tail(log)}")
        time.sleep(1)
    print(f"server: up at {api}", flush=True)
    return api


async def _pool_and_limit(pool: str, limit: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            wp = await client.read_work_pool(pool)
            if wp.type != "process":
                raise StepError(f"work pool: '{pool}' exists with type '{wp.type}'; the local worker needs type "
                                f"'process' (delete it, or point prefect.yaml at another pool)")
            print(f"work pool: '{pool}' exists (process)")
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            print(f"work pool: created '{pool}' (process)")
        try:
            gcl = await client.read_global_concurrency_limit_by_name(limit)
            print(f"concurrency limit: '{limit}' exists (limit {gcl.limit})")
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
            print(f"concurrency limit: created '{limit}' (limit 1)")


async def _online_workers(pool: str) -> int:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        workers = await client.read_workers_for_work_pool(pool)
    return sum(1 for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE")


def deployments_pool(root: Path) -> str:
    """The work pool prefect.yaml's deployments use (one pool for all of them)."""
    spec = yaml.safe_load((root / "prefect.yaml").read_text()) or {}
    pools = {d.get("work_pool", {}).get("name") for d in spec.get("deployments") or ()}
    if len(pools) != 1 or None in pools:
        raise StepError(f"prefect.yaml: expected one work pool for all deployments, found {sorted(map(str, pools))}")
    return pools.pop()


def up(root: Path, host: str, port: int, timeout: float) -> str:
    pool = deployments_pool(root)
    api = up_server(root, host, port, timeout)
    os.environ["PREFECT_API_URL"] = api  # for this process's client and every command below
    asyncio.run(_pool_and_limit(pool, LIMIT))

    state = _state(root)
    env = dict(os.environ)
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=root, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    (state / "deploy.log").write_text(deploy.stdout + deploy.stderr)
    if deploy.returncode != 0:
        raise StepError(f"deploy: `prefect --no-prompt deploy --all` failed ({deploy.returncode}):\n"
                        f"{(deploy.stdout + deploy.stderr)[-3000:]}")
    names = sorted(set(re.findall(r"Deployment '([^']+)' successfully", deploy.stdout)))
    print(f"deployments: {', '.join(names) or 'deployed'} (prefect.yaml)")

    pidfile, log = state / "worker.pid", state / "worker.log"
    pid = _our_pid(pidfile)
    if pid is None:
        pid = _start([PREFECT, "worker", "start", "--pool", pool], root, env, log, pidfile).pid
        print(f"worker: starting on '{pool}' (pid {pid}, log {log})", flush=True)
    deadline = time.monotonic() + timeout
    while asyncio.run(_online_workers(pool)) == 0:
        if _our_pid(pidfile) is None:
            raise StepError(f"worker: exited; end of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StepError(f"worker: not online in '{pool}' after {timeout:.0f} s; end of {log}:\n{_tail(log)}")
        time.sleep(2)
    print(f"worker: online on '{pool}' (pid {pid})")
    (state / "env").write_text(f"export PREFECT_API_URL={api}\n")
    return api


def _stop(pidfile: Path, what: str, timeout: float = 30) -> None:
    pid = _our_pid(pidfile)
    if pid is None:
        print(f"{what}: not running")
        pidfile.unlink(missing_ok=True)
        return
    # Its own session: the group holds what it started (the server's API workers, the worker's flow runs).
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _our_pid(pidfile) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    if _our_pid(pidfile) is not None:
        os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    print(f"{what}: stopped (pid {pid})")


def down(root: Path) -> None:
    state = root / STATE_DIR
    _stop(state / "worker.pid", "worker")
    _stop(state / "server.pid", "server")
    (state / "env").unlink(missing_ok=True)


def status(root: Path) -> bool:
    state = root / STATE_DIR
    env = state / "env"
    api = env.read_text().strip().split("=", 1)[1] if env.is_file() else None
    ok = True
    for what in ("server", "worker"):
        pid = _our_pid(state / f"{what}.pid")
        ok &= pid is not None
        print(f"{what}: " + (f"running (pid {pid}, log {state / f'{what}.log'})" if pid else "not running"))
    if api:
        print(f"api: {api} ({'answers' if _healthy(api) else 'no answer'})")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo prefect", description="bring the local Prefect side up or down")
    ap.add_argument("action", choices=("up", "down", "status"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4200)
    ap.add_argument("--timeout", type=float, default=300, help="seconds each step may wait (server, deploy, worker)")
    args = ap.parse_args(list(argv or []))
    root = Path.cwd()
    if not (root / "prefect.yaml").is_file():
        print(f"fgrpo prefect: run it from the project folder (no prefect.yaml in {root})", file=sys.stderr)
        return 2
    try:
        if args.action == "up":
            api = up(root, args.host, args.port, args.timeout)
            print(f"\nPrefect is up. UI: {api[:-len('/api')]}\nIn your shell:  export PREFECT_API_URL={api}"
                  f"   (or: source {STATE_DIR}/env)")
        elif args.action == "down":
            down(root)
        else:
            return 0 if status(root) else 1
    except (StepError, subprocess.TimeoutExpired) as err:
        print(f"fgrpo prefect {args.action}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

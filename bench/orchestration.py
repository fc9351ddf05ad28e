"""Orchestration overhead: a cached rerun of the Prefect flow and a no-op `dvc repro`, against the
full run of the tiny pipeline they skip.

    python bench/orchestration.py [--workdir DIR] [--out FILE.json]

In a scratch copy of the project (git + DVC, tiny preset at the smallest sizes that run every
stage for real, flows/scratch.py):
    1. full      `fgrpo pipeline --params params.yaml`: every stage runs, then `dvc commit`
    2. cached    the same command again: every stage is a Prefect cache hit       goal < 60 s
    3. no-op     `dvc repro`: dvc.lock (written by step 1) matches, nothing runs  goal < 10 s
Each step is a fresh process timed from the outside (interpreter start, imports and, for
Prefect, its temporary local API included), as a user would wait for it. Steps 2 and 3 fail the
benchmark if anything ran.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.scratch import make_scratch_project, scratch_env  # noqa: E402

GOALS = {"cached_flow_s": 60.0, "noop_repro_s": 10.0}


def timed(argv: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    log.write_text(out)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}); log: {log}\n{out[-3000:]}")
    return seconds, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fgrpo-bench-orch-"))
    root = make_scratch_project(work / "project")
    env = scratch_env(root, prefect_home=work / "prefect-home")
    flow = [sys.executable, "-m", "flows.cli", "pipeline", "--params", "params.yaml"]

    full, _ = timed(flow, root, env, work / "full.log")
    cached, out = timed(flow, root, env, work / "cached.log")
    states = re.findall(r"Task run '([a-z-]+)-[0-9a-f]+' - Finished in state (\w+)", out)
    ran = [name for name, state in states if state != "Cached" and name not in ("dvc-commit", "dvc-push")]
    if ran:
        sys.exit(f"cached rerun ran {ran}; log: {work / 'cached.log'}")
    noop, out = timed([sys.executable, "-m", "dvc", "repro"], root, env, work / "repro.log")
    if "Running stage" in out:
        sys.exit(f"`dvc repro` after the flow ran stages; log: {work / 'repro.log'}")

    res = {"full_flow_s": round(full, 1), "cached_flow_s": round(cached, 1), "noop_repro_s": round(noop, 1),
           "cached_share_of_full": round(cached / full, 3), "noop_share_of_full": round(noop / full, 3),
           "cached_tasks": len(states)}
    print(f"tiny pipeline, scratch project {root}")
    print(f"  full Prefect run          {full:7.1f} s")
    print(f"  cached Prefect rerun      {cached:7.1f} s  ({100 * cached / full:4.1f}% of full; goal < {GOALS['cached_flow_s']:.0f} s)"
          f"  {'ok' if cached < GOALS['cached_flow_s'] else 'MISSED'}")
    print(f"  no-op dvc repro           {noop:7.1f} s  ({100 * noop / full:4.1f}% of full; goal < {GOALS['noop_repro_s']:.0f} s)"
          f"  {'ok' if noop < GOALS['noop_repro_s'] else 'MISSED'}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the fault suite: a small staged dataset, the tiny preset with small sizes,
and `fgrpo train` as a subprocess that a test can stop at an exact point and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "params" / "tiny.yaml"
N_RL = 8
TIMING_COLUMNS = ["rollout_s", "score_s", "update_s", "tokens_per_s"]


@pytest.fixture(scope="session")
def faults_data(tmp_path_factory):
    """A staged dataset from the tiny preset (8 RL prompts), and the SFT-style traces of the RL
    prompts (for tests.support.replay.ReplayEngine), as a JSON file."""
    from fgrpo_core.config import load_params
    from fgrpo_core.data.stage import stage_data
    from fgrpo_core.data.synthetic import generate_samples

    out = tmp_path_factory.mktemp("faults-data")
    p = load_params(PRESET, [f"data.synthetic.n_sft=2", f"data.synthetic.n_rl={N_RL}", "data.synthetic.n_val=2",
                             "data.synthetic.n_test=2", "data.max_prompt_tokens=512"])
    stage_data(p.data, p.model.min_pixels, p.model.max_pixels, out / "data")
    s = p.data.synthetic
    s.inconsistent_share = s.hallucination_share = s.bad_box_share = 0.3
    traced = generate_samples(s, n=N_RL, split="rl", with_trace=True)
    traces = out / "traces.json"
    traces.write_text(json.dumps({t.id: [t.trace, t.answer, list(t.choices)] for t in traced}))
    return out / "data", traces


def train_overrides(work: Path, model_dir: Path, data_dir: Path, **extra) -> list[str]:
    """`--set` overrides of the tiny preset: very small sizes, every path inside ``work``."""
    sets = {
        "model.path": model_dir, "data.out_dir": data_dir, "fgrpo.init_from": model_dir,
        "fgrpo.run_dir": work / "runs", "fgrpo.out_dir": work / "ckpt", "judges.cache_dir": work / "judge-cache",
        "rollout.engine": "hf", "rollout.group_size": 2, "rollout.max_tokens": 16,
        "fgrpo.rollout_batch": 4, "fgrpo.update_batch": 2, "fgrpo.micro_batch": 8, "fgrpo.rounds": 3,
    }
    sets.update(extra)
    return ["--params", str(PRESET), *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # One thread each: results do not depend on how many threads a busy machine gives, and two
    # runs can go side by side on two cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith("FGRPO_FAULTS_")]:
        del env[k]
    env.update(extra)
    return env


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    stopped_at: str | None  # the pause point reached (then the process was SIGKILLed)

    def tail(self, n: int = 3000) -> str:
        return f"--- stdout ---\n{self.stdout[-n:]}\n--- stderr ---\n{self.stderr[-n:]}"


class TrainProcess:
    """`python -m tests.faults.hooks <train args>` in the background; output goes to files."""

    def __init__(self, args: list[str], work: Path, name: str, pause: str | None = None, **env: str):
        self.work, self.name = work, name
        self.marker = work / f"{name}.stopped"
        self.marker.unlink(missing_ok=True)
        extra = dict(env)
        if pause:
            extra.update(FGRPO_FAULTS_PAUSE=pause, FGRPO_FAULTS_MARKER=str(self.marker))
        self.out, self.err = work / f"{name}.stdout", work / f"{name}.stderr"
        with self.out.open("w") as o, self.err.open("w") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.hooks", *args], cwd=ROOT,
                                         env=child_env(**extra), stdout=o, stderr=e, stdin=subprocess.DEVNULL)

    def finish(self, timeout_s: float = 400.0) -> Finished:
        """Wait for the process to end; if it reports its pause point, SIGKILL it there."""
        deadline = time.monotonic() + timeout_s
        stopped = None
        while self.proc.poll() is None:
            if self.marker.exists():
                stopped = self.marker.read_text().strip()
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name}: no end within {timeout_s} s\n" + self._read().tail())
            time.sleep(0.05)
        res = self._read()
        res.stopped_at = stopped
        return res

    def _read(self) -> Finished:
        return Finished(self.proc.returncode, self.out.read_text(), self.err.read_text(), None)


def run_train(args: list[str], work: Path, name: str, pause: str | None = None, **env: str) -> Finished:
    return TrainProcess(args, work, name, pause, **env).finish()

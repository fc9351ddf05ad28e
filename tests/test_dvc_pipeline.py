"""`dvc repro` of the whole pipeline in a fresh `git clone` of the repository, and the S3 remote.

What a user does: clone, write a small params.yaml with the documented command (`fgrpo pipeline
--params params/tiny.yaml --set ... --write-params params.yaml`), `dvc repro`. The clone is the
repository's committed HEAD: nothing else is prepared (its `.dvc/` is the committed one). One
tiny end-to-end repro (every stage for real on the tiny model, smallest sizes) is shared by the
tests of this module, which run in order: first repro runs every stage; `dvc metrics show` gives
the headline values of eval.json; a second repro does nothing; a change of one params key reruns
exactly the stages that read it and those downstream (`dvc params diff`, `dvc metrics diff`);
push to a real S3-compatible server (moto) on 127.0.0.1, wipe, pull, same hashes.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fgrpo_core.config import load_params
from flows.cmd_pipeline import write_params
from flows.scratch import clone_project, scratch_env
from flows.stages import content_hash, load_stages

pytestmark = [pytest.mark.slow, pytest.mark.engine]
WALL: dict[str, float] = {}  # wall times of the user's commands (printed by the last test)
ALL_STAGES = ["tiny_model", "stage_data", "sft", "train", "evaluate"]


@dataclass
class Repo:
    root: Path
    env: dict
    first_output: str


def dvc(repo: Repo, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo.root, env=env or repo.env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def outputs(root: Path) -> dict[str, str]:
    """Content hash of every stage output (what DVC versions: .dvcignore'd files skipped)."""
    params = load_params(root / "params.yaml")
    from flows.stages import resolve

    paths = [resolve(o, params) for st in load_stages(root).values() for o in st.outs]
    return {p: content_hash([p], root) for p in paths}


def timed(name: str, repo: Repo, *args: str) -> str:
    t0 = time.perf_counter()
    out = dvc(repo, *args)
    WALL[name] = time.perf_counter() - t0
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    root = clone_project(tmp_path_factory.mktemp("dvc") / "clone")
    r = Repo(root, scratch_env(root), "")
    assert (root / ".dvc/config").is_file() and not (root / "dvc.lock").exists()  # as committed
    r.first_output = timed("dvc repro (first)", r, "repro")
    return r


def test_first_repro_runs_every_stage_in_order(repo):
    assert ran(repo.first_output) == ALL_STAGES
    root = repo.root
    # the headline file is the only DVC metrics file; its numbers are eval.json's point estimates
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))[""]["data"]  # "": the workspace
    headline = json.loads((root / "metrics/eval_headline.json").read_text())
    # (DVC leaves out null values: an undefined metric, e.g. IR when the judge gave no verdict)
    defined = {g: {k: v for k, v in vals.items() if v is not None} for g, vals in headline.items()}
    assert set(shown) == {"metrics/eval_headline.json"} and shown["metrics/eval_headline.json"]["data"] == defined
    full = json.loads((root / "metrics/eval.json").read_text())["benchmarks"]["synthetic"]
    assert headline["synthetic"] == {"accuracy": _r4(full["accuracy"]), "IR": _r4(full["inconsistency_rate"]),
                                     "semantic": _r4(full["semantic_grounding"]),
                                     "spatial": _r4(full["spatial_grounding"])}
    # accuracy is the share of the 8 evaluated samples answered right (per-sample JSONL)
    samples = [json.loads(line) for line in (root / "metrics/eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and full["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 8, abs=1e-6)
    # the final lambda is the last dual step's lambda_after of each constraint
    import pandas as pd

    mult = pd.read_csv(root / "runs/multipliers.csv")
    last = mult.sort_values("step").groupby("constraint").tail(1).set_index("constraint")["lambda_after"]
    assert headline["lambda"] == pytest.approx(last.to_dict(), abs=1e-6)
    assert (root / "models/tiny-qwen2.5-vl/config.json").is_file()
    assert (root / "data/staged/manifest.json").is_file()
    assert list((root / "checkpoints/sft/model").glob("*.safetensors"))
    assert list((root / "checkpoints/fgrpo/round-2").glob("*.safetensors"))
    assert (root / "runs/multipliers.csv").is_file() and (root / "runs/train_metrics.csv").is_file()
    metrics = dvc(repo, "metrics", "show", "--json")
    assert "accuracy" in metrics
    # The lock records exactly the keys each stage lists, from params.yaml.
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]["stage_data"]["params"]["params.yaml"]) == {
        "data", "model.path", "model.trust_remote_code", "model.min_pixels", "model.max_pixels"}
    # Trainer internals stay out of what DVC versions (.dvcignore), final weights are in.
    train_outs = {o["path"]: o for o in lock["stages"]["train"]["outs"]}
    assert train_outs["checkpoints/fgrpo"]["nfiles"] == sum(
        1 for f in (root / "checkpoints/fgrpo").rglob("*") if f.is_file() and f.name != "trainer_state.pt")
    assert (root / "checkpoints/fgrpo/round-2/trainer_state.pt").is_file()  # kept in the workspace to resume


def _r4(x):
    return None if x is None else round(x, 4)


def test_plots_render(repo, tmp_path):
    out = dvc(repo, "plots", "show", "--json")
    for name in ("lambda per round", "constraint means per round", "multiplier history",
                 "metrics/eval_benchmarks.csv"):
        assert name in out, f"plot '{name}' missing from dvc plots show"


def test_second_repro_does_nothing(repo):
    before = outputs(repo.root)
    out = timed("dvc repro (second)", repo, "repro")
    assert ran(out) == [], out
    assert all(f"Stage '{s}' didn't change, skipping" in out for s in ALL_STAGES), out
    assert outputs(repo.root) == before
    assert WALL["dvc repro (second)"] < 60
    assert "Data and pipelines are up to date" in dvc(repo, "status")
    # the user commits the run (dvc.lock, their params.yaml), so later diffs compare against it
    subprocess.run(["git", "add", "dvc.lock", "params.yaml"], cwd=repo.root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "tiny run"], cwd=repo.root, check=True)


def test_one_params_key_reruns_only_dependent_stages(repo):
    root = repo.root
    before = outputs(root)
    params = load_params(root / "params.yaml")
    params.fgrpo.lr = params.fgrpo.lr * 3  # read by train only (dvc.yaml: train params 'fgrpo')
    write_params(params, root / "params.yaml", "test", ["fgrpo.lr"])

    status = dvc(repo, "status")
    assert "train:" in status and re.search(r"modified:\s+fgrpo\b", status), status
    assert not any(f"{s}:" in status for s in ("tiny_model", "stage_data", "sft")), status

    # against the committed first run (HEAD): exactly the one key
    changed = json.loads(dvc(repo, "params", "diff", "--json"))["params.yaml"]
    assert list(changed) == ["fgrpo.lr"] and changed["fgrpo.lr"]["new"] == pytest.approx(3 * changed["fgrpo.lr"]["old"])
    headline_before = json.loads((root / "metrics/eval_headline.json").read_text())
    out = timed("dvc repro (fgrpo.lr changed)", repo, "repro")
    assert ran(out) == ["train", "evaluate"], out
    # `dvc metrics diff` against the committed first run: a few rows (headline keys), fits a terminal
    diff = json.JSONDecoder().raw_decode(dvc(repo, "metrics", "diff", "--json", "--all"))[0][
        "metrics/eval_headline.json"]  # (the JSON comes first; DVC may add a warning on stderr)
    keys = {f"{g}.{k}": v for g, vals in headline_before.items() for k, v in vals.items()}
    numeric = {k for k, v in keys.items() if v is not None}
    assert numeric <= set(diff) <= set(keys) and len(keys) <= 16, diff
    assert all(diff[k]["old"] == pytest.approx(keys[k]) for k in numeric)
    after = outputs(root)
    for unchanged in ("models/tiny-qwen2.5-vl", "data/staged", "checkpoints/sft"):
        assert after[unchanged] == before[unchanged], unchanged
    # The rounds started over from the SFT model (persist: true kept the old ones; the stage key
    # changed, so they were moved aside instead of resumed): new weights, same number of rounds.
    assert after["checkpoints/fgrpo"] != before["checkpoints/fgrpo"]
    assert (root / "checkpoints/fgrpo.stale/round-2").is_dir()
    import pandas as pd

    hist = pd.read_csv(root / "runs/train_metrics.csv")
    assert hist["round"].tolist() == [1, 2]
    assert ran(dvc(repo, "repro")) == []
    print("\nwall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in WALL.items()))


# --------------------------------------------------------------------------------------------
# S3 remote on a real S3-compatible server (moto) on 127.0.0.1
# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.terminate()
        pytest.fail("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_push_wipe_pull_same_hashes(repo, s3_endpoint, monkeypatch):
    import boto3

    from tasks.version import Remote, configure_remote, fetch_by_revision, remote_settings

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    env = dict(repo.env, **creds)
    # s3fs mkdir fails on moto in us-east-1: the bucket is created with boto3 (docs/method.md#dvc-and-s3).
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="fgrpo-remote")

    # The remote comes from the environment (over params.storage); credentials are never written.
    monkeypatch.setenv("FGRPO_DVC_REMOTE", "s3://fgrpo-remote/dvc")
    monkeypatch.setenv("FGRPO_S3_ENDPOINT", s3_endpoint)
    remote = remote_settings(load_params(repo.root / "params.yaml").storage)
    assert remote == Remote("s3://fgrpo-remote/dvc", s3_endpoint)
    configure_remote(remote, repo.root)
    config = (repo.root / ".dvc/config").read_text()
    assert "s3://fgrpo-remote/dvc" in config and "testing" not in config

    before = outputs(repo.root)
    dvc(repo, "push", env=env)
    subprocess.run(["git", "add", "-A"], cwd=repo.root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "tiny run"], cwd=repo.root, check=True)

    shutil.rmtree(repo.root / ".dvc/cache")
    for path in before:
        p = repo.root / path
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    dvc(repo, "pull", env=env)
    assert outputs(repo.root) == before
    assert "up to date" in dvc(repo, "status")

    # The evaluation flow's fetch of a checkpoint at a git revision, from the remote.
    shutil.rmtree(repo.root / ".dvc/cache")
    monkeypatch.chdir(repo.root)
    got = fetch_by_revision.fn("checkpoints/fgrpo", "HEAD", repo.root / "checkpoints/fetched/HEAD")
    assert content_hash(["round-2"], got) == content_hash(["round-2"], repo.root / "checkpoints/fgrpo")

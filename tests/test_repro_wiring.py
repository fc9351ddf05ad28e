"""The ablation table's wiring: its DVC stage (repro/dvc.yaml) beside the pipeline's dvc.yaml,
its Prefect deployment, and its preset's outputs kept apart from the pipeline's."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fgrpo_core.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)


def test_repro_stage_is_separate_from_the_pipeline_and_runs_fgrpo_repro(tmp_path):
    for name in ("repro", "params", "fgrpo_core", "flows", "tasks", "dvc.yaml", "params.yaml", ".dvcignore"):
        src = ROOT / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "metrics",
                                                                            "reports", "data", "models",
                                                                            "checkpoints", "judge-cache"))
         if src.is_dir() else shutil.copy2(src, tmp_path / name))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert _dvc(tmp_path, "init", "-q").returncode == 0
    # Both files load together: DVC refuses overlapping outputs across dvc.yaml files.
    listed = _dvc(tmp_path, "stage", "list", "--all")
    assert listed.returncode == 0, listed.stderr
    assert "repro/dvc.yaml:ablation-table" in listed.stdout and "train" in listed.stdout
    # The default `dvc repro` is the pipeline only; the table runs when named.
    default = _dvc(tmp_path, "repro", "--dry")
    assert "ablation-table" not in default.stdout + default.stderr
    named = _dvc(tmp_path, "repro", "--dry", "repro/dvc.yaml")
    assert named.returncode == 0, named.stderr
    cmd = next(line[2:] for line in named.stdout.splitlines() if line.startswith("> "))
    assert cmd.startswith("python -m flows.cli repro --params params/repro-tiny.yaml")
    assert "--seeds 0,1,2,3,4" in cmd  # 5 seeds per row, each paired with GRPO-T's


def test_repro_preset_writes_only_under_repro():
    stage = yaml.safe_load((ROOT / "repro" / "dvc.yaml").read_text())["stages"]["ablation-table"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    p = load_params(ROOT / "params" / "repro-tiny.yaml")
    for path in (p.model.path, p.data.out_dir, p.sft.out_dir, p.judges.cache_dir):
        assert Path(path).parts[0] == "repro", path
    assert {p.model.path, p.data.out_dir, p.sft.out_dir} <= set(outs)
    assert p.eval.circular == ["synthetic"]  # a letter-biased policy cannot score


def test_repro_deployment_points_at_the_flow():
    deps = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    d = deps["ablation-table"]
    module, func = d["entrypoint"].split(":")
    flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
    assert flow.name == "fgrpo-repro"
    assert d["parameters"]["params_file"] == "params/repro-tiny.yaml"
    assert d["parameters"]["seeds"] == [0, 1, 2, 3, 4]


def test_five_seeds_and_the_sft_margin_by_default():
    import inspect

    from flows import cmd_repro
    from flows.repro import fgrpo_repro

    assert cmd_repro.DEFAULT_SEEDS == [0, 1, 2, 3, 4]
    assert "DEFAULT_SEEDS" in inspect.getsource(fgrpo_repro.fn)  # the flow's default is the CLI's
    p = load_params(ROOT / "params" / "repro-tiny.yaml")
    assert p.eval.min_sft_margin == 0.10

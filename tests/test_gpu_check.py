"""The first GPU check (bench/gpu_check.sh -> bench/gpu_update.py), dry-run on CPU at the tiny shape.

The GPU machine is bare (torch, transformers, accelerate, peft; no vLLM, TRL, Prefect, datasets,
DVC, pydantic; no registry) and lent for minutes, so everything that can be checked before it
appears is checked here: the exact entry point runs end to end, its JSON is complete and
self-consistent, the fgrpo_core modules it imports need none of the absent packages, the FLOP
formula behind MFU equals torch's own count, and the wheels it carries are complete and small.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench" / "wheels"
# What travels to the device machine is limited to 64 MiB in all (code included); the wheels are
# kept far below that.
WHEEL_BUDGET = 4 * 2 ** 20


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FGRPO_FORCE_WHEELS", "FGRPO_WHEELS_ONLY", "OUT")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **extra})
    return env


@pytest.mark.timeout(1600)
def test_dry_run_through_the_shell_entry(tmp_path):
    """bash bench/gpu_check.sh --device cpu --shape tiny: every phase runs, the JSON lands in $OUT,
    and its figures are finite, positive and agree with each other. The script first blocks vLLM,
    TRL, Prefect, datasets and DVC (None in sys.modules: "import vllm" raises, as on the GPU
    machine) and imports its fgrpo_core modules, so this run is also the import check.
    (54 s on 2 shared cores at load 7, 5 min at load 35. The budget, whose shares cap each phase,
    is large so that a loaded machine cannot cut a phase short: this checks figures, not speed.)"""
    from bench.gpu_update import ABSENT_PACKAGES, FGRPO_MODULES

    args = ["--device", "cpu", "--shape", "tiny", "--prompts", "2", "--group", "2", "--max-tokens", "12",
            "--image-px", "224", "--text-tokens", "16", "--gen-prompts", "1", "--steps", "1",
            "--peak-tflops", "2.0", "--mixed-precision", "bf16", "--budget-s", "5000"]
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *args], cwd=tmp_path,
                          env=_env(OUT=str(tmp_path)), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads((tmp_path / "gpu_check.json").read_text())

    assert d["status"] == "complete", d["phases"]
    # Every phase ran to its end ("ok, over budget" where a loaded machine made it slower than its cap).
    assert sorted(d["phases"]) == ["build", "generate", "matmul", "update"]
    assert all(v["status"].startswith("ok") for v in d["phases"].values()), d["phases"]
    assert d["env"]["blocked_imports"] == list(ABSENT_PACKAGES) == ["vllm", "trl", "prefect", "datasets", "dvc"]
    assert d["env"]["fgrpo_modules"] == list(FGRPO_MODULES) and d["env"]["absent_but_imported"] == []
    sh, up, gen, mm = d["shape"], d["update"], d["generate"], d["matmul"]
    # The preset's settings reach the update (params/qwen2.5-vl-3b.yaml), the batch is the one asked.
    assert (sh["gradient_checkpointing"], sh["micro_batch"], sh["mixed_precision"]) == (True, 4, "bf16")
    assert up["settings"]["update_batch"] == 2 and up["settings"]["mixed_precision"] == "bf16"
    assert up["sequences_per_step"] == 4 and sh["image_patches"] == (224 // 14) ** 2
    assert 4 * 6 <= up["completion_tokens_per_step"] <= 4 * 12  # lengths drawn in [max/2, max]
    assert 0 < sh["params_trainable"] <= sh["params_total"] == sh["params_lm"] + sh["params_vision"]

    def finite_positive(x):
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    assert finite_positive(mm["tflops"]) and math.isclose(mm["tflops"], 2 * mm["n"] ** 3 / mm["seconds"] / 1e12,
                                                         rel_tol=1e-9)
    for arm in ("fgrpo", "grpo_t"):
        a, times = up[arm], up["step_seconds"][arm]
        assert len(times) == 1 and a["seconds_per_step"] == times[0]
        for key in ("seconds_per_step", "tokens_per_s", "completion_tokens_per_s", "tflops", "mfu_vs_peak",
                    "mfu_vs_matmul"):
            assert finite_positive(a[key]), (arm, key, a[key])
        sec = a["seconds_per_step"]
        assert math.isclose(a["tokens_per_s"], up["tokens_per_step"] / sec, rel_tol=1e-9)
        assert math.isclose(a["completion_tokens_per_s"], up["completion_tokens_per_step"] / sec, rel_tol=1e-9)
        assert math.isclose(a["tflops"], up["flops_per_step"] / sec / 1e12, rel_tol=1e-9)
        assert math.isclose(a["mfu_vs_peak"], a["tflops"] / 2.0, rel_tol=1e-9)
        assert math.isclose(a["mfu_vs_matmul"], a["tflops"] / mm["tflops"], rel_tol=1e-9)
    assert math.isclose(up["ratio_fgrpo_over_grpo_t"],
                        up["fgrpo"]["seconds_per_step"] / up["grpo_t"]["seconds_per_step"], rel_tol=1e-9)
    # Warm-up + one step per arm, each a real optimiser step with a finite loss on every token.
    assert [x["arm"] for x in up["losses"]] == ["fgrpo", "fgrpo", "grpo_t"]
    assert all(math.isfinite(x["loss"]) and x["tokens"] == up["completion_tokens_per_step"] for x in up["losses"])
    assert finite_positive(up["peak_memory"]["gib"])
    assert gen["rows"] == 2 and gen["new_tokens_per_row"] == 12 and gen["new_tokens"] == 24
    assert not gen["cut_short"] and math.isclose(gen["tokens_per_s"], gen["new_tokens"] / gen["seconds"],
                                                 rel_tol=1e-9)
    # The one-screen table is printed.
    for text in ("FGRPO / GRPO-T step time", "HF generate", "MFU peak", "status: complete"):
        assert text in proc.stdout


def test_forward_flops_equal_torch_flop_counter():
    """The FLOP formula behind MFU equals torch.utils.flop_counter's count of one forward of the tiny
    model (eager attention, which multiplies the whole S x S square: causal=False), for an image whose
    patches tile the vision windows (224 px) and one whose edge windows are cut (252 px). Both count
    matrix products only, so they must agree exactly."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Qwen2_5_VLForConditionalGeneration

    from bench.gpu_update import build_config, forward_flops, step_flops, synthetic_round
    from fgrpo_core.train.policy import collate, completion_logprobs

    cfg = build_config("tiny")
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.set_attn_implementation("eager")
    for px in (224, 252):
        b = synthetic_round(cfg, prompts=1, group=1, max_tokens=24, image_px=px, text_tokens=16, seed=0)
        p, c, grid = b["rows"][0]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            completion_logprobs(model, collate(b["prompts"], b["completions"], 0))
        want = forward_flops(cfg, p, c, grid, causal=False)
        assert counter.get_total_flops() == int(sum(want.values())), (px, counter.get_flop_counts(), want)
    # Causal attention is half the square; a training step is 3 forwards of the text part, 1 of a
    # frozen vision tower (3 when trained), plus the reference's forward of everything.
    f, fc = forward_flops(cfg, p, c, grid), forward_flops(cfg, p, c, grid, causal=False)
    assert f["attention"] * 2 == fc["attention"] and f["lm"] == fc["lm"]
    text = f["lm"] + f["attention"] + f["head"]
    assert step_flops(cfg, [(p, c, grid)], vision_trainable=False, with_reference=True) == 4 * text + 2 * f["vision"]
    assert step_flops(cfg, [(p, c, grid)], vision_trainable=True, with_reference=False) == 3 * (text + f["vision"])


def _manifest() -> list[tuple[str, int, str]]:
    rows = []
    for line in (WHEELS / "WHEELS.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, size, sha = line.split()
            rows.append((name, int(size), sha))
    return rows


def test_wheels_are_listed_complete_for_cp312_and_small():
    """bench/wheels holds exactly what WHEELS.txt lists (name, bytes, sha256), within the budget, each
    installable on the GPU machine (CPython 3.12, manylinux x86_64 or pure Python), and together they
    satisfy every requirement of pydantic there (read from the wheels' own METADATA)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    rows = _manifest()
    assert sorted(n for n, _, _ in rows) == sorted(p.name for p in WHEELS.glob("*.whl"))
    for name, size, sha in rows:
        data = (WHEELS / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), name
    assert sum(s for _, s, _ in rows) <= WHEEL_BUDGET

    versions, requires = {}, []
    for name, _, _ in rows:
        dist, version, _, tags = parse_wheel_filename(name)
        assert any(t.interpreter in ("py3", "cp312") and t.abi in ("none", "cp312", "abi3")
                   and (t.platform == "any" or t.platform.endswith("x86_64") and "linux" in t.platform)
                   for t in tags), name
        versions[dist] = version
        with zipfile.ZipFile(WHEELS / name) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            requires += [Requirement(line.split(":", 1)[1].strip())
                         for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    target = dict(default_environment(), python_version="3.12", python_full_version="3.12.3",
                  sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                  implementation_name="cpython", platform_python_implementation="CPython", extra="")
    assert canonicalize_name("pydantic") in versions
    for req in requires:
        if req.marker is None or req.marker.evaluate(target):
            dist = canonicalize_name(req.name)
            assert dist in versions, f"{req} is not among the wheels"
            assert req.specifier.contains(versions[dist], prereleases=True), f"{req}: have {versions[dist]}"


def _cpython_312() -> str | None:
    """A CPython 3.12 on this machine (the GPU machine's version), if any: FGRPO_PYTHON312, python3.12
    on PATH, or pyenv's."""
    import glob
    import shutil

    found = [os.environ.get("FGRPO_PYTHON312"), shutil.which("python3.12"),
             *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]
    for exe in filter(None, found):
        ok = subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"], capture_output=True)
        if ok.returncode == 0:
            return exe
    return None


def test_wheels_install_and_import_under_cpython_312(tmp_path):
    """The shell entry's offline install (FGRPO_WHEELS_ONLY stops after it) puts a working pydantic in
    its scratch folder under CPython 3.12, the GPU machine's Python (cp312 wheels import only there)."""
    exe = _cpython_312()
    if exe is None:
        pytest.skip("no CPython 3.12 on this machine (FGRPO_PYTHON312 names one)")
    site = tmp_path / "site"
    env = _env(PYTHON=exe, FGRPO_FORCE_WHEELS="1", FGRPO_WHEELS_ONLY="1", FGRPO_GPU_SITE=str(site))
    env.pop("PYTHONPATH")
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("import pydantic\n"
            "class M(pydantic.BaseModel):\n"
            "    model_config = pydantic.ConfigDict(extra='forbid')\n"
            "    x: int\n"
            "assert M(x='3').x == 3\n"
            "try:\n"
            "    M(x=1, y=2)\n"
            "    raise SystemExit('extra key accepted')\n"
            "except pydantic.ValidationError:\n"
            "    pass\n"
            "print(pydantic.VERSION, pydantic.__file__)\n")
    out = subprocess.run([exe, "-c", code], env=dict(env, PYTHONPATH=str(site)), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version = next(n for n, _, _ in _manifest() if n.startswith("pydantic-")).split("-")[1]
    assert out.stdout.split() == [version, str(site / "pydantic" / "__init__.py")]


def test_phase_budgets_record_and_write_partial_figures(tmp_path):
    """Each phase runs under min(cap, time left - reserve): a phase with no time left is skipped, one
    that overruns is marked, one that fails is recorded and the next still runs; the JSON is
    rewritten after every phase, so a run cut short leaves what it had."""
    import time

    from bench.gpu_update import Report

    path = tmp_path / "figures.json"
    rep = Report(path, start=time.perf_counter(), budget_s=0.5)
    with rep.phase("slow", cap_s=0.05) as deadline:
        assert deadline is not None and deadline - time.perf_counter() <= 0.05
        rep.data["slow"] = {"value": 1.5, "bad": float("nan")}
        time.sleep(0.1)
    assert json.loads(path.read_text())["slow"] == {"value": 1.5, "bad": None}  # written, NaN as null
    with rep.phase("broken", cap_s=10) as deadline:
        raise RuntimeError("out of memory")
    with rep.phase("late", cap_s=10, reserve_s=1.0) as deadline:  # 0.5 s budget - 1 s reserve
        assert deadline is None
    phases = json.loads(path.read_text())["phases"]
    assert phases["slow"]["status"] == "ok, over budget" and phases["slow"]["seconds"] >= 0.1
    assert phases["broken"]["status"] == "error" and phases["broken"]["error"] == "RuntimeError: out of memory"
    assert phases["late"]["status"] == "skipped: no time left"

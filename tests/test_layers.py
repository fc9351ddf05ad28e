"""Imports go one way: library -> Prefect-free support -> tasks -> flows -> command line.

    0 fgrpo_core/                       the library (test_purity.py: no Prefect, no DVC)
    1 flows/stages.py, judge_keys.py    Prefect-free support: stage identity, output claiming,
                                        judge-key export (what tasks, flows, CLI and dvc.yaml share)
    2 tasks/                            Prefect tasks, thin wrappers over 0 and 1
    3 flows/ (the flows)                Prefect flows: pipeline, rounds, evaluation, repro
    4 flows/cli.py, flows/cmd_*.py      the ``fgrpo`` command line

A module may import its own layer and the layers below it, never one above: a task that imports
a flow or a CLI handler drags the orchestration (or argv parsing) into what it wraps. ``KNOWN``
lists the imports that still go the wrong way, each with where it is being fixed; the test fails
on any new one, and on a listed one that is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = {"flows.stages", "flows.judge_keys"}
FIXTURES = {"flows.scratch"}  # a scratch project for tests, not part of any layer

KNOWN = {
    ("flows.repro", "flows.cmd_repro"),  # the ablation rows (VARIANTS) live in the CLI module
}


def layer(module: str) -> int | None:
    top = module.split(".")[0]
    if top == "fgrpo_core":
        return 0
    if module in SUPPORT:
        return 1
    if top == "tasks":
        return 2
    if module in FIXTURES:
        return None
    if module == "flows.cli" or module.startswith("flows.cmd_"):
        return 4
    if top == "flows":
        return 3
    return None  # third-party or stdlib


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in ("fgrpo_core", "tasks", "flows"):
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from flows import cmd_eval`
    return names


def upward_imports(modules: dict[str, Path]) -> set[tuple[str, str]]:
    found = set()
    for mod, path in modules.items():
        lm = layer(mod)
        if lm is None:
            continue
        for imp in imports_of(path):
            target = imp if imp in modules else None
            if target is None:
                continue
            lt = layer(target)
            if lt is not None and lt > lm:
                found.add((mod, target))
    return found


def test_imports_go_one_way():
    modules = project_modules()
    assert "flows.pipeline" in modules and "tasks.stages" in modules and "fgrpo_core.loss" in modules
    found = upward_imports(modules)
    new = sorted(found - KNOWN)
    assert not new, "imports from a lower layer into a higher one (see the module docstring):\n" + "\n".join(
        f"  {a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, b in new)
    gone = sorted(KNOWN - found)
    assert not gone, f"fixed, remove from KNOWN: {gone}"


def test_the_checker_sees_an_upward_import(tmp_path):
    # A task importing a CLI handler inside a function (how tasks/stages.py imported
    # flows.cmd_data.prompt_counter) and a flow importing a CLI module are both found.
    task = tmp_path / "task.py"
    task.write_text("def f():\n    from flows.cmd_data import prompt_counter\n")
    flow = tmp_path / "flow.py"
    flow.write_text("from flows import cmd_eval\n")
    lib = tmp_path / "lib.py"
    lib.write_text("import tasks.common\n")
    empty = tmp_path / "empty.py"
    empty.write_text("")
    modules = {"tasks.x": task, "flows.y": flow, "fgrpo_core.z": lib,
               "flows.cmd_data": empty, "flows.cmd_eval": empty, "tasks.common": empty}
    assert upward_imports(modules) == {("tasks.x", "flows.cmd_data"), ("flows.y", "flows.cmd_eval"),
                                       ("fgrpo_core.z", "tasks.common")}

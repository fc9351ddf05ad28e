"""fgrpo_core stays pure: it never imports Prefect or DVC (docs/method.md#code-principles)."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "fgrpo_core"
FORBIDDEN = {"prefect", "dvc", "dvc_s3", "s3fs"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_orchestration():
    files = sorted(CORE.rglob("*.py"))
    assert files, "fgrpo_core has no modules"
    offenders = {str(f.relative_to(CORE)): sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"fgrpo_core must not import orchestration libraries: {offenders}"


def test_checker_sees_imports(tmp_path):
    # The checker itself must be able to fail.
    bad = tmp_path / "bad.py"
    bad.write_text("import prefect\nfrom dvc.repo import Repo\n")
    assert _imported_roots(bad) & FORBIDDEN == {"prefect", "dvc"}

"""The project stands alone: every document it cites is inside the repository.

A clone holds only the repository, so a reference to notes kept elsewhere (the team's private
notes, a sibling folder of the checkout) is a dead end for its reader. Checked in every
tracked or new (not ignored) text file:
- no mention of the outside notes by name, and no path into the sibling notes folder;
- every relative markdown link ``[text](target)`` resolves inside the repository to a file that
  exists, and its ``#anchor``, when the target is markdown, names a heading of that file;
- every ``docs/<name>.md`` or ``docs/<name>.md#anchor`` written in code, presets or docs names an
  existing file and heading.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".in", ".cfg", ".ini"}

# Built from parts so that this file does not match itself.
_OUTSIDE_NAMES = ["FGRPO", "PITFALLS", "DESIGN", "STYLE"]
OUTSIDE = re.compile(r"\b(?:" + "|".join(_OUTSIDE_NAMES) + r")\.md\b|\.\./" + "shared\\b")
MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
DOCS_REF = re.compile(r"(?<![\w/.])(docs/[\w./-]+?\.md)(#[\w-]+)?")


def project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (what a commit would carry)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        files = [ROOT / line for line in out if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk, skipping outputs
        skip = {".git", ".venv", "data", "runs", "models", "checkpoints", "metrics", "reports", "__pycache__"}
        files = [p for p in ROOT.rglob("*") if not (set(p.relative_to(ROOT).parts) & skip)]
    return sorted(p for p in files if p.suffix in TEXT_SUFFIXES and p.is_file())


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in md.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m and not in_code:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def _strip_code_fences(text: str) -> str:
    lines, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            lines.append("")
        else:
            lines.append("" if in_code else line)
    return "\n".join(lines)


def reference_problems(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """Every reference in ``text`` (the content of ``path``) that leaves ``root`` or is dead."""
    rel = path.relative_to(root)
    problems = [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: names notes outside the repository: "
                f"{m.group(0)!r}" for m in OUTSIDE.finditer(text)]

    def check(target: Path, anchor: str | None, where: str) -> None:
        target = target.resolve()
        if not target.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
        elif not target.exists():
            problems.append(f"{where}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            problems.append(f"{where}: no heading #{anchor} in {target.relative_to(root.resolve())}")

    if path.suffix == ".md":
        body = _strip_code_fences(text)
        for m in MD_LINK.finditer(body):
            link = m.group(1).strip("<>")
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto: ...
                continue
            file_part, _, anchor = link.partition("#")
            target = path.parent / file_part if file_part else path
            line = body.count("\n", 0, m.start()) + 1
            check(target, anchor or None, f"{rel}:{line}: link {link!r}")
    for m in DOCS_REF.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        anchor = (m.group(2) or "")[1:] or None
        check(root / m.group(1), anchor, f"{rel}:{line}: reference {m.group(0)!r}")
    return problems


def test_every_reference_stays_inside_the_repository():
    files = project_files()
    assert any(p.name == "README.md" for p in files), f"file listing missed the README ({len(files)} files)"
    problems = [p for f in files for p in reference_problems(f, f.read_text(errors="replace"))]
    assert not problems, "references outside the repository or to missing files:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see " + "FGRPO" + ".md section 2", "names notes outside"),
        ("(" + "PITFALLS" + ".md, resume)", "names notes outside"),
        ("[notes](../../" + "shared/x.md)", "names notes outside"),
        ("[up](../../elsewhere.md)", "points outside the repository"),
        ("[gone](docs/" + "nothing-here.md)", "no such file"),
        ("[bad anchor](docs/method.md#" + "no-such-heading)", "no heading #no-such-heading"),
        ("code cites docs/method.md#" + "no-such-heading here", "no heading #no-such-heading"),
    ],
)
def test_checker_catches(text, expected, tmp_path):
    # The checker must fail on each kind of dead or outside reference, in a copy of the layout.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "method.md").write_text("# Method\n\n## Rewards\n")
    doc = tmp_path / "README.md"
    doc.write_text(text + "\n")
    problems = reference_problems(doc, doc.read_text(), root=tmp_path)
    assert any(expected in p for p in problems), problems


def test_checker_accepts_good_references(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "method.md").write_text("# Method\n\n## Numbers and their params keys\n")
    doc = tmp_path / "docs" / "other.md"
    doc.write_text("[m](method.md#numbers-and-their-params-keys) [w](https://example.com/x.md) "
                   "[self](#top)\n# Top\n")
    assert reference_problems(doc, doc.read_text(), root=tmp_path) == []

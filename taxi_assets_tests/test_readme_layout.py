"""The README's layout tree names every module of the package where it is, and no other."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TREE_LINE = re.compile(r"^([│ ]*)([├└]── )?(.*)$")


def layout_block(readme: str) -> list[str]:
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()


def modules_in_tree(lines: list[str]) -> set[str]:
    """The `.py` files the tree shows, as paths: a line's files are in the folder its branch
    hangs from, or in the folder the line names first; a line without a branch continues the
    line above."""
    folders: list[str] = []
    current: list[str] = []
    found = set()
    for line in lines:
        lead, branch, rest = TREE_LINE.match(line).groups()
        tokens = rest.split()
        if not tokens:
            continue
        if branch:
            depth = len(lead) // 4 + 1
            folders = folders[:depth]
            if tokens[0].endswith("/"):
                folders.append(tokens[0].rstrip("/"))
            current = folders
        elif not lead:  # a top-level line
            folders = current = [tokens[0].rstrip("/")] if tokens[0].endswith("/") else []
        found |= {"/".join([*current, token]) for token in tokens if token.endswith(".py")}
    return found


def test_the_readme_tree_shows_every_module_in_its_folder():
    shown = modules_in_tree(layout_block((REPO_ROOT / "README.md").read_text()))
    package = REPO_ROOT / "taxi_assets"
    actual = {
        str(path.relative_to(REPO_ROOT))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" and "dbt" not in path.relative_to(package).parts[:1]
    }
    assert shown == actual, (
        f"in the README, not in the package: {sorted(shown - actual)}; "
        f"in the package, not in the README: {sorted(actual - shown)}"
    )


def test_the_tree_reader_places_files_by_branch_and_continuation():
    lines = [
        "pkg/",
        "├── top.py",
        "├── sub/     a.py",
        "│            b.py",
        "│   └── deep/  c.py",
        "└── last.py",
    ]
    assert modules_in_tree(lines) == {
        "pkg/top.py",
        "pkg/sub/a.py",
        "pkg/sub/b.py",
        "pkg/sub/deep/c.py",
        "pkg/last.py",
    }

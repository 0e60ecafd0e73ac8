"""The settings: one module names and reads every environment variable, docs/settings.md lists
exactly those, and a value is read when asked for, so a changed environment is seen."""

from __future__ import annotations

import ast
import re

from taxi_assets import settings
from taxi_assets_tests.docs_commands import REPO_ROOT

PACKAGE = REPO_ROOT / "taxi_assets"


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines reading the environment: `os.environ[...]`, `os.environ.get(...)`, `os.getenv(...)`
    (setting a variable for Dagster or a child process is no read)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if _is_environ(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (node.func.attr == "get" and _is_environ(node.func.value)) or (
                node.func.attr == "getenv"
            ):
                lines.append(node.lineno)
    return lines


def env_var_names(tree: ast.AST) -> set[str]:
    """The names given to `dg.EnvVar(...)` and `dg.EnvVar.int(...)`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            target = func.value if isinstance(func, ast.Attribute) and func.attr == "int" else func
            if isinstance(target, ast.Attribute) and target.attr == "EnvVar":
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return names


def test_the_settings_page_lists_exactly_the_settings_the_module_names():
    page = (REPO_ROOT / "docs" / "settings.md").read_text()
    listed = re.findall(r"^\| `([A-Z_]+)` \|", page, re.M)
    assert sorted(listed) == sorted(settings.BY_NAME)
    assert len(listed) == len(set(listed)) == len(settings.SETTINGS)


def test_only_the_settings_module_reads_the_environment():
    readers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "settings.py" and path.parent == PACKAGE:
            continue
        lines = environment_reads(ast.parse(path.read_text()))
        if lines:
            readers[str(path.relative_to(REPO_ROOT))] = lines
    assert readers == {}


def test_every_env_var_a_resource_takes_is_a_named_setting():
    names = set()
    for path in PACKAGE.rglob("*.py"):
        names |= env_var_names(ast.parse(path.read_text()))
    assert "TAXI_PG_PASSWORD" in names  # the secret reaches its resource as an EnvVar
    assert names <= set(settings.BY_NAME), names - set(settings.BY_NAME)


def test_a_setting_is_read_when_asked_for_and_empty_means_its_default(monkeypatch):
    monkeypatch.setenv("TAXI_BQ_DATASET", "trips_eu")
    assert settings.value("TAXI_BQ_DATASET") == "trips_eu"
    assert settings.is_set("TAXI_BQ_DATASET")
    monkeypatch.setenv("TAXI_BQ_DATASET", "")
    assert settings.value("TAXI_BQ_DATASET") == "ny_taxi"
    assert not settings.is_set("TAXI_BQ_DATASET")
    monkeypatch.setenv("TAXI_HOME", str(REPO_ROOT / "elsewhere"))
    assert settings.taxi_home() == REPO_ROOT / "elsewhere"

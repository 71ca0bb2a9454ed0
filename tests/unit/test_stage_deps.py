"""dvc.yaml declares exactly the code each stage runs.

Each stage's code dependencies are derived from its script: the script itself and every
module of the package it imports, transitively. ``dvc.yaml`` must list exactly those
(no fewer: an edit would leave outputs stale; no more: an edit would rerun for nothing).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT

PACKAGE = "panelcast"
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    """The file of module ``name`` inside the package, or None when it is not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (``from x import y`` may name a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.is_relative_to(SRC):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    else:
        package = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def code_dependencies(script: Path) -> set[str]:
    """The script and every package module it imports, transitively (repo-relative paths).

    Package ``__init__`` modules are docstring-only (asserted below), so they are left out.
    """
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            found = _module_file(name)
            if found is not None and found not in seen:
                todo.append(found)
    return {p.relative_to(ROOT).as_posix() for p in seen if p.name != "__init__.py"}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _script(cmd: str) -> Path:
    found = re.findall(r"\bpython\s+(stages/\S+\.py)", cmd)
    assert len(found) == 1, f"expected one `python stages/<name>.py` in cmd {cmd!r}"
    return ROOT / found[0]


@pytest.mark.parametrize("stage", list(_stages()))
def test_dvc_yaml_lists_exactly_the_code_a_stage_runs(stage):
    spec = _stages()[stage]
    expected = code_dependencies(_script(spec["cmd"]))
    declared = {d for d in spec.get("deps", []) if isinstance(d, str) and d.endswith(".py")}
    assert declared == expected, (
        f"stage {stage!r}: dvc.yaml lists {sorted(declared - expected)} that it does not run "
        f"and misses {sorted(expected - declared)}"
    )


def test_package_init_modules_hold_only_a_docstring():
    for init in (SRC / PACKAGE).rglob("__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), init
        assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def test_experiments_run_their_own_copy_of_the_code():
    """Each command puts its own ``src`` first, so queued and --temp runs use their code."""
    for stage, spec in _stages().items():
        assert spec["cmd"].startswith("PYTHONPATH=src python "), stage


def test_the_dependency_finder_sees_through_relative_imports():
    deps = code_dependencies(ROOT / "stages" / "train.py")
    assert "src/panelcast/modelling/model.py" in deps  # via pipeline/train.py
    assert "src/panelcast/core/periods.py" in deps  # via core/config.py
    assert "stages/train.py" in deps

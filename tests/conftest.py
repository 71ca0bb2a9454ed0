"""Shared fixtures: tiny synthetic panels, the real params, and repository copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from panelcast.core.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    "contract.yaml",
    "pyproject.toml",
    "requirements.lock",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "stages",
    "src",
    "scripts",
    "Makefile",
]


#: The pipeline's stages, in dvc.yaml order.
PIPELINE_STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.fixture(scope="session")
def params():
    """The repository's real params.yaml, parsed strictly."""
    return load_params(ROOT / "params.yaml")


def make_panel(segments=("A", "B", "C"), start_year=2000, years=5, seed=0) -> pd.DataFrame:
    """A small monthly table shaped like txhousing: seasonal sales per segment."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, seg in enumerate(segments):
        base = 100.0 * (i + 1)
        for k in range(years * 12):
            year, month = start_year + k // 12, k % 12 + 1
            sales = base * (1 + 0.3 * np.sin(2 * np.pi * month / 12)) * (1 + 0.01 * k)
            sales = float(round(sales + rng.normal(0, 3)))
            rows.append(
                {
                    "city": seg,
                    "year": year,
                    "month": month,
                    "sales": sales,
                    "volume": sales * 1e5,
                    "median": 1e5 + 500 * k,
                    "listings": 1000.0 + k,
                    "inventory": 5.0 + 0.01 * k,
                    "date": year + (month - 1) / 12,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def panel_frame() -> pd.DataFrame:
    return make_panel()


def tool_env(repo: Path | None = None) -> dict[str, str]:
    """Environment for dvc and stage subprocesses: the venv first, analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    if repo is not None:
        env["PYTHONPATH"] = str(repo / "src")
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` and return it; on unexpected failure show its output."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=tool_env(cwd), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


#: A short backtest for repository copies: the full replay takes minutes (the unit tests
#: replay a synthetic panel; the README reports the full figures).
SHORT_BACKTEST = {
    "backtest.end": "2005-12",
    "backtest.policies": [
        {"name": "never", "kind": "never"},
        {"name": "on_alarm", "kind": "on_alarm"},
    ],
}


def copy_repo(dest: Path, git: bool = True, full_backtest: bool = False) -> Path:
    """Copy the project files (no data, no cache) into ``dest`` and make it a git repo.

    Unless ``full_backtest``, the copy's backtest replays one year with two policies.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if not full_backtest:
        set_params(dest, SHORT_BACKTEST)
    if git:
        run(["git", "init", "-q", "-b", "main"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-q", "-m", "copy"], dest)
    return dest


def set_params(repo: Path, updates: dict) -> None:
    """Edit params.yaml in a copy (dotted keys), keeping the rest."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))

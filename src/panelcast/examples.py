"""Run an example of ``examples/`` in a scratch copy of the repository.

Each example is a folder holding only a ``params.yaml`` and a ``contract.yaml``: another
table pointed at by configuration alone. :func:`scratch_copy` copies the project (code,
pipeline, lock, no data and no cache) to a scratch folder, puts the example's two files
over the root ones and makes it a git repository (DVC needs one); :func:`run_example`
then runs ``panelcast check`` and ``dvc repro`` there, as a user of that table would.
``panelcast example NAME`` and ``make example NAME=...`` call it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .core.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["EXAMPLE_FILES", "PROJECT_FILES", "available", "run_example", "scratch_copy"]

#: What an example holds, and nothing else.
EXAMPLE_FILES = ("params.yaml", "contract.yaml")
#: The project files a copy needs to run the pipeline (no data, outputs or cache).
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "contract.yaml",
    "pyproject.toml",
    "requirements.lock",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    "stages",
    "src",
    "scripts",
    "production/audit.jsonl",
    "Makefile",
)


def available(root: Path) -> list[str]:
    """The examples under ``root/examples`` (folders holding both example files)."""
    base = root / "examples"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if all((p / f).is_file() for f in EXAMPLE_FILES))


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        env.setdefault(f"{key}_NAME", "panelcast example")
        env.setdefault(f"{key}_EMAIL", "example@localhost")
    return env


def _git(args: list[str], cwd: Path) -> None:
    subprocess.run(
        ["git", *args], cwd=cwd, env=_environment(), check=True, capture_output=True, text=True
    )


def copy_project(root: Path, dest: Path) -> None:
    """The project files (:data:`PROJECT_FILES`) of ``root`` copied into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for item in PROJECT_FILES:
        src = root / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        elif src.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)


def scratch_copy(root: Path, name: str, dest: Path) -> Path:
    """The project at ``root`` copied to ``dest`` with example ``name``'s params and
    contract over the root ones, committed in a fresh git repository.

    Raises :class:`UserError` for an unknown example or an existing non-empty ``dest``.
    """
    names = available(root)
    if name not in names:
        raise UserError(
            f"unknown example {name!r}: expected one of {', '.join(names) or '(none)'} "
            f"(folders of {root / 'examples'} holding {' and '.join(EXAMPLE_FILES)})."
        )
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest}: the scratch folder exists and is not empty; remove it first.")
    dest.mkdir(parents=True, exist_ok=True)
    copy_project(root, dest)
    for item in EXAMPLE_FILES:
        shutil.copy2(root / "examples" / name / item, dest / item)
    _git(["init", "-q", "-b", "main"], dest)
    _git(["add", "-A"], dest)
    _git(["commit", "-q", "-m", f"example {name}"], dest)
    logger.info("example %s: scratch copy in %s", name, dest)
    return dest


def run_example(root: Path, name: str, dest: Path, targets: tuple[str, ...] = ()) -> int:
    """Copy (:func:`scratch_copy`), then ``panelcast check`` and ``dvc repro [targets]``
    in the copy; their output goes to this process's. Returns the exit code."""
    repo = scratch_copy(root, name, dest)
    env = _environment()
    env["PYTHONPATH"] = str(repo / "src")
    for cmd in ([sys.executable, "-m", "panelcast.cli", "check"], ["dvc", "repro", *targets]):
        logger.info("example %s: %s", name, " ".join(cmd[-2:] if cmd[0] == sys.executable else cmd))
        code = subprocess.run(cmd, cwd=repo, env=env, check=False).returncode
        if code != 0:
            logger.error("example %s: %s failed (exit %d) in %s", name, cmd[-1], code, repo)
            return code
    logger.info("example %s: done; metrics in %s", name, repo / "metrics")
    return 0

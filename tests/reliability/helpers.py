"""Plumbing of the reliability tests: one "good" repository, cheap copies of it, and readers
of what `dvc repro` printed and left behind."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from ..conftest import (
    PIPELINE_STAGES,
    clone_repo,
    no_search_repo_path,
    run,
    set_params,
    tool_env,
)

#: Every stage but the slow backtest and the report after it, which these tests never run.
STAGES = tuple(s for s in PIPELINE_STAGES if s not in ("backtest", "report"))
#: Direct upstream stages of each stage (from the deps in dvc.yaml); backtest is never run here.
UPSTREAM = {
    "check_params": (),
    "collect": ("check_params",),
    "validate": ("collect",),
    "check_data": ("validate",),
    "features": ("validate", "check_data"),
    "baseline": ("validate", "features"),
    "train": ("features", "collect"),
    "evaluate": ("features", "baseline", "train"),
    "predict": ("collect", "validate", "features", "train", "evaluate"),
    "drift": ("features", "train"),
}
#: `dvc repro` targets of these tests: every stage but the slow backtest.
TARGETS = ("predict", "drift")
#: What "the state of the pipeline" is made of: outputs, metrics, plots, the lock, the params.
STATE_DIRS = ("data", "models", "metrics", "plots")
STATE_FILES = ("dvc.lock", "params.yaml")
SOURCE_URI = "package://plotnine/data/txhousing.csv"
#: The documented recovery (README, "When a stage fails"), run as written.
RECOVERY = "git checkout HEAD -- . && dvc checkout --force"

_RUNNING = re.compile(r"^Running stage '([^']+)'", re.M)
_FAILED = re.compile(r"failed to reproduce '([^']+)'")


def downstream(stage: str) -> set[str]:
    """Every stage that (transitively) depends on ``stage``."""
    out: set[str] = set()
    frontier = {stage}
    while frontier:
        frontier = {s for s, ups in UPSTREAM.items() if frontier & set(ups)} - out
        out |= frontier
    return out


def ran(output: str) -> list[str]:
    """Stages DVC started, in order (from its "Running stage '...'" lines)."""
    return _RUNNING.findall(output)


def failed_stage(output: str) -> str | None:
    """The stage named in DVC's "failed to reproduce '...'" line, if any."""
    found = _FAILED.findall(output)
    return found[-1] if found else None


def error_text(proc: subprocess.CompletedProcess) -> str:
    """What the user reads about the failure: from the first ERROR line to the end."""
    text = proc.stdout + "\n" + proc.stderr
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " ERROR " in line or line.startswith("ERROR"):
            return "\n".join(lines[i:])
    return ""


def line_with_all(text: str, fragments: tuple[str, ...] | list[str]) -> str | None:
    """The first line of ``text`` holding every fragment, or None."""
    for line in text.splitlines():
        if all(f in line for f in fragments):
            return line
    return None


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def state(repo: Path) -> dict[str, str]:
    """md5 of every output, metric, plot, the lock file and the params (paths relative)."""
    out = {}
    for name in STATE_DIRS:
        root = repo / name
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.name != ".gitignore":
                    out[str(path.relative_to(repo))] = md5(path)
    for name in STATE_FILES:
        if (repo / name).exists():
            out[name] = md5(repo / name)
    return out


def diff_state(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Files whose md5 differs (or that exist on one side only)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def lock_outs(repo: Path) -> dict[str, str]:
    """``{path: md5}`` of every output recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = [out for stage in lock["stages"].values() for out in stage.get("outs", [])]
    return {out["path"]: out["md5"] for out in outs}


def outputs_by_stage(repo: Path) -> dict[str, set[str]]:
    """``{stage: {paths}}`` of every output (cached or not: metrics, plots) in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {name: {o["path"] for o in st.get("outs", [])} for name, st in lock["stages"].items()}


def git_status(repo: Path) -> list[str]:
    """``git status --porcelain`` lines (untracked files listed one by one)."""
    proc = run(["git", "status", "--porcelain", "--untracked-files=all"], repo)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def gitignores(repo: Path) -> dict[str, str]:
    """Text of every .gitignore outside .git and .dvc."""
    return {
        str(p.relative_to(repo)): p.read_text()
        for p in sorted(repo.rglob(".gitignore"))
        if not {".git", ".dvc"} & set(p.relative_to(repo).parts)
    }


def dvc(repo: Path, *args: str, check: bool = False, timeout: int = 600):
    return run(["dvc", *args], repo, check=check, timeout=timeout)


# --------------------------------------------------------------------------- the good repository


def good_repo(tmp_path_factory, prepared: Path) -> Path:
    """The session's prepared repository (tests/conftest.py: a copy of the project after a
    full `dvc repro`) with fast params (no search), reproduced and committed.

    Built once per test session for every module and xdist worker; dvc.lock, the metrics
    and the plots of that commit are the "last good state". Never modify it: ``clone`` it.
    """
    return no_search_repo_path(tmp_path_factory, prepared)


def clone(good: Path, dest: Path) -> Path:
    """A cheap full copy of the good repository: git, DVC cache, outputs, metrics."""
    return clone_repo(good, dest)


def forget_results(repo: Path, stage: str) -> None:
    """Make DVC unable to restore ``stage`` from its caches, so that `dvc repro` really runs it.

    DVC restores a stage whose deps match dvc.lock from the object cache ("Stage '...' is
    cached - skipping run, checking out outputs"); this removes the run cache and the cached
    objects of the stage's outputs, as if the stage had never completed on this machine.
    """
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for out in lock["stages"][stage].get("outs", []):
        digest = out["md5"]
        obj = repo / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
        obj.unlink(missing_ok=True)


# --------------------------------------------------------------------------- bad inputs


@functools.lru_cache(maxsize=1)
def _real_bytes() -> bytes:
    from panelcast.data.sources import read_source

    return read_source(SOURCE_URI).data


def real_csv_bytes() -> bytes:
    """The real source file, byte for byte."""
    return _real_bytes()


def real_frame() -> pd.DataFrame:
    """The real table (txhousing), a fresh copy each time."""
    return pd.read_csv(io.BytesIO(_real_bytes()))


def point_source_at(repo: Path, path: Path | str) -> None:
    """Set ``source.uri`` and the ``source.watch`` that goes with it."""
    from panelcast.data.sources import watch_target

    set_params(repo, {"source.uri": str(path), "source.watch": watch_target(str(path))})


def edit_params(repo: Path, edit: Callable[[dict], None]) -> None:
    """Apply ``edit`` to the parsed params.yaml of ``repo`` and write it back."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------- processes


def recover(repo: Path, plain: bool = False) -> subprocess.CompletedProcess:
    """The documented recovery; ``plain``: without --force, which suffices after a failed
    stage (it leaves no new output behind). Returns the `dvc checkout` run."""
    run(["git", "checkout", "HEAD", "--", "."], repo)
    return dvc(repo, "checkout", *([] if plain else ["--force"]), timeout=180)


def start(
    cmd: list[str], repo: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, output to ``log`` (stdout and stderr), with
    ``env`` added to the environment."""
    handle = open(log, "w")  # noqa: SIM115 - closed by the caller through wait_and_close
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env={**tool_env(repo), **(env or {})},
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stage_processes(repo: Path, script: str) -> list[int]:
    """pids of running ``python stages/<script>`` processes whose cwd is ``repo``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline if a]
        if cwd == str(repo) and f"stages/{script}" in args:
            pids.append(int(entry.name))
    return pids


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group of ``proc`` (dvc and the stage it runs)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    proc.log_handle.close()  # type: ignore[attr-defined]


def wait_and_close(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for ``proc``; on timeout kill its group and fail."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"{proc.args} did not finish within {timeout:.0f}s") from None
    proc.log_handle.close()  # type: ignore[attr-defined]
    return code

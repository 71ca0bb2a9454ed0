"""Generic helpers for the remote and experiment tests: dvc output parsing, file digests,
an S3 remote configured with ``--local`` credentials, a tripwire ``python``, the queue."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import yaml

from ..conftest import ROOT, run, tool_env

S3_REMOTE = "s3"  # the S3 remote's name in .dvc/config (url only; credentials --local)
_SKIP_PARTS = {".git", ".dvc", "__pycache__"}


# ------------------------------------------------------------------------- dvc output
def stage_names(repo: Path) -> set[str]:
    """Every stage declared in the copy's dvc.yaml."""
    return set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def ran_stages(output: str) -> set[str]:
    """Stages whose command dvc ran ("Running stage 'x':")."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def restored_stages(output: str) -> set[str]:
    """Stages dvc restored from the run-cache instead of running them."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def unchanged_stages(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' didn't change, skipping", output))


# ------------------------------------------------------------------------- files
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def workspace_digests(repo: Path) -> dict[str, str]:
    """sha256 of every file in the workspace (not .git, .dvc or __pycache__)."""
    found = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if _SKIP_PARTS & set(rel.parts) or not path.is_file() or path.is_symlink():
            continue
        found[rel.as_posix()] = sha256(path)
    return found


def lock_outputs(repo: Path) -> list[str]:
    """Every output path recorded in dvc.lock (cached or not)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage["outs"])


def output_digests(repo: Path) -> dict[str, str | None]:
    """sha256 of each dvc.lock output (None when missing); directories file by file."""
    found: dict[str, str | None] = {}
    for out in lock_outputs(repo):
        path = repo / out
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                found[child.relative_to(repo).as_posix()] = sha256(child)
        else:
            found[out] = sha256(path) if path.is_file() else None
    return found


# ------------------------------------------------------------------------- processes
def dvc_env(repo: Path, path_prefix: Path | None = None, **extra: str) -> dict[str, str]:
    """tool_env() without the caller's AWS_* settings, never proxying loopback traffic."""
    env = {k: v for k, v in tool_env(repo).items() if not k.startswith("AWS_")}
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(p for p in (env.get(key), "127.0.0.1", "localhost") if p)
    if path_prefix is not None:
        env["PATH"] = str(path_prefix) + os.pathsep + env["PATH"]
    env.update(extra)
    return env


def sh(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """Like conftest.run, with an explicit environment (default: dvc_env(cwd))."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env or dvc_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def git_clone(source: Path, dest: Path, rev: str | None = None) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", str(source), str(dest)], dest.parent)
    if rev is not None:
        run(["git", "checkout", "-q", rev], dest)
    return dest


def tripwire(directory: Path) -> tuple[Path, Path]:
    """A fake ``python`` that logs its arguments and fails: put ``bin`` first on PATH and
    any stage command (``python stages/...``) that dvc runs shows up in ``log``."""
    bin_dir = directory / "tripwire-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = directory / "tripwire.log"
    script = bin_dir / "python"
    script.write_text(f'#!/bin/sh\necho "python $*" >> "{log}"\nexit 97\n')
    script.chmod(0o755)
    return bin_dir, log


# ------------------------------------------------------------------------- S3 remote
def load_s3_server() -> ModuleType:
    """scripts/s3_server.py as a module (shared with test_s3_server.py)."""
    if "s3_server" in sys.modules:
        return sys.modules["s3_server"]
    spec = importlib.util.spec_from_file_location("s3_server", ROOT / "scripts" / "s3_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["s3_server"] = module
    spec.loader.exec_module(module)
    return module


def configure_s3(repo: Path, server, prefix: str, default: bool = False) -> None:
    """Point the committed S3 remote at ``server`` under ``prefix``; everything that
    differs from .dvc/config (url, endpoint, keys) goes to the git-ignored config.local."""
    settings = {
        "url": f"s3://{server.bucket}/{prefix}",
        "endpointurl": server.endpoint_url,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
    }
    for option, value in settings.items():
        sh(["dvc", "remote", "modify", "--local", S3_REMOTE, option, value], repo)
    if default:
        sh(["dvc", "remote", "default", "--local", S3_REMOTE], repo)


def s3_keys(server, prefix: str) -> list[str]:
    client = server.client()
    keys: list[str] = []
    token = None
    while True:
        kwargs = {"Bucket": server.bucket, "Prefix": prefix.rstrip("/") + "/"}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        keys += [item["Key"] for item in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


# DVC 3.67 `push --run-cache` uploads the run entries (runs/...) but not the objects of
# the `cache: false` outputs they name (metrics, plots): DVC 2 pushed them from
# `stage_cache.get_used_objs`, DVC 3's index-based push leaves that list unused. A fresh
# clone then cannot restore any stage. This pushes those objects, from the local cache.
_PUSH_RUN_CACHE_OBJECTS = """
import sys
from pathlib import Path
from dvc.repo import Repo

remote = sys.argv[1] or None
with Repo(".") as repo:
    runs = Path(repo.cache.legacy.path) / "runs"
    entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file()]
    objs = set()
    for hashes in repo.stage_cache.get_used_objs(entries).values():
        objs |= hashes
    result = repo.cloud.push(objs, remote=remote)
    print(f"{len(entries)} run entries, {len(objs)} objects, {len(result.failed)} failed")
    sys.exit(1 if result.failed else 0)
"""


def push_run_cache_objects(repo: Path, remote: str | None = None) -> str:
    """Workaround for DVC 3.67: push the objects every local run-cache entry names."""
    proc = sh([sys.executable, "-c", _PUSH_RUN_CACHE_OBJECTS, remote or ""], repo)
    return proc.stdout


# ------------------------------------------------------------------------- exp queue
_ACTIVE = ("Queued", "Running")


def queue_tasks(repo: Path, env: dict[str, str]) -> dict[str, str]:
    """`dvc queue status` as {task id: status}."""
    out = sh(["dvc", "queue", "status"], repo, env=env, timeout=120).stdout
    tasks = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[-1] in (*_ACTIVE, "Success", "Failed"):
            tasks[fields[0]] = fields[-1]
    return tasks


def start_queue(repo: Path, env: dict[str, str], jobs: int, log: Path) -> str:
    """`dvc queue start --jobs N`, its output to a file: the workers it spawns inherit
    stdout/stderr, so with a pipe (capture_output) the caller would wait for them."""
    with open(log, "w") as out:
        proc = subprocess.run(
            ["dvc", "queue", "start", "--jobs", str(jobs)],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    text = log.read_text()
    if proc.returncode != 0:
        raise AssertionError(f"dvc queue start failed ({proc.returncode}):\n{text}")
    return text


def wait_for_queue(repo: Path, env: dict[str, str], timeout: float, poll: float = 5.0):
    """Poll `dvc queue status` until no task is queued or running; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = queue_tasks(repo, env)
        if tasks and not any(status in _ACTIVE for status in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not finished after {timeout:.0f} s: {tasks}")
        time.sleep(poll)


def worker_pids(repo: Path) -> list[int]:
    """Pids of this repository's celery queue workers that are still alive."""
    alive = []
    for pid_file in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"queue-worker" in cmdline:
            alive.append(pid)
    return alive


def stop_queue(repo: Path, env: dict[str, str], timeout: float = 60.0) -> list[int]:
    """`dvc queue stop --kill`, then wait for the workers to exit; SIGKILL (by pid) any
    worker of this repository still alive after ``timeout``. Returns the pids killed."""
    sh(["dvc", "queue", "stop", "--kill"], repo, env=env, check=False, timeout=120)
    deadline = time.monotonic() + timeout
    while worker_pids(repo) and time.monotonic() < deadline:
        time.sleep(1.0)
    leftover = worker_pids(repo)
    for pid in leftover:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftover


def exp_results(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """{experiment name: {"params": params.yaml data, "metrics": {file: data}}}."""
    rows = json.loads(sh(["dvc", "exp", "show", "--json"], repo, env=env).stdout)
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                found[rev.get("name") or rev["rev"]] = {
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": {k: v.get("data", {}) for k, v in data.get("metrics", {}).items()},
                    "error": rev.get("error"),
                }
    return found


def md_table(text: str) -> list[list[str]]:
    """Rows of the first Markdown table in ``text`` (header first, separator dropped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        rows.append(cells)
    return rows

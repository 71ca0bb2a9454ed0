"""Shared fixtures: tiny synthetic panels, the real params, and repository copies.

The pipeline runs for real once per test session: :func:`prepared_repo_path` copies the
project, runs `dvc repro` (the short backtest of copies), commits, and every test that needs
a reproduced repository works on a cheap full copy of it (``cp -a``: git, DVC cache,
outputs), rerunning only the stages its own params change. Under pytest-xdist the workers
share that one build (a file lock, see :func:`build_once`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from panelcast.core.config import load_params
from panelcast.examples import PROJECT_FILES as _PROJECT_FILES

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = list(_PROJECT_FILES)  # what a copy of the project needs (no data, no cache)


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
    "cycle.policy": "on_alarm",  # the cycle's policy must be one the backtest replays
}


#: The statistical references of the copies' baseline stage: Theta alone (AutoARIMA costs
#: about 100 s of CPU on the default data; the unit tests score every family).
SHORT_REFERENCES = {"baseline.statistical": ["theta"]}


def copy_repo(dest: Path, git: bool = True, full_backtest: bool = False) -> Path:
    """Copy the project files (no data, no cache) into ``dest`` and make it a git repo.

    Unless ``full_backtest``, the copy's backtest replays one year with two policies and
    its baseline scores one statistical reference (:data:`SHORT_REFERENCES`).
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
        set_params(dest, {**SHORT_BACKTEST, **SHORT_REFERENCES})
    if git:
        run(["git", "init", "-q", "-b", "main"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-q", "-m", "copy"], dest)
    return dest


def apply_dotted(data: dict, updates: dict) -> dict:
    """Set ``updates`` (dotted keys such as ``train.seed``) in the params mapping ``data``."""
    for dotted, value in updates.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def set_params(repo: Path, updates: dict) -> None:
    """Edit params.yaml in a copy (dotted keys), keeping the rest."""
    path = repo / "params.yaml"
    data = apply_dotted(yaml.safe_load(path.read_text()), updates)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------- shared builds


def shared_dir(tmp_path_factory) -> Path:
    """A folder of this test session seen by every xdist worker.

    Under xdist each worker's basetemp is ``<session>/popen-gwN``: the parent is the
    session's folder. Without xdist the parent would be shared by every past session, so
    the basetemp itself is used.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(path)`` once per session for all xdist workers; every caller gets ``path``.

    The first caller builds under an exclusive file lock (fcntl.flock); the others wait for
    it and reuse the result. A failed build is recorded, and the other workers fail at once
    with its message instead of building again.
    """
    root = shared_dir(tmp_path_factory)
    path, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if failed.exists():
                raise AssertionError(f"building {name} failed earlier:\n{failed.read_text()}")
            if not done.exists():
                shutil.rmtree(path, ignore_errors=True)  # an interrupted build
                try:
                    build(path)
                except BaseException:
                    failed.write_text(traceback.format_exc())
                    raise
                done.write_text(str(os.getpid()))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def clone_repo(source: Path, dest: Path, share_cache: bool = False) -> Path:
    """A full, cheap copy of a prepared repository: work tree, git, DVC cache and run cache.

    ``cp -a`` keeps modes and times; the copy is an independent repository whose
    `dvc status` is as clean as the source's. ``share_cache``: the copy uses the DVC cache
    of ``source`` (``cache.dir`` in the git-ignored config.local) instead of its own, so
    what one copy computed, the next restores from the run cache.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    if share_cache:
        shutil.rmtree(dest / ".dvc" / "cache")
        run(["dvc", "cache", "dir", "--local", str(source / ".dvc" / "cache")], dest)
    return dest


def commit_all(repo: Path, message: str) -> None:
    """``git add -A`` and commit (nothing when nothing changed)."""
    run(["git", "add", "-A"], repo)
    if run(["git", "status", "--porcelain"], repo).stdout.strip():
        run(["git", "commit", "-q", "-m", message], repo)


def derive(
    base: Path,
    dest: Path,
    updates: dict,
    targets: Iterable[str] = (),
    message: str = "params",
    share_cache: bool = False,
) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of ``base`` with ``updates`` to params.yaml, then `dvc repro [targets]` (only
    the stages the change affects run), committed. Returns the copy and the repro process."""
    repo = clone_repo(base, dest, share_cache=share_cache)
    set_params(repo, updates)
    proc = run(["dvc", "repro", *targets], repo)
    commit_all(repo, message)
    return repo, proc


def stages_run(output: str) -> set[str]:
    """Stages whose command `dvc repro` ran ("Running stage 'x':")."""
    return {s for s in PIPELINE_STAGES if f"Running stage '{s}'" in output}


def up_to_date(repo: Path) -> bool:
    return run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")


def _build_prepared(path: Path) -> None:
    copy_repo(path)  # short backtest, committed
    run(["git", "tag", "copy"], path)  # the project before any `dvc repro`
    proc = run(["dvc", "repro"], path)
    assert stages_run(proc.stdout) == set(PIPELINE_STAGES), proc.stdout
    commit_all(path, "repro")
    assert up_to_date(path)
    assert run(["git", "status", "--porcelain"], path).stdout == ""


def prepared_repo_path(tmp_path_factory) -> Path:
    """The session's prepared repository: a copy of the project after one full `dvc repro`
    on the default params (short backtest), committed; tag ``copy`` is the commit before.
    Never modify it: work on ``clone_repo(prepared, tmp_path / ...)``."""
    return build_once(tmp_path_factory, "prepared", _build_prepared)


@pytest.fixture(scope="session")
def prepared_repo(tmp_path_factory) -> Path:
    return prepared_repo_path(tmp_path_factory)


@pytest.fixture
def prepared_copy(prepared_repo, tmp_path) -> Path:
    """A private copy of the prepared repository (committed, `dvc status` clean)."""
    return clone_repo(prepared_repo, tmp_path / "repo")


#: Fast params of the remote and experiment tests: no search and fewer boosting rounds, so
#: every stage that fits models (train, backtest) stays fast.
FAST = {"train.search.enabled": False, "train.hyperparameters.max_iter": 60}
#: The stages FAST changes: check_params reads params.yaml whole; train, evaluate, predict
#: and drift follow the model; the backtest replays the same hyperparameters.
FAST_STAGES = {"check_params", "train", "evaluate", "predict", "drift", "backtest"}
#: The stages before the model: no change of the training params reruns them.
DATA_STAGES = {"collect", "validate", "features", "baseline"}


def _build_fast(prepared: Path) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        clone_repo(prepared, path)
        set_params(path, FAST)
        # Commit "fast configuration" as a fresh clone of the project would see it before
        # its first `dvc repro`: the project files and FAST params, none of the pipeline's
        # files (no dvc.lock, metrics, plots, DVC's .gitignore files).
        added = ["git", "diff", "--name-only", "--diff-filter=A", "copy", "HEAD"]
        produced = run(added, path).stdout.split()
        assert "dvc.lock" in produced, produced
        run(["git", "rm", "-q", "--cached", "--", *produced], path)
        run(["git", "add", "params.yaml"], path)
        run(["git", "commit", "-q", "-m", "fast configuration"], path)
        run(["git", "tag", "fast-configuration"], path)
        proc = run(["dvc", "repro"], path)
        ran = stages_run(proc.stdout)
        assert FAST_STAGES <= ran and not ran & DATA_STAGES, proc.stdout
        commit_all(path, "repro")
        assert up_to_date(path)
        assert run(["git", "status", "--porcelain"], path).stdout == ""

    return build


@pytest.fixture(scope="session")
def fast_repo(prepared_repo, tmp_path_factory) -> Path:
    """The prepared repository with FAST params, reproduced and committed (shared, never
    modify it). Tag ``fast-configuration``: the FAST params committed, no pipeline files."""
    return build_once(tmp_path_factory, "fast", _build_fast(prepared_repo))


#: The default params without the hyperparameter search (what makes train slow).
NO_SEARCH = {"train.search.enabled": False}


def _build_no_search(prepared: Path) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        clone_repo(prepared, path)
        set_params(path, NO_SEARCH)
        proc = run(["dvc", "repro"], path)
        # the stages that follow the model rerun (and check_params, which reads params.yaml
        # whole; the backtest, which replays the deployed model); the data stages do not
        ran = stages_run(proc.stdout)
        assert {"check_params", "train", "evaluate", "predict", "drift"} <= ran, proc.stdout
        assert "backtest" in ran and not ran & DATA_STAGES, proc.stdout
        commit_all(path, "no search")
        assert up_to_date(path)
        assert run(["git", "status", "--porcelain"], path).stdout == ""

    return build


def no_search_repo_path(tmp_path_factory, prepared: Path) -> Path:
    """The prepared repository with NO_SEARCH, reproduced and committed (shared, never modify
    it): the reliability tests' "last good state"."""
    return build_once(tmp_path_factory, "no-search", _build_no_search(prepared))


@pytest.fixture(scope="session")
def no_search_repo(prepared_repo, tmp_path_factory) -> Path:
    return no_search_repo_path(tmp_path_factory, prepared_repo)


# --------------------------------------------------------------------------- xdist order

#: Under xdist the slowest units are handed out first (longest processing time first); one
#: of them builds the prepared repository while the other worker runs the tests that need
#: none. Seconds are rough, measured on 2 cores; unlisted units count as small.
_COST = {
    "tests/integration/test_cycle.py::test_a_cycle_killed": 600,
    "tests/integration/test_cycle.py::test_cycle_fed": 500,
    "tests/integration/test_experiments.py": 240,
    "tests/integration/test_retrain.py::test_drift_runs": 150,
    "tests/integration/test_remote.py": 120,
    "tests/integration/test_pipeline.py::test_forced_repro": 70,
    "tests/integration/test_pipeline.py::test_hyperparameter_change": 40,
    "tests/reliability/test_faults.py::test_two_clones": 40,
    "tests/integration/test_retrain.py::test_no_drift": 30,
    "tests/integration/test_pipeline.py::test_crisis": 25,
    "tests/reliability/test_faults.py::test_sigkill_inside_a_write": 25,
    "tests/reliability/test_storage_faults.py::test_disk_full": 20,
    "tests/reliability/test_source_hardening.py::test_a_replaced_source": 20,
    "tests/reliability/test_contract_hardening.py": 15,
    "tests/reliability/test_faults.py::test_a_stage_failing_after_its_first_write": 10,
    "tests/reliability/test_faults.py::test_second_repro": 12,
    "tests/reliability/test_bad_inputs.py::test_bad_input_stops": 8,
}
_SHARED_FIXTURES = {"prepared_repo", "fast_repo", "no_search_repo", "good"}


def _group(item) -> str | None:
    """The xdist group of ``item`` (its ``xdist_group`` marks, as pytest-xdist joins them)."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "_".join(sorted(names)) or None


def _unit(item) -> str:
    """The xdist work unit of ``item`` under ``--dist loadgroup``: its group, or itself."""
    return _group(item) or item.nodeid


def _tag_group(item, group: str) -> None:
    """Append ``@group`` to the nodeid, which is how the loadgroup scheduler reads groups.

    pytest-xdist 3.8 sets ``item._nodeid``, which pytest >= 9.1 (structured node ids) no
    longer reads: the groups are silently ignored (pytest-dev/pytest-xdist#1386). This does
    what xdist meant to do, and nothing once xdist's own suffix is there.
    """
    if item.nodeid.endswith(f"@{group}"):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9.1: xdist's own suffix works
        return
    item._id = NodeId.parse(f"{item.nodeid}@{group}")


def _cost(item) -> float:
    for prefix, seconds in _COST.items():
        if item.nodeid.startswith(prefix):
            return seconds
    return 1.0


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook
def pytest_collection_modifyitems(config, items):
    """On xdist workers: tag each grouped test with its group (see :func:`_tag_group`), then
    hand out the costliest unit first, then every unit that needs no prepared repository (the
    other worker runs those while the first builds it), then the rest, costliest first
    (``--no-loadscope-reorder`` keeps this order). A plain run keeps the file order, so
    module fixtures are built once."""
    if not hasattr(config, "workerinput"):
        return
    units: dict[str, list] = {}
    for item in items:
        group = _group(item)
        if group and config.getvalue("loadgroup"):
            _tag_group(item, group)
        units.setdefault(_unit(item), []).append(item)
    top = max(_COST.values())

    def rank(entry):
        index, (_, members) = entry
        cost = max(_cost(item) for item in members)
        shared = any(_SHARED_FIXTURES & set(item.fixturenames) for item in members)
        return (0 if cost == top else 2 if shared else 1, -cost, index)

    ordered = sorted(enumerate(units.items()), key=rank)
    items[:] = [item for _, (_, members) in ordered for item in members]

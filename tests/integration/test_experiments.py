"""Experiments: a queued hyperparameter grid run by local celery workers, the winner applied
and branched, metrics/params diffs for a pull request, plots of two experiments in HTML."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from ..conftest import FAST, ROOT, clone_repo, run, up_to_date
from .remote_helpers import (
    dvc_env,
    exp_results,
    git_clone,
    md_table,
    sh,
    start_queue,
    stop_queue,
    wait_for_queue,
    worker_pids,
)

# One xdist worker runs the whole module: its fixtures (the queue, the grid) are shared.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("experiments")]

# FAST: search off and fewer boosting rounds, so every stage that fits models (train,
# backtest) stays fast. The grid varies max_iter only (one point: each point reruns the
# model stages); a control experiment repeats the baseline (restored from the run cache).
MAX_ITER = "train.hyperparameters.max_iter"
GRID = {"iter-20": 20}
CONTROL = "iter-60"
QUEUE_TIMEOUT = 1500  # seconds for the whole queue (two workers on a shared 2-core box)
PR_DIFF = ROOT / "scripts" / "pr_diff.sh"


def evaluate_mae(metrics: dict) -> float:
    return metrics["metrics/evaluate.json"]["model"]["mae"]


@pytest.fixture(scope="module")
def repo(fast_repo, tmp_path_factory) -> Path:
    """A copy of the repository, fast configuration committed, after `dvc repro` (the
    session's fast repository, see tests/conftest.py)."""
    path = clone_repo(fast_repo, tmp_path_factory.mktemp("experiments") / "repo")
    assert up_to_date(path)
    return path


@pytest.fixture(scope="module")
def queue_env(repo) -> dict[str, str]:
    # Nothing set by hand: each queued experiment runs in its own copy of the repository
    # (.dvc/tmp/exps/...) and its stage commands (`PYTHONPATH=src python ...`) import that
    # copy's src/, not the workspace's.
    env = dvc_env(repo)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def grid(repo, queue_env) -> dict[str, dict]:
    """Queue the grid and the control, run them with two workers, wait; workers stopped
    (`dvc queue stop --kill`) at the end of the module, or at once if anything fails."""
    base = yaml.safe_load((repo / "params.yaml").read_text())["train"]["hyperparameters"]
    assert base["max_iter"] == FAST[MAX_ITER] and FAST[MAX_ITER] not in GRID.values()
    runs = {**GRID, CONTROL: FAST[MAX_ITER]}
    try:
        for name, value in runs.items():
            proc = sh(
                ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"{MAX_ITER}={value}"],
                repo,
                env=queue_env,
            )
            assert f"Queued experiment '{name}'" in proc.stdout
        started = start_queue(repo, queue_env, jobs=2, log=repo.parent / "queue-start.log")
        assert "Started '2' new experiments task queue workers" in started
        tasks = wait_for_queue(repo, queue_env, timeout=QUEUE_TIMEOUT)
        assert sorted(tasks.values()) == ["Success"] * len(runs), tasks
        results = exp_results(repo, queue_env)
        yield {name: results[name] for name in runs}
    finally:
        killed = stop_queue(repo, queue_env)
        assert not killed, f"queue workers {killed} survived `dvc queue stop --kill`"
        assert not worker_pids(repo)


@pytest.fixture
def clean_workspace(repo):
    """Put the workspace back to HEAD after a test that applies an experiment."""
    yield repo
    run(["git", "reset", "-q", "--hard", "HEAD"], repo)
    run(["dvc", "checkout", "-q", "--force"], repo)


def test_queued_grid_metrics_follow_params(repo, grid):
    head = json.loads((repo / "metrics" / "evaluate.json").read_text())
    for name, result in grid.items():
        assert result["error"] is None, (name, result["error"])
        expected = GRID.get(name, FAST[MAX_ITER])
        assert result["params"]["train"]["hyperparameters"]["max_iter"] == expected
    maes = {name: evaluate_mae(result["metrics"]) for name, result in grid.items()}
    # different params, different metrics; the control repeats the baseline exactly
    assert len({maes[name] for name in GRID} | {maes[CONTROL]}) == len(GRID) + 1, maes
    assert maes[CONTROL] == head["model"]["mae"]
    # other params untouched: the grid only moved max_iter
    params = [copy.deepcopy(result["params"]) for result in grid.values()]
    for p in params:
        p["train"]["hyperparameters"].pop("max_iter")
    assert all(p == params[0] for p in params)


def test_exp_show_md_is_a_table_of_every_experiment(repo, grid, queue_env):
    keep = r"Experiment|train\.hyperparameters\.max_iter|model\.(mae|rmse|wape)$"
    proc = sh(["dvc", "exp", "show", "--md", "--drop", ".*", "--keep", keep], repo, env=queue_env)
    rows = md_table(proc.stdout)
    assert rows[0] == ["Experiment", "model.mae", "model.rmse", "model.wape", MAX_ITER]
    by_name = {}
    for row in rows[1:]:
        match = re.search(r"\[([^\]]+)\]", row[0])
        if match:
            by_name[match.group(1)] = row
    assert set(by_name) == set(grid)
    for name, row in by_name.items():
        assert int(row[4]) == grid[name]["params"]["train"]["hyperparameters"]["max_iter"]
        assert math.isclose(float(row[1]), evaluate_mae(grid[name]["metrics"]), rel_tol=1e-4)


def test_winner_is_applied_and_branched(repo, grid, queue_env, clean_workspace):
    winner = min(grid, key=lambda name: evaluate_mae(grid[name]["metrics"]))
    best = grid[winner]
    sh(["dvc", "exp", "apply", winner], repo, env=queue_env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["hyperparameters"]["max_iter"] == GRID.get(winner, FAST[MAX_ITER])
    applied = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert applied["model"]["mae"] == evaluate_mae(best["metrics"])
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")

    sh(["dvc", "exp", "branch", winner, "best-model"], repo, env=queue_env)
    branched = json.loads(run(["git", "show", "best-model:metrics/evaluate.json"], repo).stdout)
    assert branched["model"]["mae"] == evaluate_mae(best["metrics"])
    parent = run(["git", "rev-parse", "best-model~1"], repo).stdout.strip()
    assert parent == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


@pytest.fixture(scope="module")
def branch(repo, grid, queue_env) -> str:
    """A git branch holding the experiment with max_iter=20 (one commit on top of main)."""
    sh(["dvc", "exp", "branch", "iter-20", "exp-iter-20"], repo, env=queue_env)
    return "exp-iter-20"


def test_metrics_and_params_diff_between_two_commits_are_markdown(repo, grid, branch):
    metrics = md_table(run(["dvc", "metrics", "diff", "--md", "main", branch], repo).stdout)
    assert metrics[0] == ["Path", "Metric", "main", branch, "Change"]
    rows = {(r[0], r[1]): r for r in metrics[1:]}
    mae = rows[("metrics/evaluate.json", "model.mae")]
    head = json.loads((repo / "metrics" / "evaluate.json").read_text())["model"]["mae"]
    new = evaluate_mae(grid["iter-20"]["metrics"])
    assert math.isclose(float(mae[2]), head, rel_tol=1e-4)
    assert math.isclose(float(mae[3]), new, rel_tol=1e-4)
    assert math.isclose(float(mae[4]), new - head, rel_tol=1e-3, abs_tol=1e-3)

    params = md_table(run(["dvc", "params", "diff", "--md", "main", branch], repo).stdout)
    assert params == [
        ["Path", "Param", "main", branch],
        ["params.yaml", MAX_ITER, str(FAST[MAX_ITER]), "20"],
    ]


def test_pr_diff_script_prints_both_tables_against_main(repo, grid, branch, tmp_path):
    # A clone on the experiment's branch: metrics and params are in git (cache: false),
    # so neither the DVC cache nor a remote is needed to compare them.
    clone = git_clone(repo, tmp_path / "pr", rev=branch)
    out = run([str(PR_DIFF)], clone / "src").stdout  # default base: main, from a subfolder
    assert out == run([str(PR_DIFF), "main"], clone).stdout
    metrics_part, params_part = out.split("### Params")
    assert "### Metrics" in metrics_part
    metrics = md_table(metrics_part)
    assert metrics[0] == ["Path", "Metric", "main", "workspace", "Change"]
    mae = next(r for r in metrics if r[:2] == ["metrics/evaluate.json", "model.mae"])
    assert math.isclose(float(mae[3]), evaluate_mae(grid["iter-20"]["metrics"]), rel_tol=1e-4)
    assert md_table(params_part) == [
        ["Path", "Param", "main", "workspace"],
        ["params.yaml", MAX_ITER, str(FAST[MAX_ITER]), "20"],
    ]

    same = run([str(PR_DIFF), "HEAD"], clone).stdout
    assert same.count("_No change._") == 2

    missing = run([str(PR_DIFF), "no-such-branch"], clone, check=False)
    assert missing.returncode != 0 and "'no-such-branch' not found" in missing.stderr


def test_plots_diff_of_two_experiments_renders_html(repo, grid, tmp_path):
    out = tmp_path / "plots"
    run(["dvc", "plots", "diff", "iter-20", CONTROL, "-o", str(out)], repo)
    html = (out / "index.html").read_text()
    for name in ("iter-20", CONTROL):
        assert name in html
    assert "workspace" not in html  # exactly the two revisions asked for
    for plot in ("predicted_vs_actual", "error_over_time", "error_by_segment"):
        assert plot in html

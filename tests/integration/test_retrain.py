"""`make retrain`: acts on the drift verdict with a DVC experiment, promoted only past the gate."""

import json
import sys

import pytest

from ..conftest import copy_repo, run, set_params

pytestmark = pytest.mark.slow


def retrain(repo):
    return run([sys.executable, "scripts/retrain.py"], repo, check=False)


def committed_repo(path, updates):
    repo = copy_repo(path)
    set_params(repo, {"train.search.enabled": False, **updates})
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "baseline"], repo)
    return repo


def test_no_drift_does_nothing(tmp_path):
    # the current window is the middle of the training window: nothing drifted
    repo = committed_repo(
        tmp_path / "calm", {"drift.current_start": "2005-01", "drift.current_end": "2010-12"}
    )
    assert json.loads((repo / "metrics/drift.json").read_text())["drifted"] is False
    proc = retrain(repo)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr
    assert run(["dvc", "exp", "list", "--name-only"], repo).stdout.strip() == ""


def test_drift_runs_an_experiment_and_promotes_it_only_past_the_gate(tmp_path):
    # trained on 2000-2005, the crisis years 2008-2010 drift
    repo = committed_repo(
        tmp_path / "crisis",
        {
            "windows.train_end": "2005-12",
            "windows.test_start": "2006-01",
            "windows.test_end": "2007-12",
            "drift.current_start": "2008-01",
            "drift.current_end": "2010-12",
        },
    )
    assert json.loads((repo / "metrics/drift.json").read_text())["drifted"] is True
    before = (repo / "params.yaml").read_text()
    proc = retrain(repo)
    assert proc.returncode in (0, 3), proc.stderr
    name = "retrain-2014-07"
    assert name in run(["dvc", "exp", "list", "--name-only"], repo).stdout
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert name in json.dumps(show)
    after = (repo / "params.yaml").read_text()
    if proc.returncode == 0:  # promoted: the workspace now holds the new windows and metrics
        assert "promoted" in proc.stderr and "2014-07" in after
        assert json.loads((repo / "metrics/evaluate.json").read_text())["gate_passed"] is True
    else:  # refused: the deployed model and its params are untouched
        assert "did not pass the gate" in proc.stderr and after == before

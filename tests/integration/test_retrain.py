"""`make retrain`: acts on the drift verdict with a DVC experiment, promoted only past the gate."""

import json
import sys

import pytest
import yaml

from ..conftest import derive, run

pytestmark = pytest.mark.slow

# trained on 2000-2005, the crisis years 2008-2010 drift
CRISIS = {
    "windows.train_end": "2005-12",
    "windows.test_start": "2006-01",
    "windows.test_end": "2007-12",
    "drift.current_start": "2008-01",
    "drift.current_end": "2010-12",
}


def retrain(repo):
    return run([sys.executable, "scripts/retrain.py"], repo, check=False)


def committed_repo(base, path, updates, share_cache=False):
    """A copy of ``base`` with the search off and ``updates``, reproduced and committed."""
    updates = {"train.search.enabled": False, **updates}
    repo, _ = derive(base, path, updates, message="baseline", share_cache=share_cache)
    return repo


@pytest.fixture(scope="module")
def crisis(prepared_repo, tmp_path_factory):
    """The crisis configuration reproduced and committed, once for both gate settings; their
    copies share its DVC cache, so the second retrain experiment restores from the run cache
    the stages the first one ran (only the gate differs)."""
    return committed_repo(prepared_repo, tmp_path_factory.mktemp("retrain") / "crisis", CRISIS)


def test_no_drift_does_nothing(no_search_repo, tmp_path):
    # the current window is the middle of the training window: nothing drifted
    repo = committed_repo(
        no_search_repo,
        tmp_path / "calm",
        {"drift.current_start": "2005-01", "drift.current_end": "2010-12"},
    )
    assert json.loads((repo / "metrics/drift.json").read_text())["drifted"] is False
    proc = retrain(repo)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr
    assert run(["dvc", "exp", "list", "--name-only"], repo).stdout.strip() == ""


@pytest.mark.xdist_group("retrain-crisis")  # one worker: the crisis fixture is built once
# the gate decides: one the retrained model passes, one it cannot (with the default pooled
# choice its gain over the rule on its last 12 months, 2014-08 .. 2015-07, is about -0.7 %)
@pytest.mark.parametrize("min_gain_pct,promoted", [(-50.0, True), (90.0, False)])
def test_drift_runs_an_experiment_promoted_only_past_the_gate(
    crisis, tmp_path, min_gain_pct, promoted
):
    # the gate setting changes the evaluation only: check_params and evaluate rerun
    gate = {"evaluate.gate.min_gain_pct": min_gain_pct}
    repo = committed_repo(crisis, tmp_path / "crisis", gate, share_cache=True)
    assert json.loads((repo / "metrics/drift.json").read_text())["drifted"] is True
    before = (repo / "params.yaml").read_text()
    model_before = (repo / "models/model.skops").read_bytes()
    proc = retrain(repo)
    name = "retrain-2014-07"
    assert name in run(["dvc", "exp", "list", "--name-only"], repo).stdout
    assert name in run(["dvc", "exp", "show", "--md"], repo).stdout
    after = (repo / "params.yaml").read_text()
    if promoted:  # the workspace now holds the new windows, model and metrics
        assert proc.returncode == 0, proc.stderr
        assert "passed the gate" in proc.stderr
        assert str(yaml.safe_load(after)["windows"]["train_end"]) == "2014-07"
        assert json.loads((repo / "metrics/evaluate.json").read_text())["gate_passed"] is True
        assert (repo / "models/model.skops").read_bytes() != model_before
    else:  # refused: the deployed model and its params are untouched
        assert proc.returncode == 3, proc.stderr
        assert "did not pass the gate" in proc.stderr and after == before
        assert (repo / "models/model.skops").read_bytes() == model_before

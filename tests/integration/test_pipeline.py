"""The real pipeline: `dvc repro` in a copy of the repository, on the real default data.

The full `dvc repro` on the default params is the session's prepared repository (see
tests/conftest.py: every stage ran there); each test works on its own copy of it.
"""

import json

import pandas as pd
import pytest
import yaml

from ..conftest import PIPELINE_STAGES, clone_repo, copy_repo, derive, run, stages_run

pytestmark = pytest.mark.slow
STAGES = PIPELINE_STAGES
ran = stages_run


@pytest.fixture
def repo(prepared_copy):
    """A copy of the repository after one full `dvc repro` on the default params, committed."""
    return prepared_copy


def metrics(repo, name):
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_metrics_files_hold_the_expected_figures(repo):
    collect = metrics(repo, "collect")
    assert collect["rows"] == 8602 and collect["segments"] == 46
    assert collect["time_span"] == {"first": "2000-01", "last": "2015-07", "periods": 187}
    assert len(collect["source"]["sha256"]) == 64
    assert metrics(repo, "validate")["passed"] is True
    ev = metrics(repo, "evaluate")
    for side in ("model", "best_rule"):
        assert {"mae", "rmse", "wape", "r2"} <= set(ev[side])
    assert ev["model"]["n"] == ev["best_rule"]["n"] == 2017
    # the model must beat the best rule on the test window
    assert ev["model"]["mae"] < ev["best_rule"]["mae"]
    assert ev["gain_pct"] > 0 and isinstance(ev["gate_passed"], bool)
    drift = metrics(repo, "drift")
    assert {"drifted", "reasons", "columns"} <= set(drift)
    assert {"effect", "p_value", "drifted"} <= set(drift["columns"]["target"])
    backtest = metrics(repo, "backtest")
    assert set(backtest["policies"]) == {"never", "on_alarm"}  # the short replay of copies
    assert backtest["policies"]["never"]["retrains"] == 0
    predict = metrics(repo, "predict")
    assert predict["forecast_period"] == "2015-08" and predict["refit"] == "all"
    assert predict["segments"] == 46 and predict["segments_without_forecast"] == 0
    intervals = ev["intervals"]
    assert intervals["calibration_periods"] == 24
    for level, points in (("80", 3), ("95", 2)):
        cov = intervals["levels"][level]
        assert cov["n"] == 2017 and cov["mean_width"] > 0
        # the promise of the issue: within 3 (80 %) and 2 (95 %) points of nominal
        assert abs(cov["coverage"] - int(level) / 100) <= points / 100, cov
        assert cov["within_target"] is True
    forecasts = pd.read_parquet(repo / "data" / "forecasts.parquet")
    assert len(forecasts) == 46 and set(forecasts["period"]) == {"2015-08"}
    assert forecasts["forecast"].notna().all()
    assert (forecasts["lower_95"] <= forecasts["lower_80"]).all()
    assert (forecasts["lower_80"] <= forecasts["forecast"]).all()
    assert (forecasts["forecast"] <= forecasts["upper_80"]).all()
    assert (forecasts["upper_80"] <= forecasts["upper_95"]).all()
    deployed = json.loads((repo / "models" / "deployed.json").read_text())
    assert set(forecasts["model_version"]) == {deployed["version"]}
    assert deployed["training_window"]["end"] == "2015-07"  # refit on every labelled month
    plots = [
        "forecasts",
        "predicted_vs_actual",
        "error_over_time",
        "error_by_segment",
        "intervals_over_time",
        "drift_effects",
        "backtest_error",
        "backtest_drift",
    ]
    for plot in plots:
        assert (repo / "plots" / f"{plot}.csv").stat().st_size > 0


def test_second_repro_runs_nothing(repo):
    proc = run(["dvc", "repro"], repo)
    assert ran(proc.stdout) == set()
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")


def test_forced_repro_is_byte_identical(repo):
    before = (repo / "dvc.lock").read_text()
    proc = run(["dvc", "repro", "-f"], repo)
    assert ran(proc.stdout) == set(STAGES)
    assert (repo / "dvc.lock").read_text() == before


def test_hyperparameter_change_reruns_only_train_and_after(fast_repo, tmp_path):
    # from the fast configuration (no search: the reruns are what is tested, not the search)
    repo = clone_repo(fast_repo, tmp_path / "repo")
    change = "train.hyperparameters.max_iter=150"
    proc = run(["dvc", "exp", "run", "-n", "more-trees", "-S", change], repo)
    # the backtest replays the same estimator with the same hyperparameters, so it reruns too
    assert ran(proc.stdout) == {
        "check_params", "train", "evaluate", "predict", "drift", "backtest", "report"
    }  # fmt: skip
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert "more-trees" in json.dumps(show)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    assert "metrics/evaluate.json" in diff
    params = json.loads(run(["dvc", "params", "diff", "--json"], repo).stdout)
    assert params["params.yaml"]["train.hyperparameters.max_iter"]["new"] == 150


def test_crisis_drift_says_retrain(prepared_repo, tmp_path):
    """Reference 2000-2005 (the training window) against 2008-2010: retrain, naming columns."""
    crisis = {
        "windows.train_end": "2005-12",
        "windows.test_start": "2006-01",
        "drift.current_start": "2008-01",
        "drift.current_end": "2010-12",
        "train.search.enabled": False,
    }
    # `dvc repro drift`: the drift verdict needs the stages up to drift, not the evaluation
    path, proc = derive(prepared_repo, tmp_path / "crisis", crisis, targets=["drift"])
    assert {"features", "train", "drift"} <= ran(proc.stdout), proc.stdout
    drift = metrics(path, "drift")
    assert drift["drifted"] is True
    drifted = [c for c, v in drift["columns"].items() if v["drifted"]]
    assert drifted and any(c in " ".join(drift["reasons"]) for c in drifted)


def test_bad_params_stop_the_stage_naming_the_key(tmp_path):
    path = copy_repo(tmp_path / "badparams")
    data = yaml.safe_load((path / "params.yaml").read_text())
    data["train"]["sede"] = 1
    (path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run(["dvc", "repro", "collect"], path, check=False)
    assert proc.returncode != 0
    assert "train.sede" in proc.stderr + proc.stdout

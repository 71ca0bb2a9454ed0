"""The test window decides nothing: with its targets shuffled, the train stage makes the same
choice (hyperparameters, strategy, every segment's family) and writes the same bytes; only
the scores of the test window move.

Runs the stage scripts of a copy of the prepared repository (default params: the deployed
choice is the ``pooled`` CV's) on a validated panel whose test-window targets were
permuted.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from ..conftest import run

pytestmark = pytest.mark.slow

#: What the train stage writes: every byte must stay the same.
TRAIN_OUTPUTS = ["models/model.skops", "models/metadata.json", "metrics/train.json"]


def snapshot(repo) -> dict[str, bytes]:
    files = [repo / name for name in TRAIN_OUTPUTS]
    files += sorted(p for p in (repo / "models" / "segments").rglob("*") if p.is_file())
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def test_shuffling_the_test_window_targets_changes_no_choice(prepared_copy):
    repo = prepared_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    start = params["windows"]["test_start"]
    before = snapshot(repo)
    evaluate_before = json.loads((repo / "metrics" / "evaluate.json").read_text())

    path = repo / "data" / "validated.parquet"
    panel = pd.read_parquet(path)
    period = panel["year"].astype(int) * 100 + panel["month"].astype(int)
    test = (period >= int(start.replace("-", ""))).to_numpy()
    target = params["problem"]["target"]
    values = panel.loc[test, target].to_numpy().copy()
    rng = np.random.default_rng(0)
    panel.loc[test, target] = rng.permutation(values)
    assert not np.array_equal(panel.loc[test, target].to_numpy(), values, equal_nan=True)
    panel.to_parquet(path, index=False)

    for stage in ("features", "train", "evaluate"):
        run(["python", f"stages/{stage}.py"], repo)

    after = snapshot(repo)
    assert sorted(after) == sorted(before)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [], f"the train stage's outputs moved with the test window: {changed}"
    manifest = json.loads((repo / "models" / "segments" / "manifest.json").read_text())
    assert manifest["strategy"] == params["train"]["strategy"]
    # the test window did change, and its scores with it
    evaluate_after = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert evaluate_after["model"]["mae"] != evaluate_before["model"]["mae"]

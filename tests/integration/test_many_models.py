"""Per-segment models through the real pipeline: `dvc repro` in a copy with
``train.strategy: best_of``, fitted on a real Dask LocalCluster (127.0.0.1, started and
stopped by the train stage) and on joblib processes, with identical outputs; evaluate,
drift and predict route every segment to its own model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ..conftest import DATA_STAGES, derive, stages_run

pytestmark = pytest.mark.slow

FAMILIES = ["seasonal_naive", "theta", "sklearn"]
BEST_OF = {
    "train.strategy": "best_of",
    "train.per_segment.families": FAMILIES,
    "train.per_segment.combinations": False,
    "train.engine.chunk_segments": 8,
}
TARGETS = ["evaluate", "drift", "predict"]


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / name).read_text())


@pytest.fixture(scope="module")
def dask_repo(fast_repo, tmp_path_factory):
    updates = {**BEST_OF, "train.engine.backend": "dask", "train.engine.workers": 2}
    path = tmp_path_factory.mktemp("many") / "dask"
    return derive(fast_repo, path, updates, targets=TARGETS, message="best_of on dask")


def test_best_of_runs_in_one_train_stage_and_routes_every_segment(dask_repo):
    repo, proc = dask_repo
    ran = stages_run(proc.stdout)
    assert {"train", "evaluate", "drift"} <= ran and not ran & DATA_STAGES, proc.stdout
    assert "dask: LocalCluster on 127.0.0.1, 2 worker(s)" in proc.stderr + proc.stdout
    assert "46/46 segments done" in proc.stderr + proc.stdout  # progress
    manifest = read(repo, "models/segments/manifest.json")
    assert manifest["strategy"] == "best_of" and manifest["segments"] == 46
    families = manifest["families"]
    assert sum(families.values()) == 46 and len(families) >= 2, families
    kept = [e for e in manifest["models"] if "note" in e]  # too short for its own model
    assert all(e["family"] == "global" and e["cv"] == {} for e in kept), kept
    for entry in manifest["models"]:
        if entry in kept:
            continue
        assert set(entry["cv"]) == {"global", *FAMILIES}
        scored = {k: v for k, v in entry["cv"].items() if v is not None}
        if entry["family"] != "global" or scored:
            assert entry["cv_mae"] == min(scored.values())  # the CV chose it
        if entry["file"]:
            base = repo if entry["family"] == "global" else repo / "models/segments"
            digest = hashlib.sha256((base / entry["file"]).read_bytes()).hexdigest()
            assert digest == entry["sha256"]
    evaluation = read(repo, "metrics/evaluate.json")
    assert evaluation["strategy"] == "best_of"
    assert evaluation["models_by_family"] == families
    by_family = {r["family"] for r in evaluation["per_segment"]}
    assert by_family == set(families)
    losing = [r["city"] for r in evaluation["per_segment"] if r["mae"] > r["rule_mae"]]
    assert evaluation["segments_losing_to_rule"] == losing
    drift = read(repo, "metrics/drift.json")
    assert drift["segments"]["checked"] == 46
    assert len(drift["segments"]["drifted_segments"]) == drift["segments"]["drifted"]
    deployed = read(repo, "models/deployed_segments/manifest.json")
    assert {e["segment"]: e["family"] for e in deployed["models"]} == {
        e["segment"]: e["family"] for e in manifest["models"]
    }
    assert read(repo, "models/deployed.json")["segment_models"]["strategy"] == "best_of"


def test_joblib_gives_the_same_models_and_scores_as_dask(dask_repo, fast_repo, tmp_path):
    repo, _ = dask_repo
    local = {**BEST_OF, "train.engine.backend": "local", "train.engine.n_jobs": 2}
    other, _ = derive(fast_repo, tmp_path / "local", local, targets=TARGETS)
    for name in [
        "models/segments/manifest.json",
        "models/deployed_segments/manifest.json",
        "metrics/evaluate.json",
        "metrics/drift.json",
        "data/forecasts.parquet",
    ]:
        assert (other / name).read_bytes() == (repo / name).read_bytes(), name
    files = sorted((repo / "models/segments").rglob("*.skops"))
    assert files, "no scikit-learn segment model was chosen"
    for f in files:
        twin = other / f.relative_to(repo)
        assert twin.read_bytes() == f.read_bytes(), f

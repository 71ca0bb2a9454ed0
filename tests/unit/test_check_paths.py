"""`check_params` refuses output paths that would make DVC delete or overwrite user files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from panelcast.core.config import params_from_dict
from panelcast.pipeline.check_params import path_problems

from ..conftest import ROOT, apply_dotted, run


@pytest.fixture
def repo(tmp_path) -> Path:
    """A tiny git repository with the project's params, contract, a README and a lock that
    records data/raw/snapshot.parquet as an output."""
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "README.md").write_text("# my project\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  collect:\n    outs:\n    - path: data/raw/snapshot.parquet\n"
    )
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "snapshot.parquet").write_bytes(b"PAR1 old snapshot")
    (tmp_path / "data" / "mine.csv").write_text("my only copy\n")
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["git", "add", "params.yaml", "contract.yaml", "README.md", "dvc.lock"], tmp_path)
    return tmp_path


def problems(repo: Path, **updates) -> list[str]:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    return path_problems(params_from_dict(apply_dotted(data, updates)), repo)


def test_the_default_paths_are_accepted(repo):
    assert problems(repo) == []


@pytest.mark.parametrize(
    ("updates", "fragment"),
    [
        ({"source.uri": "data/mine.csv", "paths.snapshot": "data/mine.csv"},
         "must not be the source file source.uri"),
        ({"source.uri": "file://{repo}/data/mine.csv", "paths.snapshot": "data/mine.csv"},
         "must not be the source file source.uri"),
        ({"paths.snapshot": "README.md"}, "must not be a file git tracks"),
        ({"paths.features": "contract.yaml"}, "must not be the data contract"),
        ({"paths.model": "params.yaml"}, "must not be the project file params.yaml"),
        ({"paths.snapshot": "../outside.parquet"}, "must be a relative path inside the repo"),
        ({"paths.snapshot": "/tmp/elsewhere.parquet"}, "must be a relative path inside the repo"),
        ({"paths.snapshot": ".dvc/cache/x.parquet"}, "must not be inside .git or .dvc"),
        ({"paths.features": "data/raw/snapshot.parquet"}, "must differ from 'paths.snapshot'"),
        ({"paths.snapshot": "data/mine.csv"}, "existing file that no stage produced"),
    ],
    ids=["source", "source_file_url", "git_tracked", "contract", "params", "parent",
         "absolute", "dvc_dir", "two_outputs", "untracked_user_file"],
)  # fmt: skip
def test_a_dangerous_output_path_is_refused(repo, updates, fragment):
    updates = {k: v.format(repo=repo) for k, v in updates.items()}
    found = problems(repo, **updates)
    key = next(k for k in updates if k.startswith("paths."))
    assert any(fragment in p and f"'{key}'" in p for p in found), found
    assert (repo / "data" / "mine.csv").read_text() == "my only copy\n"
    assert (repo / "README.md").read_text() == "# my project\n"


def test_an_output_recorded_in_the_lock_may_be_replaced(repo):
    assert problems(repo, **{"paths.snapshot": "data/raw/snapshot.parquet"}) == []
    assert problems(repo, **{"paths.snapshot": "data/raw/new_name.parquet"}) == []

"""Outputs never coincide with an input: `dvc repro` with a snapshot path on the user's only
copy of the data, on a git-tracked file or outside the repository is refused by check_params
before DVC deletes anything."""

from __future__ import annotations

import pytest

from ..conftest import set_params
from .helpers import clone, dvc, error_text, failed_stage, line_with_all, point_source_at, ran


@pytest.mark.slow
def test_an_output_path_on_an_input_is_refused_and_nothing_is_lost(good, tmp_path):
    repo = clone(good, tmp_path / "repo")
    own = repo / "data" / "mine.csv"
    own.write_bytes(b"city,year,month,sales\nA,2000,1,5\n")
    outside = tmp_path / "outside.parquet"
    readme = (repo / "README.md").read_bytes()
    attempts = [
        ("data/mine.csv", "data/mine.csv", ("'paths.snapshot'", "source file source.uri")),
        (str(own), "README.md", ("'paths.snapshot'", "git tracks", "'README.md'")),
        (str(own), str(outside), ("'paths.snapshot'", "inside the repository")),
    ]
    for uri, snapshot, fragments in attempts:
        point_source_at(repo, uri)
        set_params(repo, {"paths.snapshot": snapshot})
        proc = dvc(repo, "repro", "validate", timeout=300)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0, said
        assert failed_stage(said) == "check_params", said
        assert "collect" not in ran(proc.stdout), said
        assert line_with_all(error_text(proc), ("params.yaml", *fragments)), error_text(proc)
        assert own.read_bytes() == b"city,year,month,sales\nA,2000,1,5\n"
        assert (repo / "README.md").read_bytes() == readme
        assert not outside.exists()

"""Outputs never coincide with an input: `dvc repro` with a snapshot path on the user's only
copy of the data, on a git-tracked file or outside the repository is refused before DVC
deletes anything: by check_params, or by DVC itself when the source is, as documented, also
collect's dependency (source.watch)."""

from __future__ import annotations

import pytest

from ..conftest import set_params
from .helpers import clone, dvc, failed_stage, line_with_all, point_source_at, ran


@pytest.mark.slow
def test_an_output_path_on_an_input_is_refused_and_nothing_is_lost(good, tmp_path):
    repo = clone(good, tmp_path / "repo")
    own = repo / "data" / "mine.csv"
    own.write_bytes(b"city,year,month,sales\nA,2000,1,5\n")
    outside = tmp_path / "outside.parquet"
    makefile = (repo / "Makefile").read_bytes()
    refused_by_us = "check_params"
    attempts = [
        # source.watch left on the package's lock: check_params sees the snapshot on the source
        (
            {"source.uri": "data/mine.csv"},
            "data/mine.csv",
            refused_by_us,
            ("params.yaml", "'paths.snapshot'", "source file source.uri"),
        ),
        # source.watch set as documented: DVC itself refuses a dependency that is an output
        (None, "data/mine.csv", None, ("ERROR", "both a dependency and an output", "collect")),
        (
            None,
            "Makefile",
            refused_by_us,
            ("params.yaml", "'paths.snapshot'", "git tracks", "'Makefile'"),
        ),
        (
            None,
            str(outside),
            refused_by_us,
            ("params.yaml", "'paths.snapshot'", "inside the repository"),
        ),
    ]
    for source, snapshot, stage, fragments in attempts:
        if source is None:
            point_source_at(repo, "data/mine.csv")
        else:
            set_params(repo, source)
        set_params(repo, {"paths.snapshot": snapshot})
        proc = dvc(repo, "repro", "validate", timeout=300)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0, said
        assert failed_stage(said) == stage, said
        assert "collect" not in ran(proc.stdout), said
        assert line_with_all(said, fragments), said
        assert own.read_bytes() == b"city,year,month,sales\nA,2000,1,5\n"
        assert (repo / "Makefile").read_bytes() == makefile
        assert not outside.exists()

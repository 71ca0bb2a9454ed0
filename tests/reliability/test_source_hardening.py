"""Hardened sources through the real pipeline: `dvc repro` never hangs on a source, refuses
suspicious files in one line, reads .csv.gz, and notices a replaced source file.

Each case works on a full copy of the shared "good" repository (git, DVC cache, outputs),
runs `dvc repro validate`, and a failing case then restores the last good state with the
documented recovery (README, "When a stage fails").
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import commit_all, run, set_params
from .helpers import (
    RECOVERY,
    clone,
    diff_state,
    dvc,
    error_text,
    failed_stage,
    git_status,
    line_with_all,
    point_source_at,
    ran,
    real_csv_bytes,
    real_frame,
    state,
)

pytestmark = pytest.mark.slow

SNAP = "data/raw/snapshot.parquet"
VALIDATED = "data/validated.parquet"


# --------------------------------------------------------------------------- refused sources


@dataclass(frozen=True)
class Refusal:
    id: str
    prepare: Callable[[Path, Path], str]  # (repo, folder for files) -> what the error names
    stage: str  # the stage that refuses it
    fragments: tuple[str, ...]  # with the source's name: all on one line of the error


def fifo(repo: Path, folder: Path) -> str:
    os.mkfifo(folder / "pipe.csv")
    point_source_at(repo, folder / "pipe.csv")
    return "pipe.csv"


def gzip_without_suffix(repo: Path, folder: Path) -> str:
    (folder / "txhousing.csv").write_bytes(gzip.compress(real_csv_bytes(), mtime=0))
    point_source_at(repo, folder / "txhousing.csv")
    return "txhousing.csv"


def no_final_newline(repo: Path, folder: Path) -> str:
    (folder / "no_newline.csv").write_bytes(real_csv_bytes().rstrip(b"\n"))
    point_source_at(repo, folder / "no_newline.csv")
    return "no_newline.csv"


REFUSALS = [
    # refused before DVC hashes the source (a named pipe would block it)
    Refusal("fifo", fifo, "check_params",
            ("'source.uri'", "is a named pipe (FIFO), not a regular file")),
    Refusal("gzip_without_suffix", gzip_without_suffix, "collect",
            ("is gzip-compressed", "starts with bytes 1f 8b", "'table.csv.gz'")),
    Refusal("no_final_newline", no_final_newline, "collect",
            ("does not end with a newline", "the last line may be truncated", "Wichita Falls",
             "source.require_final_newline: false")),
]  # fmt: skip


def recover(repo: Path) -> None:
    """The documented way back, run as written."""
    run(["bash", "-c", RECOVERY], repo)


def check_refused(
    repo: Path, proc: subprocess.CompletedProcess, stage: str, name: str, fragments, good
) -> str:
    """Non-zero exit, ``stage`` refused in one line naming the source and the rule, no later
    stage ran, nothing left untracked; then the documented recovery is byte-identical."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert failed_stage(out) == stage, out[-3000:]
    assert ran(proc.stdout) == ["check_params", "collect"][: 1 + (stage == "collect")], out
    error = error_text(proc)
    stage_errors = [line for line in error.splitlines() if " ERROR panelcast" in line]
    assert len(stage_errors) == 1, error
    assert line_with_all(stage_errors[0], (name, *fragments)), stage_errors[0]
    assert not [s for s in git_status(repo) if s.startswith("??")], git_status(repo)
    recover(repo)
    assert diff_state(good, state(repo)) == {}
    assert git_status(repo) == []
    return stage_errors[0]


@pytest.mark.parametrize("case", REFUSALS, ids=[c.id for c in REFUSALS])
def test_a_suspicious_source_is_refused_in_one_line(case, good, good_state, tmp_path):
    repo = clone(good, tmp_path / "repo")
    folder = tmp_path / "files"
    folder.mkdir()
    name = case.prepare(repo, folder)
    proc = dvc(repo, "repro", "validate", timeout=180)
    line = check_refused(repo, proc, case.stage, name, case.fragments, good_state)
    print(f"{case.id}: {line}")


def test_a_server_that_never_answers_fails_after_the_timeout(good, good_state, tmp_path):
    """`source.timeout_s: 1`: check_params asks the server (HEAD) before DVC does, and
    refuses its silence after a second; the whole repro takes seconds, not forever."""
    from ..unit.test_source_limits import silent_server

    repo = clone(good, tmp_path / "repo")
    with silent_server() as url:
        point_source_at(repo, url)
        set_params(repo, {"source.timeout_s": 1})
        proc = dvc(repo, "repro", "validate", timeout=120)
    check_refused(
        repo, proc, "check_params", f"'{url}'", ("the server did not answer",
                                                 "timed out after 1 s", "(source.timeout_s)"),
        good_state,
    )  # fmt: skip


# --------------------------------------------------------------------------- accepted and fresh


def test_a_gzip_source_gives_the_same_validated_table(good, tmp_path):
    repo = clone(good, tmp_path / "repo")
    base = good
    packed = tmp_path / "txhousing.csv.gz"
    packed.write_bytes(gzip.compress(real_csv_bytes(), mtime=0))
    point_source_at(repo, packed)
    proc = dvc(repo, "repro", "validate", check=True)
    assert ran(proc.stdout)[:2] == ["check_params", "collect"], proc.stdout
    for path in (SNAP, VALIDATED):
        assert (repo / path).read_bytes() == (base / path).read_bytes(), path
    record = json.loads((repo / "metrics" / "collect.json").read_text())["source"]
    assert record["compression"] == "gzip" and record["bytes"] == packed.stat().st_size
    assert record["decompressed_bytes"] == len(real_csv_bytes())
    assert not list((repo / ".dvc" / "tmp").glob("panelcast-download-*"))  # copies removed


def test_a_replaced_source_file_reruns_collect_an_untouched_one_nothing(good, tmp_path):
    """DVC watches a local source (source.watch): new content reruns collect and what
    follows, the same content (even rewritten) runs nothing and `dvc status` stays clean."""
    repo = clone(good, tmp_path / "repo")
    incoming = tmp_path / "incoming.csv"
    incoming.write_bytes(real_csv_bytes())
    point_source_at(repo, incoming)
    proc = dvc(repo, "repro", "validate", check=True)
    # the same bytes as the package's file: the same snapshot, so validate is skipped
    assert ran(proc.stdout) == ["check_params", "collect"], proc.stdout
    commit_all(repo, "local source")
    before = state(repo)

    # untouched: nothing runs and DVC says so
    proc = dvc(repo, "repro", "validate", check=True)
    assert ran(proc.stdout) == [], proc.stdout
    assert "up to date" in dvc(repo, "status", "validate", check=True).stdout

    # rewritten with the same bytes (new inode and times): still nothing to rerun
    tmp = incoming.with_suffix(".new")
    tmp.write_bytes(real_csv_bytes())
    tmp.replace(incoming)
    proc = dvc(repo, "repro", "validate", check=True)
    assert ran(proc.stdout) == [], proc.stdout
    assert diff_state(before, state(repo)) == {}

    # replaced by a table that breaks the contract: collect reruns, validate refuses it
    real_frame().drop(columns=["median"]).to_csv(incoming, index=False)
    status = dvc(repo, "status", "collect", check=True).stdout
    assert "modified" in status and str(incoming) in status, status
    proc = dvc(repo, "repro", "validate")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and failed_stage(out) == "validate", out[-3000:]
    assert ran(proc.stdout) == ["collect", "validate"], proc.stdout
    assert line_with_all(error_text(proc), (SNAP, "column 'median'", "rule 'required'"))
    assert "metrics/collect.json" in set(diff_state(before, state(repo)))
    recover(repo)
    assert diff_state(before, state(repo)) == {} and git_status(repo) == []

"""The machine fails, not the data: a full disk, a permission refused, a symbolic-link loop.
Each gives one line naming the file and the cause, a non-zero exit, no traceback, and loses
nothing (the last good state comes back byte for byte, or was never touched)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import tool_env
from .helpers import RECOVERY, clone, md5, point_source_at, real_frame, state

pytestmark = pytest.mark.slow


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    proc = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return proc.returncode == 0


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


@pytest.mark.skipif(not _can_unshare(), reason="needs a private mount namespace (unshare -m)")
def test_disk_full_during_collect_is_one_line_and_the_good_state_comes_back(
    good, good_state, tmp_path
):
    """data/raw on a tiny file system, filled up: the new (three times larger) snapshot
    cannot be written. Runs in a private mount namespace so the small file system is seen
    by this test's processes only."""
    repo = clone(good, tmp_path / "repo")
    frame = real_frame()
    bigger = pd.concat([frame.assign(year=frame["year"] - 30 * i) for i in range(3)])
    source = tmp_path / "bigger.csv"
    bigger.to_csv(source, index=False)
    point_source_at(repo, source)
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(
        f"""
        set -u
        cp -a data/raw "{out}/raw_before"
        mount -t tmpfs -o size=1m tmpfs data/raw
        cp -a "{out}/raw_before/." data/raw/
        dd if=/dev/zero of=data/raw/filler bs=4k >/dev/null 2>&1 || true
        dvc repro validate > "{out}/repro.log" 2>&1; echo $? > "{out}/repro.rc"
        ls -A data/raw > "{out}/after_failure.ls"
        rm -f data/raw/filler
        ({RECOVERY}) > "{out}/recover.log" 2>&1; echo $? > "{out}/recover.rc"
        mkdir "{out}/raw_after" && cp -a data/raw/. "{out}/raw_after/"
        """
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
        cwd=repo,
        env=tool_env(repo),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = (out / "repro.log").read_text()
    assert (out / "repro.rc").read_text().strip() != "0", said
    errors = error_lines(said)
    assert any(
        "data/raw/snapshot.parquet" in line and "No space left on device (ENOSPC)" in line
        for line in errors
    ), said
    assert "Traceback" not in said
    # no half-written snapshot, no temporary file left on the full disk
    assert (out / "after_failure.ls").read_text().split() in (["filler"], [".gitignore", "filler"])
    assert (out / "recover.rc").read_text().strip() == "0", (out / "recover.log").read_text()
    assert md5(out / "raw_after" / "snapshot.parquet") == good_state["data/raw/snapshot.parquet"]
    # everything else is back too (params.yaml, dvc.lock, metrics)
    after = state(repo)
    after.pop("data/raw/snapshot.parquet", None)  # on the tmpfs: compared above
    expected = {k: v for k, v in good_state.items() if k != "data/raw/snapshot.parquet"}
    assert after == expected


def run_stage_as(user: list[str], repo: Path, stage: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*user, "python", f"stages/{stage}.py"],
        cwd=repo,
        env={**tool_env(repo), "PYTHONPATH": "src"},
        capture_output=True,
        text=True,
        timeout=300,
    )


#: Run without any capability: even root then obeys the permission bits.
NO_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def _can_drop_capabilities() -> bool:
    if not shutil.which("setpriv"):
        return False
    proc = subprocess.run([*NO_CAPABILITIES, "true"], capture_output=True, timeout=30)
    return proc.returncode == 0


@pytest.mark.skipif(not _can_drop_capabilities(), reason="needs setpriv")
def test_permission_refused_is_one_line_naming_the_file(good, tmp_path):
    """The drift stage run where the metrics folder is read-only: one line naming the file
    and EACCES; the old metrics are untouched."""
    repo = clone(good, tmp_path / "repo")
    before = md5(repo / "metrics" / "drift.json")
    (repo / "metrics").chmod(0o555)
    try:
        proc = run_stage_as(NO_CAPABILITIES, repo, "drift")
    finally:
        (repo / "metrics").chmod(0o755)
    said = proc.stderr
    assert proc.returncode == 2, said
    errors = error_lines(said)
    assert len(errors) == 1 and "Traceback" not in said, said
    assert "metrics/drift.json" in errors[0] and "Permission denied (EACCES)" in errors[0]
    assert md5(repo / "metrics" / "drift.json") == before


def test_a_symlink_loop_is_one_line_naming_the_file(good, tmp_path):
    """An input replaced by a symbolic link to itself: one line naming it, exit 2."""
    repo = clone(good, tmp_path / "repo")
    before = md5(repo / "metrics" / "drift.json")
    reference = repo / "models" / "reference.json"
    reference.unlink()
    reference.symlink_to("reference.json")
    proc = run_stage_as([], repo, "drift")
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "models/reference.json" in errors[0], errors
    assert "(ELOOP)" in errors[0] or "leads nowhere" in errors[0], errors
    features = repo / "data" / "features.parquet"
    features.unlink()
    features.symlink_to("features.parquet")
    proc = run_stage_as([], repo, "drift")
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "data/features.parquet" in errors[0], errors
    assert "(ELOOP)" in errors[0] or "leads nowhere" in errors[0], errors
    assert md5(repo / "metrics" / "drift.json") == before

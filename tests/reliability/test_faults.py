"""Faults: a stage killed in the middle, two clones in different folders, two `dvc repro` at once.

Every test works on a copy of the "good" repository (fast params: no search, `dvc repro`,
committed; see helpers.good_repo) and compares with it: its dvc.lock is the output of an
uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from panelcast.core.io import FAIL_AFTER_WRITE, PAUSE_IN_WRITE

from ..conftest import ROOT, run, tool_env
from .helpers import (
    STAGES,
    TARGETS,
    clone,
    diff_state,
    dvc,
    error_text,
    forget_results,
    git_status,
    kill_group,
    lock_outs,
    md5,
    outputs_by_stage,
    ran,
    recover,
    stage_processes,
    start,
    state,
    wait_and_close,
    wait_for,
)

#: Outputs (cached and not) of the stages killed below, as declared in dvc.yaml.
OUTPUTS = {
    "train": [
        "models/model.skops",
        "models/segments/cv_forecasts.parquet",
        "models/segments/manifest.json",
        "models/metadata.json",
        "models/reference.json",
        "metrics/train.json",
    ],
    "drift": ["metrics/drift.json", "plots/drift_effects.csv", "plots/drift_segments.csv"],
}


@pytest.fixture(scope="module")
def good_outs(good) -> dict[str, set[str]]:
    return outputs_by_stage(good)


def up_to_date(repo: Path) -> bool:
    out = dvc(repo, "status", "--with-deps", *TARGETS, check=True).stdout
    return "Data and pipelines are up to date." in out


KILLED_WRITER = """
import sys, time
from panelcast.core.io import atomic_write

def writer(tmp):
    with open(tmp, "wb") as handle:
        handle.write(b"half of a new model")
        handle.flush()
        print("writing", flush=True)
        time.sleep(120)

atomic_write(sys.argv[1], writer)
"""


def test_sigkill_during_a_write_leaves_the_old_file(tmp_path):
    """The last step of every stage: SIGKILL while panelcast.core.io.atomic_write is writing keeps
    the previous file whole; only a hidden temporary file may stay behind."""
    target = tmp_path / "models" / "model.skops"
    target.parent.mkdir()
    target.write_bytes(b"the last good model")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=tool_env(ROOT),
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert target.read_bytes() == b"the last good model"
    others = [p.name for p in target.parent.iterdir() if p != target]
    assert all(n.startswith(".model.skops.") and n.endswith(".tmp") for n in others), others


def hidden_temporaries(repo: Path, outputs: list[str]) -> list[str]:
    """Temporary files beside ``outputs`` (what a write killed half-way leaves)."""
    found = []
    for out in outputs:
        path = repo / out
        found += [str(p.relative_to(repo)) for p in path.parent.glob(f".{path.name}.*.tmp")]
    return sorted(found)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "drift"])
def test_sigkill_inside_a_write_then_repro_completes(stage, good, good_state, tmp_path):
    """SIGKILL while the stage writes its second output (the first one staged, the second
    on disk under its temporary name, not yet renamed): no output is new or partial, DVC
    sees the stage as not done, and `dvc repro` completes with the uninterrupted outputs."""
    repo = clone(good, tmp_path / "repo")
    forget_results(repo, stage)  # the rerun must really execute the stage, not restore it
    log = tmp_path / "killed.log"
    cmd = ["dvc", "repro", "--force", "--single-item", stage]
    proc = start(cmd, repo, log, env={PAUSE_IN_WRITE: "2"})
    try:
        wait_for(
            lambda: "fault injection: pausing inside the write" in log.read_text(),
            timeout=300,
            what=f"stage {stage} to pause inside its second write",
        )
        assert proc.poll() is None
        half_written = hidden_temporaries(repo, OUTPUTS[stage])
    finally:
        kill_group(proc)
    assert proc.returncode == -9
    wait_for(lambda: not stage_processes(repo, f"{stage}.py"), 10, "the stage to die")
    # the kill hit real writes: two temporary files (the staged first output, the second
    # being written), and neither output is in place
    assert len(half_written) == 2, half_written
    for path in OUTPUTS[stage]:
        assert not (repo / path).exists() or md5(repo / path) == md5(good / path), path
    assert not up_to_date(repo), "DVC must see the killed stage as not done"

    proc2 = dvc(repo, "repro", *TARGETS, timeout=600)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert stage in ran(proc2.stdout), proc2.stdout
    assert up_to_date(repo)
    assert (repo / "dvc.lock").read_text() == (good / "dvc.lock").read_text()
    assert diff_state(good_state, state(repo)) == {}
    assert git_status(repo) == []
    assert hidden_temporaries(repo, OUTPUTS[stage]) == [], "the rerun removes stale temporaries"


#: Every stage that writes more than one output (the backtest, never run here, too).
MULTI_OUTPUT = ["collect", "validate", "features", "baseline", "train", "evaluate", "predict",
                "drift"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("stage", MULTI_OUTPUT)
def test_a_stage_failing_after_its_first_write_leaves_no_new_output(
    stage, good, good_outs, good_state, tmp_path
):
    """A failure injected right after the stage's first output is written: none of its
    outputs is left behind, and the documented recovery without --force gives back the last
    good state byte for byte."""
    repo = clone(good, tmp_path / "repo")
    env = {**tool_env(repo), FAIL_AFTER_WRITE: "1"}
    proc = subprocess.run(
        ["dvc", "repro", "--force", "--single-item", stage],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, said
    assert "fault injection: failing after write 1" in said, said
    outputs = sorted(good_outs[stage])
    assert len(outputs) > 1
    for path in outputs:
        assert not (repo / path).exists() or md5(repo / path) == md5(good / path), path
    assert [s for s in git_status(repo) if s.startswith("??")] == []
    assert hidden_temporaries(repo, outputs) == []
    checkout = recover(repo, plain=True)
    assert checkout.returncode == 0, checkout.stdout + checkout.stderr
    assert diff_state(good_state, state(repo)) == {}
    assert git_status(repo) == []


@pytest.mark.slow
def test_two_clones_in_different_folders_give_identical_outputs(good, good_state, tmp_path):
    """A `git clone` elsewhere (a path with a space, no DVC cache) reruns every stage and
    gets byte-identical outputs: dvc.lock equal to the good repository's. (`--force`: the
    committed metrics and plots of drift would otherwise let DVC skip it.)"""
    other = tmp_path / "another place" / "clone"
    other.parent.mkdir(parents=True)
    run(["git", "clone", "-q", str(good), str(other)], tmp_path)
    assert not (other / "models" / "model.skops").exists()
    proc = dvc(other, "repro", "--force", *TARGETS, check=True)
    assert set(ran(proc.stdout)) == set(STAGES)
    assert lock_outs(other) == lock_outs(good)
    assert (other / "dvc.lock").read_text() == (good / "dvc.lock").read_text()
    assert diff_state(good_state, state(other)) == {}
    assert git_status(other) == []


@pytest.mark.slow
def test_second_repro_at_once_is_refused_and_the_first_completes(good, good_state, tmp_path):
    """While `dvc repro` runs drift, a second `dvc repro` in the same folder refuses with a
    DVC lock error and runs nothing; the first completes with the good outputs."""
    repo = clone(good, tmp_path / "repo")
    log = tmp_path / "first.log"
    first = start(["dvc", "repro", "--force", "--single-item", "drift"], repo, log)
    try:
        wait_for(
            lambda: "Running stage 'drift'" in log.read_text(), timeout=180, what="first repro"
        )
        second = dvc(repo, "repro", *TARGETS, timeout=120)
        still_running = first.poll() is None
    except BaseException:
        kill_group(first)
        raise
    code = wait_and_close(first, timeout=600)
    assert still_running, "the first repro ended before the second started: nothing was tested"
    # DVC holds its repository lock except while a stage command runs; then per-path
    # read/write locks (.dvc/tmp/rwlock) protect the running stage's deps and outputs
    said = second.stdout + second.stderr
    assert second.returncode != 0, said
    assert "Unable to acquire lock" in said or "is busy, it is being blocked by" in said, said
    print("second repro:", error_text(second).splitlines()[0])
    assert ran(second.stdout) == [], said
    assert code == 0, log.read_text()[-3000:]
    assert up_to_date(repo)
    assert diff_state(good_state, state(repo)) == {}

"""Stage outputs are all-or-nothing: staged beside their targets, moved in on success only."""

from __future__ import annotations

import errno

import pytest

from panelcast.core.errors import StorageError
from panelcast.core.io import (
    FAIL_AFTER_WRITE,
    InjectedFault,
    stage_outputs,
    storage_error,
    write_bytes,
    write_json,
)


def test_writes_appear_only_when_the_stage_succeeds(tmp_path):
    a, b = tmp_path / "models" / "a.bin", tmp_path / "metrics" / "b.json"
    with stage_outputs():
        write_bytes(a, b"new model")
        write_json(b, {"mae": 1.0})
        assert not a.exists() and not b.exists()  # staged, not yet in place
        assert len(list(a.parent.glob(".a.bin.*.tmp"))) == 1
    assert a.read_bytes() == b"new model"
    assert b.read_text() == '{\n  "mae": 1.0\n}\n'
    assert sorted(p.name for p in a.parent.iterdir()) == ["a.bin"]


def test_a_failing_stage_leaves_no_new_output_but_its_report(tmp_path):
    model, report = tmp_path / "model.bin", tmp_path / "report.json"
    model.write_bytes(b"last good model")
    with pytest.raises(ValueError, match="refused"), stage_outputs():
        write_bytes(model, b"half-baked model")
        write_json(report, {"passed": False}, keep_on_failure=True)
        raise ValueError("refused")
    assert model.read_bytes() == b"last good model"
    assert report.read_text() == '{\n  "passed": false\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "report.json"]


def test_the_fail_hook_fails_after_the_nth_write(tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_AFTER_WRITE, "2")
    with pytest.raises(InjectedFault, match="after write 2"), stage_outputs():
        for name in ("one", "two", "three"):
            write_bytes(tmp_path / name, name.encode())
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    target = tmp_path / "model.bin"
    stale = tmp_path / ".model.bin.abc123.tmp"
    stale.write_bytes(b"left by SIGKILL")
    with stage_outputs():
        write_bytes(target, b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_a_write_error_names_the_file_and_the_cause(tmp_path):
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    from panelcast.core.io import atomic_write

    with pytest.raises(StorageError) as info:
        atomic_write(tmp_path / "x.parquet", full)
    text = str(info.value)
    assert text.startswith(str(tmp_path / "x.parquet")) and "(ENOSPC)" in text
    assert "Free some space" in text
    assert list(tmp_path.iterdir()) == []


def test_pyarrow_style_errors_without_errno_are_recognised():
    exc = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert "(ENOSPC)" in str(storage_error(exc, "data/x.parquet", "write it"))

"""The stage runner's exit-code contract: a user mistake is one line and exit code 2, a bug
keeps its traceback and exits with code 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ..conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    from panelcast.core.errors import DataError
    from panelcast.core.stage import run_stage

    def main(params, args):
        if KIND == "user":
            raise DataError("data/x.parquet: column 'sales' rule 'min': found -5")
        if KIND == "bug":
            {}["missing"]
        print("threads", __import__("threadpoolctl").threadpool_info()[0]["num_threads"]
              if __import__("threadpoolctl").threadpool_info() else 1)

    run_stage("demo", main)
    """
)


def run_demo(tmp_path, kind: str) -> subprocess.CompletedProcess:
    script = tmp_path / "demo.py"
    script.write_text(f"KIND = {kind!r}\n" + SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), "--params", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )


def test_a_user_mistake_is_one_line_and_exit_code_2(tmp_path):
    proc = run_demo(tmp_path, "user")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "column 'sales'" in errors[0]
    assert "Traceback" not in proc.stderr


def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path):
    proc = run_demo(tmp_path, "bug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'missing'" in proc.stderr


@pytest.mark.parametrize("kind", ["ok"])
def test_a_stage_runs_with_its_thread_pools_pinned(tmp_path, kind):
    proc = run_demo(tmp_path, kind)
    assert proc.returncode == 0, proc.stderr
    assert "threads 1" in proc.stdout
    assert "stage 'demo' done in" in proc.stderr

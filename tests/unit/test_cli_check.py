"""`panelcast check` (run by `make repro` before DVC) refuses what DVC's YAML parser would
choke on, such as an alias bomb in params.yaml, at once and in one line."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import ROOT

BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def check(params) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panelcast.cli", "check", "--params", str(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_params_pass():
    proc = check(ROOT / "params.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "valid (schema" in proc.stderr


def test_an_alias_bomb_is_refused_in_one_line(tmp_path):
    bombed = tmp_path / "params.yaml"
    bombed.write_text((ROOT / "params.yaml").read_text() + BOMB)
    proc = check(bombed)
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert str(bombed) in errors[0] and "anchor '&a' is not allowed" in errors[0]


def test_make_repro_checks_before_dvc_reads_the_params():
    recipe = subprocess.run(
        ["make", "-n", "--always-make", "repro", "STAMP=/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    commands = [line.strip() for line in recipe if line.strip() in ("panelcast check", "dvc repro")]
    assert commands == ["panelcast check", "dvc repro"], recipe


def test_an_integer_too_long_to_read_is_one_line(tmp_path):
    broken = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    broken.write_text(text.replace("seed: 42", "seed: " + "9" * 5000))
    proc = check(broken)
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "a value cannot be read" in errors[0] and len(errors[0]) < 500

"""CPU and wall time of a forced `dvc repro` of the default case, stage by stage.

Copies the project (the files of ``PROJECT_FILES`` in tests/conftest.py) into a temporary
git repository, runs `dvc repro` once there (data, models, every output), then for each
stage in dvc.yaml order runs `dvc repro -f -s <stage>` and measures the CPU its process
tree used (``resource.getrusage(RUSAGE_CHILDREN)`` deltas, user + sys: dvc itself, the
stage's process and any worker process the stage started and waited for) and the wall
time. Prints a table with the total against the target (a forced `dvc repro -f` in at
most 60 s of CPU), and DVC's own cost per call (a `dvc repro` with nothing to do), which
each row includes once.

    .venv/bin/python benchmarks/pipeline_cpu.py
    .venv/bin/python benchmarks/pipeline_cpu.py --set backtest.n_jobs=1 --json cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import apply_dotted, copy_repo  # noqa: E402  (one copy of the project)

TARGET_CPU_S = 60.0


def environment() -> dict[str, str]:
    """The caller's environment with the virtualenv first and DVC analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "benchmark")
    env.setdefault("GIT_AUTHOR_EMAIL", "benchmark@example.invalid")
    env["GIT_COMMITTER_NAME"] = env["GIT_AUTHOR_NAME"]
    env["GIT_COMMITTER_EMAIL"] = env["GIT_AUTHOR_EMAIL"]
    return env


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``cmd``; return the CPU seconds of its process tree, the wall seconds, its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        output = f"{proc.stdout}\n{proc.stderr}"
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.stdout + proc.stderr


def copy_project(dest: Path, updates: dict[str, object]) -> Path:
    """The project files in ``dest`` (full backtest) as a fresh git repository (DVC needs one)."""
    copy_repo(dest, git=False, full_backtest=True)
    if updates:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for dotted in updates:
            node = params
            for key in dotted.split("."):
                if not isinstance(node, dict) or key not in node:
                    raise SystemExit(f"--set {dotted}: no such key in params.yaml")
                node = node[key]
        apply_dotted(params, updates)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=dest, env=environment(), check=True)
    subprocess.run(
        ["git", "commit", "-q", "-m", "benchmark copy"], cwd=dest, env=environment(), check=True
    )
    return dest


def figure(value: float | None) -> str:
    """A backtest MAE for the table (``-`` when a named period holds no scored row)."""
    return "      -" if value is None else f"{value:7.2f}"


def parse_updates(items: list[str]) -> dict[str, object]:
    updates = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        updates[key] = yaml.safe_load(value)
    return updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change params.yaml in the copy (dotted key, YAML value), e.g. backtest.n_jobs=1",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args()
    updates = parse_updates(args.set)
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])

    tmp = Path(tempfile.mkdtemp(prefix="panelcast-cpu-"))
    try:
        repo = copy_project(tmp / "repo", updates)
        print(f"project copied to {repo}" + (f" with {updates}" if updates else ""), flush=True)
        cpu, wall, _ = measure(["dvc", "repro"], repo)
        print(f"first `dvc repro` (builds everything): {cpu:.1f} s CPU, {wall:.1f} s wall")
        rows = []
        for stage in stages:
            cpu, wall, _ = measure(["dvc", "repro", "-f", "-s", stage], repo)
            rows.append({"stage": stage, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)})
            print(f"  {stage:<14} {cpu:7.1f} s CPU {wall:7.1f} s wall", flush=True)
        idle_cpu, idle_wall, _ = measure(["dvc", "repro"], repo)
        backtest = json.loads((repo / "metrics" / "backtest.json").read_text())
        unit = (yaml.safe_load((repo / "params.yaml").read_text())["problem"]).get("unit")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    total_cpu = sum(r["cpu_s"] for r in rows)
    total_wall = sum(r["wall_s"] for r in rows)
    print()
    print(f"| {'stage':<14} | {'CPU s':>7} | {'wall s':>7} |")
    print(f"| {'-' * 14} | {'-' * 7}:| {'-' * 7}:|")
    for r in rows:
        print(f"| {r['stage']:<14} | {r['cpu_s']:7.1f} | {r['wall_s']:7.1f} |")
    print(f"| {'total':<14} | {total_cpu:7.1f} | {total_wall:7.1f} |")
    verdict = "PASS" if total_cpu <= TARGET_CPU_S else "MISS"
    print(
        f"\ntarget: a forced `dvc repro -f` in at most {TARGET_CPU_S:.0f} s of CPU: "
        f"{verdict} ({total_cpu:.1f} s)"
    )
    print(
        f"DVC's own cost per call (`dvc repro` with nothing to do): {idle_cpu:.1f} s CPU, "
        f"{idle_wall:.1f} s wall; each row includes it once"
    )
    in_unit = f", MAE in {unit}" if unit else ""
    print(
        f"backtest: {backtest.get('distinct_fits')} distinct fits; per policy "
        f"(production{in_unit}):"
    )
    named = list(backtest.get("named_periods", {}))
    for name, s in backtest["policies"].items():
        within = "".join(f"  {n} MAE {figure(s[n + '_mae'])}" for n in named)
        print(
            f"  {name:<10} MAE {figure(s['mae'])}{within}  "
            f"retrains {s['retrains']:3d}  promotions {s['promotions']:3d}  fits {s['fits']:3d}"
        )
    if args.json:
        figures = {
            "updates": updates,
            "stages": rows,
            "total_cpu_s": round(total_cpu, 2),
            "total_wall_s": round(total_wall, 2),
            "target_cpu_s": TARGET_CPU_S,
            "dvc_call_cpu_s": round(idle_cpu, 2),
            "backtest_metrics": backtest,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""panelcast.monitoring.drift against Evidently's DataDriftPreset on the same 1M x 16 windows.

Evidently is never a dependency of the project: this script makes a throw-away virtualenv
in a temporary folder (``uv venv`` + ``uv pip install evidently==<0.7.x> 'pandas<3'``),
writes the windows to parquet, runs Evidently's default DataDriftPreset report there as a
subprocess, runs panelcast.monitoring.drift in this process on the same files, and prints times, the
speed ratio (target: ours >= 30x faster; PASS/MISS, no assertion) and how the per-column
verdicts agree.

    .venv/bin/python benchmarks/drift_vs_evidently.py            # 1M rows, 3 scenarios
    .venv/bin/python benchmarks/drift_vs_evidently.py --rows 100000 --scenarios relevant

How verdicts are compared: Evidently 0.7's default per-column method at > 1000 reference
rows is the Wasserstein distance divided by the reference std (np.std, floored at 0.001),
drift when >= 0.1, for numeric columns with > 5 distinct values, and the Jensen-Shannon
distance (natural log) between category shares, drift when >= 0.1, for categorical columns
(and numeric ones with <= 5 distinct values); it drops NaN/inf and has no missing-rate test.
Its verdict per column is read from the report's own "Value Drift for column ..." test
(FAIL = drift). Ours is compared twice: our distribution verdict (effect >= threshold and
BH-adjusted p <= alpha), which for numeric columns is the same W1/std statistic, and our
whole column verdict (distribution or missing rate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from drift_benchmark import CAT_NAMES, NUM_NAMES, draw_window  # noqa: E402

from panelcast.monitoring.drift import DriftThresholds, build_profile, compare  # noqa: E402

DEFAULT_EVIDENTLY = "0.7.23"  # newest 0.7.x on PyPI when written (pip index versions evidently)

CHILD = r"""
import json, os, resource, sys, time
t_start = time.perf_counter()
import pandas as pd
import evidently
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref_path, cur_path = sys.argv[1], sys.argv[2]
num, cat = json.loads(sys.argv[3]), json.loads(sys.argv[4])
ref = pd.read_parquet(ref_path)
cur = pd.read_parquet(cur_path)

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
loaded_rss = rss_mb()
definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
c0, w0 = time.process_time(), time.perf_counter()
snapshot = Report([DataDriftPreset()], include_tests=True).run(
    current_data=Dataset.from_pandas(cur, data_definition=definition),
    reference_data=Dataset.from_pandas(ref, data_definition=definition),
)
c1, w1 = time.process_time(), time.perf_counter()
result = snapshot.dict()
columns = {}
for metric in result["metrics"]:
    cfg = metric["config"]
    if cfg.get("type", "").endswith("ValueDrift"):
        columns[cfg["column"]] = {"method": cfg["method"], "threshold": cfg["threshold"],
                                  "score": metric["value"]}
for test in result["tests"]:
    prefix = "Value Drift for column "
    if test["name"].startswith(prefix):
        columns[test["name"][len(prefix):]]["drifted"] = test["status"] == "FAIL"
share = [m["value"] for m in result["metrics"]
         if m["config"]["type"].endswith("DriftedColumnsCount")]
dataset = [t["status"] == "FAIL" for t in result["tests"]
           if t["name"].startswith("Share of Drifted")]
print(json.dumps({
    "evidently": evidently.__version__,
    "pandas": pd.__version__,
    "run_cpu": c1 - c0,
    "run_wall": w1 - w0,
    "child_wall": time.perf_counter() - t_start,
    "loaded_rss_mb": loaded_rss,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "columns": columns,
    "drifted_columns": share[0] if share else None,
    "dataset_drifted": dataset[0] if dataset else None,
}))
"""


def make_venv(root: Path, version: str) -> Path | None:
    """Throw-away venv with Evidently; None (after saying why) when it cannot be installed."""
    uv = shutil.which("uv")
    if uv is None:
        print("EVIDENTLY NOT RUN: `uv` is not on PATH, cannot build the throw-away venv.")
        return None
    venv = root / "venv"
    steps = [
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            f"evidently=={version}",
            "pandas<3",
            "pyarrow",
        ],
    ]
    t0 = time.perf_counter()
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(
                f"EVIDENTLY NOT RUN: could not install evidently=={version} here.\n"
                f"command: {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}"
            )
            return None
    print(f"throw-away venv with evidently=={version} ready in {time.perf_counter() - t0:.1f} s")
    return venv / "bin" / "python"


def run_evidently(python: Path, child: Path, ref: Path, cur: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, DO_NOT_TRACK="1")  # Evidently's telemetry off (no network here)
    proc = subprocess.run(
        [str(python), str(child), str(ref), str(cur), json.dumps(NUM_NAMES), json.dumps(CAT_NAMES)],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"Evidently subprocess failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall"] = wall
    out["process_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def run_ours(ref: pd.DataFrame, cur: pd.DataFrame, repeats: int) -> tuple[dict, dict]:
    full_cpu, full_wall, comp_cpu = [], [], []
    report: dict = {}
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        profile = build_profile(ref, NUM_NAMES, CAT_NAMES)
        c1 = time.process_time()
        report = compare(profile, cur, DriftThresholds())
        c2, w2 = time.process_time(), time.perf_counter()
        full_cpu.append(c2 - c0)
        full_wall.append(w2 - w0)
        comp_cpu.append(c2 - c1)
    times = {
        "cpu": statistics.median(full_cpu),
        "wall": statistics.median(full_wall),
        "compare_cpu": statistics.median(comp_cpu),
    }
    return times, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenarios", default="none,irrelevant,relevant")
    parser.add_argument("--evidently-version", default=DEFAULT_EVIDENTLY)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (venv, parquet)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="drift-vs-evidently-"))
    try:
        python = make_venv(root, args.evidently_version)
        if python is None:
            return 2
        child = root / "run_evidently.py"
        child.write_text(CHILD)
        rng = np.random.default_rng(args.seed)
        ref_path = root / "reference.parquet"
        draw_window(rng, args.rows, "none").to_parquet(ref_path)
        ref = pd.read_parquet(ref_path)
        print(f"reference: {args.rows:,} rows x {ref.shape[1]} columns; load {os.getloadavg()}")
        summary = []
        for scenario in [s for s in args.scenarios.split(",") if s]:
            cur_path = root / f"current_{scenario}.parquet"
            draw_window(rng, args.rows, scenario).to_parquet(cur_path)
            cur = pd.read_parquet(cur_path)
            ev = run_evidently(python, child, ref_path, cur_path)
            ours, report = run_ours(ref, cur, args.repeats)
            summary.append(print_scenario(scenario, ev, ours, report))
        print("\n=== summary ===")
        for line in summary:
            print(line)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def print_scenario(scenario: str, ev: dict, ours: dict, report: dict) -> str:
    ratio_cpu = ev["run_cpu"] / ours["cpu"]
    ratio_wall = ev["run_wall"] / ours["wall"]
    print(f"\n=== scenario {scenario!r} (evidently {ev['evidently']}, pandas {ev['pandas']}) ===")
    print(
        f"Evidently report.run (data loaded): wall {ev['run_wall']:.1f} s, "
        f"CPU {ev['run_cpu']:.1f} s;"
        f" whole subprocess (import + parquet read + run): wall {ev['process_wall']:.1f} s,"
        f" CPU {ev['process_cpu']:.1f} s, peak RSS {ev['peak_rss_mb']:.0f} MB"
        f" ({ev['peak_rss_mb'] - ev['loaded_rss_mb']:.0f} MB above the loaded data)"
    )
    print(
        f"ours build_profile + compare (data loaded): wall {ours['wall']:.2f} s, CPU "
        f"{ours['cpu']:.2f} s (compare alone CPU {ours['compare_cpu']:.2f} s), median of runs"
    )
    verdict = "PASS" if min(ratio_cpu, ratio_wall) >= 30 else "MISS"
    print(f"speed-up: {ratio_cpu:.0f}x CPU, {ratio_wall:.0f}x wall [target >= 30x: {verdict}]")
    print(
        f"{'column':14} {'ours effect':>11} {'p_adj':>9} {'dist':>5} {'col':>5} | "
        f"{'Evidently method':29} {'score':>7} {'drift':>5} | agree"
    )
    agree_dist = agree_col = 0
    for name, row in report["columns"].items():
        e = ev["columns"][name]
        agree_dist += row["distribution_drifted"] == e["drifted"]
        agree_col += row["drifted"] == e["drifted"]
        effect = "-" if row["effect"] is None else f"{row['effect']:.4f}"
        p_adj = "-" if row["p_adjusted"] is None else f"{row['p_adjusted']:.1e}"
        print(
            f"{name:14} {effect:>11} {p_adj:>9} {row['distribution_drifted']!s:>5} "
            f"{row['drifted']!s:>5} | {e['method']:29} {e['score']:7.4f} {e['drifted']!s:>5} | "
            f"{'yes' if row['distribution_drifted'] == e['drifted'] else 'NO'}"
        )
    n = len(report["columns"])
    print(
        f"agreement with Evidently's per-column verdict: distribution verdict {agree_dist}/{n}, "
        f"whole column verdict (incl. missing rate) {agree_col}/{n}; dataset: ours "
        f"{report['drifted']} (share {report['share_drifted']:.2f}, drifts at >= 0.25), Evidently "
        f"{ev['dataset_drifted']} (share {ev['drifted_columns']['share']:.2f}, drifts at >= 0.5)"
    )
    return (
        f"{scenario:>10}: Evidently {ev['run_wall']:.1f} s wall / {ev['run_cpu']:.1f} s CPU, "
        f"ours {ours['wall']:.2f} s / {ours['cpu']:.2f} s -> {ratio_cpu:.0f}x CPU, "
        f"{ratio_wall:.0f}x wall"
        f" [{verdict}]; verdicts agree {agree_dist}/{n} (distribution), {agree_col}/{n} (column)"
    )


if __name__ == "__main__":
    raise SystemExit(main())

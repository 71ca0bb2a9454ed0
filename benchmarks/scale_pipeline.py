"""Wall time, CPU time and peak memory of the pipeline stages as the panel grows.

For each size (number of segments, 180 months each: 556 / 5,556 / 55,556 segments are
100k / 1M / 10M rows by default) it builds a synthetic txhousing-shaped panel
(benchmarks/synthetic.py) as a parquet file, makes a scratch copy of the project (the
files of ``panelcast.examples.PROJECT_FILES``, a fresh git repository) under
``--workdir``, with a params.yaml pointing at the file and a data contract that accepts
its segments, and runs the stages collect, validate, check_data, features, baseline, train
and evaluate there, one after the other, as ``PYTHONPATH=src python stages/<name>.py``
(not `dvc repro`: DVC's own cost stays out of the figures). check_params runs first as a
check of the adapted params, outside the totals.

Per stage it measures the child process's wall time, its CPU time (user + sys) and its
peak RSS (``ru_maxrss``), both from ``os.wait4``: they cover the stage's process and any
worker process it started and waited for; and, from the stage's last log line, the CPU of
its body alone (``body CPU s``: without the interpreter start-up and imports, about 1 s per
stage, which dominate small panels). It prints one table per size and a summary table, one
row per size, with CPU seconds per million rows (near-linear growth keeps the body column
flat). Each stage's output (stderr and stdout) goes to
``<workdir>/n<segments>/logs/<stage>.log``; a failing stage prints the end of its log and
stops that size (the next size still runs).

Params of the copy (from the project's params.yaml): source.uri and source.watch = the
parquet file; windows train 2000-01..2012-12, test 2013-01..2014-12 (the last 24 months);
drift window = the test window; backtest.end = the last month (the backtest does not run,
but the params must validate); ``train.search.enabled: false`` (the hyperparameter search
would multiply train's cost by its grid x folds; the figures are for one fit);
``train.segment_encoding: auto``. ``--set KEY=VALUE`` changes any other key.

    .venv/bin/python benchmarks/scale_pipeline.py                           # 100k, 1M, 10M rows
    .venv/bin/python benchmarks/scale_pipeline.py --segments 100 500
    .venv/bin/python benchmarks/scale_pipeline.py --segments 5556 --stages train evaluate --keep

``--stages`` selects the stages measured; the stages before the last one selected run
anyway (their outputs are inputs) and are shown as setup rows, outside the totals.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
from synthetic import make_panel, markdown, write  # noqa: E402  (benchmarks/synthetic.py)

from panelcast.examples import copy_project  # noqa: E402  (the project files a copy needs)

logger = logging.getLogger("benchmarks.scale_pipeline")

#: The stages measured, in pipeline order (drift, predict and backtest are not run).
STAGES = ("collect", "validate", "check_data", "features", "baseline", "train", "evaluate")
#: Run before the others, outside the totals: the adapted params must be valid.
PREFLIGHT = "check_params"
#: 100k, 1M and 10M rows at 180 months.
DEFAULT_SEGMENTS = (556, 5556, 55556)
FIRST_YEAR = 2000
TEST_MONTHS = 24
#: Lines of a failing stage's log printed.
TAIL_LINES = 25
#: The last line of a stage's log (panelcast.core.stage): the CPU of the stage's body.
DONE = re.compile(r"stage '\w+' done in [\d.]+ s \((?P<cpu>[\d.]+) s CPU in this process\)")


@dataclass
class Run:
    """One stage run: what :func:`run_stage` measured."""

    stage: str
    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int
    measured: bool  # False: a setup stage, outside the totals
    body_cpu_s: float | None  # the stage's own figure: its body, without start-up and workers


def environment(repo: Path) -> dict[str, str]:
    """The caller's environment with the virtualenv first, the copy's code on PYTHONPATH
    (as dvc.yaml's ``PYTHONPATH=src``) and DVC analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(repo / "src")
    env["DVC_NO_ANALYTICS"] = "1"
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        env.setdefault(f"{key}_NAME", "benchmark")
        env.setdefault(f"{key}_EMAIL", "benchmark@example.invalid")
    return env


def month(index: int) -> str:
    """Month ``index`` after 2000-01 (0 is 2000-01), written as in params.yaml."""
    return f"{FIRST_YEAR + index // 12}-{index % 12 + 1:02d}"


def adapt_params(params: dict, panel: Path, segments: int, months: int) -> dict:
    """The project's params for the synthetic panel (see the module docstring)."""
    last = months - 1
    test_start = last - TEST_MONTHS + 1
    params["problem"]["question"] = "How many homes will each synthetic segment sell next month?"
    params["source"].update(
        uri=str(panel),
        watch=str(panel),
        format="parquet",
        name=f"synthetic txhousing-shaped panel, {segments} segments x {months} months",
        licence="synthetic (benchmarks/synthetic.py), no restriction",
    )
    params["windows"] = {
        "train_start": month(0),
        "train_end": month(test_start - 1),
        "test_start": month(test_start),
        "test_end": month(last),
    }
    params["drift"].update(current_start=month(test_start), current_end=month(last))
    params["backtest"]["end"] = month(last)
    params["train"]["search"]["enabled"] = False
    params["train"]["segment_encoding"] = "auto"
    return params


def adapt_contract(contract: dict, segments: int, months: int) -> dict:
    """The project's data contract for the synthetic panel: any segment name, the synthetic
    span, every segment in every month."""
    contract["min_rows"] = min(contract.get("min_rows", 1), segments * months)
    contract["time"]["not_after"] = month(months - 1)
    completeness = contract.setdefault("completeness", {})
    completeness.pop("expected_segments", None)  # 'allowed' lists the 46 real cities
    completeness["last_period_not_before"] = month(months - 1)
    completeness["rows_per_period"] = {"min": segments, "max": segments}
    contract["columns"]["city"].pop("allowed", None)
    return contract


def apply_sets(params: dict, items: list[str]) -> None:
    """``--set KEY=VALUE`` (dotted key of an existing entry, YAML value) applied to params."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--set {key}: no such section in params.yaml")
            node = node[part]
        node[last] = yaml.safe_load(value)


def scratch_copy(dest: Path, params: dict, contract: dict) -> Path:
    """The project files in ``dest`` with ``params`` and ``contract``, committed in a fresh
    git repository (as :func:`panelcast.examples.scratch_copy` does for an example)."""
    dest.mkdir(parents=True)
    copy_project(ROOT, dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    env = environment(dest)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "scale benchmark copy"],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def run_stage(stage: str, repo: Path, log: Path, measured: bool) -> Run:
    """Run ``stages/<stage>.py`` in ``repo`` (output to ``log``) and measure the child."""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, f"stages/{stage}.py"],
            cwd=repo,
            env=environment(repo),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    done = DONE.search(log.read_text(errors="replace"))
    return Run(
        stage=stage,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        exit_code=proc.returncode,
        measured=measured,
        body_cpu_s=float(done.group("cpu")) if done else None,
    )


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def rows_label(rows: int) -> str:
    """100,080 -> 100k, 1,000,080 -> 1.0M."""
    if rows >= 10**6:
        return f"{rows / 10**6:.1f}M"
    return f"{rows / 10**3:.0f}k" if rows >= 10**3 else str(rows)


def body(cpu: float | None) -> str:
    return "-" if cpu is None else f"{cpu:.1f}"


def stage_table(runs: list[Run], rows: int) -> str:
    """The per-stage table of one size; setup stages in parentheses, outside the total.
    ``body CPU s``: the stage's own figure for its body (no interpreter start-up and
    imports, no worker process)."""
    header = ["stage", "wall s", "CPU s", "CPU/wall", "body CPU s", "peak RSS MiB", "CPU s/M rows"]
    table = []
    for r in runs:
        name = (r.stage if r.measured else f"({r.stage})") + (" FAIL" if r.exit_code else "")
        table.append(
            [
                name,
                f"{r.wall_s:.1f}",
                f"{r.cpu_s:.1f}",
                f"{r.cpu_s / r.wall_s if r.wall_s else 0:.2f}",
                body(r.body_cpu_s),
                f"{r.rss_mib:.0f}",
                f"{r.cpu_s / rows * 1e6:.1f}",
            ]
        )
    measured = [r for r in runs if r.measured]
    if measured:
        wall, cpu = sum(r.wall_s for r in measured), sum(r.cpu_s for r in measured)
        bodies = [r.body_cpu_s for r in measured]
        table.append(
            [
                "total",
                f"{wall:.1f}",
                f"{cpu:.1f}",
                f"{cpu / wall if wall else 0:.2f}",
                body(None if None in bodies else sum(bodies)),
                f"{max(r.rss_mib for r in measured):.0f}",
                f"{cpu / rows * 1e6:.1f}",
            ]
        )
    return markdown(header, table, "lrrrrrr")


def summary_table(results: list[dict]) -> str:
    """One row per size: totals over the measured stages."""
    header = [
        "rows",
        "segments",
        "wall s",
        "CPU s",
        "body CPU s",
        "peak RSS MiB",
        "CPU s/M rows",
        "body CPU s/M rows",
        "status",
    ]
    table = []
    for res in results:
        rows, cpu_body = res["rows"], res["body_cpu_s"]
        table.append(
            [
                rows_label(rows),
                f"{res['segments']:,}",
                f"{res['wall_s']:.1f}",
                f"{res['cpu_s']:.1f}",
                body(cpu_body),
                f"{res['peak_rss_mib']:.0f}",
                f"{res['cpu_s_per_m_rows']:.1f}",
                body(None if cpu_body is None else cpu_body / rows * 1e6),
                res["status"],
            ]
        )
    return markdown(header, table, "rrrrrrrrl")


def evaluate_line(repo: Path) -> str | None:
    """The test-window scores of evaluate (a sanity check of the model), if it ran."""
    path = repo / "metrics" / "evaluate.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    model, rule = m["model"], m["best_rule"]
    return (
        f"evaluate: model MAE {model['mae']:.2f} WAPE {model['wape']:.3f}; best rule "
        f"{rule['name']} MAE {rule['mae']:.2f}; gain {m['gain_pct']:.1f} %; gate "
        f"{'passed' if m['gate_passed'] else 'failed'}"
    )


def run_size(args: argparse.Namespace, segments: int, selected: list[str]) -> dict:
    """Build the panel and the copy for ``segments``, run the stages; the size's figures."""
    base = args.workdir / f"n{segments}"
    if base.exists():
        logger.info("removing the previous run's %s", base)
        shutil.rmtree(base)
    logs = base / "logs"
    logs.mkdir(parents=True)
    rows = segments * args.months
    started = time.perf_counter()
    panel = make_panel(segments, args.months, args.seed)
    path = base / "panel.parquet"
    size = write(path, panel)
    del panel
    built = time.perf_counter() - started
    logger.info(
        "%d segments: %d rows, %.1f MiB of parquet in %.1f s", segments, rows, size / 2**20, built
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = adapt_params(params, path, segments, args.months)
    apply_sets(params, args.set)
    contract = yaml.safe_load((ROOT / "contract.yaml").read_text())
    contract = adapt_contract(contract, segments, args.months)
    repo = scratch_copy(base / "repo", params, contract)
    logger.info("%d segments: scratch copy in %s", segments, repo)

    last = max(STAGES.index(s) for s in selected)
    plan = [(PREFLIGHT, False)] + [(s, s in selected) for s in STAGES[: last + 1]]
    runs: list[Run] = []
    status = "ok"
    for stage, measured in plan:
        log = logs / f"{stage}.log"
        logger.info("%d segments: %s ...", segments, stage)
        run = run_stage(stage, repo, log, measured)
        runs.append(run)
        logger.info(
            "%d segments: %s %.1f s wall, %.1f s CPU, %.0f MiB peak RSS, exit %d",
            segments, stage, run.wall_s, run.cpu_s, run.rss_mib, run.exit_code,
        )  # fmt: skip
        if run.exit_code:
            status = f"FAILED at {stage} (exit {run.exit_code})"
            print(f"\n{stage} failed (exit {run.exit_code}); last lines of {log}:")
            print(tail(log))
            break

    print(f"\n## {rows_label(rows)} rows: {segments:,} segments x {args.months} months")
    print(f"panel: {size / 2**20:.1f} MiB parquet, built and written in {built:.1f} s\n")
    print(stage_table(runs, rows))
    train_log = logs / "train.log"
    if train_log.exists():
        for text in train_log.read_text(errors="replace").splitlines():
            if "segment encoding:" in text:
                print("train: segment encoding" + text.split("segment encoding:", 1)[1])
    line = evaluate_line(repo)
    if line:
        print(line)
    if status != "ok":
        print(status)
    measured = [r for r in runs if r.measured]
    result = {
        "segments": segments,
        "months": args.months,
        "rows": rows,
        "panel_mib": round(size / 2**20, 1),
        "stages": [asdict(r) for r in runs],
        "wall_s": sum(r.wall_s for r in measured),
        "cpu_s": sum(r.cpu_s for r in measured),
        "peak_rss_mib": max((r.rss_mib for r in measured), default=0.0),
        "body_cpu_s": (
            None
            if any(r.body_cpu_s is None for r in measured)
            else sum(r.body_cpu_s for r in measured)
        ),
        "status": status,
    }
    result["cpu_s_per_m_rows"] = result["cpu_s"] / rows * 1e6
    if args.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(repo, ignore_errors=True)
        path.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--segments",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEGMENTS),
        help="panel sizes in segments (default: 556 5556 55556, i.e. 100k 1M 10M rows)",
    )
    parser.add_argument("--months", type=int, default=180, help="months per segment (180)")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="stages measured (earlier ones run as setup)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--keep", action="store_true", help="keep the copies and the panels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic panels")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change params.yaml in the copies (dotted key, YAML value)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.months < TEST_MONTHS + 48:
        raise SystemExit(f"--months must be at least {TEST_MONTHS + 48} (24 of them are tested)")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if s in args.stages]
    print(
        f"stages {', '.join(selected)}; search disabled, segment_encoding auto; "
        f"workdir {args.workdir}; {os.cpu_count()} CPUs"
    )
    results = [run_size(args, n, selected) for n in args.segments]
    print("\n## Summary (measured stages)\n")
    print(summary_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

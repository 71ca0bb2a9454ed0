"""Throughput of the many-models engine: one AutoETS model per segment, joblib vs Dask.

For each panel size (``--segments``, default 1,000 and 10,000 segments x 180 months of
benchmarks/synthetic.py) it builds one :class:`~panelcast.modelling.many.SegmentData` per
segment (``t = year * 12 + month - 1``, ``y = sales`` as float64 with its missing values, no
features, no global forecasts) and fits them with the package's engine,
``run_chunks(fit_chunk, chunked(data, --chunk), cfg, EngineSpec(...))``, with
``ChunkConfig(strategy="per_segment", families=("auto_ets",), fold_starts=())``: one family
and no CV folds, so each segment costs exactly one AutoETS selection and fit (search space
``--ets-space``). The same panel runs on three engines, one after the other:

- joblib (``backend: local``) with ``n_jobs=1`` (in this process) and ``n_jobs=2`` (loky
  processes; the reusable loky executor is shut down before each run, so every run pays
  its workers' start-up, as a fresh ``train`` stage does);
- Dask (``backend: dask``, ``workers: 2``): the LocalCluster that ``run_chunks`` starts
  itself (2 processes of 1 thread on 127.0.0.1, dashboard off), start-up included.

Per run it measures the wall time, the fits per second, the CPU seconds and the peak RSS of
the whole process tree (this process and its descendants). A background thread reads
``/proc/<pid>/stat`` and ``/proc/<pid>/status`` of every process of the tree every
``--interval`` seconds (0.2): the CPU is the change over the run of the sum, over the live
processes of the tree, of user + system time of each process and of its reaped children
(so workers that exit during the run still count); the memory is the largest sum of VmRSS
seen (shared pages count once per process: an upper bound of the real footprint).

It also measures, once, the start-up of each parallel engine: a run of 2 segments in 2
chunks of 1, with ``seasonal_naive`` (starting the workers and importing the package: the
engine's own start-up) and with ``auto_ets`` (plus statsforecast's import and first call in
each worker, about 2.5 s of CPU); the per-model overhead: the same engines with
``families=("seasonal_naive",)``, a fit that costs next to nothing, as wall / segments in
ms, with and without that start-up; and checks that the results (family, candidate and CV
score of every segment, in order) are identical on every engine. The ratio Dask / joblib
is also given without the start-ups (each run's wall minus its engine's 2-segment run).
This process fits one segment before anything is timed (the imports and first call of
statsforecast stay out of the ``n_jobs=1`` figures; the workers pay theirs).

Printed (stdout, Markdown): the start-up table; per size the AutoETS table (with the
parallel efficiency t(n_jobs=1) / (2 x t(n_jobs=2)) and the ratio Dask / joblib n_jobs=2),
the per-model overhead table and the identity check; a summary over the sizes and the
targets: 10,000 AutoETS models in at most 120 s, parallel efficiency at n_jobs=2 at least
80 %, Dask at most 1.3 x joblib, peak memory at most 4 GiB (a size other than 10,000 is
extrapolated linearly to 10,000 models). Progress goes to stderr (logging).

    .venv/bin/python benchmarks/many_models.py                        # 1,000 and 10,000 segments
    .venv/bin/python benchmarks/many_models.py --segments 100 200     # a quick check (~3 min)
    .venv/bin/python benchmarks/many_models.py --skip-n1 --json many.json

One AutoETS fit costs about 0.14 s of CPU, so 10,000 segments are about 23 min of CPU per
engine: roughly 12 min of wall time per parallel run on 2 idle cores and 23 min for
``n_jobs=1``, about 50 min for the default run (``--skip-n1`` skips ``n_jobs=1`` at the
largest size and takes the efficiency from the next smaller size that ran it). The
efficiency line also gives the best the chunks allow on 2 workers if every segment cost
the same (chunks of 64: 78 % at 100 or 200 segments, 98 % at 1,000, 99.8 % at 10,000).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from synthetic import make_panel, markdown  # noqa: E402  (benchmarks/synthetic.py)

from panelcast.core.config import EngineSpec  # noqa: E402
from panelcast.modelling.many import (  # noqa: E402
    DASK_ADDRESS_ENV,
    ChunkConfig,
    SegmentData,
    SegmentResult,
    chunked,
    fit_chunk,
    run_chunks,
)

logger = logging.getLogger("benchmarks.many_models")

DEFAULT_SEGMENTS = (1000, 10000)
MONTHS = 180
SEASON = 12
MIN_TRAIN_PERIODS = 36
#: The engines measured, in run order: label -> EngineSpec arguments.
ENGINES = {
    "joblib n_jobs=1": {"backend": "local", "n_jobs": 1},
    "joblib n_jobs=2": {"backend": "local", "n_jobs": 2},
    "dask 2 workers": {"backend": "dask", "workers": 2},
}
SERIAL, JOBLIB, DASK = ENGINES
#: The targets (on this machine's 2 cores).
TARGET_MODELS, TARGET_WALL_S = 10_000, 120.0
TARGET_EFFICIENCY = 0.80
TARGET_DASK_RATIO = 1.3
TARGET_PEAK_GIB = 4.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 2**30


# --------------------------------------------------------------------------- measuring


def process_table() -> dict[int, tuple[int, float]]:
    """Every process of the machine: pid -> (parent pid, CPU seconds of the process and of
    its reaped children: utime + stime + cutime + cstime)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:  # gone since the listing
            continue
        fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) "
        table[int(name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / CLK_TCK)
    return table


def descendants(root: int, table: dict[int, tuple[int, float]]) -> list[int]:
    """``root`` and every process below it in ``table``."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` (0 for a zombie or a process gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_tree(root: int) -> tuple[float, int, int]:
    """CPU seconds (see :func:`process_table`), summed RSS and size of ``root``'s tree."""
    table = process_table()
    tree = [pid for pid in descendants(root, table) if pid in table]
    return sum(table[p][1] for p in tree), sum(rss_bytes(p) for p in tree), len(tree)


class TreeMeter:
    """Wall time, CPU seconds and peak RSS of this process's tree over a ``with`` block,
    sampled every ``interval`` seconds by a background thread."""

    def __init__(self, interval: float):
        self.interval = interval
        self.root = os.getpid()
        self.wall_s = self.cpu_s = 0.0
        self.peak_bytes = self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _record(self) -> float:
        cpu, rss, n = sample_tree(self.root)
        self.peak_bytes = max(self.peak_bytes, rss)
        self.processes = max(self.processes, n)
        return cpu

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> TreeMeter:
        self._cpu0 = self._record()
        self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._started
        self._stop.set()
        self._thread.join()
        self.cpu_s = self._record() - self._cpu0


def stop_loky() -> None:
    """Shut down joblib's reusable loky executor (if any), so the next parallel run starts
    its workers as a fresh process would."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


# --------------------------------------------------------------------------- the runs


@dataclass
class Run:
    """One engine run on one panel: what :class:`TreeMeter` measured."""

    segments: int
    family: str
    engine: str
    wall_s: float
    cpu_s: float
    peak_gib: float
    processes: int

    @property
    def fits_per_s(self) -> float:
        return self.segments / self.wall_s if self.wall_s else 0.0


def segment_data(panel: pd.DataFrame) -> list[SegmentData]:
    """One SegmentData per city of ``panel``: ``t = year * 12 + month - 1`` (int64, sorted),
    ``y = sales`` (float64, NaN kept), no features, no global forecasts."""
    t = panel["year"].to_numpy(np.int64) * 12 + panel["month"].to_numpy(np.int64) - 1
    codes = panel["city"].cat.codes.to_numpy()
    order = np.lexsort((t, codes))
    codes, t = codes[order], t[order]
    y = panel["sales"].to_numpy(np.float64)[order]
    names = panel["city"].cat.categories
    bounds = np.flatnonzero(np.diff(codes)) + 1
    return [
        SegmentData(str(names[c[0]]), tt.copy(), yy.copy())
        for c, tt, yy in zip(
            np.split(codes, bounds), np.split(t, bounds), np.split(y, bounds), strict=True
        )
    ]


def chunk_config(family: str, ets_space: str) -> ChunkConfig:
    """One family, no CV folds: one selection + fit per segment."""
    return ChunkConfig(
        strategy="per_segment",
        families=(family,),
        fold_starts=(),
        fold_periods=12,
        season_length=SEASON,
        min_train_periods=MIN_TRAIN_PERIODS,
        ets_space=ets_space,
    )


def run_engine(
    engine: str,
    data: list[SegmentData],
    cfg: ChunkConfig,
    chunk: int,
    interval: float,
) -> tuple[Run, list[SegmentResult]]:
    """Fit every segment of ``data`` on ``engine`` (a key of :data:`ENGINES`), measured."""
    stop_loky()
    spec = EngineSpec(chunk_segments=chunk, **ENGINES[engine])
    family = cfg.families[0]
    logger.info("%d segments, %s, %s ...", len(data), family, engine)
    with TreeMeter(interval) as meter:
        results = run_chunks(fit_chunk, chunked(data, chunk), cfg, spec, what=engine)
    stop_loky()
    run = Run(
        segments=len(data),
        family=family,
        engine=engine,
        wall_s=meter.wall_s,
        cpu_s=meter.cpu_s,
        peak_gib=meter.peak_bytes / GIB,
        processes=meter.processes,
    )
    logger.info(
        "%d segments, %s, %s: %.1f s wall, %.1f s CPU, %.2f GiB peak, %d processes",
        len(data), family, engine, run.wall_s, run.cpu_s, run.peak_gib, run.processes,
    )  # fmt: skip
    return run, results


def outcome(results: list[SegmentResult]) -> list[tuple[Any, ...]]:
    """What must not depend on the engine: segment, family, candidate, CV score, in order."""
    return [
        (r.segment, r.family, json.dumps(r.candidate, sort_keys=True), r.cv_mae) for r in results
    ]


def compare(runs: dict[str, list[SegmentResult]]) -> tuple[bool, list[str]]:
    """Whether every engine's results equal the first one's; the differences (at most 5)."""
    (first, reference), *others = runs.items()
    ref = outcome(reference)
    differences = []
    for engine, results in others:
        got = outcome(results)
        if len(got) != len(ref):
            differences.append(f"{engine}: {len(got)} results, {first}: {len(ref)}")
            continue
        for a, b in zip(ref, got, strict=True):
            if a != b:
                differences.append(f"{first} {a} != {engine} {b}")
    return not differences, differences[:5]


def choices(results: list[SegmentResult]) -> str:
    """The models chosen, most frequent first (e.g. ``MNM 60%``)."""
    counts = Counter(
        r.candidate.get("model", "?") + ("d" if r.candidate.get("damped") else "")
        if r.family == "auto_ets"
        else r.family
        for r in results
    )
    return ", ".join(f"{k} {v / len(results):.0%}" for k, v in counts.most_common())


# --------------------------------------------------------------------------- printing


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def startup_table(runs: dict[tuple[str, str], Run]) -> str:
    header = ["family", "engine", "wall s", "CPU s", "peak GiB", "processes"]
    rows = [
        [f, e, f"{r.wall_s:.2f}", f"{r.cpu_s:.1f}", f"{r.peak_gib:.2f}", str(r.processes)]
        for (f, e), r in runs.items()
    ]
    return markdown(header, rows, "llrrrr")


def without(run: Run, startup: dict[tuple[str, str], Run]) -> float | None:
    """The wall seconds of ``run`` minus its engine's start-up for its family (``None``
    when the run was not longer than the start-up: nothing left to compare)."""
    start = startup.get((run.family, run.engine))
    left = run.wall_s - (start.wall_s if start else 0.0)
    return left if left > 0 else None


def fit_table(runs: dict[str, Run]) -> str:
    header = ["engine", "wall s", "fits/s", "CPU s", "CPU/wall", "peak GiB", "speed-up"]
    base = runs.get(SERIAL)
    rows = []
    for engine, r in runs.items():
        speedup = base.wall_s / r.wall_s if base and r.wall_s else None
        rows.append(
            [
                engine,
                f"{r.wall_s:.1f}",
                f"{r.fits_per_s:.1f}",
                f"{r.cpu_s:.1f}",
                f"{r.cpu_s / r.wall_s if r.wall_s else 0:.2f}",
                f"{r.peak_gib:.2f}",
                ratio(speedup),
            ]
        )
    return markdown(header, rows, "lrrrrrr")


def overhead_table(runs: dict[str, Run], startup: dict[tuple[str, str], Run]) -> str:
    header = ["engine", "wall s", "ms/model", "ms/model without start-up", "CPU s", "peak GiB"]
    rows = []
    for engine, r in runs.items():
        left = without(r, startup)
        rows.append(
            [
                engine,
                f"{r.wall_s:.2f}",
                f"{r.wall_s / r.segments * 1e3:.2f}",
                "-" if left is None else f"{left / r.segments * 1e3:.2f}",
                f"{r.cpu_s:.1f}",
                f"{r.peak_gib:.2f}",
            ]
        )
    return markdown(header, rows, "lrrrrr")


# --------------------------------------------------------------------------- main


def chunking_bound(sizes: list[int], workers: int = 2) -> float:
    """The best parallel efficiency the chunks allow on ``workers`` if every segment costs
    the same: each chunk, in order, goes to the first worker free (as joblib and Dask do)."""
    loads = [0] * workers
    for size in sizes:
        loads[loads.index(min(loads))] += size
    return sum(sizes) / (workers * max(loads))


def efficiency(runs: dict[str, Run]) -> float | None:
    """t(n_jobs=1) / (2 x t(n_jobs=2)), if both ran."""
    if SERIAL in runs and JOBLIB in runs:
        return runs[SERIAL].wall_s / (2 * runs[JOBLIB].wall_s)
    return None


def run_size(
    args: argparse.Namespace,
    segments: int,
    skip_serial: bool,
    startup: dict[tuple[str, str], Run],
) -> dict[str, Any]:
    """Every engine on a panel of ``segments``: the figures, printed and returned."""
    load = os.getloadavg()[0]
    logger.info("%d segments: load average %.2f", segments, load)
    started = time.perf_counter()
    panel = make_panel(segments, MONTHS, args.seed)
    data = segment_data(panel)
    del panel
    logger.info(
        "%d segments x %d months built in %.1f s", segments, MONTHS, time.perf_counter() - started
    )
    ets, naive = chunk_config("auto_ets", args.ets_space), chunk_config("seasonal_naive", "ZZZ")
    fits: dict[str, Run] = {}
    fit_results: dict[str, list[SegmentResult]] = {}
    for engine in ENGINES:
        if engine == SERIAL and skip_serial:
            logger.info("%d segments: %s skipped (--skip-n1)", segments, engine)
            continue
        fits[engine], fit_results[engine] = run_engine(engine, data, ets, args.chunk, args.interval)
    overhead: dict[str, Run] = {}
    naive_results: dict[str, list[SegmentResult]] = {}
    for engine in ENGINES:
        overhead[engine], naive_results[engine] = run_engine(
            engine, data, naive, args.chunk, args.interval
        )
    identical, differences = compare(fit_results)
    naive_identical, naive_differences = compare(naive_results)
    eff = efficiency(fits)
    dask_ratio = fits[DASK].wall_s / fits[JOBLIB].wall_s
    dask_left, joblib_left = without(fits[DASK], startup), without(fits[JOBLIB], startup)
    dask_ratio_warm = dask_left / joblib_left if dask_left and joblib_left else None
    chunk_sizes = [len(c) for c in chunked(data, args.chunk)]
    n_chunks, bound = len(chunk_sizes), chunking_bound(chunk_sizes)

    print(f"\n## {segments:,} segments x {MONTHS} months ({n_chunks} chunks of {args.chunk})\n")
    print(f"load average {load:.2f} before the runs (2 CPUs shared with other work)\n")
    print(f"AutoETS (search space {args.ets_space}), one selection + fit per segment:\n")
    print(fit_table(fits))
    print()
    print(
        "- parallel efficiency t(n_jobs=1) / (2 x t(n_jobs=2)): "
        + (pct(eff) if eff is not None else "not measured (--skip-n1)")
        + f" (the chunks alone allow at most {pct(bound)} on 2 workers)"
    )
    print(
        f"- dask / joblib n_jobs=2: {ratio(dask_ratio)} "
        f"(without the start-ups measured above: {ratio(dask_ratio_warm)})"
    )
    print(f"- identical results ({', '.join(fit_results)}): {'yes' if identical else 'no'}")
    for line in differences:
        print(f"  - {line}")
    print(f"- models chosen: {choices(fit_results[JOBLIB])}")
    print("\nPer-model overhead (seasonal_naive: a fit that costs next to nothing):\n")
    print(overhead_table(overhead, startup))
    print(f"\n- identical results (seasonal_naive): {'yes' if naive_identical else 'no'}")
    for line in naive_differences:
        print(f"  - {line}")
    sys.stdout.flush()
    return {
        "segments": segments,
        "months": MONTHS,
        "chunks": n_chunks,
        "chunking_bound": bound,
        "auto_ets": [asdict(r) | {"fits_per_s": r.fits_per_s} for r in fits.values()],
        "seasonal_naive": [
            asdict(r) | {"ms_per_model": r.wall_s / r.segments * 1e3} for r in overhead.values()
        ],
        "efficiency": eff,
        "dask_ratio": dask_ratio,
        "dask_ratio_without_startup": dask_ratio_warm,
        "identical": identical,
        "differences": differences,
        "identical_seasonal_naive": naive_identical,
        "peak_gib": max(r.peak_gib for r in [*fits.values(), *overhead.values()]),
        "_fits": fits,
    }


def summary_table(sizes: list[dict[str, Any]]) -> str:
    header = [
        "segments",
        f"{SERIAL} s",
        f"{JOBLIB} s",
        f"{DASK} s",
        "efficiency",
        "dask/joblib",
        "peak GiB",
        "identical",
    ]
    rows = []
    for s in sizes:
        fits = s["_fits"]
        rows.append(
            [
                f"{s['segments']:,}",
                f"{fits[SERIAL].wall_s:.1f}" if SERIAL in fits else "-",
                f"{fits[JOBLIB].wall_s:.1f}",
                f"{fits[DASK].wall_s:.1f}",
                pct(s["efficiency"]),
                ratio(s["dask_ratio"]),
                f"{s['peak_gib']:.2f}",
                "yes" if s["identical"] else "no",
            ]
        )
    return markdown(header, rows, "rrrrrrrl")


def targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets against the largest size's figures (see the module docstring)."""
    largest = max(sizes, key=lambda s: s["segments"])
    n = largest["segments"]
    out = []
    for engine in (JOBLIB, DASK):
        wall = largest["_fits"][engine].wall_s
        if n == TARGET_MODELS:
            measured, note = wall, ""
        else:
            measured = wall * TARGET_MODELS / n
            note = f" (extrapolated from {n:,} segments: {wall:.1f} s)"
        out.append(
            {
                "target": f"{TARGET_MODELS:,} AutoETS models in <= {TARGET_WALL_S:.0f} s "
                f"({engine})",
                "measured": f"{measured:.0f} s{note}",
                "met": measured <= TARGET_WALL_S,
            }
        )
    with_serial = [s for s in sizes if s["efficiency"] is not None]
    if with_serial:
        best = max(with_serial, key=lambda s: s["segments"])
        note = "" if best is largest else f" (at {best['segments']:,} segments: n_jobs=1 skipped)"
        out.append(
            {
                "target": f"parallel efficiency at n_jobs=2 >= {TARGET_EFFICIENCY:.0%}",
                "measured": f"{best['efficiency']:.0%}{note}",
                "met": best["efficiency"] >= TARGET_EFFICIENCY,
            }
        )
    else:
        out.append(
            {
                "target": f"parallel efficiency at n_jobs=2 >= {TARGET_EFFICIENCY:.0%}",
                "measured": "not measured (n_jobs=1 skipped)",
                "met": None,
            }
        )
    out.append(
        {
            "target": f"dask <= {TARGET_DASK_RATIO}x joblib n_jobs=2",
            "measured": f"{largest['dask_ratio']:.2f}x (at {n:,} segments)",
            "met": largest["dask_ratio"] <= TARGET_DASK_RATIO,
        }
    )
    peak = max(s["peak_gib"] for s in sizes)
    out.append(
        {
            "target": f"peak memory <= {TARGET_PEAK_GIB:.0f} GiB",
            "measured": f"{peak:.2f} GiB (largest sum of RSS over the tree, any run)",
            "met": peak <= TARGET_PEAK_GIB,
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--segments",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEGMENTS),
        help="panel sizes in segments of 180 months (default: 1000 10000)",
    )
    parser.add_argument("--chunk", type=int, default=64, help="segments per chunk (64)")
    parser.add_argument("--ets-space", default="ZZZ", help="AutoETS search space (ZZZ)")
    parser.add_argument(
        "--skip-n1",
        action="store_true",
        help="skip n_jobs=1 at the largest size (efficiency from the next smaller size)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic panels")
    parser.add_argument(
        "--interval", type=float, default=0.2, help="seconds between samples of the tree"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's own chatter
    if min(args.segments) < 2 or args.chunk < 1:
        raise SystemExit("--segments must be at least 2 and --chunk at least 1")
    if os.environ.pop(DASK_ADDRESS_ENV, None):
        logger.warning("%s ignored: the benchmark starts its own LocalCluster", DASK_ADDRESS_ENV)
    sizes = sorted(set(args.segments))
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; sizes "
        f"{', '.join(f'{n:,}' for n in sizes)} segments x {MONTHS} months; chunks of "
        f"{args.chunk}; AutoETS space {args.ets_space}"
        + ("; n_jobs=1 skipped at the largest size" if args.skip_n1 else "")
    )

    # this process's imports and first AutoETS call, outside every figure
    small = segment_data(make_panel(2, MONTHS, args.seed))
    ets = chunk_config("auto_ets", args.ets_space)
    started = time.perf_counter()
    fit_chunk(small[:1], ets)
    logger.info("warm-up of this process: %.1f s", time.perf_counter() - started)

    startup = {}
    for family in ("seasonal_naive", "auto_ets"):
        for engine in (JOBLIB, DASK):
            cfg = chunk_config(family, args.ets_space)
            startup[family, engine], _ = run_engine(engine, small, cfg, 1, args.interval)
    print(
        "\n## Start-up: 2 segments in 2 chunks of 1 (seasonal_naive: workers started and the "
        "package imported; auto_ets: also statsforecast's import and first fit)\n"
    )
    print(startup_table(startup))
    sys.stdout.flush()

    results = [run_size(args, n, args.skip_n1 and n == sizes[-1], startup) for n in sizes]
    print("\n## Summary (AutoETS, wall seconds)\n")
    print(summary_table(results))
    goals = targets(results)
    print("\n## Targets\n")
    rows = [
        [g["target"], g["measured"], "-" if g["met"] is None else ("yes" if g["met"] else "no")]
        for g in goals
    ]
    print(markdown(["target", "measured", "met"], rows, "lll"))
    if args.json:
        figures = {
            "cpus": os.cpu_count(),
            "chunk": args.chunk,
            "ets_space": args.ets_space,
            "skip_n1": args.skip_n1,
            "startup": [asdict(r) for r in startup.values()],
            "sizes": [{k: v for k, v in s.items() if not k.startswith("_")} for s in results],
            "targets": goals,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

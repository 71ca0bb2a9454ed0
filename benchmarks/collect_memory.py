"""Peak memory of the collect stage on a large CSV (target: a 1 GB CSV within 4 GB of RSS).

Generates a CSV shaped like the Texas housing table (a text segment column, year, month,
six numeric columns with some missing values) of about ``--size-mb`` megabytes in a
temporary folder, then runs the real collect (``panelcast.pipeline.collect.collect`` and
the snapshot writer of the stage) in a child process, and prints the file size, the
child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), the ratio and the seconds.
Prints figures only (PASS/MISS against the target), never asserts.

    .venv/bin/python benchmarks/collect_memory.py                 # 1 GB (about 2 minutes)
    .venv/bin/python benchmarks/collect_memory.py --size-mb 100   # quicker
    .venv/bin/python benchmarks/collect_memory.py --gzip          # the same, as .csv.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.collect_memory")
#: Peak RSS allowed per byte of CSV (4 GB for 1 GB).
TARGET_RATIO = 4.0

CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
from panelcast.core.config import ProblemSpec, SourceSpec, TimeSpec
from panelcast.core.io import write_parquet
from panelcast.pipeline.collect import collect

source = SourceSpec(uri={uri!r}, watch={uri!r}, format="auto", name="benchmark", licence="none",
                    max_bytes=1 << 40)
problem = ProblemSpec(question="q", segment="city", time=TimeSpec(frequency="M",
                      year_column="year", period_column="month"), target="sales", horizon=1,
                      metric="mae", success="s")
t0 = time.perf_counter()
frame, record = collect(source, problem, tmp_dir={tmp!r})
t1 = time.perf_counter()
write_parquet({out!r}, frame)
t2 = time.perf_counter()
print(json.dumps({{"rows": record["rows"], "collect_s": t1 - t0, "write_s": t2 - t1}}))
"""


def write_csv(path: Path, size_mb: float, seed: int = 0) -> int:
    """A txhousing-shaped CSV of about ``size_mb`` MB (uncompressed) in blocks of 200,000
    rows; returns the rows. 2 % of the numeric values are missing (empty fields)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    cities = np.array([f"City {i:03d}" for i in range(400)])
    target, rows, n = size_mb * 1e6, 0, 200_000
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        writer = None
        while out.tell() < target:  # for .gz: the uncompressed size
            k = np.arange(rows, rows + n)
            year, month = 2000 + (k // 400) // 12 % 200, (k // 400) % 12 + 1
            sales = rng.gamma(2.0, 150.0, n).round()
            table = pa.table(
                {
                    "city": pa.array(cities[k % 400]),
                    "year": pa.array(year),
                    "month": pa.array(month),
                    "sales": _with_missing(sales, rng),
                    "volume": _with_missing((sales * rng.uniform(1e5, 3e5, n)).round(), rng),
                    "median": _with_missing(rng.uniform(5e4, 4e5, n) // 100 * 100, rng),
                    "listings": _with_missing(rng.integers(100, 20000, n).astype(float), rng),
                    "inventory": _with_missing(rng.uniform(1, 15, n).round(1), rng),
                    "date": pa.array(year + (month - 1) / 12),
                }
            )
            if writer is None:
                options = pacsv.WriteOptions(quoting_style="none")
                writer = pacsv.CSVWriter(out, table.schema, write_options=options)
            writer.write_table(table)
            rows += n
        writer.close()
    return rows


def _with_missing(values: np.ndarray, rng: np.random.Generator):
    import pyarrow as pa

    return pa.array(values, mask=rng.random(len(values)) < 0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1000.0, help="CSV size (MB)")
    parser.add_argument("--gzip", action="store_true", help="write and read a .csv.gz")
    parser.add_argument("--dir", default=None, help="folder for the files (a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="collect-memory-", dir=args.dir) as tmp:
        folder = Path(tmp)
        path = folder / ("big.csv.gz" if args.gzip else "big.csv")
        started = time.perf_counter()
        rows = write_csv(path, args.size_mb)
        size = path.stat().st_size
        logger.info("wrote %s: %d rows, %.1f MB (%.0f s)", path.name, rows, size / 1e6,
                    time.perf_counter() - started)  # fmt: skip
        code = CHILD.format(
            src=str(ROOT / "src"), uri=str(path), tmp=str(folder), out=str(folder / "s.parquet")
        )
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            logger.error("collect failed:\n%s", proc.stderr[-3000:])
            sys.exit(1)
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        csv_bytes = size
        if args.gzip:
            with gzip.open(path, "rb") as handle:
                csv_bytes = sum(len(c) for c in iter(lambda: handle.read(1 << 24), b""))
        ratio = peak / csv_bytes
        verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
        logger.info(
            "file %.1f MB%s, %d rows | peak RSS %.2f GB | ratio %.2f x the CSV (target <= %.1f: "
            "%s) | %.1f s in all (collect %.1f s, snapshot write %.1f s)",
            size / 1e6,
            f" (CSV {csv_bytes / 1e6:.1f} MB)" if args.gzip else "",
            figures["rows"],
            peak / 1e9,
            ratio,
            TARGET_RATIO,
            verdict,
            seconds,
            figures["collect_s"],
            figures["write_s"],
        )


if __name__ == "__main__":
    main()

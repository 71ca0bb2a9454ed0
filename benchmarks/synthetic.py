"""Synthetic panels shaped like the Texas housing table, of any number of segments.

Measures nothing by itself: it makes the inputs of the scale benchmarks
(benchmarks/scale_pipeline.py). :func:`make_panel` builds a table with the columns of
txhousing (city, year, month, sales, volume, median, listings, inventory, date), one row per
segment and month from 2000-01. Each synthetic segment is a real city's series (the 46
cities taken in turn, in an order drawn from the seed) with its level moved (a market-size
factor on sales, volume and listings, a price factor on median and volume, both lognormal)
and multiplicative lognormal noise on every value; a value missing in the real city stays
missing. Segments are named ``c000001``, ``c000002``, ... It is vectorised (one gather
per column), numeric columns are float32, city is categorical: 55,556 segments x 180
months (10M rows) build in a few seconds in well under 1 GB.

    .venv/bin/python benchmarks/synthetic.py --segments 1000 --out /tmp/panel.parquet
    .venv/bin/python benchmarks/synthetic.py --segments 55556 --seed 1 --out /tmp/big.parquet

Prints the rows, the seconds to build and write, the file size and the table's memory.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("benchmarks.synthetic")

#: The value columns of txhousing, in its order.
VALUES = ("sales", "volume", "median", "listings", "inventory")
COLUMNS = ("city", "year", "month", *VALUES, "date")
FIRST_YEAR = 2000
#: Spread (lognormal sigma) of the market-size factor (sales, volume, listings) and of the
#: price factor (median, volume) of a segment, and their clipping (keeps every value inside
#: the bounds of contract.yaml: at most 5 x the largest real sales, 8,945 homes a month).
SIZE_SIGMA, SIZE_CLIP = 0.5, (0.2, 5.0)
PRICE_SIGMA, PRICE_CLIP = 0.15, (0.6, 1.6)
#: Multiplicative noise (lognormal sigma) per value.
NOISE = {"sales": 0.08, "volume": 0.03, "median": 0.03, "listings": 0.05, "inventory": 0.05}


def txhousing_path() -> Path:
    """The txhousing CSV shipped in the plotnine wheel (the project's default source)."""
    spec = importlib.util.find_spec("plotnine")
    if spec is None or spec.origin is None:
        raise SystemExit("plotnine is not installed: it ships the txhousing table")
    return Path(spec.origin).parent / "data" / "txhousing.csv"


@functools.cache
def real_series() -> tuple[tuple[str, ...], np.ndarray]:
    """The real cities and their values as a float32 array (city, month from 2000-01, value
    column of :data:`VALUES`), NaN where a value (or a whole row) is missing."""
    real = pd.read_csv(txhousing_path())
    cities = tuple(sorted(real["city"].unique()))
    t = ((real["year"] - FIRST_YEAR) * 12 + real["month"] - 1).to_numpy()
    if t.min() < 0:
        raise SystemExit("txhousing starts before 2000-01: the generator assumes it does not")
    out = np.full((len(cities), int(t.max()) + 1, len(VALUES)), np.nan, dtype=np.float32)
    city = pd.Categorical(real["city"], categories=cities).codes
    out[city, t] = real[list(VALUES)].to_numpy(dtype=np.float32)
    return cities, out


def make_panel(n_segments: int, months: int = 180, seed: int = 0) -> pd.DataFrame:
    """A txhousing-shaped panel: ``n_segments`` x ``months`` rows from 2000-01, sorted by
    city then month (180 months: 2000-01..2014-12). Deterministic in ``seed``.

    Beyond the real data's 187 months the real series repeat from their start (whole
    years, so the season stays in place)."""
    if n_segments < 1 or months < 1:
        raise ValueError(f"n_segments and months must be >= 1, got {n_segments}, {months}")
    _, real = real_series()
    rng = np.random.default_rng(seed)
    source = rng.permutation(len(real))[np.arange(n_segments) % len(real)]
    t = np.arange(months)
    src_t = t if months <= real.shape[1] else t % (12 * (real.shape[1] // 12))
    size = np.clip(rng.lognormal(0.0, SIZE_SIGMA, n_segments), *SIZE_CLIP).astype(np.float32)
    price = np.clip(rng.lognormal(0.0, PRICE_SIGMA, n_segments), *PRICE_CLIP).astype(np.float32)
    factor = {
        "sales": size,
        "volume": size * price,
        "median": price,
        "listings": size,
        "inventory": np.ones(n_segments, dtype=np.float32),  # months of supply: no unit
    }
    sales_noise = None
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(VALUES):
        values = real[:, src_t, j][source]  # (segments, months), one gather
        noise = rng.standard_normal(values.shape, dtype=np.float32)
        noise *= NOISE[name]
        np.exp(noise, out=noise)
        if name == "sales":
            sales_noise = noise
        elif name == "volume":  # volume follows the sales it is made of
            noise *= sales_noise
        values *= factor[name][:, None]
        values *= noise
        del noise
        if name == "median":
            values = np.round(values, -2, out=values)
        elif name == "inventory":
            values = np.round(values, 1, out=values)
        else:
            values = np.rint(values, out=values)
        columns[name] = values.ravel()
    del sales_noise
    year = (FIRST_YEAR + t // 12).astype(np.int16)
    month = (t % 12 + 1).astype(np.int8)
    names = pd.Index([f"c{i:06d}" for i in range(1, n_segments + 1)], dtype=object)
    codes = np.repeat(np.arange(n_segments, dtype=np.int32), months)
    frame = pd.DataFrame(
        {
            "city": pd.Categorical.from_codes(codes, categories=names),
            "year": np.tile(year, n_segments),
            "month": np.tile(month, n_segments),
            **columns,
            "date": np.tile(year + (month - 1) / 12.0, n_segments),  # float64, as txhousing
        },
        columns=list(COLUMNS),
        copy=False,
    )
    return frame


def write(path: str | Path, panel: pd.DataFrame) -> int:
    """Write ``panel`` to a parquet file with pyarrow (city as a dictionary column);
    returns the file's size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(panel, preserve_index=False), path)
    return path.stat().st_size


def markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    """A markdown table; ``align``: one letter per column, ``l`` (left) or ``r`` (right)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    rule = [
        "-" * w if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align, strict=True)
    ]
    lines = []
    for cells in (header, rule, *rows):
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, required=True, help="number of segments")
    parser.add_argument("--months", type=int, default=180, help="months from 2000-01 (180)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the parquet file to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    panel = make_panel(args.segments, args.months, args.seed)
    built = time.perf_counter()
    logger.info("built %d rows in %.1f s; writing %s", len(panel), built - started, args.out)
    size = write(args.out, panel)
    written = time.perf_counter()
    memory = panel.memory_usage(deep=True).sum()
    print(
        f"{len(panel):,} rows ({args.segments:,} segments x {args.months} months): built in "
        f"{built - started:.1f} s ({memory / 2**20:.0f} MiB in memory), written in "
        f"{written - built:.1f} s to {args.out} ({size / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    main()

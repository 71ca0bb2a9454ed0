"""Peak memory of the contract check on a large table full of duplicate keys and bad values.

Builds a table of ``--rows`` rows (default 2 million) shaped like txhousing in which every
row has the same key (city, year, month) and many values break a rule: negative sales,
infinite volumes, medians of 1e308, a date that disagrees with year and month on every
other row, unseen cities, and one 5 MB text cell.
It then runs the checks of the validate stage (:func:`check`, :func:`check_completeness`,
the JSON report and the text of the failures) and prints the resident memory before, the
peak during the checks (Linux VmHWM, reset before them), the seconds, and the size of the
report and of the error text. Figures only: no assertion, never part of the test run.

    .venv/bin/python benchmarks/validate_memory.py                  # 2 million rows
    .venv/bin/python benchmarks/validate_memory.py --rows 200000
    # another implementation of the contract module with the same signatures (check with
    # a TimeSpec, load_contract with a calendar), its own contract:
    git show HEAD~1:src/panelcast/data/contract.py > /tmp/old_contract.py
    git show HEAD~1:contract.yaml > /tmp/old_contract.yaml
    .venv/bin/python benchmarks/validate_memory.py --module /tmp/old_contract.py \
        --contract /tmp/old_contract.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from panelcast.core.config import load_params  # noqa: E402
from panelcast.core.io import dumps_json  # noqa: E402

BIG_CELL = 5 * 1024 * 1024


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_module(path: str | None) -> ModuleType:
    """The contract module under test: the project's, or a file (loaded inside the package,
    so its relative imports resolve)."""
    if path is None:
        from panelcast.data import contract

        return contract
    spec = importlib.util.spec_from_file_location("panelcast.data._contract_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bad_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows sharing one key, with many values breaking a rule."""
    rng = np.random.default_rng(seed)
    sales = rng.integers(0, 9000, rows).astype(float)
    sales[::3] = -1.0  # below the minimum
    volume = sales * 1e5
    volume[1::7] = np.inf  # not finite
    median = np.full(rows, 150_000.0)
    median[2::11] = 1e308  # beyond max and the magnitude guard
    city = np.array(["Abilene", "Atlantis", "Austin"], dtype=object)[rng.integers(0, 3, rows)]
    city[0] = "x" * BIG_CELL  # one huge cell
    date = np.full(rows, 2000.0)
    date[1::2] = 2000.5  # disagrees with year/month
    return pd.DataFrame(
        {
            "city": pd.array(city, dtype="str"),
            "year": np.full(rows, 2000, dtype=np.int64),
            "month": np.ones(rows, dtype=np.int64),
            "sales": sales,
            "volume": volume,
            "median": median,
            "listings": rng.integers(0, 5000, rows).astype(float),
            "inventory": rng.random(rows) * 10,
            "date": date,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--module", help="a contract.py to measure instead of the project's")
    parser.add_argument("--contract", default=str(ROOT / "contract.yaml"))
    args = parser.parse_args()

    module = load_module(args.module)
    params = load_params(ROOT / "params.yaml")
    contract = module.load_contract(args.contract, calendar=params.problem.calendar)
    time_spec = params.problem.time
    frame = bad_table(args.rows)
    before = status_kib("VmRSS")
    exact = reset_peak()

    started = time.perf_counter()
    try:
        failures = module.check(frame, contract, time_spec)
        if hasattr(module, "check_completeness"):
            failures += module.check_completeness(
                frame, contract, params.problem.segment_column, time_spec
            )
        text = module.format_failures(failures, "data/raw/snapshot.parquet")
        report = dumps_json(module.report(failures, "snapshot", "contract", len(frame)))
        outcome = "ok"
    except MemoryError:
        text = report = ""
        outcome = "MemoryError"
    seconds = time.perf_counter() - started
    peak = status_kib("VmHWM")

    print(f"module: {args.module or 'panelcast.data.contract'}; rows: {args.rows:,}")
    print(f"outcome: {outcome}; checks: {seconds:.2f} s")
    print(f"RSS before the checks: {before / 1024:.0f} MiB (the table itself included)")
    label = "peak during the checks" if exact else "peak of the process (VmHWM not resettable)"
    print(f"{label}: {peak / 1024:.0f} MiB (+{(peak - before) / 1024:.0f} MiB)")
    if outcome == "ok":
        longest = max((len(line) for line in text.splitlines()), default=0)
        print(
            f"failures: {len(failures)}; report: {len(report):,} bytes; error text: "
            f"{len(text):,} characters, longest line {longest:,}"
        )
        for line in text.splitlines():
            print("  " + (line if len(line) <= 160 else line[:157] + "..."))


if __name__ == "__main__":
    main()

"""Feed a repository's source one period at a time and run the production cycle after each.

Used by the cycle's integration tests (one process for many cycles: the imports are paid
once). The source grows as a production feed would: each period the file is rewritten
atomically with every row up to that period. One JSON line per cycle on stdout.

    python cycle_driver.py --repo REPO --full FULL.csv --source SOURCE.csv \
        --first 2010-01 --last 2011-12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd


def grow(full: pd.DataFrame, source: Path, year: int, month: int) -> None:
    """Write every row of ``full`` up to ``year-month`` to ``source`` (atomic rename)."""
    keep = full[(full["year"] < year) | ((full["year"] == year) & (full["month"] <= month))]
    tmp = source.with_name(source.name + ".tmp")
    keep.to_csv(tmp, index=False)
    os.replace(tmp, source)


def months(first: str, last: str) -> list[tuple[int, int]]:
    (y, m), (ly, lm) = (tuple(map(int, first.split("-"))), tuple(map(int, last.split("-"))))
    out = []
    while (y, m) <= (ly, lm):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--full", required=True, help="the whole table (CSV)")
    parser.add_argument("--source", required=True, help="the file params.source.uri names")
    parser.add_argument("--first", required=True)
    parser.add_argument("--last", required=True)
    args = parser.parse_args()
    os.chdir(args.repo)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from panelcast.core.config import load_params
    from panelcast.production.cycle import run_cycle

    full = pd.read_csv(args.full)
    for year, month in months(args.first, args.last):
        grow(full, Path(args.source), year, month)
        started = time.perf_counter()
        outcome = run_cycle(load_params("params.yaml"), Path("."))
        retrain = outcome.audit.get("retrain") or {}
        line = {
            "month": f"{year}-{month:02d}",
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "decision": outcome.audit.get("decision"),
            "promoted": bool(retrain.get("promoted")),
            "seconds": round(time.perf_counter() - started, 2),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

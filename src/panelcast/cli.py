"""The ``panelcast`` command: production entry points around the DVC pipeline.

- ``panelcast predict --input FILE --output FILE``: forecasts for the segments of a file
  in the source schema (CSV, CSV.gz or Parquet), checked with the data contract.
- ``panelcast serve``: the HTTP service of the deployed model (loopback by default).
- ``panelcast check``: the params and the data contract, loaded strictly *before* DVC
  reads them (``make repro`` runs it first). DVC's own YAML parser expands anchors and
  aliases, so a params.yaml with an alias bomb would exhaust memory inside DVC before any
  stage runs; our loader refuses anchors and aliases at the first one.
- ``panelcast cycle``: the production cycle (:mod:`panelcast.production.cycle`): a new
  period of the source scored, monitored, retrained when the policy says so, committed.
- ``panelcast example NAME [--dir DIR]``: the pipeline on another table, ``examples/NAME``
  (its params.yaml and contract.yaml), in a scratch copy of the repository.

Exit codes as for the stages: 2 for a user mistake (one line), 1 for a bug (traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from .core.config import load_params
from .core.errors import UserError
from .core.stage import USER_ERROR_EXIT, setup_logging

logger = logging.getLogger("panelcast.cli")


def _predict(args: argparse.Namespace) -> None:
    import pandas as pd

    from .core.io import atomic_write
    from .data.sources import parse_table, read_source
    from .serving.forecaster import Forecaster

    params = load_params(args.params)
    with threadpool_limits(limits=params.compute.threads):
        forecaster = Forecaster.load(params, allow_failed_gate=args.allow_failed_gate)
        source = Path(args.input)
        if not source.is_file():
            raise UserError(f"{source}: input file not found.")
        with read_source(str(source), "auto") as raw:
            frame = parse_table(raw)
        out = forecaster.forecast(forecaster.validate_rows(frame, str(source)))
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"{output}: the output must end in .csv or .parquet, got {suffix!r}.")

    def write(tmp: Path) -> None:
        if suffix == ".csv":
            out.to_csv(tmp, index=False, lineterminator="\n")
        else:
            out.to_parquet(tmp, index=False)

    atomic_write(output, write)
    logger.info(
        "%d forecast(s) for %s written to %s (model %s)",
        int(pd.notna(out["forecast"]).sum()),
        ", ".join(sorted(set(out["period"]))),
        output,
        forecaster.version,
    )


def _check(args: argparse.Namespace) -> None:
    from .pipeline.check_params import check_params

    params = load_params(args.params)
    with threadpool_limits(limits=params.compute.threads):
        check_params(params, args.params)


def _example(args: argparse.Namespace) -> None:
    from .examples import available, run_example

    root = Path.cwd()
    if args.name is None:
        logger.info("examples: %s", ", ".join(available(root)) or "(none)")
        return
    dest = Path(args.dir) if args.dir else root / "build" / "examples" / args.name
    code = run_example(root, args.name, dest.resolve())
    if code:
        sys.exit(code)


def _cycle(args: argparse.Namespace) -> None:
    from .production.cycle import LOCKED_EXIT, CycleLockedError, run_cycle

    params = load_params(args.params)
    try:
        with threadpool_limits(limits=params.compute.threads):
            outcome = run_cycle(params, Path.cwd())
    except CycleLockedError as exc:
        logger.warning("panelcast cycle: %s", exc)
        sys.exit(LOCKED_EXIT)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _serve(args: argparse.Namespace) -> None:
    from .serving.server import serve

    serve(args)


def parser() -> argparse.ArgumentParser:
    """The command line (``panelcast --help``)."""
    top = argparse.ArgumentParser(prog="panelcast", description=__doc__.split("\n\n")[0])
    top.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="forecast the segments of a file with the deployed model")
    p.add_argument("--input", required=True, help="rows in the source schema (csv or parquet)")
    p.add_argument("--output", required=True, help="forecasts (.csv or .parquet)")
    p.add_argument("--allow-failed-gate", action="store_true", help="use a model below the gate")
    p.set_defaults(run=_predict)
    s = sub.add_parser("serve", help="serve the deployed model over HTTP")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (one per core)")
    s.add_argument("--allow-failed-gate", action="store_true", help="serve a model below the gate")
    s.add_argument(
        "--params", default=argparse.SUPPRESS, help="parameter file (also accepted here)"
    )
    s.set_defaults(run=_serve)
    c = sub.add_parser("check", help="check params.yaml and the data contract before DVC runs")
    c.add_argument(
        "--params", default=argparse.SUPPRESS, help="parameter file (also accepted here)"
    )
    c.set_defaults(run=_check)
    y = sub.add_parser(
        "cycle",
        help="the production cycle: ingest a new period, monitor, retrain if the policy says "
        "so, redeploy, report (exit 0: done or nothing new; 2: refused; 75: another cycle runs)",
    )
    y.add_argument(
        "--params", default=argparse.SUPPRESS, help="parameter file (also accepted here)"
    )
    y.set_defaults(run=_cycle)
    e = sub.add_parser("example", help="run the pipeline on examples/NAME in a scratch copy")
    e.add_argument("name", nargs="?", help="the example (none: list them)")
    e.add_argument("--dir", help="scratch folder (default build/examples/NAME; must not exist)")
    e.set_defaults(run=_example)
    return top


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``panelcast`` console script."""
    args = parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    setup_logging()
    try:
        args.run(args)
    except FileNotFoundError as exc:
        logger.error("panelcast %s: file not found: %s", args.command, exc.filename or exc)
        sys.exit(USER_ERROR_EXIT)
    except UserError as exc:
        logger.error("panelcast %s: %s", args.command, exc)
        sys.exit(USER_ERROR_EXIT)


if __name__ == "__main__":
    main()

"""Shared plumbing of the stage scripts: arguments, logging, and clean failures."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from .config import Params, ParamsError, load_params

logger = logging.getLogger("panelcast")


class StageError(RuntimeError):
    """A stage refuses its input; the message says what, where and why."""


def setup_logging() -> None:
    """Log to stderr: level from PANELCAST_LOG_LEVEL (default INFO)."""
    level = os.environ.get("PANELCAST_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_stage(
    name: str,
    body: Callable[[Params, argparse.Namespace], None],
    parser: argparse.ArgumentParser | None = None,
) -> None:
    """Parse ``--params``, load them strictly, run ``body``; exit non-zero with a clear message."""
    parser = parser or argparse.ArgumentParser(description=f"DVC stage '{name}'")
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    args = parser.parse_args()
    setup_logging()
    log = logging.getLogger(f"panelcast.stages.{name}")
    try:
        params = load_params(args.params)
        body(params, args)
    except ParamsError as exc:
        text = str(exc)
        if args.params not in text:  # raised after loading, e.g. by panelcast.model
            text = f"{args.params}: {text}"
        log.error("stage '%s' refused its parameters: %s", name, text)
        sys.exit(2)
    except FileNotFoundError as exc:
        log.error(
            "stage '%s' failed: input not found: %s (did the earlier stages run? "
            "`dvc repro` runs them in order)",
            name,
            exc.filename or exc,
        )
        sys.exit(1)
    except (StageError, ValueError) as exc:
        log.error("stage '%s' failed: %s", name, exc)
        sys.exit(1)
    log.info("stage '%s' done", name)

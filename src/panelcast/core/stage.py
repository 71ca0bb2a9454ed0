"""The stage runner: arguments, logging, pinned thread pools, and the exit-code contract.

A stage script calls :func:`run_stage` with a body that reads its inputs (paths from
``params.paths``), calls the package and writes its outputs. User mistakes
(:class:`~panelcast.core.errors.UserError`: bad params, contract or data, a missing
input) are logged as one line and exit with code 2; anything else is a bug and keeps
its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
from collections.abc import Callable

from threadpoolctl import threadpool_limits

from .config import Params, load_params
from .errors import ParamsError, UserError
from .io import stage_outputs, storage_error

logger = logging.getLogger("panelcast")

#: Exit code of a stage that refused what the user gave it.
USER_ERROR_EXIT = 2
#: Operating-system errors that are the machine's state, not a bug: one line, exit code 2.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EMFILE,
        errno.ENFILE,
        errno.EIO,
        errno.ENOTDIR,
        errno.EISDIR,
    }
)


class StageError(UserError):
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
    """Parse ``--params``, load them strictly, run ``body`` with pinned thread pools."""
    parser = parser or argparse.ArgumentParser(description=f"DVC stage '{name}'")
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    args = parser.parse_args()
    setup_logging()
    log = logging.getLogger(f"panelcast.stages.{name}")
    started, cpu = time.perf_counter(), time.process_time()
    try:
        params = load_params(args.params)
        with threadpool_limits(limits=params.compute.threads), stage_outputs():
            body(params, args)
    except ParamsError as exc:
        text = str(exc)
        if args.params not in text:  # raised after loading, e.g. by the model factory
            text = f"{args.params}: {text}"
        log.error("stage '%s' refused its parameters: %s", name, text)
        sys.exit(USER_ERROR_EXIT)
    except FileNotFoundError as exc:
        missing = exc.filename or (exc.args[0] if len(exc.args) == 1 else str(exc))
        if isinstance(missing, str) and os.path.islink(missing):
            log.error(
                "stage '%s' failed: input %s is a symbolic link that leads nowhere (a loop or "
                "a dangling link: %s); none of its outputs was written",
                name,
                missing,
                os.readlink(missing),
            )
        else:
            log.error(
                "stage '%s' failed: input not found: %s (did the earlier stages run? "
                "`dvc repro` runs them in order)",
                name,
                missing,
            )
        sys.exit(USER_ERROR_EXIT)
    except UserError as exc:
        log.error("stage '%s' failed: %s", name, exc)
        sys.exit(USER_ERROR_EXIT)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        error = storage_error(exc, exc.filename or "a file", "use it")
        log.error("stage '%s' failed: %s; none of its outputs was written", name, error)
        sys.exit(USER_ERROR_EXIT)
    log.info(
        "stage '%s' done in %.1f s (%.1f s CPU in this process)",
        name,
        time.perf_counter() - started,
        time.process_time() - cpu,
    )

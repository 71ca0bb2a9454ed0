"""Retrain and redeploy on demand: `make retrain` (see panelcast.production.retrain)."""

import logging

from panelcast.core.io import dumps_json
from panelcast.core.stage import run_stage
from panelcast.production.retrain import retrain

logger = logging.getLogger("panelcast.production.retrain")


def main(params, args) -> None:
    result = retrain(params)
    logger.info("result:\n%s", dumps_json(result))
    if result["action"] == "refused":
        raise SystemExit(3)


if __name__ == "__main__":
    run_stage("retrain", main)

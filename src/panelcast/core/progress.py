"""Progress of long work: how much is done, the time spent and the time left."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class Progress:
    """Say how far long work is: ``done/total`` with the time spent and an estimate of the
    time left, at most every ``every`` seconds and once at the end."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        every: float = 2.5,
        log: logging.Logger | None = None,
    ):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.log = log or logger
        self.started = self._last = time.perf_counter()

    def update(self, done: int, detail: str = "") -> None:
        """Record that ``done`` of ``total`` are done; log if due (``detail`` appended)."""
        now = time.perf_counter()
        if done < self.total and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.started
        text = f"{self.what}: {done}/{self.total} {self.unit} done in {elapsed:.0f} s"
        if 0 < done < self.total:
            text += f", about {elapsed / done * (self.total - done):.0f} s left"
        self.log.info("%s%s", text, f" ({detail})" if detail else "")

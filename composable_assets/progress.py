"""Sync progress as structured log records: the sync asset logs them, the `composable` command draws them.

A progress record is an ordinary debug message in the run's log (what the webserver shows), carrying a
`SyncProgress` in its `extra`; only a logger that looks for it (runner.py, for in-process runs of the command
line) does anything with it, so a run launched anywhere else is unaffected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

#: The `extra` attribute of a progress record.
PROGRESS_ATTR = "composable_progress"


@dataclass(frozen=True)
class SyncProgress:
    """How far one sync's delivery has got."""

    audience: str
    destination: str
    #: Rows the destination has answered for (acknowledged or rejected).
    sent: int
    #: Rows this run sends in all: sent plus those still to go (rows an earlier run already delivered are not counted).
    total: int
    #: Since the delivery started.
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def finished(self) -> bool:
        return self.sent >= self.total


def log_progress(log: logging.Logger, progress: SyncProgress) -> None:
    """One debug message in the run's log, with the progress attached for a logger that draws it."""
    log.debug(
        f"{progress.sent} of {progress.total} rows sent ({progress.rows_per_second:.0f} rows/s)",
        extra={PROGRESS_ATTR: progress},
    )


def progress_of(record: logging.LogRecord) -> SyncProgress | None:
    """The progress a log record carries, if it is a progress record."""
    progress = getattr(record, PROGRESS_ATTR, None)
    return progress if isinstance(progress, SyncProgress) else None

"""Schedules: an audience with an hourly, daily, weekly or cron cadence refreshes and syncs on that clock."""

from __future__ import annotations

import dagster as dg

# When the named cadences run. Weekly and daily audiences run at 06:00 so they are ready before the
# working day (a Monday newsletter audience is fresh well before 09:00).
CRON_OF_CADENCE = {"hourly": "0 * * * *", "daily": "0 6 * * *", "weekly": "0 6 * * 1"}


def cron_for(cadence: str) -> str | None:
    """The cron string of a scheduled cadence; None for `minutes`, which a change sensor drives instead."""
    if cadence == "minutes":
        return None
    return CRON_OF_CADENCE.get(cadence, cadence)


def audience_schedule(
    name: str, cadence: str, job: dg.UnresolvedAssetJobDefinition, timezone: str, running: bool = True
) -> dg.ScheduleDefinition | None:
    """A schedule that runs `job` for the partition of the day the tick falls on; `name` is an audience, or a stream's job.

    On as soon as the code location loads (the cadence in the file is the intent), unless `running` is False
    (project.yaml `schedules: false`): then each starts stopped, to be turned on in the UI.
    """
    cron = cron_for(cadence)
    if cron is None:
        return None

    @dg.schedule(
        name=f"{name}_schedule",
        cron_schedule=cron,
        job=job,
        execution_timezone=timezone,
        description=f"Refresh `{name}` and deliver it ({cadence}).",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.date().isoformat()
        # One run per tick: the run key makes a re-evaluated tick idempotent.
        return dg.RunRequest(run_key=f"{name}:{context.scheduled_execution_time.isoformat()}", partition_key=day)

    return _schedule

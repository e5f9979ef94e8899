"""The change sensor: a minute-level audience or stream runs as soon as one of its sources has new data.

Change markers are cheap: a landing folder's newest pending file name (a directory listing, no warehouse
lock), or the warehouse's own marker for a table (see `Engine.change_markers`). The cursor holds the markers
of the last request and lives in the Dagster instance, so it survives restarts of the daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import zoneinfo
from typing import Callable, Mapping

import dagster as dg

from ..landing import LandingFolder
from ..warehouse import Warehouse, WarehouseBusy

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
DEFAULT_INTERVAL_SECONDS = 5


def change_sensor(
    name: str,
    job: dg.UnresolvedAssetJobDefinition,
    tables: list[str],
    landing: Mapping[str, LandingFolder],
    warehouse: Warehouse,
    timezone: str,
    heartbeat: dt.timedelta | None,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """A sensor requesting `job` for today's partition when a source table in `tables` changed."""
    landed = [t for t in tables if t in landing]
    in_warehouse = [t for t in tables if t not in landing]

    @dg.sensor(
        name=f"{name}_on_change",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs `{job.name}` for today's partition when {', '.join(tables) or 'a source'} has new data.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        seen: dict[str, str | None] = json.loads(context.cursor) if context.cursor else {}
        markers: dict[str, str | None] = {t: landing[t].marker() for t in landed}
        if in_warehouse:
            try:
                markers.update(warehouse.engine.change_markers(in_warehouse))
            except WarehouseBusy as exc:
                return dg.SkipReason(f"{exc}; checking again at the next tick")
        # A landing folder with nothing pending has no news; a file newer than the last requested one does.
        changed = sorted(t for t, m in markers.items() if m is not None and m != seen.get(t))

        running = context.instance.get_run_records(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1)
        if running:
            run = running[0].dagster_run
            # The cursor stays put, so what changed meanwhile is requested once this run is done.
            return dg.SkipReason(
                f"run {run.run_id[:8]} of {job.name} is {run.status.value.lower()}"
                + (f"; new data in {', '.join(changed)} waits for it" if changed else "")
            )

        now = clock()
        today = dt.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(timezone)).date().isoformat()
        if changed:
            context.update_cursor(json.dumps({**seen, **markers}, sort_keys=True))
            return dg.RunRequest(
                partition_key=today,
                tags={"composable/trigger": "change", "composable/changed": ",".join(changed)},
            )
        if heartbeat is not None:
            # The last finished run, failed ones included: a destination that is down is retried at this pace,
            # not at every tick.
            last = context.instance.get_run_records(
                dg.RunsFilter(job_name=job.name, statuses=FINISHED), limit=1
            )
            last_end = last[0].end_time if last and last[0].end_time else None
            if last_end is None or now - last_end >= heartbeat.total_seconds():
                return dg.RunRequest(
                    partition_key=today,
                    tags={"composable/trigger": "heartbeat"},
                )
        return dg.SkipReason(f"no new data in {', '.join(tables)}")

    return _sensor

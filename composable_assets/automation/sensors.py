"""The change sensor: minute-level audiences and streams run as soon as one of their sources has new data.

One sensor serves every minute-level file of the project. Each tick it reads a change marker per source table:
a landing folder's newest waiting file (a directory listing, no warehouse lock), or the warehouse's own marker
for a table (see `Engine.change_markers`). It then requests one run, for today's partition, of the assets of
every file whose sources changed. One run rather than one per file matters: each run is a new process that
imports Dagster and loads the project (3-4 s of CPU), so three runs per change on a small machine queue up
behind each other's start-up, while their warehouse steps could only run one at a time anyway.

The cursor holds the markers of the last request and when each file was last requested; it lives in the
Dagster instance, so it survives restarts of the daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from ..landing import LandingFolder
from ..project.keys import REFRESH_TAG
from ..warehouse import Warehouse, WarehouseBusy

# A run of the job not yet executing its steps: it would pick up the new files anyway, so the sensor waits for it.
# A run already executing does not hold the next one back: minute-level runs take seconds, and the next run's
# start-up (3-4 s) overlaps the current one's steps, whose warehouse work the `warehouse` pool and the pair
# leases keep one at a time.
WAITING_TO_START = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]
SENSOR_NAME = "minute_level_on_change"
JOB_NAME = "minute_level"
# The nightly full recompute of everything minute-level: the safety net of the incremental path.
NIGHTLY_NAME = "minute_level_nightly_full"
NIGHTLY_CRON = "15 3 * * *"


@dataclass(frozen=True)
class Watch:
    """One minute-level audience or stream: the tables it reads and the assets that bring it up to date."""

    name: str
    tables: tuple[str, ...]
    assets: tuple[dg.AssetKey, ...]
    # A quiet target is run anyway after this long (see `automation.freshness.heartbeat_interval`).
    heartbeat: dt.timedelta | None = None


def minute_level_job(watches: Sequence[Watch]) -> dg.UnresolvedAssetJobDefinition:
    """The job the change sensor requests subsets of: every asset of every minute-level file."""
    keys = list(dict.fromkeys(key for w in watches for key in w.assets))
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*keys),
        description="Minute-level audiences and streams; the change sensor runs the part whose sources changed.",
    )


def tick_interval(interval_seconds: int) -> int:
    """The sensor's minimum interval for ticks `interval_seconds` apart.

    The daemon looks at sensors every 5 s and ticks one whose last tick is at least its minimum interval old; that
    tick was stamped a little after the look that made it, so at the next look it is just under 5 s old. A 5 s
    minimum therefore ticked every 5 or 10 s alternately (7.5 s on average, 10 s at worst), which was most of the
    tail of minute-level latency. A second of slack lets the look that comes on time tick.
    """
    return max(1, interval_seconds - 1)


def change_sensor(
    watches: Sequence[Watch],
    job: dg.UnresolvedAssetJobDefinition,
    landing: Mapping[str, LandingFolder],
    warehouse: Warehouse,
    timezone: str,
    interval_seconds: int = 5,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """A sensor requesting, for today's partition, the assets of every watch whose tables changed."""
    tables = sorted({t for w in watches for t in w.tables})
    landed = [t for t in tables if t in landing]
    in_warehouse = [t for t in tables if t not in landing]

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=tick_interval(interval_seconds),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {', '.join(w.name for w in watches)} for today's partition when "
        f"{', '.join(tables)} has new data (and at least every heartbeat).",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        seen: dict[str, str | None] = cursor.get("markers", {})
        requested: dict[str, float] = cursor.get("requested", {})
        markers: dict[str, str | None] = {t: landing[t].marker() for t in landed}
        busy = None
        if in_warehouse:
            try:
                markers.update(warehouse.engine.change_markers(in_warehouse))
            except WarehouseBusy as exc:
                # A run holds the file (most of the time, under load): the warehouse tables are looked at again next
                # tick (their markers stay as seen), and the landing folders, read without the warehouse, still count.
                busy = f"{exc}; checking again at the next tick"
        # A landing folder with nothing waiting has no news; a file newer than the last requested one does.
        changed = sorted(t for t, m in markers.items() if m is not None and m != seen.get(t))

        running = context.instance.get_run_records(dg.RunsFilter(job_name=job.name, statuses=WAITING_TO_START), limit=1)
        if running:
            run = running[0].dagster_run
            # The cursor stays put, so what changed meanwhile is requested once this run is done.
            return dg.SkipReason(
                f"run {run.run_id[:8]} of {job.name} is {run.status.value.lower()}"
                + (f"; new data in {', '.join(changed)} waits for it" if changed else "")
            )

        now = clock()
        due = [w for w in watches if set(w.tables) & set(changed)]
        # A quiet target still runs once per heartbeat (failed runs count), so a destination that is down is
        # retried at that pace and a clock-dependent audience stays current.
        beats = [
            w
            for w in watches
            if w not in due
            and w.heartbeat is not None
            and now - requested.get(w.name, 0.0) >= w.heartbeat.total_seconds()
        ]
        if not due and not beats:
            return dg.SkipReason(busy or f"no new data in {', '.join(tables)}")
        targets = due + beats
        context.update_cursor(
            json.dumps(
                {"markers": {**seen, **markers}, "requested": {**requested, **{w.name: now for w in targets}}},
                sort_keys=True,
            )
        )
        today = dt.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(timezone)).date().isoformat()
        return dg.RunRequest(
            partition_key=today,
            asset_selection=list(dict.fromkeys(key for w in targets for key in w.assets)),
            tags={
                # Minute-level runs recompute only the changed keys where the models allow (delta/refresh.py).
                REFRESH_TAG: "incremental",
                "composable/trigger": "change" if due else "heartbeat",
                "composable/changed": ",".join(changed),
                "composable/targets": ",".join(w.name for w in targets),
            },
        )

    return _sensor


def nightly_full_schedule(job: dg.UnresolvedAssetJobDefinition, timezone: str) -> dg.ScheduleDefinition:
    """Every night, the minute-level assets recomputed in full: it sends nothing unless the increments missed a change
    (the models' and audiences' `repaired_rows` metadata then says how many rows it repaired)."""

    @dg.schedule(
        name=NIGHTLY_NAME,
        job=job,
        cron_schedule=NIGHTLY_CRON,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly full recompute of the minute-level audiences and streams (the incremental path's safety "
        "net): repairs and sends what the increments missed.",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(zoneinfo.ZoneInfo(timezone)).date().isoformat()
        return dg.RunRequest(partition_key=day, tags={REFRESH_TAG: "full", "composable/trigger": "nightly"})

    return _nightly

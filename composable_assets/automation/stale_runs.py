"""Runs that died holding a `warehouse` pool slot: found, marked failed and their slots freed, so none wedges the next.

A run killed with SIGKILL (an out-of-memory kill, a lost pod, `kill -9`) never releases its slot: Dagster's run
monitor frees slots only of runs that ended, and cannot tell that a run its default launcher started has died. Every
run that holds a slot of ours has recorded the process it works in (the run tag `composable/worker`, set by the
Warehouse resource), so on the machine where it ran we can tell. The command line checks while its run waits for a
slot (runner.py); the sensor `free_dead_runs` checks every 30 seconds where the daemon runs.

Uses the instance's own concurrency methods (`event_log_storage.get_concurrency_info` and
`free_concurrency_slots_for_run`, what `dagster instance concurrency` and the run monitor use) and
`report_run_failed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ..coordination import process_gone
from ..project.keys import WAREHOUSE_POOL
from ..warehouse import WORKER_TAG

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
SENSOR_INTERVAL_SECONDS = 30


@dataclass(frozen=True)
class SlotHolder:
    """A run holding a slot of a pool, and why it is dead (None: alive, or not known to be dead here)."""

    run_id: str
    step: str
    worker: str | None
    dead: str | None

    def describe(self) -> str:
        return f"run {self.run_id} (step {self.step}{_process(self.worker)})"


def _process(worker: str | None) -> str:
    """`, pid 42 on host` for a worker tag (`machine:pid`, see coordination.this_process)."""
    if not worker:
        return ""
    machine, _, pid = worker.rpartition(":")
    return f", pid {pid} on {machine.split('#')[0]}"


def slot_holders(instance: dg.DagsterInstance, pool: str = WAREHOUSE_POOL) -> list[SlotHolder]:
    """Who holds the pool's slots now."""
    holders = []
    for claim in instance.event_log_storage.get_concurrency_info(pool).claimed_slots:
        run = instance.get_run_by_id(claim.run_id)
        worker = run.tags.get(WORKER_TAG) if run is not None else None
        if run is None:
            dead = "it no longer exists"
        elif run.status in FINISHED:
            dead = f"it ended ({run.status.value}) without releasing it"
        elif worker and process_gone(worker):
            dead = f"its process ({_process(worker).removeprefix(', ')}) is gone"
        else:
            dead = None
        holders.append(SlotHolder(claim.run_id, claim.step_key, worker, dead))
    return holders


def waiting_for_slot(instance: dg.DagsterInstance, run_id: str, pool: str = WAREHOUSE_POOL) -> bool:
    """Whether `run_id` has a step queued for a slot of the pool and not yet given one."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    return any(p.run_id == run_id and p.assigned_timestamp is None for p in info.pending_steps)


def free_dead(instance: dg.DagsterInstance, holder: SlotHolder) -> None:
    """Mark a dead holder's run failed (if Dagster still thinks it runs) and free every slot it holds."""
    run = instance.get_run_by_id(holder.run_id)
    if run is not None and run.status not in FINISHED:
        instance.report_run_failed(run, f"Marked failed by composable_assets: {holder.dead}.")
    instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)


def free_dead_runs(instance: dg.DagsterInstance, pool: str = WAREHOUSE_POOL) -> list[SlotHolder]:
    """Free the slots of every dead holder found from here; returns them."""
    dead = [h for h in slot_holders(instance, pool) if h.dead]
    for holder in dead:
        free_dead(instance, holder)
    return dead


@dg.sensor(
    name="free_dead_runs",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Frees the warehouse pool slots of runs whose process died (killed) and marks those runs failed.",
)
def free_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = free_dead_runs(context.instance)
    for holder in dead:
        context.log.warning(f"freed the warehouse slot of {holder.describe()}: {holder.dead}")
    return dg.SkipReason(f"freed the slots of {len(dead)} dead run(s)" if dead else "no dead run holds a slot")

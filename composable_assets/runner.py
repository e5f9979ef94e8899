"""Running assets in-process for the command line, and reading back what the syncs did."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import dagster as dg

from .automation.stale_runs import free_dead_runs, slot_holders, waiting_for_slot
from .progress import SyncProgress, progress_of
from .project.keys import DELIVERY_METADATA, DELIVERY_TAG, DESTINATION_METADATA, Delivery

#: How often a run waiting for a pool slot is checked on, and how often the wait is reported.
SLOT_WATCH_SECONDS = 1.0
SLOT_REPORT_SECONDS = 5.0

# The name `dg.materialize` gives its runs; the UI lists command-line runs under it.
JOB_NAME = "__ephemeral_asset_job__"


@dataclass
class DeliveryOutcome:
    """One delivery asset's result in a run (a sync or a stream): its counts as metadata, or its error."""

    delivery: Delivery
    destination: str
    metadata: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        return self.delivery.name

    @property
    def audience(self) -> str:
        return self.delivery.name

    @property
    def stream(self) -> str:
        return self.delivery.name

    def count(self, name: str) -> int:
        value = self.metadata.get(name)
        return int(getattr(value, "value", value) or 0)


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    syncs: list[DeliveryOutcome]
    errors: list[str]
    streams: list[DeliveryOutcome] = field(default_factory=list)
    #: Each materialized asset's metadata, by asset key ("sync/high/braze").
    materialized: dict[str, dict] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(s.count("failed") for s in self.syncs)


def instance() -> dg.DagsterInstance:
    """The instance DAGSTER_HOME names (runs show in the UI), else a throwaway one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


class RunWatcher(Protocol):
    """What a terminal is told while an in-process run goes on."""

    def progress(self, progress: SyncProgress) -> None:
        """A sync's delivery moved on (at most about once a second per sync)."""

    def message(self, level: int, step: str | None, text: str) -> None:
        """An asset logged a warning or an error (Dagster's own events are summed up in the RunOutcome instead)."""


def run_selection(
    defs: dg.Definitions,
    selection: dg.AssetSelection,
    partition_key: str | None,
    dagster_instance: dg.DagsterInstance,
    log_level: str | None = "INFO",
    tags: dict[str, str] | None = None,
    watcher: RunWatcher | None = None,
    run_config: dict[str, Any] | None = None,
) -> RunOutcome:
    """Materialize the selection in this process and collect each sync's counts or failure.

    `log_level` is that of Dagster's console logger (None: no console lines; the instance keeps every event
    either way); a `watcher` is told of progress and of the assets' warnings and errors as they happen.
    """
    # A failed step or a warning is named by its asset's key (what the UI shows), not by Dagster's step key.
    step_names = {key.to_python_identifier(): key.to_user_string() for key in defs.resolve_all_asset_keys()}
    loggers, logger_config = _loggers(log_level, watcher, step_names)
    # What `dg.materialize` does, plus loggers of our choosing (it always uses Dagster's console logger).
    job = dg.Definitions(
        jobs=[dg.define_asset_job(JOB_NAME, selection=selection)],
        assets=list(defs.assets or []),
        resources=defs.resources,
        loggers=loggers,
    ).resolve_job_def(JOB_NAME)
    run_id = str(uuid.uuid4())  # known before the run starts, for the slot watch
    with SlotWatch(dagster_instance, run_id, watcher):
        result = job.execute_in_process(
            run_config={**(run_config or {}), "loggers": logger_config},
            instance=dagster_instance,
            partition_key=partition_key,
            raise_on_error=False,
            run_id=run_id,
            tags={"composable/launched_by": "cli", **(tags or {})},
        )
    delivering = delivery_assets(defs)
    deliveries: dict[tuple[Delivery, str], DeliveryOutcome] = {}
    materialized = {}
    for event in result.get_asset_materialization_events():
        key = event.asset_key
        if key is None:  # every materialization of an asset has its key
            continue
        materialized[key.to_user_string()] = dict(event.materialization.metadata)
        pair = delivering.get(key)
        if pair is not None:
            deliveries[pair] = DeliveryOutcome(*pair, dict(event.materialization.metadata))
    steps = {key.to_python_identifier(): pair for key, pair in delivering.items()}
    errors = []
    for event in result.get_step_failure_events():
        message = _failure_message(event)
        step = event.step_key or ""
        errors.append(f"{step_names.get(step, step)}: {message}")
        pair = steps.get(step)
        if pair is not None:
            failure = event.step_failure_data.user_failure_data
            metadata = dict(failure.metadata) if failure is not None else {}
            deliveries[pair] = DeliveryOutcome(*pair, metadata, error=message)
    outcomes = list(deliveries.values())
    return RunOutcome(
        result.success,
        result.run_id,
        [o for o in outcomes if o.delivery.kind == "audience"],
        errors,
        [o for o in outcomes if o.delivery.kind == "stream"],
        materialized,
    )


def run_job(
    defs: dg.Definitions,
    job_name: str,
    dagster_instance: dg.DagsterInstance,
    run_config: dict[str, Any],
    log_level: str | None = "INFO",
    watcher: RunWatcher | None = None,
) -> RunOutcome:
    """Run one of the definitions' op jobs (e.g. `seed`) in this process, with the loggers `run_selection` uses.

    `errors` hold each failed step's message alone (an op job's steps are no assets to name).
    """
    loggers, logger_config = _loggers(log_level, watcher, {})
    (job,) = [j for j in defs.jobs or [] if j.name == job_name]
    # The job as the definitions hold it, given our loggers (it names none of its own) and the same resources.
    bound = dg.Definitions(jobs=[job], resources=defs.resources, loggers=loggers).resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    with SlotWatch(dagster_instance, run_id, watcher):
        result = bound.execute_in_process(
            run_config={**run_config, "loggers": logger_config},
            instance=dagster_instance,
            raise_on_error=False,
            run_id=run_id,
            tags={"composable/launched_by": "cli"},
        )
    materialized = {
        event.asset_key.to_user_string(): dict(event.materialization.metadata)
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }
    errors = [_failure_message(event) for event in result.get_step_failure_events()]
    return RunOutcome(result.success, result.run_id, [], errors, [], materialized)


def _loggers(
    log_level: str | None, watcher: RunWatcher | None, step_names: dict[str, str]
) -> tuple[dict[str, dg.LoggerDefinition], dict[str, Any]]:
    """A run's loggers and their run config: Dagster's console at `log_level`, the watcher, or one that is silent."""
    # A run starts only the loggers its run config names; naming none would start Dagster's console at DEBUG.
    loggers: dict[str, dg.LoggerDefinition] = {}
    logger_config: dict[str, Any] = {}
    if log_level is not None:
        loggers["console"] = dg.colored_console_logger
        logger_config["console"] = {"config": {"log_level": log_level}}
    if watcher is not None:
        loggers["watcher"] = _watcher_logger(watcher, step_names)
        logger_config["watcher"] = {}
    if not loggers:
        loggers["silent"], logger_config["silent"] = _SILENT, {}
    return loggers, logger_config


def delivery_assets(defs: dg.Definitions) -> dict[dg.AssetKey, tuple[Delivery, str]]:
    """Every delivery asset (tagged DELIVERY_TAG) -> what it delivers and to which destination (its metadata)."""
    graph = defs.resolve_asset_graph()
    found = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if DELIVERY_TAG in node.tags:
            metadata = node.metadata
            found[key] = (Delivery.parse(str(metadata[DELIVERY_METADATA])), str(metadata[DESTINATION_METADATA]))
    return found


class SlotWatch:
    """While a run waits for a `warehouse` pool slot: free the slots of dead holders, say who holds them, obey Ctrl-C.

    Dagster waits for a slot in a loop that neither says why nor lets Ctrl-C through (it defers interrupts until a
    step starts); a slot held by a killed run would keep it there forever. This thread watches from the side: every
    second it checks whether the run is queued for a slot, frees what dead runs hold (automation/stale_runs.py), and
    every few seconds names the runs in the way. A Ctrl-C that arrives while the run waits (no step of it runs, so
    nothing is in flight) cancels the run and ends the process.
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str, watcher: RunWatcher | None):
        self.instance = instance
        self.run_id = run_id
        self.watcher = watcher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals: tuple[int, int] | None = None
        self._previous_wakeup = -1

    def __enter__(self) -> SlotWatch:
        if not self.instance.event_log_storage.supports_global_concurrency_limits:
            return self  # a throwaway instance has no pools
        if threading.current_thread() is threading.main_thread():
            # Every signal's number is written here too, whatever handler Dagster has installed meanwhile.
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            self._previous_wakeup = signal.set_wakeup_fd(write)
            self._signals = (read, write)
        self._thread = threading.Thread(target=self._watch, name="slot watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._signals is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in self._signals:
                os.close(fd)

    def _say(self, text: str) -> None:
        if self.watcher is not None:
            self.watcher.message(logging.WARNING, None, text)

    def _interrupted(self) -> bool:
        if self._signals is None:
            return False
        try:
            return signal.SIGINT in os.read(self._signals[0], 512)
        except BlockingIOError:
            return False

    def _watch(self) -> None:
        waited, said = 0.0, None
        while not self._stop.wait(SLOT_WATCH_SECONDS):
            interrupted = self._interrupted()
            try:
                if not waiting_for_slot(self.instance, self.run_id):
                    waited, said = 0.0, None
                    continue
                waited += SLOT_WATCH_SECONDS
                for holder in free_dead_runs(self.instance):
                    self._say(f"freed the warehouse slot held by {holder.describe()}: {holder.dead}")
                if interrupted:
                    self._cancel()
                holders = ", ".join(h.describe() for h in slot_holders(self.instance))
                if holders and (said is None or waited - said >= SLOT_REPORT_SECONDS):
                    said = waited
                    self._say(
                        f"waiting {waited:.0f} s for the warehouse pool (steps that write to the warehouse run one at "
                        f"a time on this instance): in use by {holders}. Ctrl-C stops this run."
                    )
            except Exception as exc:  # a watcher must never break the run it watches
                self._say(f"could not check the warehouse pool: {type(exc).__name__}: {exc}")

    def _cancel(self) -> None:
        """Ctrl-C while waiting for a slot: no step of the run is running, so stopping now leaves nothing half done."""
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None:
            self.instance.report_run_canceled(run, "Interrupted (Ctrl-C) while waiting for a warehouse pool slot.")
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        self._say(f"interrupted while waiting for the warehouse pool: run {self.run_id} canceled, nothing was sent")
        os._exit(130)


def _silent_logger(_init_context) -> logging.Logger:
    # Loggers of our own, not in logging's registry (a run gets fresh ones); this one lets nothing through.
    logger = logging.Logger("composable.silent", logging.CRITICAL + 1)
    logger.addHandler(logging.NullHandler())
    return logger


_SILENT = dg.LoggerDefinition(_silent_logger, description="Prints nothing: the instance keeps the run's events.")


def _watcher_logger(watcher: RunWatcher, step_names: dict[str, str]) -> dg.LoggerDefinition:
    """A Dagster logger handing progress records, warnings and errors to the watcher."""

    def make(_init_context) -> logging.Logger:
        logger = logging.Logger("composable.watcher", logging.DEBUG)
        logger.addHandler(_WatcherHandler(watcher, step_names))
        return logger

    return dg.LoggerDefinition(make, description="Tells the terminal of sync progress, warnings and errors.")


# Dagster's note on each step after a failed one: the failure itself says it all.
_SKIPPED_STEP = re.compile(r"Dependencies for step \S+ (failed|were not executed)")


class _WatcherHandler(logging.Handler):
    def __init__(self, watcher: RunWatcher, step_names: dict[str, str]):
        super().__init__(logging.DEBUG)
        self.watcher = watcher
        self.step_names = step_names

    def emit(self, record: logging.LogRecord) -> None:
        progress = progress_of(record)
        if progress is not None:
            self.watcher.progress(progress)
            return
        if record.levelno < logging.WARNING:
            return
        # Dagster attaches the original message, step and event to every record it hands its loggers
        # (`dagster_meta`, what its JSON console logger prints). Its own events (step failures with their stack
        # traces, skipped steps) are left out: the RunOutcome sums them up in one line per failed step.
        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is not None:
            return
        step = meta.get("step_key")
        text = str(meta.get("orig_message") or record.getMessage())
        if _SKIPPED_STEP.match(text):
            return
        self.watcher.message(record.levelno, self.step_names.get(step, step) if step else None, text)


def _failure_message(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    # The user's own exception, not Dagster's wrapper around it.
    while error is not None and error.cause is not None and "dagster" in (error.cls_name or "").lower():
        error = error.cause
    if error is None:
        return "failed"
    # The message reads "module.Class: text". Our own errors say what happened in the text; a foreign one keeps
    # its class name (KeyError: 'x' says little without it), never the module path.
    cls, _, text = error.message.strip().partition(": ")
    if not text or " " in cls:
        return error.message.strip()
    return text if cls.startswith("composable_assets.") else f"{cls.rsplit('.', 1)[-1]}: {text}"

"""Running assets in-process for the command line, and reading back what the syncs did."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dagster as dg


@dataclass
class SyncOutcome:
    """One sync asset's result in a run."""

    audience: str
    destination: str
    metadata: dict = field(default_factory=dict)
    error: str | None = None

    def count(self, name: str) -> int:
        value = self.metadata.get(name)
        return int(getattr(value, "value", value) or 0)


@dataclass
class StreamOutcome:
    """One stream asset's result in a run: sent, rejected, in_doubt, late_skipped, unsent, ..."""

    stream: str
    destination: str
    metadata: dict = field(default_factory=dict)
    error: str | None = None

    def count(self, name: str) -> int:
        value = self.metadata.get(name)
        return int(getattr(value, "value", value) or 0)


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    syncs: list[SyncOutcome]
    errors: list[str]
    streams: list[StreamOutcome] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(s.count("failed") for s in self.syncs)


def instance() -> dg.DagsterInstance:
    """The instance DAGSTER_HOME names (runs show in the UI), else a throwaway one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run_selection(
    defs: dg.Definitions,
    selection: dg.AssetSelection,
    partition_key: str | None,
    dagster_instance: dg.DagsterInstance,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
) -> RunOutcome:
    """Materialize the selection in this process and collect each sync's counts or failure."""
    result = dg.materialize(
        assets=list(defs.assets or []),
        selection=selection,
        partition_key=partition_key,
        instance=dagster_instance,
        resources=defs.resources,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags={"composable/launched_by": "cli", **(tags or {})},
    )
    syncs: dict[tuple[str, str], SyncOutcome] = {}
    streams: dict[tuple[str, str], StreamOutcome] = {}
    for event in result.get_asset_materialization_events():
        path = event.asset_key.path
        if path[0] == "sync":
            syncs[(path[1], path[2])] = SyncOutcome(path[1], path[2], dict(event.materialization.metadata))
        elif path[0] == "stream":
            streams[(path[1], path[2])] = StreamOutcome(path[1], path[2], dict(event.materialization.metadata))
    sync_steps = {
        key.to_python_identifier(): (key.path[1], key.path[2])
        for key in defs.resolve_all_asset_keys()
        if key.path[0] == "sync"
    }
    stream_steps = {
        key.to_python_identifier(): (key.path[1], key.path[2])
        for key in defs.resolve_all_asset_keys()
        if key.path[0] == "stream"
    }
    errors = []
    for event in result.get_step_failure_events():
        message = _failure_message(event)
        errors.append(f"{event.step_key}: {message}")
        if event.step_key in sync_steps:
            audience, destination = sync_steps[event.step_key]
            failure = event.step_failure_data.user_failure_data
            metadata = dict(failure.metadata) if failure is not None else {}
            syncs[(audience, destination)] = SyncOutcome(audience, destination, metadata, error=message)
        if event.step_key in stream_steps:
            stream, destination = stream_steps[event.step_key]
            failure = event.step_failure_data.user_failure_data
            metadata = dict(failure.metadata) if failure is not None else {}
            streams[(stream, destination)] = StreamOutcome(stream, destination, metadata, error=message)
    return RunOutcome(result.success, result.run_id, list(syncs.values()), errors, list(streams.values()))


def _failure_message(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    # The user's own exception, not Dagster's wrapper around it.
    while error is not None and error.cause is not None and "dagster" in (error.cls_name or "").lower():
        error = error.cause
    return error.message.strip() if error is not None else "failed"

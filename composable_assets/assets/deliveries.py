"""Deliveries: per (audience or stream, destination) and day, send what is pending and checkpoint what was answered.

One factory for both kinds; what differs (which asset it reads, what it reports, how a run starts and ends) is
data in `DeliverySpec` and the small per-kind plans below.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from ..coordination import Coordination
from ..delivery import deliver, deliver_events
from ..delta.diff import DeltaRun, latest_delta_run
from ..destinations import Destination, Target, TerminalError
from ..destinations.resource import DestinationResource, destination_resource_key
from ..governance.gates import blocking_gates
from ..governance.provenance import (
    SyncRun,
    abandon_unfinished,
    code_version,
    file_sha256,
    finish_quietly,
    finish_sync_run,
    start_sync_run,
    upstream_versions,
)
from ..progress import SyncProgress, log_progress
from ..project import AudienceSpec, ProjectError, StreamSpec, StreamSyncSpec, SyncSpec
from ..project.gates import OVERRIDE_TAG
from ..project.keys import (
    DELIVERY_METADATA,
    DELIVERY_TAG,
    DESTINATION_METADATA,
    STREAMS,
    SYNCS,
    WAREHOUSE_POOL,
    Delivery,
    delta_key,
    stream_key,
    sync_key,
)
from ..store import PairTables, StreamTables
from ..streams import StreamDataError, StreamShape
from ..warehouse import Connection, Warehouse
from .delivery_metadata import stream_report_metadata, sync_report_metadata
from .deltas import utc_now
from .leases import lease_name, pair_lease
from .metadata import with_definition_columns


@dataclass(frozen=True)
class DeliverySpec:
    """One (audience or stream, destination) to deliver, and everything its asset differs by."""

    delivery: Delivery
    #: The audience or stream file, and its entry for this destination.
    file: AudienceSpec | StreamSpec
    sync: SyncSpec | StreamSyncSpec
    destination: Destination
    schema: str
    partitions: dg.PartitionsDefinition
    warehouse_kind: str
    #: Streams: the model or source asset of the stream's table (an audience delivery reads its pair's delta).
    upstream: dg.AssetKey | None = None
    freshness_policy: dg.FreshnessPolicy | None = None
    samples: bool = False
    op_tags: dict[str, str] | None = None
    timezone: str = "UTC"
    #: Audiences: the SQL file of the audience's model (None when it reads a source table), for provenance.
    model_path: Path | None = None
    #: Streams: a condition on the table's member key column that a row's person must meet to be sent;
    #: `allowed_native` the same comparing it with the consent key `native_against` as they are (see StreamShape).
    allowed: str | None = None
    allowed_native: str | None = None
    native_against: tuple[str, str] | None = None

    @property
    def what(self) -> str:
        kind = "sync" if self.delivery.kind == "audience" else "stream"
        return f"{kind} {self.delivery.name} -> {self.sync.destination}"


def build_delivery_asset(spec: DeliverySpec) -> dg.AssetsDefinition:
    """The asset delivering `spec`: one lease per pair, one delivery loop, the counts as metadata."""
    plan: _AudiencePlan | _StreamPlan = _AudiencePlan(spec) if spec.delivery.kind == "audience" else _StreamPlan(spec)
    destination, sync = spec.destination, spec.sync
    capabilities = destination.capabilities
    limits = capabilities.limits_for(spec.delivery.kind)
    # The destination comes from its resource when the asset runs, so a deployment that gives the resource other
    # settings delivers there; `spec.destination` (built from the same entry) plans the asset.
    resource_key = destination_resource_key(sync.destination)

    @dg.asset(
        key=plan.key,
        group_name=plan.group,
        deps=[plan.upstream] if plan.upstream is not None else [],
        partitions_def=spec.partitions,
        description=plan.description,
        owners=spec.file.owners or None,
        kinds={destination.kind, spec.warehouse_kind},
        tags={**plan.tags, DELIVERY_TAG: spec.delivery.kind},
        pool=WAREHOUSE_POOL,
        op_tags=spec.op_tags,
        freshness_policy=spec.freshness_policy,
        code_version=plan.version,
        required_resource_keys={"warehouse", "coordination", resource_key},
        metadata={
            DELIVERY_METADATA: str(spec.delivery),
            **plan.metadata,
            # The destination's limits, as data: what the delivery loop plans with.
            "batch_size": limits.batch_size,
            "concurrency": capabilities.concurrency,
            "rate_limit": limits.describe(),
        },
    )
    def _deliver(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: Warehouse = context.resources.warehouse
        coordination: Coordination = context.resources.coordination
        entry: DestinationResource = getattr(context.resources, resource_key)
        configured = entry.build(coordination)
        target = Target(
            delivery=spec.delivery,
            destination=sync.destination,
            identifier_type=sync.identifier_type,
            partition=context.partition_key,
            run_id=context.run.run_id,
            options=plan.options,
            mode=getattr(sync, "mode", "upsert"),
            event=getattr(sync, "event", None),
            warehouse=warehouse,
            schema=spec.schema,
        )
        # One delivery of the pair at a time, anywhere (see assets/leases.py): taken before the warehouse is opened
        # (a DuckDB file admits one process: a holder must be able to finish) and held until the last
        # acknowledgement is recorded.
        lease = lease_name(plan.lease_kind, warehouse, spec.schema, spec.delivery.name, sync.destination)
        with pair_lease(context, coordination, lease, spec.what) as held, warehouse.connect() as conn:
            report, metadata = plan.run(context, conn, configured, target, held.check)
        plan.log(context, report)
        if report.stopped_by:
            raise dg.Failure(description=plan.stopped(report), metadata=metadata)
        return dg.MaterializeResult(metadata=with_definition_columns(context, metadata))

    return _deliver


class _AudiencePlan:
    """An audience's delta to one destination: provenance per run, send gates, acks into the ledger."""

    lease_kind = "sync"
    group = SYNCS

    def __init__(self, spec: DeliverySpec):
        # The factory picks this plan for an audience delivery, whose file and entry are an audience's.
        assert isinstance(spec.file, AudienceSpec) and isinstance(spec.sync, SyncSpec)
        audience, sync, destination = spec.file, spec.sync, spec.destination
        self.spec, self.sync = spec, sync
        self.tables = PairTables(spec.schema, audience.name, sync.destination)
        self.options = destination.sync_options(sync.options)
        if sync.mode == "mirror" and "remove" not in destination.capabilities.operations:
            raise ProjectError(
                f"destination `{sync.destination}` ({destination.type_name}) cannot remove members; use mode: upsert",
                audience.path,
            )
        self.key = sync_key(audience.name, sync.destination)
        self.upstream = delta_key(audience.name, sync.destination)
        # Provenance: the code a delivered row came from (recorded per run in sync_runs; see governance/provenance.py).
        self.audience_sha256 = file_sha256(audience.path)
        self.model_sha256 = file_sha256(spec.model_path)
        self.version = code_version(
            self.audience_sha256, {"type": destination.type_name, "settings": destination.settings}
        )
        self.description = (
            f"Delivers `{audience.name}` to `{sync.destination}` ({destination.type_name}, {sync.mode}) "
            "and records what it acknowledged."
        )
        self.tags = {"mode": sync.mode, "destination_type": destination.type_name}
        self.metadata = {DESTINATION_METADATA: sync.destination, "mode": sync.mode, "identifier": sync.identifier_type}

    def run(
        self,
        context: dg.AssetExecutionContext,
        conn: Connection,
        destination: Destination,
        target: Target,
        keep_going: Callable[[], None],
    ) -> tuple[Any, dict]:
        spec, tables, run_id = self.spec, self.tables, context.run.run_id
        partition = dt.date.fromisoformat(context.partition_key)
        tables.ensure(conn)
        for dead in abandon_unfinished(conn, tables, run_id, utc_now()):
            context.log.warning(f"{spec.what}: run {dead} never finished (its process was killed); marked abandoned")
        run = _delta_to_deliver(conn, tables, partition)
        upstream = upstream_versions(context.instance, self.upstream, context.partition_key, run.run_id)
        start_sync_run(
            conn,
            tables,
            SyncRun(run_id, partition, run.run_id, self.version, self.audience_sha256, self.model_sha256, upstream),
            utc_now(),
        )
        started = time.monotonic()
        name, destination_name = spec.delivery.name, spec.sync.destination
        limits = destination.capabilities.limits_for("audience")
        try:
            with destination.open(target) as session:
                report = deliver(
                    conn,
                    tables,
                    run,
                    session,
                    batch_size=limits.batch_size,
                    concurrency=destination.capabilities.concurrency,
                    sync_run_id=run_id,
                    partition=partition,
                    keep_going=keep_going,
                    # A structured debug record: the `composable` command draws it as a progress bar.
                    on_progress=lambda r: log_progress(
                        context.log,
                        SyncProgress(
                            name,
                            destination_name,
                            r.delivered + r.failed,
                            r.delivered + r.failed + r.left,
                            time.monotonic() - started,
                        ),
                    ),
                )
        except TerminalError as exc:
            finish_quietly(conn, tables, run_id, utc_now())
            raise dg.Failure(description=f"{destination_name}: {exc}") from exc
        except BaseException:
            finish_quietly(conn, tables, run_id, utc_now())
            raise
        finish_sync_run(conn, tables, run_id, report, utc_now())
        return report, sync_report_metadata(report, run.run_id, spec.samples)

    def log(self, context: dg.AssetExecutionContext, report) -> None:
        context.log.info(
            f"sync of {self.spec.delivery.name} -> {self.spec.sync.destination}: {report.added} added, "
            f"{report.updated} updated, {report.removed} removed, {report.failed} rejected, "
            f"{report.skipped} already done, {report.unsent} unsent"
        )

    def stopped(self, report) -> str:
        return (
            f"{self.spec.sync.destination} stopped accepting rows ({report.stopped_by}); "
            f"{report.delivered} were delivered and recorded, {report.unsent} stay for the next run."
        )


class _StreamPlan:
    """A stream's events to one destination: pending rows by cursor, each once by event id."""

    lease_kind = "stream"
    group = STREAMS

    def __init__(self, spec: DeliverySpec):
        # The factory picks this plan for a stream delivery, whose file and entry are a stream's.
        assert isinstance(spec.file, StreamSpec) and isinstance(spec.sync, StreamSyncSpec)
        stream, sync, destination = spec.file, spec.sync, spec.destination
        self.spec, self.stream, self.sync = spec, stream, sync
        capabilities = destination.capabilities
        if "event" not in capabilities.operations:
            raise ProjectError(
                f"destination `{sync.destination}` ({destination.type_name}) cannot take events", stream.path
            )
        self.options = destination.event_options(sync.options)
        self.shape = StreamShape.of(
            stream,
            sync,
            destination.event_columns(self.options),
            stream.key,
            spec.allowed,
            spec.allowed_native,
            spec.native_against,
        )
        self.tables = StreamTables(spec.schema, stream.name, sync.destination)
        self.key = stream_key(stream.name, sync.destination)
        self.upstream = spec.upstream
        # The stream file, the destination's entry and who may receive its events.
        self.version = code_version(
            file_sha256(stream.path), {"type": destination.type_name, "settings": destination.settings}, spec.allowed
        )
        self.description = (
            f"Forwards new rows of `{stream.table}` as `{sync.event}` events to `{sync.destination}` "
            f"({destination.type_name}), by `{stream.cursor}`, each once by event id."
        )
        self.tags = {"destination_type": destination.type_name, "delivery": "events"}
        guarantee = (
            "each event once by id (resent after a crash; the destination deduplicates by event id)"
            if capabilities.idempotent_events
            else "each event at most once (batches in flight at a crash are recorded in_doubt, not resent)"
        )
        self.metadata = {
            DESTINATION_METADATA: sync.destination,
            "table": stream.table,
            "event": sync.event,
            "identifier": sync.identifier_type,
            "event_id": f"{stream.name}:<{stream.event_id}>",
            "cursor": stream.cursor,
            "lookback": str(stream.lookback),
            "start": str(stream.start),
            "guarantee": guarantee,
        }

    def run(
        self,
        context: dg.AssetExecutionContext,
        conn: Connection,
        destination: Destination,
        target: Target,
        keep_going: Callable[[], None],
    ) -> tuple[Any, dict]:
        spec = self.spec
        try:
            with destination.open(target) as session:
                report = deliver_events(
                    conn,
                    self.shape,
                    self.tables,
                    session,
                    destination.capabilities,
                    run_id=context.run.run_id,
                    partition=dt.date.fromisoformat(context.partition_key),
                    timezone=spec.timezone,
                    keep_going=keep_going,
                    on_progress=lambda r: context.log.debug(
                        f"{r.sent} events sent, {r.rejected} rejected, {r.batches} batches"
                    ),
                )
        except StreamDataError as exc:
            raise dg.Failure(description=str(exc)) from exc
        except TerminalError as exc:
            raise dg.Failure(description=f"{spec.sync.destination}: {exc}") from exc
        return report, stream_report_metadata(report, spec.samples)

    def log(self, context: dg.AssetExecutionContext, report) -> None:
        stream, sync, destination = self.stream, self.sync, self.spec.destination
        context.log.info(
            f"stream {stream.name} -> {sync.destination}: {report.sent} sent, {report.rejected} rejected, "
            f"{report.in_doubt} in doubt, {report.late_skipped} late (skipped), {report.unsent} unsent; "
            f"high-water mark {report.high_water}"
            + (" (first run: nothing older than the start was sent)" if report.first_run else "")
        )
        if report.in_doubt:
            context.log.warning(
                f"{report.in_doubt} events to {sync.destination} may or may not have arrived (in flight when a run "
                f"was killed, or their request got no answer); {destination.type_name} does not deduplicate, so "
                f"they are not resent. They are in {self.tables.sent} with status in_doubt."
            )
        if report.late_skipped:
            context.log.warning(
                f"{report.late_skipped} rows of {stream.table} landed more than lookback ({stream.lookback}) behind "
                f"the high-water mark and were not sent; raise `lookback` in {stream.name}.yaml if that is normal."
            )

    def stopped(self, report) -> str:
        return (
            f"{self.spec.sync.destination} stopped accepting events ({report.stopped_by}); {report.sent} were "
            f"sent and recorded, {report.unsent} stay for the next run."
        )


def _delta_to_deliver(conn: Connection, tables: PairTables, partition: dt.date) -> DeltaRun:
    """This partition's newest delta, refusing one that a newer delta has overtaken (it could move data backwards)."""
    run = latest_delta_run(conn, tables, partition)
    if run is None:
        raise dg.Failure(
            description=f"no delta for {tables.audience} -> {tables.destination} on {partition}; "
            "materialize the delta asset for this partition first."
        )
    held = blocking_gates(conn, tables, run.run_id)
    if held:
        raise dg.Failure(
            description=f"the delta of {partition} (run {run.run_id}) is held by its send gates: "
            + "; ".join(f"{gate}: {detail}" for gate, detail in held)
            + f". Nothing was sent. To send it anyway, run delta and sync again with the run tag "
            f"{OVERRIDE_TAG}={','.join(gate for gate, _ in held)}."
        )
    newest = latest_delta_run(conn, tables)
    if newest is not None and newest.run_id != run.run_id:
        raise dg.Failure(
            description=f"the delta of {partition} (run {run.run_id}) is older than the delta of {newest.partition} "
            f"(run {newest.run_id}); materialize delta and sync of {partition} together to deliver current data."
        )
    return run

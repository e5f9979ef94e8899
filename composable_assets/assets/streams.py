"""Streams: per (stream, destination) and day, forward the table's new rows as events, each once by event id."""


import datetime as dt

import dagster as dg

from ..coordination import Coordination
from ..destinations import Destination, EventTarget, TerminalError
from ..governance.provenance import code_version, file_sha256
from ..project import ProjectError, StreamSpec, StreamSyncSpec
from ..streams import StreamDataError, StreamReport, StreamShape, StreamTables, deliver_events
from ..warehouse import Warehouse
from .leases import lease_name, pair_lease
from ..project.keys import STREAMS, WAREHOUSE_POOL, stream_key
from .metadata import markdown_table, rejections_table, shown, with_definition_columns


def stream_report_metadata(report: StreamReport, samples: bool) -> dict:
    """The counts every stream materialization carries; what was sent (no secrets), and to whom, only with samples on."""
    metadata = {
        "sent": report.sent,
        "rejected": report.rejected,
        "in_doubt": report.in_doubt,
        "late_skipped": report.late_skipped,
        "resent_after_crash": report.resent,
        "unsent": report.unsent,
        "batches": report.batches,
        "duration_seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second, 1),
        "high_water_mark": str(report.high_water) if report.high_water else "none",
        "window_start": str(report.window_start) if report.window_start else "none",
        # What the destination received for the first rows, one row each (a small Markdown table in the UI).
        "payload_sample": markdown_table(report.sample),
    }
    metadata.update({name: round(value, 3) for name, value in report.stats.items()})
    if report.failures:
        metadata["rejections"] = rejections_table(report.failures, samples, "event_id")
    return shown(metadata, samples)


def build_stream_asset(
    stream: StreamSpec,
    sync: StreamSyncSpec,
    destination: Destination,
    schema: str,
    partitions: dg.PartitionsDefinition,
    warehouse_kind: str,
    upstream: dg.AssetKey,
    timezone: str = "UTC",
    freshness_policy: dg.FreshnessPolicy | None = None,
    samples: bool = False,
    allowed: str | None = None,
    allowed_native: str | None = None,
    native_against: tuple[str, str] | None = None,
    op_tags: dict[str, str] | None = None,
) -> dg.AssetsDefinition:
    """One asset delivering `stream` to one destination; `upstream` is the model or source asset of its table.

    `allowed`: a condition on the table's member key column (`stream.key`) that a row's person must meet to be sent;
    `allowed_native` the same comparing that column with the consent key `native_against` as they are, for when
    their types match (see StreamShape).
    """
    capabilities = destination.capabilities
    if not capabilities.events:
        raise ProjectError(
            f"destination `{sync.destination}` ({destination.type_name}) cannot take events", stream.path
        )
    options = destination.event_options(sync.options)
    shape = StreamShape.of(
        stream, sync, destination.event_columns(options), stream.key, allowed, allowed_native, native_against
    )
    tables = StreamTables(schema, stream.name, sync.destination)
    guarantee = (
        "each event once by id (resent after a crash; the destination deduplicates by event id)"
        if capabilities.events_idempotent
        else "each event at most once (batches in flight at a crash are recorded in_doubt, not resent)"
    )

    @dg.asset(
        key=stream_key(stream.name, sync.destination),
        group_name=STREAMS,
        deps=[upstream],
        partitions_def=partitions,
        # The stream file, the destination's entry and who may receive its events.
        code_version=code_version(
            file_sha256(stream.path), {"type": destination.type_name, "settings": destination.settings}, allowed
        ),
        description=f"Forwards new rows of `{stream.table}` as `{sync.event}` events to `{sync.destination}` "
        f"({destination.type_name}), by `{stream.cursor}`, each once by event id.",
        owners=stream.owners or None,
        kinds={destination.kind, warehouse_kind},
        tags={"destination_type": destination.type_name, "delivery": "events"},
        pool=WAREHOUSE_POOL,
        op_tags=op_tags,
        freshness_policy=freshness_policy,
        metadata={
            "destination": sync.destination,
            "table": stream.table,
            "event": sync.event,
            "identifier": sync.identifier_type,
            "event_id": f"{stream.name}:<{stream.event_id}>",
            "cursor": stream.cursor,
            "lookback": str(stream.lookback),
            "start": str(stream.start),
            "guarantee": guarantee,
            "batch_size": capabilities.event_batch_size or capabilities.batch_size,
            "concurrency": capabilities.concurrency,
            "rate_limit": (
                f"{capabilities.event_requests_per_window} requests / {capabilities.event_window_seconds:g} s"
                if capabilities.event_requests_per_window
                else "none"
            ),
        },
    )
    def _stream(
        context: dg.AssetExecutionContext, warehouse: Warehouse, coordination: Coordination
    ) -> dg.MaterializeResult:
        target = EventTarget(
            stream=stream.name,
            destination=sync.destination,
            identifier_type=sync.identifier_type,
            event=sync.event,
            partition=context.partition_key,
            run_id=context.run.run_id,
            options=options,
        )
        # One delivery of the pair at a time, anywhere (see assets/leases.py): taken before the warehouse is opened.
        what = f"stream {stream.name} -> {sync.destination}"
        lease = lease_name("stream", warehouse, schema, stream.name, sync.destination)
        with pair_lease(context, coordination, lease, what) as held, warehouse.connect() as conn:
            try:
                with destination.open_events(target) as session:
                    report = deliver_events(
                        conn,
                        shape,
                        tables,
                        session,
                        capabilities,
                        run_id=context.run.run_id,
                        partition=dt.date.fromisoformat(context.partition_key),
                        timezone=timezone,
                        keep_going=held.check,
                        on_progress=lambda r: context.log.debug(
                            f"{r.sent} events sent, {r.rejected} rejected, {r.batches} batches"
                        ),
                    )
            except StreamDataError as exc:
                raise dg.Failure(description=str(exc)) from exc
            except TerminalError as exc:
                raise dg.Failure(description=f"{sync.destination}: {exc}") from exc
        metadata = stream_report_metadata(report, samples)
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
                f"they are not resent. They are in {tables.sent} with status in_doubt."
            )
        if report.late_skipped:
            context.log.warning(
                f"{report.late_skipped} rows of {stream.table} landed more than lookback ({stream.lookback}) behind "
                f"the high-water mark and were not sent; raise `lookback` in {stream.name}.yaml if that is normal."
            )
        if report.stopped_by:
            raise dg.Failure(
                description=f"{sync.destination} stopped accepting events ({report.stopped_by}); {report.sent} were "
                f"sent and recorded, {report.unsent} stay for the next run.",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=with_definition_columns(context, metadata))

    return _stream

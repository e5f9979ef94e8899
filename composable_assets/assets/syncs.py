"""Syncs: per (audience, destination) and day, deliver the delta and commit acknowledged rows to the ledger."""


import datetime as dt
from pathlib import Path
import time

import dagster as dg

from ..delta.delivery import SyncReport, deliver
from ..delta.diff import latest_delta_run
from ..governance.gates import blocking_gates
from ..coordination import Coordination
from ..governance.provenance import (
    SyncRun, abandon_unfinished, code_version, file_sha256, finish_quietly, finish_sync_run, start_sync_run,
    upstream_versions,
)
from ..project.gates import OVERRIDE_TAG
from ..store import PairTables
from ..destinations import Destination, SyncTarget, TerminalError
from ..progress import SyncProgress, log_progress
from ..project import AudienceSpec, ProjectError, SyncSpec
from ..warehouse import Warehouse
from .deltas import utc_now
from .leases import lease_name, pair_lease
from ..project.keys import SYNCS, WAREHOUSE_POOL, delta_key, sync_key
from .metadata import markdown_table, rejections_table, shown, with_definition_columns


def report_metadata(report: SyncReport, delta_run_id: str, samples: bool) -> dict:
    """The counts every sync materialization carries; what was sent, and to whom, only with samples on."""
    rate = report.delivered / report.seconds if report.seconds > 0 else 0.0
    metadata = {
        "added": report.added,
        "updated": report.updated,
        "removed": report.removed,
        "failed": report.failed,
        "skipped": report.skipped,
        "unsent": report.unsent,
        "batches": report.batches,
        "duration_seconds": round(report.seconds, 3),
        "rows_per_second": round(rate, 1),
        "delta_run_id": delta_run_id,
        # What the destination received for the first rows, one row each (a small Markdown table in the UI).
        "payload_sample": markdown_table(report.sample),
    }
    metadata.update({name: round(value, 3) for name, value in report.stats.items()})
    if report.failures:
        metadata["failures"] = rejections_table(report.failures, samples, "key")
    return shown(metadata, samples)


def build_sync_asset(
    audience: AudienceSpec,
    sync: SyncSpec,
    destination: Destination,
    schema: str,
    partitions: dg.PartitionsDefinition,
    warehouse_kind: str,
    freshness_policy: dg.FreshnessPolicy | None = None,
    samples: bool = False,
    model_path: Path | None = None,
    op_tags: dict[str, str] | None = None,
) -> dg.AssetsDefinition:
    """`model_path`: the SQL file of the audience's model (None when it reads a source table), for provenance."""
    tables = PairTables(schema, audience.name, sync.destination)
    options = destination.sync_options(sync.options)
    capabilities = destination.capabilities
    # Provenance: the code a delivered row came from (recorded per run in sync_runs; see governance/provenance.py).
    audience_sha256 = file_sha256(audience.path)
    model_sha256 = file_sha256(model_path)
    version = code_version(audience_sha256, {"type": destination.type_name, "settings": destination.settings})
    if sync.mode == "mirror" and "remove" not in capabilities.operations:
        raise ProjectError(
            f"destination `{sync.destination}` ({destination.type_name}) cannot remove members; use mode: upsert",
            audience.path,
        )

    @dg.asset(
        key=sync_key(audience.name, sync.destination),
        group_name=SYNCS,
        deps=[delta_key(audience.name, sync.destination)],
        partitions_def=partitions,
        description=f"Delivers `{audience.name}` to `{sync.destination}` ({destination.type_name}, {sync.mode}) "
        "and records what it acknowledged.",
        owners=audience.owners or None,
        kinds={destination.kind, warehouse_kind},
        tags={"mode": sync.mode, "destination_type": destination.type_name},
        pool=WAREHOUSE_POOL,
        op_tags=op_tags,
        freshness_policy=freshness_policy,
        code_version=version,
        metadata={
            "destination": sync.destination,
            "mode": sync.mode,
            "identifier": sync.identifier_type,
            # The destination's limits, as data: what the delivery loop plans with.
            "batch_size": capabilities.batch_size,
            "concurrency": capabilities.concurrency,
            "rate_limit": (
                f"{capabilities.requests_per_window} requests / {capabilities.window_seconds:g} s"
                if capabilities.requests_per_window
                else "none"
            ),
        },
    )
    def _sync(
        context: dg.AssetExecutionContext, warehouse: Warehouse, coordination: Coordination
    ) -> dg.MaterializeResult:
        partition = dt.date.fromisoformat(context.partition_key)
        target = SyncTarget(
            audience=audience.name,
            destination=sync.destination,
            mode=sync.mode,
            identifier_type=sync.identifier_type,
            partition=context.partition_key,
            run_id=context.run.run_id,
            options=options,
            warehouse=warehouse,
            schema=schema,
        )
        # Taken before the warehouse is opened (a DuckDB file admits one process: a holder must be able to finish)
        # and before the delta is read; held until the last acknowledgement is folded into the ledger.
        what = f"sync {audience.name} -> {sync.destination}"
        lease = lease_name("sync", warehouse, schema, audience.name, sync.destination)
        with pair_lease(context, coordination, lease, what) as held, warehouse.connect() as conn:
            tables.ensure(conn)
            for dead in abandon_unfinished(conn, tables, context.run.run_id, utc_now()):
                context.log.warning(f"{what}: run {dead} never finished (its process was killed); marked abandoned")
            run = _delta_to_deliver(conn, tables, partition)
            upstream = upstream_versions(context.instance, delta_key(audience.name, sync.destination),
                                         context.partition_key, run.run_id)
            start_sync_run(conn, tables, SyncRun(context.run.run_id, partition, run.run_id, version, audience_sha256,
                                                 model_sha256, upstream), utc_now())
            started = time.monotonic()
            try:
                with destination.open(target) as session:
                    report = deliver(
                        conn,
                        tables,
                        run,
                        session,
                        batch_size=destination.capabilities.batch_size,
                        concurrency=destination.capabilities.concurrency,
                        sync_run_id=context.run.run_id,
                        partition=partition,
                        keep_going=held.check,
                        # A structured debug record: the `composable` command draws it as a progress bar.
                        on_progress=lambda r, left: log_progress(context.log, SyncProgress(
                            audience.name, sync.destination, r.delivered + r.failed,
                            r.delivered + r.failed + left, time.monotonic() - started,
                        )),
                    )
            except TerminalError as exc:
                finish_quietly(conn, tables, context.run.run_id, utc_now())
                raise dg.Failure(description=f"{sync.destination}: {exc}") from exc
            except BaseException:
                finish_quietly(conn, tables, context.run.run_id, utc_now())
                raise
            finish_sync_run(conn, tables, context.run.run_id, report, utc_now())
        metadata = report_metadata(report, run.run_id, samples)
        context.log.info(
            f"sync of {audience.name} -> {sync.destination}: {report.added} added, {report.updated} updated, "
            f"{report.removed} removed, {report.failed} rejected, {report.skipped} already done, {report.unsent} unsent"
        )
        if report.stopped_by:
            raise dg.Failure(
                description=f"{sync.destination} stopped accepting rows ({report.stopped_by}); "
                f"{report.delivered} were delivered and recorded, {report.unsent} stay for the next run.",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=with_definition_columns(context, metadata))

    return _sync


def _delta_to_deliver(conn, tables: PairTables, partition: dt.date):
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

"""Deletion requests: the asset that forgets people who asked, everywhere they were sent (governance/deletion.py)."""

import datetime as dt

import dagster as dg

from ..coordination import Coordination
from ..destinations import Destination
from ..destinations.resource import destination_resource_key
from ..governance.archive import ArchiveLocation
from ..governance.deletion import HONOUR_WITHIN, DeletionSetupError, overdue_requests, process_deletion_requests
from ..governance.deletion_log import deletion_log
from ..project import Project
from ..project.keys import GOVERNANCE, WAREHOUSE_POOL, governance_key, source_key
from ..warehouse import Warehouse
from .metadata import markdown_table

DELETION_REQUESTS = governance_key("deletion_requests")
STATUSES = ("deleted", "not_found", "purged", "failed")
# Request ids shown by the check; the proof table has them all.
SHOWN = 20


def utc_now() -> dt.datetime:
    """Naive UTC, as the warehouse's timestamp columns hold it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def build_deletion_asset(
    project: Project, destinations: dict[str, Destination], warehouse_kind: str, archive: ArchiveLocation | None = None
) -> dg.AssetsDefinition:
    spec = project.settings.deletion_requests
    assert spec is not None
    days = HONOUR_WITHIN.days
    # A request id leads to the person (the proof keeps it with the key), so the check names them only if asked to.
    name_requests = project.settings.payload_samples

    @dg.asset(
        key=DELETION_REQUESTS,
        group_name=GOVERNANCE,
        deps=[source_key(spec.table)],
        description=f"Deletes each person in `{spec.table}` at every destination that received them, purges them "
        "from ledgers, deltas, outboxes and archives, and records the proof in `deletion_log`.",
        kinds={warehouse_kind, "governance"},
        pool=WAREHOUSE_POOL,
        # Each destination from its resource when the asset runs (a deployment may point one elsewhere).
        required_resource_keys={
            "warehouse",
            "coordination",
            *(destination_resource_key(name) for name in destinations),
        },
        metadata={"requests_table": spec.table, "proof_table": f"{project.settings.schema_name}.deletion_log"},
        check_specs=[
            dg.AssetCheckSpec(
                "requests_honoured",
                asset=DELETION_REQUESTS,
                blocking=False,
                description=f"Every deletion request older than {days} days is done at every destination.",
            )
        ],
    )
    def _deletion_requests(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: Warehouse = context.resources.warehouse
        coordination: Coordination = context.resources.coordination
        configured: dict[str, Destination] = {
            name: getattr(context.resources, destination_resource_key(name)).build(coordination)
            for name in destinations
        }
        with warehouse.connect() as conn:
            try:
                report = process_deletion_requests(
                    conn, project, configured, warehouse, run_id=context.run.run_id, now=utc_now(), archive=archive
                )
                overdue = overdue_requests(conn, project, utc_now())
            except DeletionSetupError as exc:
                raise dg.Failure(description=str(exc)) from None
            (proof_rows,) = conn.fetch_row(f"SELECT count(*) FROM {deletion_log(project.settings.schema_name)}")
        counts = report.counts()
        totals = {status: sum(c.get(status, 0) for c in counts.values()) for status in STATUSES}
        for warning in report.warnings:
            context.log.warning(warning)
        context.log.info(
            f"deletion requests: {len(report.requests)} worked on; "
            + ", ".join(f"{n} {status}" for status, n in totals.items())
        )
        if totals["failed"]:
            context.log.warning(f"{totals['failed']} deletions failed; they are tried again on the next run")
        which = (
            ", ".join(r.request_id for r in overdue[:SHOWN]) + (" ..." if len(overdue) > SHOWN else "")
            if name_requests
            else "`composable forget` names them"
        )
        return dg.MaterializeResult(
            metadata={
                "requests_worked": len(report.requests),
                **totals,
                "by_destination": markdown_table(
                    [{"destination": d, **{s: c.get(s, 0) for s in STATUSES}} for d, c in counts.items()], limit=100
                ),
                "proof_rows": proof_rows,
                "dagster/row_count": proof_rows,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="requests_honoured",
                    passed=not overdue,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=(
                        f"{len(overdue)} requests older than {days} days are not done yet: {which}"
                        if overdue
                        else f"every request older than {days} days is done"
                    ),
                    metadata={"overdue": len(overdue)},
                )
            ],
        )

    return _deletion_requests


def deletion_job():
    return dg.define_asset_job(
        "deletion_requests",
        selection=dg.AssetSelection.assets(DELETION_REQUESTS),
        description="Honour deletion requests: delete at every destination, purge, record the proof.",
    )

"""Deltas: per (audience, destination) and day, the rows to add, update and remove at that destination."""


import datetime as dt

import dagster as dg

from ..delta.diff import compute_delta
from ..delta.snapshot import SyncShape
from ..delta.tables import PairTables
from ..project import AudienceSpec, SyncSpec
from ..warehouse import Warehouse
from .keys import DELTAS, WAREHOUSE_POOL, audience_key, delta_key
from .metadata import markdown_table


def utc_now() -> dt.datetime:
    """Naive UTC, the form every warehouse timestamp column here holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def build_delta_asset(
    audience: AudienceSpec,
    sync: SyncSpec,
    shape: SyncShape,
    schema: str,
    partitions: dg.PartitionsDefinition,
    warehouse_kind: str,
) -> dg.AssetsDefinition:
    tables = PairTables(schema, audience.name, sync.destination)

    @dg.asset(
        key=delta_key(audience.name, sync.destination),
        group_name=DELTAS,
        deps=[audience_key(audience.name)],
        partitions_def=partitions,
        description=f"Rows of `{audience.name}` to {'add, update and remove' if sync.mode == 'mirror' else 'add and update'} "
        f"at `{sync.destination}` ({sync.mode}), relative to what it has acknowledged.",
        owners=audience.owners or None,
        kinds={warehouse_kind, "delta"},
        tags={"mode": sync.mode},
        pool=WAREHOUSE_POOL,
        metadata={"mode": sync.mode, "destination": sync.destination},
    )
    def _delta(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            run = compute_delta(
                conn,
                tables,
                shape,
                sync.mode,
                run_id=context.run.run_id,
                partition=dt.date.fromisoformat(context.partition_key),
                now=utc_now(),
            )
            preview = conn.fetch_arrow(
                f"SELECT _op AS change, _key AS key, _identifier AS identifier, _fields AS fields "
                f"FROM {tables.delta} WHERE _seq BETWEEN ? AND ? ORDER BY _seq LIMIT 5",
                [run.first_seq, run.last_seq],
            ).to_pylist()
        context.log.info(
            f"delta of {audience.name} -> {sync.destination}: {run.added} to add, {run.updated} to update, "
            f"{run.removed} to remove (audience of {run.audience_size})"
        )
        return dg.MaterializeResult(
            metadata={
                "added": run.added,
                "updated": run.updated,
                "removed": run.removed,
                "total": run.size,
                "audience_size": run.audience_size,
                "dagster/row_count": run.size,
                "seq_range": f"{run.first_seq}..{run.last_seq}",
                "preview": markdown_table(preview),
            }
        )

    return _delta

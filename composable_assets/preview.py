"""A read-only look at what a sync would send: counts and sample payloads, nothing delivered."""

from __future__ import annotations

from dataclasses import dataclass

from .assets.audiences import sync_shapes
from .delivery.audience import records_from_rows
from .delta.diff import delta_select
from .delta.ledger import fold_acks
from .destinations import Destination, Target
from .governance.consent import consent_conditions
from .project import AudienceSpec, Project, SyncSpec
from .project.keys import Delivery
from .store import PairTables
from .warehouse import Warehouse


@dataclass
class Preview:
    added: int
    updated: int
    removed: int
    audience_size: int
    payloads: list[dict]


def preview_delta(
    warehouse: Warehouse, project: Project, audience: AudienceSpec, sync: SyncSpec, destination: Destination, limit: int
) -> Preview:
    tables = PairTables(project.settings.schema_name, audience.name, sync.destination)
    shape = next(s for s in sync_shapes(audience, consent_conditions(project)) if s.destination == sync.destination)
    with warehouse.connect() as conn:
        tables.ensure(conn)
        fold_acks(conn, tables)  # acknowledged rows count as delivered, even after a crash
        select = delta_select(tables, shape, sync.mode, conn.dialect)
        counts = dict(conn.fetch_all(f"SELECT _op, count(*) FROM ({select}) GROUP BY _op"))
        rows = conn.fetch_arrow(f"SELECT * FROM ({select}) ORDER BY _key LIMIT ?", [limit]).to_pylist()
        (size,) = conn.fetch_row(f"SELECT count(*) FROM {tables.snapshot}")
    records = records_from_rows(rows)
    target = Target(
        Delivery("audience", audience.name),
        sync.destination,
        sync.identifier_type,
        mode=sync.mode,
        partition="preview",
        run_id="preview",
        options=destination.sync_options(sync.options),
        warehouse=warehouse,
        schema=project.settings.schema_name,
    )
    return Preview(
        added=counts.get("add", 0),
        updated=counts.get("update", 0),
        removed=counts.get("remove", 0),
        audience_size=size,
        payloads=destination.payloads(records, target),
    )

"""Sources: the raw warehouse tables the models read, observed in place and never copied."""


import warnings

import dagster as dg

from ..delta.sql import ident
from ..warehouse import Warehouse
from .keys import SOURCES, source_key


def build_source_observer(tables: list[str], warehouse_kind: str) -> dg.AssetsDefinition | None:
    """One observable source asset per table, observed together over a single connection."""
    if not tables:
        return None
    specs = [
        dg.AssetSpec(
            key=source_key(t),
            group_name=SOURCES,
            description=f"Warehouse table `{t}`, read by the models; observed, never copied.",
            kinds={warehouse_kind, "table"},
        )
        for t in tables
    ]

    def observe_sources(context: dg.AssetExecutionContext, warehouse: Warehouse):
        with warehouse.connect() as conn:
            for t in tables:
                columns = dict(conn.table_columns(None, t))
                if not columns:
                    context.log.warning(f"source table {t!r} does not exist in {warehouse.engine.describe()}")
                    continue
                # Row count plus the newest update is a cheap, good-enough change marker.
                marker = "max(updated_at)" if "updated_at" in columns else "NULL"
                rows, newest = conn.fetch_one(f"SELECT count(*), {marker} FROM {ident(t)}")
                yield dg.ObserveResult(
                    asset_key=source_key(t),
                    data_version=dg.DataVersion(f"{rows}:{newest}"),
                    metadata={"dagster/row_count": rows, "newest_update": str(newest)},
                )

    # Observable sources are a beta API; it is the one that observes tables in place without copying them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.multi_observable_source_asset(specs=specs, name="observe_sources")(observe_sources)

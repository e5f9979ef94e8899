"""Audiences: one asset per YAML file, the members of a model that meet its condition."""

from typing import Any

import dagster as dg

from ..governance.deletion_log import ensure_deletion_log
from ..governance.provenance import file_sha256, run_data_version
from ..delta.snapshot import AudienceDataError, SyncShape, build_snapshot, snapshot_table
from ..destinations import DESTINATION_TYPES
from ..project import AudienceSpec, SyncSpec, parse_where
from ..warehouse import Warehouse
from .keys import AUDIENCES, WAREHOUSE_POOL, audience_key, model_key
from .deltas import require_tables
from .metadata import column_schema, markdown_table, shown, with_definition_columns


def sync_shapes(audience: AudienceSpec, allowed: dict[str, str] | None = None) -> list[SyncShape]:
    """What each sync sends; `allowed`: destination -> who it may receive (its consent condition)."""
    return [
        SyncShape(
            destination=s.destination,
            identifier_column=s.identifier_column,
            fields=dict(s.fields),
            allowed=(allowed or {}).get(s.destination),
            constants=membership_fields(audience, s),
        )
        for s in audience.syncs
    ]


def membership_fields(audience: AudienceSpec, sync: SyncSpec) -> dict[str, Any]:
    """The fields its destination type has every member of this sync carry (e.g. Braze's `in_<audience>`)."""
    kind = DESTINATION_TYPES.get(audience.destination_types.get(sync.destination, ""))
    if kind is None:
        return {}
    options = kind.SyncOptions.model_validate(sync.options)
    return kind.membership_fields(options, audience.name, sync.mode, sync.identifier_type)


def build_audience_asset(
    audience: AudienceSpec,
    schema: str,
    warehouse_kind: str,
    samples: bool = False,
    members: str | None = None,
    reads: dict[str, str] | None = None,
) -> dg.AssetsDefinition:
    """`members`: a condition on the model's rows besides the file's `where` (no deletion request; see
    governance/consent.py), reading the tables `reads` names (table -> the project.yaml setting naming it)."""
    where = parse_where(audience.where, audience.path, None) if audience.where else None
    shapes = sync_shapes(audience)

    @dg.asset(
        key=audience_key(audience.name),
        group_name=AUDIENCES,
        deps=[model_key(audience.model)],
        description=audience.description or f"Audience `{audience.name}` of model `{audience.model}`.",
        owners=audience.owners or None,
        kinds={warehouse_kind, "audience"},
        tags={"cadence": audience.cadence.replace(" ", "_").replace("*", "x")},
        pool=WAREHOUSE_POOL,
        # The file's sha256, as sync_runs records it (governance/provenance.py).
        code_version=file_sha256(audience.path)[:16],
        metadata={"file": audience.path.name, "where": audience.where or "(everyone)", "model": audience.model},
    )
    def _audience(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            require_tables(conn, reads or {}, f"no audience {audience.name}")
            if members:
                ensure_deletion_log(conn, schema)  # the condition reads the proof of earlier deletion requests
            try:
                result = build_snapshot(
                    conn,
                    schema=schema,
                    audience=audience.name,
                    audience_file=audience.path,
                    model=audience.model,
                    primary_key=audience.primary_key,
                    columns=audience.columns_needed(),
                    where=where,
                    syncs=shapes,
                    members=members,
                    show_keys=samples,
                )
            except AudienceDataError as exc:
                raise dg.Failure(description=str(exc)) from exc
            except Exception as exc:
                raise dg.Failure(description=f"{audience.path}: building the audience failed: {exc}") from exc
            sample = (
                conn.fetch_arrow(f"SELECT * FROM {snapshot_table(schema, audience.name)} LIMIT 5").to_pylist()
                if samples
                else []
            )
        visible = [{k: v for k, v in row.items() if not k.startswith("_")} for row in sample]
        return dg.MaterializeResult(
            metadata=with_definition_columns(context, shown({
                "dagster/row_count": result.size,
                "members": result.size,
                "dagster/column_schema": column_schema(result.columns, hide_internal=True),
                "sample": markdown_table(visible),
            }, samples)),
            data_version=run_data_version(context),
        )

    return _audience

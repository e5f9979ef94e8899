"""Audiences: one asset per YAML file, the members of a model that meet its condition."""

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dagster as dg

from ..delta import quiet
from ..delta.changes import Watched, relation
from ..delta.refresh import RefreshReport, refresh_audience, utc_now
from ..delta.snapshot import AudienceDataError, build_snapshot, snapshot_table, update_snapshot
from ..delta.steps import audience_definition, audience_step, sync_shapes
from ..governance.provenance import file_sha256, run_data_version
from ..project import AudienceSpec, parse_where
from ..project.incremental import Refresh
from ..project.keys import AUDIENCES, WAREHOUSE_POOL, audience_key, model_key
from ..store import ensure_store
from ..warehouse import Warehouse
from .deltas import require_tables
from .metadata import column_schema, markdown_table, shown, with_definition_columns
from .models import SKIPPED, compared_run, incremental_run, plain_run, refresh_metadata

__all__ = ["AudienceAsset", "build_audience_asset", "sync_shapes"]


def audience_refresh(audience: AudienceSpec, model_refresh: Refresh) -> str:
    """How minute-level runs keep the snapshot, for the UI and `composable validate`."""
    if model_refresh.key == audience.primary_key:
        return f"incremental by {audience.primary_key}"
    if model_refresh.incremental:
        return f"full: the model is kept by {model_refresh.key}, the audience by {audience.primary_key}"
    return f"full: {model_refresh.reason}"


def audience_watches(audience: AudienceSpec, model_refresh: Refresh, watched: list[Watched]) -> list[Watched]:
    """The snapshot's cursor watches its model's changed keys and the tables its member condition reads."""
    if model_refresh.key != audience.primary_key:
        return []
    model = Watched(audience.model, audience.primary_key, (relation(audience.model, model_refresh.key),), guarded=False)
    return [model, *watched]


@dataclass(frozen=True)
class AudienceAsset:
    """What one audience's snapshot asset is built from."""

    audience: AudienceSpec
    schema: str
    warehouse_kind: str
    samples: bool = False
    #: A condition on the model's rows besides the file's `where` (no deletion request; see governance/consent.py).
    members: str | None = None
    #: The tables `members` reads (table -> the project.yaml setting naming it).
    reads: dict[str, str] = field(default_factory=dict)
    #: How the model is kept (the snapshot follows it by key when it is kept by the primary key).
    model_refresh: Refresh | None = None
    #: The tables `members` reads, whose changes select keys too.
    watched: list[Watched] = field(default_factory=list)
    op_tags: dict[str, str] = field(default_factory=dict)


def build_audience_asset(spec: AudienceAsset) -> dg.AssetsDefinition:
    """The asset that snapshots one audience: its members with a hash and the payload of their fields."""
    audience, schema, warehouse_kind, samples = spec.audience, spec.schema, spec.warehouse_kind, spec.samples
    members, reads, model_refresh, watched = spec.members, spec.reads or None, spec.model_refresh, spec.watched or None
    op_tags = spec.op_tags or None
    where = parse_where(audience.where, audience.path, None) if audience.where else None
    shapes = sync_shapes(audience)
    model_refresh = model_refresh or Refresh(None, "the model is not part of the project")
    refresh_text = audience_refresh(audience, model_refresh)
    # What decides the snapshot: the file (condition, columns, each sync's fields and hash), who may be a member, the
    # clock the condition reads, the model's rows and the tables the member condition reads.
    definition = audience_definition(audience, shapes, members)
    step = audience_step(audience, schema, members)
    snapshot = step.output

    @dg.asset(
        key=audience_key(audience.name),
        group_name=AUDIENCES,
        deps=[model_key(audience.model)],
        description=audience.description or f"Audience `{audience.name}` of model `{audience.model}`.",
        owners=audience.owners or None,
        kinds={warehouse_kind, "audience"},
        tags={"cadence": audience.cadence.replace(" ", "_").replace("*", "x")},
        pool=WAREHOUSE_POOL,
        op_tags=op_tags,
        # The file's sha256, as sync_runs records it (governance/provenance.py).
        code_version=(file_sha256(audience.path) or "")[:16],
        metadata={
            "file": audience.path.name if audience.path else "",
            "where": audience.where or "(everyone)",
            "model": audience.model,
            "refresh": refresh_text,
        },
    )
    def _audience(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        reader = step.reader
        with warehouse.connect() as conn:
            require_tables(conn, reads or {}, f"no audience {audience.name}")
            if members:
                ensure_store(conn, schema)  # the condition reads the proof of earlier deletion requests
            inputs = (
                quiet.Inputs(None, "minute-level runs keep it by key instead")
                if incremental_run(context)
                else step.inputs(conn)
            )
            if inputs.fingerprint is not None and not members:
                ensure_store(conn, schema)  # where the fingerprints are kept
            skipped = plain_run(context) and step.unchanged(conn, schema, inputs)
            common: dict[str, Any] = dict(
                schema=schema,
                audience=audience.name,
                audience_file=audience.path,
                model=audience.model,
                primary_key=audience.primary_key,
                columns=audience.columns_needed(),
                syncs=shapes,
                members=members,
                show_keys=samples,
            )
            try:
                report, size = (
                    (
                        RefreshReport(SKIPPED, "neither its model, its definition nor who may be a member changed"),
                        conn.fetch_row(f"SELECT count(*) FROM {snapshot_table(schema, audience.name)}")[0],
                    )
                    if skipped
                    else refresh_audience(
                        conn,
                        schema=schema,
                        audience=audience.name,
                        model=audience.model,
                        primary_key=audience.primary_key,
                        model_refresh=model_refresh,
                        where=where,
                        watched=audience_watches(audience, model_refresh, watched or []),
                        incremental=incremental_run(context),
                        compare=compared_run(context),
                        build=partial(build_snapshot, conn, **common),
                        update=partial(update_snapshot, conn, **common),
                        definition=definition,
                    )
                )
            except AudienceDataError as exc:
                raise dg.Failure(description=str(exc)) from exc
            except Exception as exc:
                raise dg.Failure(description=f"{audience.path}: building the audience failed: {exc}") from exc
            # Only after a plain recompute: the run after the nightly comparison recomputes once, as before.
            if report.mode == "full" and plain_run(context):
                quiet.record(conn, schema, reader, inputs, snapshot, utc_now())
            sample = (
                conn.fetch_arrow(f"SELECT * FROM {snapshot_table(schema, audience.name)} LIMIT 5").to_pylist()
                if samples
                else []
            )
            columns = conn.table_columns(schema, f"audience__{audience.name}")
        visible = [{k: v for k, v in row.items() if not k.startswith("_")} for row in sample]
        if report.repaired_rows:
            context.log.warning(
                f"the full recompute of audience {audience.name} repaired {report.repaired_rows} row(s) the "
                "incremental path had missed"
            )
        return dg.MaterializeResult(
            metadata=with_definition_columns(
                context,
                shown(
                    {
                        "dagster/row_count": size,
                        "members": size,
                        "dagster/column_schema": column_schema(columns, hide_internal=True),
                        "sample": markdown_table(visible),
                        **refresh_metadata(refresh_text, report, inputs.why or "skipped when nothing it reads changed"),
                    },
                    samples,
                ),
            ),
            data_version=run_data_version(context),
        )

    return _audience

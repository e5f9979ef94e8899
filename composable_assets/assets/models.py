"""Models: one asset per SQL file, materialized as a table in the warehouse."""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ..delta import quiet
from ..delta.refresh import RefreshReport, model_watches, refresh_model
from ..delta.steps import model_step
from ..governance.provenance import file_sha256, run_data_version
from ..project import ModelSpec
from ..project.incremental import Refresh
from ..project.keys import MODELS, REFRESH_TAG, WAREHOUSE_POOL, model_key, source_key
from ..store import ensure_store
from ..warehouse import Warehouse
from ..warehouse.sql import ident
from .metadata import column_schema, with_definition_columns


def incremental_run(context: dg.AssetExecutionContext) -> bool:
    """Whether this run asked for the incremental path (else: the full recompute)."""
    return context.run.tags.get(REFRESH_TAG) == "incremental"


def compared_run(context: dg.AssetExecutionContext) -> bool:
    """Whether this full run asked to be compared with the incremental path (the nightly run: `full`)."""
    return context.run.tags.get(REFRESH_TAG) == "full"


#: What a plain full run that found nothing changed says it did (delta/quiet.py).
SKIPPED = "skipped"


def plain_run(context: dg.AssetExecutionContext) -> bool:
    """A run that asked for neither path (the command line, schedules): it may skip what cannot have changed."""
    return not incremental_run(context) and not compared_run(context)


def refresh_metadata(refresh_text: str, report: RefreshReport, skip: str | None = None) -> dict:
    """What a materialization says about how it was refreshed (shown in the UI)."""
    metadata: dict[str, str | int] = {
        "refresh": refresh_text,
        "mode": report.mode + (f" ({report.why})" if report.why else ""),
    }
    if skip is not None:
        metadata["skip"] = skip
    if report.mode == "incremental":
        metadata["affected_keys"] = report.affected_keys
    if report.repaired_rows is not None:
        # A full recompute after the incremental catch-up: what it still changed, the increments had missed.
        metadata["repaired_rows"] = report.repaired_rows
    return metadata


@dataclass(frozen=True)
class ModelAsset:
    """What one model's asset is built from."""

    model: ModelSpec
    project_root: Path
    warehouse_kind: str
    schema: str
    #: How minute-level runs maintain it.
    refresh: Refresh
    #: Tables fed by landing folders.
    landed: frozenset[str]
    #: Every model of the project.
    models: frozenset[str]
    op_tags: dict[str, str] = field(default_factory=dict)


def build_model_asset(spec: ModelAsset) -> dg.AssetsDefinition:
    """The asset that materializes one model as a table in the warehouse."""
    model, project_root, warehouse_kind, schema = spec.model, spec.project_root, spec.warehouse_kind, spec.schema
    refresh, landed, models, op_tags = spec.refresh, spec.landed, spec.models, spec.op_tags or None
    relative = model.path.relative_to(project_root) if model.path.is_relative_to(project_root) else model.path
    query = model.sql.strip().rstrip(";").strip()
    # What decides the table: its SQL, the clock it reads (found by parsing it) and every table it reads.
    step = model_step(model, refresh)

    @dg.asset(
        key=model_key(model.name),
        group_name=MODELS,
        deps=[model_key(m) for m in model.model_deps] + [source_key(s) for s in model.source_deps],
        description=model.description or f"Model `{model.name}` ({relative}).",
        owners=model.owners or None,
        kinds={warehouse_kind, "sql"},
        pool=WAREHOUSE_POOL,
        op_tags=op_tags,
        # The file's sha256, as sync_runs records it (governance/provenance.py).
        code_version=(file_sha256(model.path) or "")[:16],
        metadata={
            "file": str(relative),
            "sql": dg.MetadataValue.md(f"```sql\n{query}\n```"),
            "refresh": refresh.describe(),
        },
    )
    def _model(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        reader = step.reader
        with warehouse.connect() as conn:
            # Taken before the refresh: a source changing meanwhile makes the next run recompute, never skip.
            inputs = (
                quiet.Inputs(None, "minute-level runs keep it by key instead")
                if incremental_run(context)
                else step.inputs(conn)
            )
            if inputs.fingerprint is not None:
                ensure_store(conn, schema)  # where the fingerprints are kept
            skipped = plain_run(context) and step.unchanged(conn, schema, inputs)
            try:
                report = (
                    RefreshReport(SKIPPED, "nothing it reads changed since its last full refresh")
                    if skipped
                    else refresh_model(
                        conn,
                        schema=schema,
                        name=model.name,
                        sql=query,
                        refresh=refresh,
                        watched=model_watches(conn, refresh, landed, models),
                        incremental=incremental_run(context),
                        compare=compared_run(context),
                    )
                )
            except Exception as exc:  # every engine has its own error types; the file name is what matters
                raise dg.Failure(description=f"{relative}: the model's SQL failed: {exc}") from exc
            # Only after a plain recompute: the run after the nightly comparison recomputes once, as before.
            if report.mode == "full" and plain_run(context):
                quiet.record(conn, schema, reader, inputs, step.output, dt.datetime.now(dt.UTC).replace(tzinfo=None))
            (rows,) = conn.fetch_row(f"SELECT count(*) FROM {ident(model.name)}")
            columns = conn.table_columns(None, model.name)
        if report.repaired_rows:
            context.log.warning(
                f"the full recompute of {model.name} repaired {report.repaired_rows} row(s) the incremental path had "
                "missed (a change it could not see; see the docs, Which models run incrementally)"
            )
        return dg.MaterializeResult(
            metadata=with_definition_columns(
                context,
                {
                    "dagster/row_count": rows,
                    "dagster/column_schema": column_schema(columns),
                    **refresh_metadata(
                        refresh.describe(), report, inputs.why or "skipped when nothing it reads changed"
                    ),
                },
            ),
            data_version=run_data_version(context),
        )

    return _model

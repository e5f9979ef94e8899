"""Models: one asset per SQL file, materialized as a table in the warehouse."""


import dagster as dg

from ..delta.sql import ident
from ..governance.provenance import file_sha256, run_data_version
from ..project import ModelSpec
from ..warehouse import Warehouse
from .keys import MODELS, WAREHOUSE_POOL, model_key, source_key
from .metadata import column_schema, with_definition_columns


def build_model_asset(model: ModelSpec, project_root, warehouse_kind: str) -> dg.AssetsDefinition:
    relative = model.path.relative_to(project_root) if model.path.is_relative_to(project_root) else model.path
    query = model.sql.strip().rstrip(";").strip()

    @dg.asset(
        key=model_key(model.name),
        group_name=MODELS,
        deps=[model_key(m) for m in model.model_deps] + [source_key(s) for s in model.source_deps],
        description=model.description or f"Model `{model.name}` ({relative}).",
        owners=model.owners or None,
        kinds={warehouse_kind, "sql"},
        pool=WAREHOUSE_POOL,
        # The file's sha256, as sync_runs records it (governance/provenance.py).
        code_version=file_sha256(model.path)[:16],
        metadata={"file": str(relative), "sql": dg.MetadataValue.md(f"```sql\n{query}\n```")},
    )
    def _model(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            try:
                conn.execute(f"CREATE OR REPLACE TABLE {ident(model.name)} AS {query}")
            except Exception as exc:  # every engine has its own error types; the file name is what matters
                raise dg.Failure(description=f"{relative}: the model's SQL failed: {exc}") from exc
            rows = conn.fetch_one(f"SELECT count(*) FROM {ident(model.name)}")[0]
            columns = conn.table_columns(None, model.name)
        return dg.MaterializeResult(
            metadata=with_definition_columns(
                context, {"dagster/row_count": rows, "dagster/column_schema": column_schema(columns)}
            ),
            data_version=run_data_version(context),
        )

    return _model

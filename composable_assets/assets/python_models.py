"""Python models: one asset per models/NAME.py file, its DataFrame stored by the warehouse's pandas I/O manager.

The function's parameters name the tables it reads; each becomes an `ins` entry, so the tables are upstream assets
(lineage shows them) and arrive as DataFrames loaded by the same I/O manager (dagster-duckdb-pandas on DuckDB,
dagster-snowflake-pandas, dagster-gcp-pandas). The returned DataFrame is written by that I/O manager as the
model's table, where SQL models live, so audiences read it exactly as they read a SQL model.
"""

# No `from __future__ import annotations`: Dagster reads the compute function's annotations (context, resources)
# as objects.
from typing import Any

import dagster as dg

from ..delta.changes import journal_everything
from ..delta.refresh import utc_now
from ..governance.provenance import file_sha256, run_data_version
from ..project.keys import MODELS, PANDAS_IO_MANAGER, WAREHOUSE_POOL, model_key, source_key
from ..project.python_models import PythonModelError, load_model_function
from ..store import ensure_store
from ..warehouse import Connection, Warehouse
from ..warehouse.sql import ident
from .metadata import column_schema, with_definition_columns
from .models import ModelAsset

# pandas is imported only when a Python model is built or run: run processes of a project without one do not pay
# its ~0.4 s import (minute-level latency, docs/performance.md).


def build_python_model_asset(spec: ModelAsset) -> dg.AssetsDefinition:
    """The asset that runs one Python model's function and stores its DataFrame as the model's table."""
    model, project_root, schema = spec.model, spec.project_root, spec.schema
    relative = model.path.relative_to(project_root) if model.path.is_relative_to(project_root) else model.path
    inputs = [*model.model_deps, *model.source_deps]
    ins = {
        name: dg.AssetIn(
            key=model_key(name) if name in spec.models else source_key(name),
            # Upstream SQL models and source tables have no I/O manager of their own (their steps write SQL);
            # the pandas I/O manager reads each as `SELECT * FROM <table>` where models live.
            input_manager_key=PANDAS_IO_MANAGER,
        )
        for name in inputs
    }

    @dg.asset(
        key=model_key(model.name),
        group_name=MODELS,
        ins=ins,
        io_manager_key=PANDAS_IO_MANAGER,
        description=model.description or f"Model `{model.name}` ({relative}).",
        owners=model.owners or None,
        kinds={spec.warehouse_kind, "python", "pandas"},
        pool=WAREHOUSE_POOL,
        op_tags=spec.op_tags or None,
        code_version=(file_sha256(model.path) or "")[:16],
        metadata={"file": str(relative), "refresh": spec.refresh.describe()},
    )
    def _model(context: dg.AssetExecutionContext, warehouse: Warehouse, **frames: Any) -> dg.Output:
        import pandas as pd

        try:
            function = load_model_function(model.path, str(relative))
        except PythonModelError as exc:
            raise dg.Failure(description=str(exc)) from exc
        try:
            result = function(**frames)
        except Exception as exc:
            raise dg.Failure(description=f"{relative}: model() raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, pd.DataFrame):
            raise dg.Failure(
                description=f"{relative}: model() must return a pandas DataFrame, it returned {type(result).__name__}"
            )
        columns = [(str(name), sql_type(dtype)) for name, dtype in result.dtypes.items()]
        # Readers downstream (audience snapshots) are told every row may have changed, before the table is
        # replaced: a failure in between makes them redo work, never miss a change. The platform's connection is
        # closed before the I/O manager opens its own, so the two never hold the DuckDB file at once.
        with warehouse.connect() as conn:
            ensure_store(conn, schema)
            journal_everything(conn, schema, model.name, now=utc_now())
            # The I/O manager empties an existing table and inserts into it, by position: a model whose columns
            # changed would fail or land in the wrong columns. Dropped here, the table is created from the
            # DataFrame as it is, as CREATE OR REPLACE does for a SQL model.
            conn.execute(f"DROP TABLE IF EXISTS {ident(model.name)}")
            if result.empty:
                # The pandas I/O managers write no table for an empty DataFrame, and every reader would then fail:
                # an empty table of the DataFrame's columns stands in.
                create_empty_table(conn, model.name, columns)
        return dg.Output(
            result,
            metadata=with_definition_columns(
                context,
                {"dagster/row_count": len(result), "dagster/column_schema": column_schema(columns)},
            ),
            data_version=run_data_version(context),
        )

    return _model


def sql_type(dtype: Any) -> str:
    """The warehouse type (DuckDB dialect) a pandas column is stored as."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMPTZ"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "TIMESTAMP"
    return "VARCHAR"


def create_empty_table(conn: Connection, name: str, columns: list[tuple[str, str]]) -> None:
    """`name` replaced by an empty table of these columns (name, DuckDB type), where models live."""
    body = ", ".join(f"{ident(column)} {type_}" for column, type_ in columns) or f"{ident('_empty')} VARCHAR"
    conn.execute(f"CREATE TABLE {ident(name)} ({body})")

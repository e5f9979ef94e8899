"""The `Warehouse` resource: one interface for every engine, chosen by a URL."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlparse

from .base import Connection, Engine, WarehouseBusy, WarehouseError

if TYPE_CHECKING:
    import dagster as dg

    from .resource import Warehouse

#: Run tag: `host:pid` of the process a run works in. Every step that writes to the warehouse (the `warehouse` pool)
#: opens this resource, so a run that holds a pool slot has it; whoever finds that process gone frees the slot
#: (automation/stale_runs.py). Dagster's run monitor cannot tell for runs its default launcher started.
WORKER_TAG = "composable/worker"


# URL scheme -> (module, engine class) and the URL's documented shape. Each vendor's package is imported only
# when its engine connects, so only the configured warehouse's connector needs to be installed.
ENGINES = {
    "postgresql": ("postgres_engine", "PostgresEngine", "postgresql://user@host:port/database"),
    "postgres": ("postgres_engine", "PostgresEngine", "postgresql://user@host:port/database"),
    "redshift": ("postgres_engine", "RedshiftEngine", "redshift://user@cluster-host:5439/database"),
    "snowflake": (
        "snowflake_engine",
        "SnowflakeEngine",
        "snowflake://user@account/database/schema?warehouse=WH&role=ROLE",
    ),
    "bigquery": ("bigquery_engine", "BigQueryEngine", "bigquery://project/dataset?location=EU"),
    "databricks": (
        "databricks_engine",
        "DatabricksEngine",
        "databricks://workspace-host/catalog/schema?http_path=/sql/1.0/warehouses/ID",
    ),
}


def engine_from_url(url: str, connection: dg.ConfigurableResource | None = None) -> Engine:
    """The engine a warehouse URL names, e.g. `duckdb:///data/warehouse.duckdb`; secrets come from the environment.

    `connection` is the vendor's Dagster resource to connect through (dagster-duckdb's DuckDBResource,
    dagster-snowflake's SnowflakeResource, dagster-gcp's BigQueryResource); without one it is built from the URL.
    """
    parsed = urlparse(url)
    if parsed.scheme == "duckdb":
        from .duckdb_engine import DuckDBEngine

        # As in SQLAlchemy: duckdb:///relative/path, duckdb:////absolute/path, duckdb:///:memory:;
        # query parameters are DuckDB settings, e.g. ?memory_limit=1500MB&threads=2.
        path = url.split("?", 1)[0].removeprefix("duckdb:///") or ":memory:"
        return DuckDBEngine(path, config=dict(parse_qsl(parsed.query)), resource=connection)  # type: ignore[arg-type]
    if parsed.scheme in ENGINES:
        module, name, _ = ENGINES[parsed.scheme]
        engine_class = getattr(import_module(f".{module}", __package__), name)
        if connection is not None:
            return engine_class.from_url(url, connection)
        return engine_class.from_url(url)
    shapes = ["duckdb:///path/to/file.duckdb", *dict.fromkeys(shape for _, _, shape in ENGINES.values())]
    raise WarehouseError(
        f"COMPOSABLE_WAREHOUSE: unsupported warehouse URL scheme {parsed.scheme!r}; expected one of: "
        + ", ".join(shapes)
    )


__all__ = ["Connection", "Engine", "WORKER_TAG", "Warehouse", "WarehouseBusy", "WarehouseError", "engine_from_url"]


def __getattr__(name: str) -> Any:
    # The Dagster resource is imported on first use: the command line's quiet check opens the warehouse through
    # `engine_from_url` without loading dagster (~1.5 s).
    if name == "Warehouse":
        from .resource import Warehouse

        return Warehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The `Warehouse` resource: one interface for every engine, chosen by a URL."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from importlib import import_module
from urllib.parse import parse_qsl, urlparse

import dagster as dg

from ..coordination import this_process
from .base import Connection, Engine, WarehouseBusy, WarehouseError

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


class Warehouse(dg.ConfigurableResource):
    """The customer's warehouse, where models, audiences, deltas and ledgers live.

    `url` (COMPOSABLE_WAREHOUSE) names the engine and where our tables live. `connection` is the vendor's own
    Dagster resource the engine opens its connections with: DuckDBResource, SnowflakeResource or BigQueryResource
    (PostgreSQL, Redshift and Databricks keep their connectors and have none). `Warehouse.from_url` builds it from
    the URL, secrets as `EnvVar`; a deployment may pass its own instead.
    """

    url: str
    connection: dg.ConfigurableResource | None = None

    @classmethod
    def from_url(cls, url: str) -> Warehouse:
        """The warehouse a URL names, with the vendor's resource built from it (shown on the Resources page)."""
        return cls(url=url, connection=getattr(engine_from_url(url), "resource", None))

    @cached_property
    def engine(self) -> Engine:
        return engine_from_url(self.url, self.connection)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.log is not None:
            self.engine.on_wait = context.log.warning  # a long wait for the warehouse shows in the run's log
        run = context.run
        if context.instance is not None and run is not None and run.tags.get(WORKER_TAG) != this_process():
            context.instance.add_run_tags(run.run_id, {WORKER_TAG: this_process()})

    def connect(self) -> AbstractContextManager[Connection]:
        return self.engine.connect()

    @property
    def kind(self) -> str:
        return self.engine.kind


__all__ = ["Connection", "Engine", "WORKER_TAG", "Warehouse", "WarehouseBusy", "WarehouseError", "engine_from_url"]

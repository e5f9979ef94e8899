"""The `Warehouse` resource: one interface for every engine, chosen by a URL."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from urllib.parse import parse_qsl, urlparse

import dagster as dg

from .base import Connection, Engine, WarehouseBusy, WarehouseError


def engine_from_url(url: str) -> Engine:
    """The engine a warehouse URL names, e.g. `duckdb:///data/warehouse.duckdb`."""
    parsed = urlparse(url)
    if parsed.scheme == "duckdb":
        from .duckdb_engine import DuckDBEngine

        # As in SQLAlchemy: duckdb:///relative/path, duckdb:////absolute/path, duckdb:///:memory:;
        # query parameters are DuckDB settings, e.g. ?memory_limit=1500MB&threads=2.
        path = url.split("?", 1)[0].removeprefix("duckdb:///") or ":memory:"
        return DuckDBEngine(path, config=dict(parse_qsl(parsed.query)))
    if parsed.scheme in ("postgresql", "postgres"):
        from .postgres_engine import PostgresEngine

        # postgresql://user@host:port/database; the password only from COMPOSABLE_WAREHOUSE_PASSWORD or PGPASSWORD.
        return PostgresEngine.from_url(url)
    if parsed.scheme == "snowflake":
        from .snowflake_engine import SnowflakeEngine

        # snowflake://user@account/database/schema?warehouse=WH&role=ROLE; the password only from
        # COMPOSABLE_WAREHOUSE_PASSWORD. The connector is imported when the engine connects.
        return SnowflakeEngine.from_url(url)
    raise WarehouseError(
        f"COMPOSABLE_WAREHOUSE: unsupported warehouse URL scheme {parsed.scheme!r}; "
        "expected duckdb:///path/to/file.duckdb, postgresql://user@host:port/database or "
        "snowflake://user@account/database/schema?warehouse=WH&role=ROLE"
    )


class Warehouse(dg.ConfigurableResource):
    """The customer's warehouse, where models, audiences, deltas and ledgers live."""

    url: str

    @cached_property
    def engine(self) -> Engine:
        return engine_from_url(self.url)

    def connect(self) -> AbstractContextManager[Connection]:
        return self.engine.connect()

    @property
    def kind(self) -> str:
        return self.engine.kind


__all__ = ["Connection", "Engine", "Warehouse", "WarehouseBusy", "WarehouseError", "engine_from_url"]

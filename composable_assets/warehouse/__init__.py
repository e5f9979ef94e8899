"""The `Warehouse` resource: one interface for every engine, chosen by a URL."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from urllib.parse import urlparse

import dagster as dg

from .base import Connection, Engine, WarehouseError


def engine_from_url(url: str) -> Engine:
    """The engine a warehouse URL names, e.g. `duckdb:///data/warehouse.duckdb`."""
    scheme = urlparse(url).scheme
    if scheme == "duckdb":
        from .duckdb_engine import DuckDBEngine

        # As in SQLAlchemy: duckdb:///relative/path, duckdb:////absolute/path, duckdb:///:memory:.
        return DuckDBEngine(url.removeprefix("duckdb:///") or ":memory:")
    raise WarehouseError(
        f"COMPOSABLE_WAREHOUSE: unsupported warehouse URL scheme {scheme!r}; expected duckdb:///path/to/file.duckdb"
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


__all__ = ["Connection", "Engine", "Warehouse", "WarehouseError", "engine_from_url"]

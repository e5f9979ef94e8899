"""dagster-duckdb's DuckDBResource for a DuckDB file several processes take turns on (runs, sensors, the CLI)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import duckdb
from dagster_duckdb import DuckDBResource

from .base import WarehouseError
from .duckdb_engine import LOCK_WAIT_SECONDS, open_file


class SharedDuckDBFile(DuckDBResource):
    """dagster-duckdb's DuckDBResource for a file several processes take turns on (runs, sensors, the CLI).

    Same fields and the same raw connection as the resource it extends; only opening differs. The original retries
    a locked file silently for about 100 s and cannot be asked to give up at once; here a long wait says every few
    seconds which process holds the file, a sensor's peek gives up after a second (`WarehouseBusy`), every session
    runs in UTC, and the file is closed however the block ends (`open_file`).
    """

    @contextmanager
    def get_connection(
        self, lock_wait: float = LOCK_WAIT_SECONDS, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        con = open_file(self.database, self.connection_config, lock_wait, on_wait or (lambda message: None))
        try:
            yield con
        finally:
            con.close()


def shared(resource: object) -> SharedDuckDBFile:
    """A deployment's DuckDBResource, opened the shared way (its file and settings kept)."""
    if isinstance(resource, SharedDuckDBFile):
        return resource
    if not isinstance(resource, DuckDBResource):
        raise WarehouseError(f"a DuckDB warehouse connects through a DuckDBResource, not {type(resource).__name__}")
    return SharedDuckDBFile(database=resource.database, connection_config=resource.connection_config)

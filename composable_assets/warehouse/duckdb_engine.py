"""DuckDB, the embedded default warehouse: one file on local disk."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from .base import Connection, Engine, Params, WarehouseError

# A DuckDB file admits one writing process at a time; other processes (a sensor, a second run)
# wait for the lock rather than fail at once. Runs are serialized by the "warehouse" pool, so the
# wait is normally short.
LOCK_WAIT_SECONDS = 120.0


class DuckDBConnection(Connection):
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def execute(self, sql: str, params: Params = None) -> None:
        self._con.execute(sql, params)

    def fetch_all(self, sql: str, params: Params = None) -> list[tuple]:
        return self._con.execute(sql, params).fetchall()

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        return self._con.sql(sql, params=params).to_arrow_table()

    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        # A cursor of its own, so statements run while streaming do not cancel the stream.
        cursor = self._con.cursor()
        try:
            yield from cursor.sql(sql, params=params).to_arrow_reader(batch_rows)
        finally:
            cursor.close()

    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        return self.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = coalesce(?, current_schema()) ORDER BY ordinal_position",
            [table, schema],
        )

    @property
    def raw(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection itself, for the sample generator and tests."""
        return self._con


class DuckDBEngine(Engine):
    dialect = "duckdb"
    kind = "duckdb"

    def __init__(self, path: str, config: dict[str, str] | None = None):
        self.path = path
        #: DuckDB settings for every connection (memory_limit, threads, temp_directory, ...).
        self.config = config or {}

    def describe(self) -> str:
        return f"DuckDB file {self.path}"

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.05
        while True:
            try:
                return duckdb.connect(self.path, config=self.config)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"cannot open {self.describe()}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self) -> Iterator[DuckDBConnection]:
        con = self._open()
        try:
            yield DuckDBConnection(con)
        finally:
            con.close()

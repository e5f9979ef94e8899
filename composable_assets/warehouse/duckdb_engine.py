"""DuckDB, the embedded default warehouse: one file on local disk."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from .base import (
    SESSION_TIME_ZONE,
    Connection,
    Engine,
    Params,
    WarehouseBusy,
    WarehouseError,
    information_schema_columns,
    table_markers,
)
from .sql import table

if TYPE_CHECKING:  # DuckDB imports pyarrow itself when a result is fetched as Arrow
    import pyarrow as pa
    from dagster_duckdb import DuckDBResource

    from .duckdb_resource import SharedDuckDBFile

# A DuckDB file admits one writing process at a time; other processes (a sensor, a second run)
# wait for the lock rather than fail at once. Runs are serialized by the "warehouse" pool, so the
# wait is normally short.
LOCK_WAIT_SECONDS = 120.0
# A change sensor only peeks: if a run holds the file, it skips this tick instead of queueing behind the run.
PEEK_LOCK_WAIT_SECONDS = 1.0
# How often a long wait for the lock says so.
LOCK_REPORT_SECONDS = 5.0
# The schema a connection starts in: models are created there, unqualified.
MODEL_SCHEMA = "main"
# How a bulk write (an audience snapshot, a delta) stores its text columns: cheaper to write than the default.
BULK_COMPRESSION = "zstd"


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

    def tables_columns(self, tables: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], list[str]]:
        return information_schema_columns(self, tables)

    def content_markers(self, tables: Sequence[tuple[str | None, str]]) -> list[str] | None:
        # Row count and the sum of a 64-bit hash of every row (a sum, not an XOR: two equal rows must not cancel
        # out), with the column names and types: one scan per table, ~40 ms per million narrow rows.
        shapes = [self.table_columns(schema, name) for schema, name in tables]
        present = [(schema, name) for (schema, name), shape in zip(tables, shapes) if shape]
        sums = iter(
            self.fetch_row(
                "SELECT "
                + ", ".join(
                    f"(SELECT count(*) || ':' || coalesce(sum(hash(r)::HUGEINT), 0) FROM {table(schema, name)} AS r)"
                    for schema, name in present
                )
            )
            if present
            else ()
        )
        return [f"{next(sums)}:" + ",".join(f"{c} {t}" for c, t in shape) if shape else "absent" for shape in shapes]

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        # DuckDB compresses a big write's rows as it writes them, and its default for text (dictionary + FSST)
        # costs about half the CPU of writing a 1M-member first sync's delta. zstd took 0.7 of the first sync's
        # 2.5 CPU seconds off, for tables ~30-45% larger on disk (docs/performance.md, "The delta step").
        # The setting is the database's, not the session's: set for the block, then put back; a compression a
        # user chose in the warehouse URL is kept.
        (chosen,) = self.fetch_row("SELECT current_setting('force_compression')")
        if chosen != "auto":
            yield
            return
        self._con.execute(f"SET force_compression = '{BULK_COMPRESSION}'")
        try:
            yield
        except BaseException:
            # A transaction the block aborted refuses every statement until it is rolled back: the block's own
            # error is the one to report (callers open the block outside their transaction, so this is rare).
            with suppress(duckdb.Error):
                self._con.execute("SET force_compression = 'auto'")
            raise
        self._con.execute("SET force_compression = 'auto'")

    @property
    def raw(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection itself, for the sample generator and tests."""
        return self._con


def open_file(
    database: str, connection_config: dict, lock_wait: float, on_wait: Callable[[str], None]
) -> duckdb.DuckDBPyConnection:
    """A connection to a DuckDB file several processes take turns on: a long wait for its lock says every few
    seconds which process holds it, a peek (`lock_wait` under LOCK_WAIT_SECONDS) gives up (`WarehouseBusy`), and the
    session runs in UTC."""
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    where = f"DuckDB file {database}"
    started = time.monotonic()
    deadline, report = started + lock_wait, started + LOCK_REPORT_SECONDS
    delay = 0.05
    config = {"custom_user_agent": "dagster", **connection_config}
    while True:
        try:
            con = duckdb.connect(database, config=config)
            break
        except duckdb.IOException as exc:
            locked = "lock" in str(exc).lower()
            if locked and time.monotonic() > deadline and lock_wait < LOCK_WAIT_SECONDS:
                raise WarehouseBusy(f"{where} is in use by another process") from exc
            if not locked or time.monotonic() > deadline:
                raise WarehouseError(f"cannot open {where}: {exc}") from exc
            if time.monotonic() >= report:
                report = time.monotonic() + LOCK_REPORT_SECONDS
                holder = re.search(r"PID (\d+)", str(exc))
                on_wait(
                    f"waiting {time.monotonic() - started:.0f} s for {where}: another process"
                    f"{f' (PID {holder.group(1)})' if holder else ''} has it open (a DuckDB file admits one); "
                    f"giving up in {deadline - time.monotonic():.0f} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        con.execute(f"SET TimeZone = '{SESSION_TIME_ZONE}'")
    except duckdb.Error:
        pass  # no ICU extension: DuckDB then prints timestamps with time zone in UTC anyway
    return con


class DuckDBEngine(Engine):
    dialect = "duckdb"
    kind = "duckdb"

    def __init__(self, path: str, config: dict[str, str] | None = None, resource: DuckDBResource | None = None):
        #: Where connections come from: the file and its DuckDB settings (memory_limit, threads, temp_directory, ...).
        #: A deployment's own DuckDBResource keeps its file and settings, opened the shared way.
        if resource is not None:
            from .duckdb_resource import shared

            resource = shared(resource)
            path, config = resource.database, resource.connection_config
        self._resource = resource
        self.path: str = path
        self.config: dict = config or {}

    @property
    def resource(self) -> SharedDuckDBFile:
        """dagster-duckdb's resource for the file (shown on the Resources page); built on first use, since
        connections open the file directly and the command line's quiet check must not load dagster."""
        if self._resource is None:
            from .duckdb_resource import SharedDuckDBFile

            self._resource = SharedDuckDBFile(database=self.path, connection_config=self.config)
        return self._resource

    def describe(self) -> str:
        return f"DuckDB file {self.path}"

    def pandas_io_manager(self) -> Any:
        """dagster-duckdb-pandas' I/O manager on the same file with the same settings (memory_limit, threads, ...).

        It opens its own connections (it cannot take a resource), with the same configuration as ours, so DuckDB
        shares one database instance between them within a process; a step closes our connection before the I/O
        manager opens its own. `schema` is `main`, where a connection starts and models are created: the I/O manager's
        schema outranks an asset key's prefix (`model/...`), which would otherwise become the schema.
        """
        from dagster_duckdb_pandas import DuckDBPandasIOManager

        return DuckDBPandasIOManager(database=self.path, schema=MODEL_SCHEMA, connection_config=self.config)

    def dbt_output(self) -> dict[str, Any] | None:
        """dbt-duckdb on the same file with the same settings, in the schema models live in.

        `keep_open: false`: dbt-duckdb otherwise keeps the file open in whichever process asked it for metadata, and
        DuckDB admits one process on a file: our own steps (and the next dbt run) would find it locked.
        """
        if self.path == ":memory:":
            return None  # a dbt process cannot share an in-memory database with this one
        output: dict[str, Any] = {
            "type": "duckdb",
            # Absolute: dbt runs in the dbt project's folder, a relative path would name another file.
            "path": str(Path(self.path).absolute()),
            "schema": MODEL_SCHEMA,
            "keep_open": False,
            "threads": 1,
            # A sensor's peek or a command may hold the file for a moment: dbt-duckdb waits 1, 2, 4 ... 32 s for it
            # (~1 min, as our own connections wait) instead of failing the build at once.
            "retries": {"connect_attempts": 7},
        }
        if self.config:
            output["settings"] = dict(self.config)
        return output

    def tables_columns(self, tables: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], list[str]]:
        # Opening a missing file would create it (and its folder): checking a project must not make a warehouse.
        if self.path != ":memory:" and not Path(self.path).exists():
            raise WarehouseError("the file does not exist yet (the first sync or `composable demo` makes it)")
        # A peek, as a sensor's: while a run holds the file, say so at once rather than wait for it.
        with self._connection(PEEK_LOCK_WAIT_SECONDS) as con:
            return DuckDBConnection(con).tables_columns(tables)

    def change_markers(self, tables) -> dict[str, str | None]:
        with self._connection(PEEK_LOCK_WAIT_SECONDS) as con:
            return table_markers(DuckDBConnection(con), tables)

    @contextmanager
    def connect(self) -> Iterator[DuckDBConnection]:
        with self._connection(LOCK_WAIT_SECONDS) as con:
            yield DuckDBConnection(con)

    @contextmanager
    def peek(self) -> Iterator[DuckDBConnection]:
        with self._connection(PEEK_LOCK_WAIT_SECONDS) as con:
            yield DuckDBConnection(con)

    @contextmanager
    def _connection(self, lock_wait: float) -> Iterator[duckdb.DuckDBPyConnection]:
        con = open_file(self.path, self.config, lock_wait, self.on_wait)
        try:
            yield con
        finally:
            con.close()

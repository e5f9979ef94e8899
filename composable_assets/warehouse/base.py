"""The engine-neutral warehouse interface every asset talks to."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import ParseResult, parse_qsl

from .sql import ident

if TYPE_CHECKING:  # pyarrow is imported by what fetches Arrow, not by every command that loads the package
    import pyarrow as pa

Params = Sequence[Any] | None

#: Every session runs in this time zone. The text of a timestamp with time zone feeds the row hash; a session
#: time zone that differed between two runs (a server default, a user setting) would change every hash and
#: resend every member.
SESSION_TIME_ZONE = "UTC"


class WarehouseError(Exception):
    """A statement failed in the warehouse; the message names what we were doing."""


def url_options(
    parsed: ParseResult, product: str, instead: str, secret_parameters: Sequence[str], *, user_is_secret: bool = False
) -> dict[str, str]:
    """The URL's query parameters, once sure it carries no secret: a URL shows up in logs, metadata and errors.

    `instead` tells where the secret belongs (an environment variable), e.g. "set COMPOSABLE_WAREHOUSE_PASSWORD".
    """
    if parsed.password is not None or (user_is_secret and parsed.username is not None):
        what, it = ("credentials", "them") if user_is_secret else ("a password", "it")
        raise WarehouseError(
            f"COMPOSABLE_WAREHOUSE: the {product} URL must not contain {what}; remove {it} from the URL and {instead}"
        )
    options = dict(parse_qsl(parsed.query))
    secrets = sorted(k for k in options if k.lower() in secret_parameters)
    if secrets:
        raise WarehouseError(
            f"COMPOSABLE_WAREHOUSE: the {product} URL must not carry the secret parameter(s) {', '.join(secrets)}; "
            f"{instead}"
        )
    return options


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse right now (DuckDB's one-writer lock); try again shortly."""


class Connection(ABC):
    """One open session with the warehouse. SQL is written in the DuckDB dialect with `?` parameters.

    Engines other than DuckDB render it for themselves (`warehouse.dialect.render`), in this one place.
    """

    #: sqlglot dialect the engine runs; code with a per-engine branch (delta.diff, delta.ledger) reads it.
    dialect: str = "duckdb"
    #: Whether the engine has MERGE (otherwise the ledger is folded by delete-then-insert).
    has_merge: bool = True
    #: Whether CREATE and ALTER take part in a transaction (Snowflake, BigQuery and Databricks commit them alone).
    transactional_ddl: bool = True

    @abstractmethod
    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns nothing we need."""

    @abstractmethod
    def fetch_all(self, sql: str, params: Params = None) -> list[tuple]:
        """Run a query and return every row (for small results only)."""

    @abstractmethod
    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        """Run a query and return the result as one Arrow table (bounded results only)."""

    def fetch_columns(self, sql: str, params: Params = None) -> list[list[Any]]:
        """Run a query and return its result as one Python list per column (bounded results only).

        For code that goes on row by row in Python (the delivery loop): an engine whose driver hands over Python
        rows anyway overrides it, rather than building an Arrow table only to take it apart again.
        """
        return [column.to_pylist() for column in self.fetch_arrow(sql, params).columns]

    @abstractmethod
    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Run a query and yield its result in Arrow record batches, never all of it in memory."""

    @abstractmethod
    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        """(name, type) of each column of a table, or [] when it does not exist."""

    def tables_columns(self, tables: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], list[str]]:
        """Column names of each (schema or None for the current one, table) that exists; absent tables are left out.

        The default asks table by table; engines with an information_schema override it with one query for all
        (`information_schema_columns`), as a project reads tens of source tables.
        """
        found: dict[tuple[str | None, str], list[str]] = {}
        for schema, name in tables:
            columns = self.table_columns(schema, name)
            if columns:
                found[(schema, name)] = [column for column, _ in columns]
        return found

    def table_names(self, schema: str) -> list[str]:
        """The names of the tables and views in `schema`."""
        rows = self.fetch_all(
            "SELECT table_name FROM information_schema.tables WHERE lower(table_schema) = lower(?)", [schema]
        )
        return [name for (name,) in rows]

    def view_definition(self, schema: str, name: str) -> str | None:
        """The SQL text a view selects, or None when `schema.name` is not a view."""
        row = self.fetch_one(
            "SELECT view_definition FROM information_schema.views WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        )
        return None if row is None else (row[0] or "")

    def ensure_index(self, table: str, column: str) -> None:
        """Index `column` of `table` where the engine has secondary indexes; columnar engines prune without one."""
        return None  # the default: nothing to do (not abstract, most engines have no secondary indexes)

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """The block writes a table's worth of rows: stored the way cheapest to write where the engine lets a session choose."""
        yield  # the default: the engine's own storage (a server compresses in the background, out of our time)

    def fetch_one(self, sql: str, params: Params = None) -> tuple | None:
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    def fetch_row(self, sql: str, params: Params = None) -> tuple:
        """The row of a query that always returns one (an aggregate without GROUP BY)."""
        row = self.fetch_one(sql, params)
        if row is None:
            raise WarehouseError(f"no row came back from a query that always returns one: {sql[:120]}")
        return row

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The block's statements as one transaction: committed when it ends, rolled back if it raises.

        Written as the statements each engine already understands (BigQuery and Databricks interpret them in
        `execute`), so every engine gets the same block. Rolled back on any exception, an interrupt included (a
        killed load or archive must leave nothing half-done); a failed ROLLBACK does not hide the block's error.
        A block inside another joins it: both commit together, or neither does.
        """
        if getattr(self, "_in_transaction", False):
            yield
            return
        self.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            try:
                self.execute("ROLLBACK")
            except Exception:  # the connection itself is gone: the server drops the open transaction
                pass
            raise
        self._in_transaction = False
        self.execute("COMMIT")

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """The block runs in one session at a time among those asking for `name`, where the engine can lock.

        Engines without such a lock (DuckDB admits one writing process anyway; Snowflake, BigQuery and Databricks
        have none) run the block as it is: what runs in it must then be safe to run twice at once.
        """
        yield

    def table_exists(self, schema: str | None, table: str) -> bool:
        return bool(self.table_columns(schema, table))

    def content_markers(self, tables: Sequence[tuple[str | None, str]]) -> list[str] | None:
        """Per (schema, table), a short text that changes whenever the table's rows or columns do ("absent": no
        such table); None when this engine cannot tell exactly and cheaply, and then nothing is skipped as
        unchanged (delta/quiet.py). A last-modified time is not enough where a rewrite with the same rows moves it
        and nothing else, so the default is None."""
        return None


def information_schema_columns(
    conn: Connection, tables: Sequence[tuple[str | None, str]]
) -> dict[tuple[str | None, str], list[str]]:
    """`Connection.tables_columns` in one information_schema query: every table's columns by name, matched here.

    Names compare case-insensitively, as unquoted names do in DuckDB and PostgreSQL (the only engines that use it);
    None as the schema is the session's current schema, read in the same query.
    """
    if not tables:
        return {}
    names = sorted({name.lower() for _, name in tables})
    rows = conn.fetch_all(
        "SELECT table_schema, table_name, column_name, current_schema() FROM information_schema.columns "
        f"WHERE lower(table_name) IN ({', '.join(['?'] * len(names))}) "
        "ORDER BY table_schema, table_name, ordinal_position",
        names,
    )
    by_table: dict[tuple[str, str], list[str]] = {}
    current = ""
    for schema, name, column, current_schema in rows:
        by_table.setdefault((schema.lower(), name.lower()), []).append(column)
        current = current_schema.lower()
    found: dict[tuple[str | None, str], list[str]] = {}
    for schema, name in tables:
        columns = by_table.get(((schema or current).lower(), name.lower()))
        if columns:
            found[(schema, name)] = columns
    return found


def require_duckdb(conn: Connection, feature: str) -> None:
    """Refuse, with a clear message, a feature built only for DuckDB so far."""
    if conn.dialect != "duckdb":
        raise WarehouseError(
            f"{feature} runs only on a DuckDB warehouse for now; this warehouse is {conn.dialect} "
            "(see docs/configuration.md, Warehouses)"
        )


# Dialects whose driver binds a Python list as one typed array (DuckDB natively, psycopg2 as ARRAY[...]).
LIST_BINDING_DIALECTS = ("duckdb", "postgres")
# Rows per multi-row VALUES statement elsewhere: full chunks repeat one statement text (rendered once, cached), and
# no statement carries more bound values than a driver takes comfortably.
INSERT_CHUNK_ROWS = 500


def insert_rows(conn: Connection, table: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """Append rows (values in `columns` order, columns: name -> SQL type) to `table` in as few statements as possible."""
    if not rows:
        return
    names = ", ".join(ident(name) for name in columns)
    if conn.dialect in LIST_BINDING_DIALECTS:
        # One statement however many rows: each column bound as one typed list, the lists unnested side by side.
        select = ", ".join(f"unnest(CAST(? AS {type_}[]))" for type_ in columns.values())
        conn.execute(f"INSERT INTO {table} ({names}) SELECT {select}", [list(values) for values in zip(*rows)])
        return
    # The Snowflake connector binds scalars only: multi-row VALUES, a chunk at a time.
    row = "(" + ", ".join(["?"] * len(columns)) + ")"
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        conn.execute(
            f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * len(chunk))}", [v for r in chunk for v in r]
        )


class DbApiConnection(Connection):
    """A Connection over a DB-API driver (psycopg, the Snowflake connector): subclasses say how a statement runs."""

    def __init__(self, con: Any):
        self._con = con

    @abstractmethod
    def _run(self, cursor: Any, sql: str, params: Params) -> None:
        """Render `sql` (DuckDB dialect, `?` parameters) for this engine and execute it on `cursor`."""

    def execute(self, sql: str, params: Params = None) -> None:
        with self._con.cursor() as cur:
            self._run(cur, sql, params)

    def fetch_all(self, sql: str, params: Params = None) -> list[tuple]:
        with self._con.cursor() as cur:
            self._run(cur, sql, params)
            return [tuple(r) for r in cur.fetchall()]

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        with self._con.cursor() as cur:
            self._run(cur, sql, params)
            return rows_to_arrow(column_names(cur), cur.fetchall())


def column_names(cursor: Any) -> list[str]:
    return [d[0] for d in cursor.description]


def rows_to_arrow(names: list[str], rows: list[tuple]) -> pa.Table:
    """Rows fetched through a DB-API cursor as an Arrow table (column types inferred from the values)."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [()] * len(names)
    return pa.table({name: pa.array(list(values)) for name, values in zip(names, columns)})


class Engine(ABC):
    """A warehouse product: how to connect, which SQL dialect, which Dagster kind."""

    #: sqlglot dialect name of the SQL this engine runs.
    dialect: str
    #: Dagster kind shown as an icon in the UI.
    kind: str
    #: Told, every few seconds, what a connection is waiting for (e.g. DuckDB's file lock); the Warehouse resource
    #: points it at the run's log. Outside a run: a warning on the standard `logging` (stderr by default).
    on_wait: Callable[[str], None] = staticmethod(logging.getLogger("composable_assets.warehouse").warning)

    @abstractmethod
    def connect(self) -> AbstractContextManager[Connection]:
        """Open a short-lived connection (closed on exit, committed unless an error escaped)."""

    def peek(self) -> AbstractContextManager[Connection]:
        """A connection for a quick look that gives up at once (WarehouseBusy) where another process holds the
        warehouse (a DuckDB file) instead of waiting for it; elsewhere the same as `connect`."""
        return self.connect()

    @abstractmethod
    def describe(self) -> str:
        """Where this warehouse is, for humans, without any secret."""

    def tables_columns(self, tables: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], list[str]]:
        """`Connection.tables_columns` on a connection of its own (`composable validate`, `composable lineage`)."""
        with self.connect() as conn:
            return conn.tables_columns(tables)

    def pandas_io_manager(self) -> Any:
        """Dagster's pandas I/O manager for this engine, storing DataFrames where models live (Python models).

        None where Dagster has none (PostgreSQL, Redshift, Databricks): a project with Python models is then refused
        when its definitions load.
        """
        return None

    def dbt_output(self) -> dict[str, Any] | None:
        """A dbt profile output (profiles.yml) on this very warehouse, for a project's dbt models (project/dbt.py).

        Secrets appear only as dbt's `{{ env_var('NAME') }}`, read by dbt when it runs: the generated file holds
        none. None where no dbt adapter is tested here: the project then brings its own profiles.yml.
        """
        return None

    def change_markers(self, tables: Sequence[str]) -> dict[str, str | None]:
        """Per table, a short text that changes when the table's data does (None: the table is missing).

        The portable default is the row count plus the newest `updated_at`; engines with a cheaper marker
        (a table's last-modified time) override it.
        """
        with self.connect() as conn:
            return table_markers(conn, tables)


def table_markers(conn: Connection, tables: Sequence[str]) -> dict[str, str | None]:
    """Row count and newest `updated_at` per table: one cheap aggregate each, on any engine."""
    markers: dict[str, str | None] = {}
    for name in tables:
        columns = dict(conn.table_columns(None, name))
        if not columns:
            markers[name] = None
            continue
        newest = "max(updated_at)" if "updated_at" in columns else "NULL"
        rows, last = conn.fetch_row(f"SELECT count(*), {newest} FROM {ident(name)}")
        markers[name] = f"{rows}:{last}"
    return markers

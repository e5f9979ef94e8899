"""PostgreSQL (15 or newer for MERGE; older servers fold acks by delete-then-insert), or Amazon Redshift, as the warehouse.

Selected by `COMPOSABLE_WAREHOUSE=postgresql://user@host:port/database`. The password is never part of the URL:
it comes from `COMPOSABLE_WAREHOUSE_PASSWORD` (or libpq's `PGPASSWORD`), so it cannot end up in logs, run
metadata or error messages, which all show the URL. The driver (psycopg2) is imported only when this engine is
used. SQL arrives in the DuckDB dialect with `?` parameters and is rendered by `dialect.render`.

Redshift (`redshift://user@cluster-host:5439/database`) speaks PostgreSQL's wire protocol, so it shares this
driver and connection; only the SQL it is sent differs (rendered for the `redshift` dialect).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa

from .base import (
    SESSION_TIME_ZONE,
    DbApiConnection,
    Engine,
    Params,
    WarehouseError,
    column_names,
    information_schema_columns,
    rows_to_arrow,
    url_options,
)
from .dialect import render
from .sql import ident

PASSWORD_SETTINGS = ("COMPOSABLE_WAREHOUSE_PASSWORD", "PGPASSWORD")
CONNECT_TIMEOUT_SECONDS = 10
# Built-in type OIDs of json and jsonb, and of their arrays (fixed in PostgreSQL's catalog).
JSON_OIDS = (114, 3802)
JSON_ARRAY_OIDS = (199, 3807)


def _driver():
    try:
        import psycopg2
        import psycopg2.extras
    except ImportError as exc:  # pragma: no cover - psycopg2-binary is a dependency
        raise WarehouseError(
            "COMPOSABLE_WAREHOUSE names a PostgreSQL warehouse but the driver is missing: pip install psycopg2-binary"
        ) from exc
    return psycopg2


class PostgresConnection(DbApiConnection):
    dialect = "postgres"

    def __init__(self, con: Any, *, server_version: int):
        super().__init__(con)
        self.server_version = server_version

    # Read when asked, from the version the server reported (a test poses as PostgreSQL 14 by changing it).
    @property
    def has_merge(self) -> bool:  # type: ignore[override]  # the base's plain attribute, computed here
        return self.server_version >= 150000

    def fetch_columns(self, sql: str, params: Params = None) -> list[list[Any]]:
        # psycopg2 has built Python values already: transposed as they are, not through an Arrow table.
        with self._con.cursor() as cur:
            self._run(cur, sql, params)
            rows = cur.fetchall()
            return [list(column) for column in zip(*rows)] if rows else [[] for _ in column_names(cur)]

    def _run(self, cursor, sql: str, params: Params) -> None:
        if params:
            cursor.execute(render(sql, self.dialect), list(params))
        else:
            cursor.execute(render(sql, self.dialect, placeholder="?"))

    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        # A server-side cursor: the server keeps the result, we fetch batch_rows at a time. WITH HOLD, so it
        # lives outside a transaction block (the connection autocommits) and survives statements run meanwhile.
        cur = self._con.cursor(name=f"composable_stream_{id(self)}_{os.getpid()}", withhold=True)
        try:
            self._run(cur, sql, params)
            names: list[str] | None = None
            while True:
                rows = cur.fetchmany(batch_rows)
                if names is None:
                    names = column_names(cur)
                if not rows:
                    break
                yield from rows_to_arrow(names, rows).to_batches()
        finally:
            cur.close()

    def ensure_index(self, table: str, column: str) -> None:
        # Without it a range lookup scans the whole table: a delta page read by `_seq` range, and the ack fold's
        # join on `_seq BETWEEN first_seq AND last_seq`, which became a nested loop over acks x rows (115 s to
        # fold a 1M-row sync). The name is a digest: PostgreSQL cuts names at 63 bytes, and two cut names could
        # collide and make IF NOT EXISTS skip an index.
        name = "composable_" + hashlib.md5(f"{table}.{column}".encode()).hexdigest()[:20]
        self.execute(f"CREATE INDEX IF NOT EXISTS {ident(name)} ON {table} ({ident(column)})")

    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        return self.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = coalesce(?, current_schema()) ORDER BY ordinal_position",
            [table, schema],
        )

    def tables_columns(self, tables: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], list[str]]:
        return information_schema_columns(self, tables)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        # A session-level advisory lock: held across the block's own transactions, released however it ends.
        self.execute("SELECT pg_advisory_lock(hashtext(?))", [name])
        try:
            yield
        finally:
            self.execute("SELECT pg_advisory_unlock(hashtext(?))", [name])


class RedshiftConnection(PostgresConnection):
    dialect = "redshift"
    # Redshift has had MERGE since 2023; its server_version (8.0.2) says nothing about that.
    has_merge = True

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        yield  # Redshift has no advisory locks

    def ensure_index(self, table: str, column: str) -> None:
        """Redshift has no secondary indexes (its sort keys are set when a table is created)."""


class PostgresEngine(Engine):
    dialect = "postgres"
    kind = "postgres"
    product = "PostgreSQL"
    default_port = 5432
    url_shape = "postgresql://user@host:port/database"
    connection_class = PostgresConnection

    def __init__(self, *, host: str, port: int, database: str, user: str, options: dict[str, str] | None = None):
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        #: libpq connection parameters from the URL's query (sslmode, application_name, ...), never a password.
        self.options = options or {}
        self._server_version: int | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresEngine:
        parsed = urlparse(url)
        options = url_options(
            parsed, cls.product, "set COMPOSABLE_WAREHOUSE_PASSWORD (or PGPASSWORD) instead", ("password",)
        )
        database = unquote(parsed.path.lstrip("/"))
        if not database:
            raise WarehouseError(
                f"COMPOSABLE_WAREHOUSE: the {cls.product} URL names no database; expected {cls.url_shape}"
            )
        try:
            port = parsed.port or cls.default_port
        except ValueError as exc:
            raise WarehouseError(f"COMPOSABLE_WAREHOUSE: the {cls.product} port is not a number") from exc
        return cls(
            host=parsed.hostname or "localhost",
            port=port,
            database=database,
            user=unquote(parsed.username or "") or os.environ.get("PGUSER", "") or "postgres",
            options=options,
        )

    def describe(self) -> str:
        return f"{self.product} database {self.database!r} on {self.host}:{self.port} as user {self.user!r}"

    def dbt_output(self) -> dict[str, Any] | None:
        """dbt-postgres on the same database as the same user, in `public` (where unqualified models are created).

        The password is dbt's `env_var` of the variables this engine reads, so it is never written down.
        """
        output: dict[str, Any] = {
            "type": "postgres",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": '{{ env_var("COMPOSABLE_WAREHOUSE_PASSWORD", env_var("PGPASSWORD", "")) }}',
            "dbname": self.database,
            "schema": "public",
            "threads": 4,
        }
        # libpq settings of the URL dbt-postgres also takes (the rest, e.g. application_name, stay ours).
        output.update({k: v for k, v in self.options.items() if k in ("sslmode", "sslcert", "sslkey", "sslrootcert")})
        return output

    def _password(self) -> str | None:
        for name in PASSWORD_SETTINGS:
            if os.environ.get(name):
                return os.environ[name]
        return None

    def _open(self):
        psycopg2 = _driver()
        password = self._password()
        try:
            con = psycopg2.connect(
                host=self.host,
                port=self.port,
                dbname=self.database,
                user=self.user,
                password=password,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                **{
                    **self.options,
                    "options": f"{self.options.get('options', '')} -c TimeZone={SESSION_TIME_ZONE}".strip(),
                },
            )
        except psycopg2.Error as exc:
            raise WarehouseError(_connect_error(self, str(exc), password)) from None
        con.autocommit = True  # statements commit one by one, as in DuckDB; BEGIN ... COMMIT groups them
        # JSON columns come back as their text, as from DuckDB (delivery decodes them itself): the driver's own text
        # typecaster, in C, rather than a Python function called for every value (two a delivered row).
        json_text = psycopg2.extensions.new_type(JSON_OIDS, "JSON_AS_TEXT", psycopg2.STRING)
        psycopg2.extensions.register_type(json_text, con)
        psycopg2.extensions.register_type(
            psycopg2.extensions.new_array_type(JSON_ARRAY_OIDS, "JSON_AS_TEXT[]", json_text), con
        )
        return con

    @contextmanager
    def connect(self) -> Iterator[PostgresConnection]:
        con = self._open()
        try:
            if self._server_version is None:
                self._server_version = con.server_version
            yield self.connection_class(con, server_version=self._server_version)
        finally:
            con.close()


def _connect_error(engine: PostgresEngine, detail: str, password: str | None) -> str:
    """Which setting is likely wrong, and the driver's own words, without the password."""
    if password:
        detail = detail.replace(password, "***")
    text = detail.lower()
    if "could not translate host name" in text or "name or service not known" in text:
        setting = f"the host {engine.host!r} in COMPOSABLE_WAREHOUSE cannot be resolved"
    elif "connection refused" in text or "timeout expired" in text or "no route to host" in text:
        setting = f"nothing answers at {engine.host}:{engine.port} (host or port in COMPOSABLE_WAREHOUSE)"
    elif "database" in text and "does not exist" in text:
        setting = f"the database {engine.database!r} in COMPOSABLE_WAREHOUSE does not exist"
    elif "password authentication failed" in text or "no password supplied" in text:
        setting = (
            f"user {engine.user!r} (COMPOSABLE_WAREHOUSE) was refused: check the user and "
            "COMPOSABLE_WAREHOUSE_PASSWORD / PGPASSWORD"
        )
    elif "role" in text and "does not exist" in text:
        setting = f"the user {engine.user!r} in COMPOSABLE_WAREHOUSE does not exist"
    else:
        setting = f"cannot connect to {engine.describe()} (COMPOSABLE_WAREHOUSE)"
    return f"{engine.product} warehouse: {setting}. Driver said: {detail.strip()}"


class RedshiftEngine(PostgresEngine):
    dialect = "redshift"
    kind = "redshift"
    product = "Redshift"
    default_port = 5439
    url_shape = "redshift://user@cluster-host:5439/database"
    connection_class = RedshiftConnection

    def dbt_output(self) -> dict[str, Any] | None:
        return None  # dbt-redshift is not installed or tested here: bring a profiles.yml (docs/project-folder.md)

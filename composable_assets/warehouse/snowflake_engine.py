"""Snowflake as the warehouse, through the official `snowflake-connector-python` (pip install composable_assets[snowflake]).

Selected by `COMPOSABLE_WAREHOUSE=snowflake://user@account/database/schema?warehouse=WH&role=ROLE`. The password is
never part of the URL: it comes from `COMPOSABLE_WAREHOUSE_PASSWORD`, so it cannot end up in logs, run metadata or
error messages, which all show the URL. Other query parameters are passed to the connector (e.g.
`authenticator=externalbrowser`, `private_key_file=/path/key.p8`); secrets among them are refused. The connector
is imported only when this engine is used. SQL arrives in the DuckDB dialect with `?` parameters and is rendered by
`dialect.render` (every identifier quoted, so names keep their case as in DuckDB); values are bound by the
connector's qmark paramstyle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import cached_property
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
    rows_to_arrow,
    table_markers,
    url_options,
)
from .dialect import render

PASSWORD_SETTING = "COMPOSABLE_WAREHOUSE_PASSWORD"
LOGIN_TIMEOUT_SECONDS = 30
# Our SQL binds `?` parameters, and statements commit one by one as in DuckDB (BEGIN ... COMMIT groups them).
CONNECTION_SETTINGS: dict[str, Any] = {
    "paramstyle": "qmark",
    "autocommit": True,
    "login_timeout": LOGIN_TIMEOUT_SECONDS,
}
# Pinned per session, so the text of a timestamp (which feeds the row hash) never follows an account default:
# UTC, and fractional seconds to the nanosecond (Snowflake's default output format stops at milliseconds).
SESSION_PARAMETERS = {
    "TIMEZONE": SESSION_TIME_ZONE,
    "TIMESTAMP_NTZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9",
    "TIMESTAMP_LTZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9 TZH:TZM",
    "TIMESTAMP_TZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9 TZH:TZM",
}
# Query parameters that would put a secret into the URL (and so into logs): refused.
SECRET_PARAMETERS = ("password", "passcode", "token", "private_key", "private_key_file_pwd", "oauth_client_secret")


def _connector():
    try:
        import snowflake.connector
    except ImportError as exc:
        raise WarehouseError(
            "COMPOSABLE_WAREHOUSE names a Snowflake warehouse but the connector is missing: "
            "pip install 'composable_assets[snowflake]'"
        ) from exc
    return snowflake.connector


class SnowflakeConnection(DbApiConnection):
    dialect = "snowflake"
    # Snowflake has MERGE, but acks are folded by delete-then-insert (same ledger, one transaction): fakesnow
    # emulates MERGE through a temporary table it cannot create inside BEGIN ... COMMIT, and the fold that runs
    # here is the one the tests run (see docs/configuration.md, Warehouses).
    has_merge = False
    transactional_ddl = False

    def __init__(self, con: Any):
        super().__init__(con)
        self._home: tuple[str, str] | None = None

    def _run(self, cursor, sql: str, params: Params) -> None:
        creates_schema = sql.lstrip()[:13].upper() == "CREATE SCHEMA"
        if creates_schema and self._home is None:
            self._home = cursor.execute("SELECT current_database(), current_schema()").fetchone()
        cursor.execute(render(sql, "snowflake", placeholder="?"), list(params) if params else None)
        if creates_schema and self._home and all(self._home):
            # Snowflake makes a schema it creates the session's current schema; unqualified names (the models,
            # the source tables) must keep resolving in the schema of the URL, as on the other engines.
            database, schema = (name.replace('"', '""') for name in self._home)
            cursor.execute(f'USE SCHEMA "{database}"."{schema}"')

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        with self._con.cursor() as cur:
            self._run(cur, sql, params)
            if not hasattr(cur, "fetch_arrow_all"):  # fakesnow's in-process cursor: rows only
                return rows_to_arrow(column_names(cur), cur.fetchall())
            return _microseconds(cur.fetch_arrow_all(force_return_table=True))

    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        # A cursor of its own. The connector downloads the result's Arrow chunks as they are asked for, so
        # nothing is converted row by row; where it cannot (fakesnow in-process), rows are fetched in batches.
        cur = self._con.cursor()
        try:
            self._run(cur, sql, params)
            if hasattr(cur, "fetch_arrow_batches"):
                for table in cur.fetch_arrow_batches():
                    yield from _microseconds(table).to_batches(max_chunksize=batch_rows)
                return
            names = column_names(cur)
            while True:
                rows = cur.fetchmany(batch_rows)
                if not rows:
                    break
                yield from rows_to_arrow(names, rows).to_batches()
        finally:
            cur.close()

    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        # Names are stored as written (our SQL quotes every identifier), so they are compared as given.
        return self.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = coalesce(?, current_schema()) ORDER BY ordinal_position",
            [table, schema],
        )


def _microseconds(table: pa.Table) -> pa.Table:
    """Timestamps at microseconds, as every other engine returns them (the connector's Arrow uses nanoseconds)."""
    fields = [
        pa.field(f.name, pa.timestamp("us", tz=f.type.tz))
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields)) if fields != list(table.schema) else table


class SnowflakeEngine(Engine):
    dialect = "snowflake"
    kind = "snowflake"

    def __init__(self, resource: Any = None, missing: str | None = None):
        #: dagster-snowflake's SnowflakeResource: connections come from its `get_connection`. None when the
        #: environment holds no credentials yet: `missing` says so when a connection is asked for.
        self.resource = resource
        self.missing = missing

    @property
    def _settings(self) -> Any:
        if self.resource is None:
            raise WarehouseError(self.missing or "Snowflake warehouse: no connection")
        return self.resource

    @classmethod
    def from_url(cls, url: str, resource: Any = None) -> SnowflakeEngine:
        """The engine for a URL; its SnowflakeResource built from the URL unless a deployment gives its own."""
        if resource is not None:
            return cls(_checked(resource))
        parsed = urlparse(url)
        options = url_options(
            parsed,
            "Snowflake",
            f"set {PASSWORD_SETTING} for a password (or use private_key_file / authenticator) instead",
            SECRET_PARAMETERS,
        )
        parts = [unquote(p) for p in parsed.path.strip("/").split("/") if p]
        account = unquote(parsed.hostname or "")
        user = unquote(parsed.username or "")
        if not account or not user or len(parts) != 2:
            raise WarehouseError(
                "COMPOSABLE_WAREHOUSE: expected snowflake://user@account/database/schema?warehouse=WH&role=ROLE"
            )
        if (
            not os.environ.get(PASSWORD_SETTING)
            and "private_key_file" not in options
            and "authenticator" not in options
        ):
            # Told at the first connection, not when the definitions load: validating a project needs no warehouse.
            return cls(
                missing=(
                    f"Snowflake warehouse: no credentials for user {user!r}: set {PASSWORD_SETTING}, or name "
                    "private_key_file or authenticator in COMPOSABLE_WAREHOUSE"
                )
            )
        return cls(_resource(account, user, parts[0], parts[1], options))

    @cached_property
    def _initialized(self) -> Any:
        # The EnvVar resolved as Dagster does for a run, also outside one (the CLI, sensors), once per engine; the
        # resource kept in the definitions (and shown on the Resources page) still holds only the variable's name.
        return self._settings.process_config_and_initialize()

    @property
    def account(self) -> str:
        return self._settings.account

    @property
    def user(self) -> str:
        return self._settings.user or ""

    @property
    def database(self) -> str:
        return self._settings.database or ""

    @property
    def schema(self) -> str:
        return self._settings.schema_ or ""

    @property
    def options(self) -> dict[str, str | None]:
        return {"warehouse": self._settings.warehouse, "role": self._settings.role}

    def change_markers(self, tables: Sequence[str]) -> dict[str, str | None]:
        """The portable marker plus each table's LAST_ALTERED, which any DML moves, even without `updated_at`.

        Snowflake answers count(*) and max(updated_at) from micro-partition metadata, so none of this scans a table.
        """
        with self.connect() as conn:
            markers = table_markers(conn, tables)
            present = [name for name, marker in markers.items() if marker is not None]
            if present:
                altered = dict(
                    conn.fetch_all(
                        "SELECT table_name, CAST(last_altered AS VARCHAR) FROM information_schema.tables "
                        f"WHERE table_schema = current_schema() AND table_name IN ({', '.join(['?'] * len(present))})",
                        present,
                    )
                )
                for name in present:
                    markers[name] = f"{markers[name]}:{altered.get(name)}"
        return markers

    def describe(self) -> str:
        if self.resource is None:
            return "Snowflake (no credentials yet)"
        return f"Snowflake database {self.database}.{self.schema} in account {self.account!r} as user {self.user!r}"

    @contextmanager
    def connect(self) -> Iterator[SnowflakeConnection]:
        connector = _connector()
        resource = self._initialized
        with ExitStack() as stack:
            try:
                con = stack.enter_context(resource.get_connection(raw_conn=True))
            except connector.Error as exc:
                raise WarehouseError(_connect_error(self, str(exc), os.environ.get(PASSWORD_SETTING))) from None
            stack.callback(con.close)  # also when the block raises: the resource closes only after success
            yield SnowflakeConnection(con)


def _resource(account: str, user: str, database: str, schema: str, options: dict[str, str]) -> Any:
    """dagster-snowflake's SnowflakeResource for a URL: the password as an EnvVar, never a value in the config."""
    from dagster import EnvVar
    from dagster_snowflake import SnowflakeResource

    options = dict(options)
    fields: dict[str, Any] = {
        name: options.pop(name) for name in ("warehouse", "role", "authenticator") if name in options
    }
    if "private_key_file" in options:
        fields["private_key_path"] = options.pop("private_key_file")
    if os.environ.get(PASSWORD_SETTING):
        fields["password"] = EnvVar(PASSWORD_SETTING)
    return SnowflakeResource(
        account=account,
        user=user,
        database=database,
        schema=schema,
        **fields,
        **CONNECTION_SETTINGS,
        # Everything else in the URL (host, port, protocol, ...) goes to the connector as written.
        additional_snowflake_connection_args={"session_parameters": SESSION_PARAMETERS, **options},
    )


def _checked(resource: Any) -> Any:
    """A deployment's own SnowflakeResource, refused with the reason when it lacks what our SQL relies on."""
    from dagster_snowflake import SnowflakeResource

    if not isinstance(resource, SnowflakeResource):
        raise WarehouseError(
            f"a Snowflake warehouse connects through a SnowflakeResource, not {type(resource).__name__}"
        )
    # What our SQL needs of any connection; the login timeout is only our default, a deployment may choose its own.
    needed = {name: CONNECTION_SETTINGS[name] for name in ("paramstyle", "autocommit")}
    wrong = [f"{name}={value!r}" for name, value in needed.items() if getattr(resource, name) != value]
    session = (resource.additional_snowflake_connection_args or {}).get("session_parameters") or {}
    if any(session.get(name) != value for name, value in SESSION_PARAMETERS.items()):
        wrong.append("additional_snowflake_connection_args={'session_parameters': SESSION_PARAMETERS}")
    if wrong:
        raise WarehouseError(
            "the SnowflakeResource given as the warehouse's connection needs "
            + ", ".join(wrong)
            + " (statements use ? parameters, commit one by one, and hash timestamps as UTC text)"
        )
    return resource


def _connect_error(engine: SnowflakeEngine, detail: str, password: str | None) -> str:
    """Which setting is likely wrong, and the connector's own words, without the password."""
    if password:
        detail = detail.replace(password, "***")
    text = detail.lower()
    if "incorrect username or password" in text or "authentication" in text or "password is empty" in text:
        setting = f"user {engine.user!r} (COMPOSABLE_WAREHOUSE) was refused: check the user and {PASSWORD_SETTING}"
    elif "could not connect" in text or "failed to connect" in text or "name or service not known" in text:
        setting = f"the account {engine.account!r} in COMPOSABLE_WAREHOUSE cannot be reached"
    elif "database" in text and ("does not exist" in text or "not authorized" in text):
        setting = f"the database {engine.database!r} in COMPOSABLE_WAREHOUSE does not exist or is not authorized"
    elif "warehouse" in text:
        setting = f"the warehouse {engine.options.get('warehouse')!r} in COMPOSABLE_WAREHOUSE cannot be used"
    elif "role" in text:
        setting = f"the role {engine.options.get('role')!r} in COMPOSABLE_WAREHOUSE cannot be used"
    else:
        setting = f"cannot connect to {engine.describe()} (COMPOSABLE_WAREHOUSE)"
    return f"Snowflake warehouse: {setting}. Connector said: {detail.strip()}"

"""Databricks SQL as the warehouse, through the official `databricks-sql-connector` (pip install composable_assets[databricks]).

Selected by `COMPOSABLE_WAREHOUSE=databricks://workspace-host/catalog/schema?http_path=/sql/1.0/warehouses/ID`
(Unity Catalog: `information_schema` lists the columns). The personal access token is never part of the URL: it
comes from `COMPOSABLE_WAREHOUSE_PASSWORD`, as for the other engines, or else `DATABRICKS_TOKEN`, the variable
Databricks' own tools read; so it cannot end up in logs, run metadata or error messages, which all show the URL.
The connector is imported only when this engine connects. SQL arrives in the DuckDB dialect with `?` parameters,
is rendered by `dialect.render`, and values are bound by the connector's native parameters (`?` markers sent
apart from the statement, never formatted into it; a naive datetime as TIMESTAMP_NTZ). Results come as Arrow
from the connector itself. Every session is set to UTC first, as on the other engines, so a workspace's default
time zone never changes a row hash.

Transactions. A Databricks SQL warehouse commits each statement on its own (one atomic Delta commit per
statement); `BEGIN TRANSACTION`, `COMMIT` and `ROLLBACK` render as nothing (`dialects/databricks.py`). What
the flow's three transaction blocks lose, and why recovery still holds:

- delta (`delta.diff.compute_delta`): the INSERT of the run's rows and the INSERT into `delta_runs` are two
  commits. A crash or error between them leaves rows above the previous `max(_seq)` that no run records: they
  are never read (a sync reads only the seq range of a recorded run), the next delta starts its sequence after
  them, and the failed step is simply run again. Storage is the only cost.
- ledger fold (`delta.ledger.fold_acks`): MERGE into the ledger, then UPDATE of the acks to `folded`. A crash
  between them leaves acks not marked folded; the next fold merges them again, which is idempotent (same rows,
  same values; a removed key is not matched again; the newest seq per key still wins). One case is not
  covered: an ack appended by another process between the MERGE and the UPDATE would be marked folded without
  being merged. Syncs of a pair never overlap, so no one appends then; if one did, the row would be resent
  (the ledger does not hold it), never lost.
- audience snapshot swap (`delta.snapshot.build_snapshot`: DROP TABLE IF EXISTS t, ALTER TABLE s RENAME TO t in
  one block): nothing lost. The connection holds the DROP back and runs the pair as `CREATE OR REPLACE TABLE t
  AS SELECT * FROM s` (one Delta commit: readers see the old snapshot or the new one) and then `DROP TABLE s`
  (a crash before it leaves the staging table, which the next build replaces). It costs one copy of the
  snapshot where a rename would have been free. A DROP followed by anything else runs as it came.

Checkpoints (acks, intents, failures) are single INSERT/DELETE statements, atomic on their own as everywhere.
Delta's optimistic concurrency adds one failure mode: two pairs writing the shared logs (`sync_acks`,
`sync_inflight`) at the same moment can make one statement fail with a concurrent-modification error (row-level
concurrency, on by default for tables with deletion vectors, avoids most); the step then fails, and what it
left is recovered as after a crash.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import sqlglot
from sqlglot import exp

from .base import DbApiConnection, Engine, Params, WarehouseError, table_markers, url_options
from .dialect import render

# The project's variable first (as for PostgreSQL and Snowflake), then the one Databricks' CLI and SDK read.
TOKEN_SETTINGS = ("COMPOSABLE_WAREHOUSE_PASSWORD", "DATABRICKS_TOKEN")
# Passed to every connect(). The connector retries a warehouse that is still starting (up to 15 minutes by
# default), which is what a scheduled run wants.
CONNECT_OPTIONS: dict[str, Any] = {"_socket_timeout": 60, "user_agent_entry": "composable_assets"}
# Query parameters that would put a secret into the URL (and so into logs): refused.
SECRET_PARAMETERS = ("access_token", "token", "password", "client_secret", "oauth_client_secret")
URL_SHAPE = "databricks://workspace-host/catalog/schema?http_path=/sql/1.0/warehouses/ID"


def _connector():
    try:
        from databricks import sql
    except ImportError as exc:
        raise WarehouseError(
            "COMPOSABLE_WAREHOUSE names a Databricks warehouse but the connector is missing: "
            "pip install 'composable_assets[databricks]'"
        ) from exc
    return sql


def _bind(params: Params) -> list[Any] | None:
    """Parameters as the connector binds them: a naive datetime is TIMESTAMP_NTZ, as DuckDB's TIMESTAMP is.

    Without this the connector sends it as TIMESTAMP, read in the session's time zone.
    """
    if not params:
        return None
    from databricks.sql.parameters import TimestampNTZParameter

    return [TimestampNTZParameter(value=v) if isinstance(v, dt.datetime) and v.tzinfo is None else v for v in params]


class DatabricksConnection(DbApiConnection):
    dialect = "databricks"
    has_merge = True
    transactional_ddl = False

    def __init__(self, con: Any):
        super().__init__(con)
        # Between BEGIN and COMMIT/ROLLBACK (sent as nothing): only the snapshot swap uses the block (see below).
        self._in_block = False
        self._held_drop: exp.Drop | None = None

    def _run(self, cursor, sql: str, params: Params) -> None:
        keyword = (sql.split(None, 1) or [""])[0].upper()
        if keyword in ("BEGIN", "START"):
            self._in_block = True
            return
        if keyword in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            if keyword in ("COMMIT", "END"):
                self._release_drop(cursor)
            self._held_drop = None  # a rollback forgets the DROP it held back: it never ran
            self._in_block = False
            return
        if self._in_block and keyword in ("DROP", "ALTER") and self._hold_or_swap(cursor, sql):
            return
        self._release_drop(cursor)
        statement = render(sql, "databricks", placeholder="?")
        if statement:  # never empty here but for transaction control, which is handled above
            cursor.execute(statement, _bind(params))

    def _hold_or_swap(self, cursor, sql: str) -> bool:
        """Hold back `DROP TABLE IF EXISTS t` in a block; a rename of s to t next becomes a replace of t by s.

        `CREATE OR REPLACE TABLE t AS SELECT * FROM s` is one Delta commit: readers see the old snapshot or the
        new one, never no table (as DROP then RENAME, two commits here, would show in between). Then s is dropped;
        a crash before that leaves only the staging table, which the next build replaces.
        """
        tree = sqlglot.parse_one(sql, read="duckdb")
        if isinstance(tree, exp.Drop) and (tree.kind or "").upper() == "TABLE" and tree.args.get("exists"):
            if self._held_drop is None and len(tree.args.get("tables") or []) == 1:
                self._held_drop = tree
                return True
            return False
        rename = tree.find(exp.AlterRename) if isinstance(tree, exp.Alter) else None
        if self._held_drop is None or rename is None or not isinstance(tree.this, exp.Table):
            return False
        dropped, source = self._held_drop.args["tables"][0], tree.this
        target = rename.this.copy()
        for part in ("db", "catalog"):  # an unqualified new name stays in the schema of the renamed table
            if not target.args.get(part) and source.args.get(part):
                target.set(part, source.args[part].copy())
        if target.sql("databricks").lower() != dropped.sql("databricks").lower():
            return False
        self._held_drop = None
        replace = exp.Create(this=target, kind="TABLE", replace=True, expression=exp.select("*").from_(source.copy()))
        cursor.execute(replace.sql("databricks"))
        cursor.execute(exp.Drop(tables=[source.copy()], kind="TABLE").sql("databricks"))
        return True

    def _release_drop(self, cursor) -> None:
        """Run a DROP held back by `_hold_or_swap` before anything that follows it (or at COMMIT)."""
        if self._held_drop is not None:
            held, self._held_drop = self._held_drop, None
            cursor.execute(held.sql("databricks"))

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        with self._con.cursor() as cur:
            self._run(cur, sql, params)
            return cur.fetchall_arrow()

    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        # A cursor of its own, so statements run while streaming do not close this result; the connector fetches
        # the result from the warehouse (or its cloud storage links) as fetchmany_arrow asks for it.
        cur = self._con.cursor()
        try:
            self._run(cur, sql, params)
            while True:
                table = cur.fetchmany_arrow(batch_rows)
                if table.num_rows == 0:
                    break
                yield from table.to_batches()
        finally:
            cur.close()

    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        # Unity Catalog stores names in lower case; ours are lower case already, a source's may not be.
        return self.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = lower(?) AND table_schema = lower(coalesce(?, current_schema())) "
            "ORDER BY ordinal_position",
            [table, schema],
        )

    def table_names(self, schema: str) -> list[str]:
        # Databricks SQL of its own, sent as written (as DESCRIBE HISTORY below): SHOW TABLES answers on Unity Catalog
        # and on a plain Spark catalog alike, which has no information_schema.
        name = exp.to_identifier(schema, quoted=True).sql("databricks")
        with self._con.cursor() as cur:
            cur.execute(f"SHOW TABLES IN {name}")
            return [row[1] for row in cur.fetchall()]

    def table_marker(self, table: str) -> str | None:
        """The table's newest Delta version and its time (metadata only, no scan); None when it is missing.

        A view or a non-Delta table has no history: it falls back to the portable row count and newest
        `updated_at`. OPTIMIZE and VACUUM add versions too, which only costs an extra refresh.
        """
        if not self.table_columns(None, table):
            return None
        # Databricks SQL of its own (sqlglot does not parse DESCRIBE HISTORY), so it is sent as written.
        name = exp.to_identifier(table, quoted=True).sql("databricks")
        try:
            with self._con.cursor() as cur:
                cur.execute(f"DESCRIBE HISTORY {name} LIMIT 1")
                row = cur.fetchone()
        except Exception:  # no history for this object (view, non-Delta, no permission): the portable marker
            row = None
        if row is None:
            return table_markers(self, [table])[table]
        version, timestamp = row[0], row[1]
        return f"v{version}@{timestamp}"


def start_session(con: Any) -> None:
    """Every session in UTC, as on the other engines: a TIMESTAMP's text (row hash, JSON payload) never depends on
    a workspace's default time zone."""
    with con.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")


class DatabricksEngine(Engine):
    dialect = "databricks"
    kind = "databricks"

    def __init__(self, *, host: str, http_path: str, catalog: str, schema: str, port: int | None = None):
        self.host = host
        self.port = port
        self.http_path = http_path
        self.catalog = catalog
        self.schema = schema

    @classmethod
    def from_url(cls, url: str) -> DatabricksEngine:
        parsed = urlparse(url)
        options = url_options(
            parsed, "Databricks", f"set {' or '.join(TOKEN_SETTINGS)} instead", SECRET_PARAMETERS, user_is_secret=True
        )
        unknown = sorted(k for k in options if k != "http_path")
        if unknown:
            raise WarehouseError(
                f"COMPOSABLE_WAREHOUSE: unknown Databricks URL parameter(s) {', '.join(unknown)}; "
                f"the only one is http_path ({URL_SHAPE})"
            )
        host = parsed.hostname or ""
        parts = [unquote(p) for p in parsed.path.strip("/").split("/") if p]
        http_path = options.get("http_path", "")
        if not host or len(parts) != 2 or not http_path:
            raise WarehouseError(f"COMPOSABLE_WAREHOUSE: expected {URL_SHAPE} (catalog and schema in the path)")
        try:
            port = parsed.port
        except ValueError as exc:
            raise WarehouseError("COMPOSABLE_WAREHOUSE: the Databricks port is not a number") from exc
        return cls(host=host, http_path=http_path, catalog=parts[0], schema=parts[1], port=port)

    def describe(self) -> str:
        return f"Databricks schema {self.catalog}.{self.schema} on {self.host} (SQL warehouse {self.http_path})"

    def _token(self) -> str:
        for name in TOKEN_SETTINGS:
            if os.environ.get(name):
                return os.environ[name]
        raise WarehouseError(
            f"Databricks warehouse: no access token; set {' or '.join(TOKEN_SETTINGS)} "
            f"(a personal access token for {self.host})"
        )

    def _open(self):
        sql = _connector()
        token = self._token()
        try:
            return sql.connect(
                server_hostname=self.host,
                http_path=self.http_path,
                access_token=token,
                catalog=self.catalog,
                schema=self.schema,
                **({"_port": self.port} if self.port else {}),
                **CONNECT_OPTIONS,
            )
        except Exception as exc:  # the connector raises its own errors and urllib3's (host unreachable)
            raise WarehouseError(_connect_error(self, _detail(exc), token)) from None

    @contextmanager
    def connect(self) -> Iterator[DatabricksConnection]:
        con = self._open()
        try:
            start_session(con)
            yield DatabricksConnection(con)
        finally:
            con.close()

    def change_markers(self, tables: Sequence[str]) -> dict[str, str | None]:
        """Per table, its newest Delta version (see `DatabricksConnection.table_marker`); None when missing."""
        with self.connect() as conn:
            return {name: conn.table_marker(name) for name in tables}


def _detail(exc: Exception) -> str:
    """The connector's message plus what it keeps in the error's context: the HTTP status is only there."""
    context = getattr(exc, "context", None) or {}
    detail = str(exc).strip() or type(exc).__name__
    if context.get("http-code"):
        detail += f" (HTTP {context['http-code']})"
    if context.get("error-message"):
        detail += f": {context['error-message']}"
    return detail


def _connect_error(engine: DatabricksEngine, detail: str, token: str | None) -> str:
    """Which setting is likely wrong, and the connector's own words, without the token."""
    if token:
        detail = detail.replace(token, "***")
    text = detail.lower()
    if (
        "http 401" in text
        or "http 403" in text
        or "invalid access token" in text
        or "unauthorized" in text
        or ("forbidden" in text)
    ):
        setting = f"the access token was refused by {engine.host}: check {' / '.join(TOKEN_SETTINGS)}"
    elif "http 404" in text or ("warehouse" in text and "not found" in text):
        setting = f"the http_path {engine.http_path!r} in COMPOSABLE_WAREHOUSE names no SQL warehouse on {engine.host}"
    elif "catalog" in text and ("not found" in text or "does not exist" in text):
        setting = f"the catalog {engine.catalog!r} in COMPOSABLE_WAREHOUSE does not exist or is not granted"
    elif "schema" in text and ("not found" in text or "cannot be found" in text or "does not exist" in text):
        setting = f"the schema {engine.schema!r} in COMPOSABLE_WAREHOUSE does not exist or is not granted"
    elif (
        "name or service not known" in text
        or "failed to resolve" in text
        or "connection refused" in text
        or ("max retries exceeded" in text)
    ):
        setting = f"the workspace host {engine.host!r} in COMPOSABLE_WAREHOUSE cannot be reached"
    else:
        setting = f"cannot connect to {engine.describe()} (COMPOSABLE_WAREHOUSE)"
    return f"Databricks warehouse: {setting}. Connector said: {detail.strip()}"

"""BigQuery as the warehouse, through Google's `google-cloud-bigquery` client (pip install composable_assets[bigquery]).

Selected by `COMPOSABLE_WAREHOUSE=bigquery://project/dataset?location=EU`. Credentials are never part of the URL:
the client finds them by Google's Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS` naming a key
file, or the metadata server, or `gcloud auth application-default login`). `COMPOSABLE_BIGQUERY_ENDPOINT` points the
client at another API endpoint; a plain `http://` endpoint (a local stand-in) gets anonymous credentials, since a
Google token must never travel unencrypted. The client is imported only when this engine is used.

SQL arrives in the DuckDB dialect with `?` parameters, is rendered by `dialect.render` and runs as query jobs with
positional query parameters typed from the Python values (a None is written as NULL, which fits any column).
Unqualified table names resolve in the URL's dataset: it is every job's default dataset.

One connection is one BigQuery session (created by its first query, ended when it closes), so a transaction spans
several queries. BigQuery refuses DDL on permanent tables inside a transaction, so BEGIN is sent lazily, with the
first statement that is not DDL. DDL before it runs on its own, except the snapshot swap (`DROP TABLE IF EXISTS t`,
then `ALTER TABLE s RENAME TO t`), which becomes `CREATE OR REPLACE TABLE t COPY s` (atomic) and `DROP TABLE s`;
a rollback before the first DML forgets a held-back DROP. DDL after the first DML is an error.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa

from .base import Connection, Engine, Params, WarehouseError, url_options
from .dialect import render

ENDPOINT_SETTING = "COMPOSABLE_BIGQUERY_ENDPOINT"
CREDENTIALS_SETTING = "GOOGLE_APPLICATION_CREDENTIALS"
URL_SHAPE = "bigquery://project/dataset?location=EU"
# Query parameters the URL may carry; anything else is refused rather than silently ignored.
OPTIONS = ("location",)
# Query parameters that would put a secret into the URL (and so into logs): refused with a pointer to ADC.
SECRET_PARAMETERS = (
    "credentials",
    "credentials_path",
    "credentials_file",
    "key",
    "key_file",
    "keyfile",
    "private_key",
    "token",
    "access_token",
    "password",
    "secret",
    "client_secret",
)
DDL = ("CREATE", "DROP", "ALTER")
INT64 = range(-(2**63), 2**63)


def _bigquery():
    try:
        from google.cloud import bigquery
    except ImportError as exc:
        raise WarehouseError(
            "COMPOSABLE_WAREHOUSE names a BigQuery warehouse but the client is missing: "
            "pip install 'composable_assets[bigquery]'"
        ) from exc
    return bigquery


def _parameter(bigquery, value: Any):
    """A positional query parameter typed from the Python value (None is written as NULL by `_inline_nulls`)."""
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        if value not in INT64:
            raise WarehouseError(f"BigQuery: the integer parameter {value} does not fit INT64")
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, Decimal):
        kind = "NUMERIC"
    elif isinstance(value, str):
        kind = "STRING"
    elif isinstance(value, bytes):
        kind = "BYTES"
    elif isinstance(value, dt.datetime):
        # Naive datetimes are our UTC wall-clock times (DATETIME columns); aware ones are instants.
        kind = "DATETIME" if value.tzinfo is None else "TIMESTAMP"
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif isinstance(value, dt.time):
        kind = "TIME"
    else:
        raise WarehouseError(f"BigQuery: cannot bind a query parameter of type {type(value).__name__}")
    return bigquery.ScalarQueryParameter(None, kind, value)


def _inline_nulls(text: str, params: Params) -> tuple[str, list]:
    """Each `?` bound to None written as NULL; the other values stay bound, in order."""
    # An untyped NULL fits any column; a NULL parameter needs a type, and BigQuery coerces a STRING parameter into
    # no INT64, BOOL or JSON column.
    values = list(params or [])
    if all(v is not None for v in values):
        return text, values
    import sqlglot
    from sqlglot.tokens import TokenType

    tokens = sqlglot.Dialect.get_or_raise("bigquery").tokenize(text)
    marks = [t for t in tokens if t.token_type == TokenType.PLACEHOLDER]
    if len(marks) != len(values):
        raise WarehouseError(
            f"BigQuery: the statement has {len(marks)} parameter(s) but {len(values)} value(s) were given"
        )
    pieces, last, kept = [], 0, []
    for mark, value in zip(marks, values):
        if value is None:
            pieces += [text[last : mark.start], "NULL"]
            last = mark.end + 1
        else:
            kept.append(value)
    return "".join(pieces) + text[last:], kept


def _keyword(sql: str) -> str:
    words = sql.split(None, 1)
    return words[0].upper().rstrip(";") if words else ""


class BigQueryConnection(Connection):
    dialect = "bigquery"
    has_merge = True
    transactional_ddl = False

    def __init__(self, client: Any, engine: BigQueryEngine):
        self._client = client
        self._engine = engine
        self.session_id: str | None = None
        # None: no transaction; "pending": BEGIN seen, not sent yet; "open": BEGIN TRANSACTION sent.
        self._transaction: str | None = None
        # A `DROP TABLE IF EXISTS` held back in a pending transaction (see _hold_or_swap).
        self._held_drop: Any = None

    def _submit(self, text: str, params: Params = None, page_size: int | None = None):
        """Run one query job in this connection's session; its rows, paged by `page_size`."""
        bigquery = _bigquery()
        from google.api_core import exceptions

        config = bigquery.QueryJobConfig(
            default_dataset=f"{self._engine.project}.{self._engine.dataset}",
            query_parameters=[_parameter(bigquery, v) for v in params or []],
        )
        if self.session_id is None:
            config.create_session = True
        else:
            config.connection_properties = [bigquery.ConnectionProperty("session_id", self.session_id)]
        job = None
        try:
            job = self._client.query(text, job_config=config, location=self._engine.location)
            return job.result(page_size=page_size)
        except exceptions.GoogleAPICallError as exc:
            raise WarehouseError(_query_error(self._engine, exc)) from None
        finally:
            if self.session_id is None and job is not None and job.session_info is not None:
                self.session_id = job.session_info.session_id

    def _run(self, sql: str, params: Params = None, page_size: int | None = None):
        """Render and run `sql`, keeping BigQuery's transaction rules; None for transaction control."""
        keyword = _keyword(sql)
        if keyword in ("BEGIN", "START"):
            if self._transaction is not None:
                raise WarehouseError("BigQuery: a transaction is already open on this connection (no nesting)")
            self._transaction = "pending"
            return None
        if keyword in ("COMMIT", "ROLLBACK", "END", "ABORT"):
            commit = keyword in ("COMMIT", "END")
            opened, self._transaction = self._transaction == "open", None
            if opened:
                self._submit("COMMIT TRANSACTION" if commit else "ROLLBACK TRANSACTION")
            elif commit:
                self._release_drop()
            self._held_drop = None  # a rollback forgets the DROP it held back: it never ran
            return None
        ddl = keyword in DDL
        if ddl and self._transaction == "open":
            raise WarehouseError(
                f"BigQuery runs no {keyword} statement inside a transaction; run it before the transaction's first "
                f"other statement: {sql[:80]}"
            )
        if self._transaction == "pending":
            if ddl and self._hold_or_swap(sql):
                return None
            self._release_drop()
            if not ddl:
                self._submit("BEGIN TRANSACTION")
                self._transaction = "open"
        try:
            return self._submit(*_inline_nulls(render(sql, "bigquery", placeholder="?"), params), page_size)
        except WarehouseError:
            if self._transaction == "open":
                self._transaction = None  # BigQuery rolled it back with the failed statement
            raise

    def _hold_or_swap(self, sql: str) -> bool:
        """Hold back `DROP TABLE IF EXISTS t`; a rename of s to t next becomes an atomic copy of s over t."""
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(sql, read="duckdb")
        if isinstance(tree, exp.Drop) and tree.kind == "TABLE" and tree.args.get("exists") and self._held_drop is None:
            self._held_drop = tree
            return True
        rename = tree.find(exp.AlterRename) if isinstance(tree, exp.Alter) else None
        if self._held_drop is None or rename is None:
            return False
        dropped, source, new_name = self._held_drop.find(exp.Table), tree.this, rename.this.name
        if new_name != dropped.name or (dropped.db or self._engine.dataset) != (source.db or self._engine.dataset):
            return False
        self._held_drop = None
        target = exp.Table(this=rename.this.this.copy(), db=source.args["db"].copy() if source.db else None)
        copy = exp.Create(this=target, kind="TABLE", replace=True, clone=exp.Clone(this=source.copy(), copy=True))
        self._submit(copy.sql("bigquery"))
        self._submit(exp.Drop(tables=[source.copy()], kind="TABLE").sql("bigquery"))
        return True

    def _release_drop(self) -> None:
        """Run the DROP held back by `_hold_or_swap`, on its own, before anything that follows it."""
        if self._held_drop is not None:
            held, self._held_drop = self._held_drop, None
            self._submit(held.sql("bigquery"))

    def execute(self, sql: str, params: Params = None) -> None:
        self._run(sql, params)

    def fetch_all(self, sql: str, params: Params = None) -> list[tuple]:
        table = self.fetch_arrow(sql, params)
        return list(zip(*(column.to_pylist() for column in table.columns)))

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        rows = self._run(sql, params)
        if rows is None:
            return pa.table({})
        # Arrow keeps JSON columns as their text, as DuckDB returns them (delivery decodes them itself).
        return rows.to_arrow(create_bqstorage_client=False)

    def stream_arrow(self, sql: str, params: Params = None, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        # Pages of at most batch_rows rows, fetched one at a time (jobs.getQueryResults with a page token); the
        # Storage Read API is not used, so only the query API needs to be reachable.
        rows = self._run(sql, params, page_size=batch_rows)
        if rows is None:
            return
        for batch in rows.to_arrow_iterable():
            if batch.num_rows:
                yield batch

    def table_columns(self, schema: str | None, table: str) -> list[tuple[str, str]]:
        # The tables.get API, not INFORMATION_SCHEMA (which needs a dataset or region qualifier and bills a query).
        found = self._engine.get_table(self._client, schema, table)
        # BigQuery's TIMESTAMP is an instant (DATETIME is the naive one); name it as the code expects a zoned type.
        return [
            (f.name, "TIMESTAMP WITH TIME ZONE" if f.field_type == "TIMESTAMP" else f.field_type)
            for f in (found.schema if found is not None else [])
        ]

    def table_names(self, schema: str) -> list[str]:
        # tables.list, as for columns: INFORMATION_SCHEMA.TABLES needs a dataset qualifier and bills a query.
        bigquery = _bigquery()
        from google.api_core import exceptions

        try:
            return [
                t.table_id for t in self._client.list_tables(bigquery.DatasetReference(self._engine.project, schema))
            ]
        except exceptions.NotFound:
            return []

    def view_definition(self, schema: str, name: str) -> str | None:
        # tables.get, as for columns: INFORMATION_SCHEMA.VIEWS needs a dataset qualifier.
        found = self._engine.get_table(self._client, schema, name)
        return (found.view_query or "") if found is not None and found.table_type == "VIEW" else None

    def close(self) -> None:
        """End the session; an open transaction in it is rolled back."""
        if self.session_id is not None:
            session, self.session_id = self.session_id, None
            bigquery = _bigquery()
            config = bigquery.QueryJobConfig(connection_properties=[bigquery.ConnectionProperty("session_id", session)])
            self._client.query("CALL BQ.ABORT_SESSION()", job_config=config, location=self._engine.location).result()


class BigQueryEngine(Engine):
    dialect = "bigquery"
    kind = "bigquery"

    def __init__(self, *, project: str, dataset: str, location: str | None = None, resource: Any = None):
        self.project = project
        self.dataset = dataset
        self.location = location
        #: dagster-gcp's BigQueryResource: clients come from its `get_client`.
        self.resource = resource if resource is not None else _resource(project, location)

    @classmethod
    def from_url(cls, url: str, resource: Any = None) -> BigQueryEngine:
        parsed = urlparse(url)
        options = url_options(
            parsed,
            "BigQuery",
            f"use Application Default Credentials ({CREDENTIALS_SETTING} naming a key file, or gcloud auth)",
            SECRET_PARAMETERS,
            user_is_secret=True,
        )
        unknown = sorted(k for k in options if k not in OPTIONS)
        if unknown:
            raise WarehouseError(
                f"COMPOSABLE_WAREHOUSE: unknown BigQuery URL parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(OPTIONS)}"
            )
        project = unquote(parsed.hostname or "")
        parts = [unquote(p) for p in parsed.path.strip("/").split("/") if p]
        if not project or len(parts) != 1:
            raise WarehouseError(f"COMPOSABLE_WAREHOUSE: expected {URL_SHAPE}")
        location = options.get("location")
        if resource is not None:
            # A deployment's own BigQueryResource: its project and location win; the URL still names the dataset.
            project, location = resource.project or project, resource.location or location
        return cls(project=project, dataset=parts[0], location=location, resource=resource)

    def describe(self) -> str:
        where = f" in {self.location}" if self.location else ""
        return f"BigQuery dataset {self.project}.{self.dataset}{where}"

    @contextmanager
    def _client(self) -> Iterator[Any]:
        from google.auth import exceptions as auth_exceptions

        try:
            with self.resource.get_client() as client:
                try:
                    yield client
                finally:
                    client.close()
        except auth_exceptions.GoogleAuthError as exc:
            # google-auth's messages name the file or the missing setting, never a key's content.
            raise WarehouseError(
                f"BigQuery warehouse: no usable Application Default Credentials for project {self.project!r}: set "
                f"{CREDENTIALS_SETTING} to a service account key file (or run gcloud auth application-default login). "
                f"google-auth said: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None

    def get_table(self, client: Any, schema: str | None, table: str):
        """The table's metadata (tables.get), or None when it does not exist."""
        bigquery = _bigquery()
        from google.api_core import exceptions

        reference = bigquery.DatasetReference(self.project, schema or self.dataset).table(table)
        try:
            return client.get_table(reference)
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPICallError as exc:
            raise WarehouseError(_query_error(self, exc)) from None

    def change_markers(self, tables: Sequence[str]) -> dict[str, str | None]:
        """Last-modified time and row count from table metadata: no query job, nothing billed."""
        with self._client() as client:
            markers: dict[str, str | None] = {}
            for name in tables:
                found = self.get_table(client, None, name)
                markers[name] = None if found is None else f"{found.num_rows}:{found.modified.isoformat()}"
            return markers

    @contextmanager
    def connect(self) -> Iterator[BigQueryConnection]:
        with self._client() as client:
            conn = BigQueryConnection(client, self)
            try:
                yield conn
            finally:
                try:
                    conn.close()
                except Exception:  # the session expires on its own; closing must not hide the error that got here
                    pass


def _resource(project: str, location: str | None) -> Any:
    """dagster-gcp's BigQueryResource, or where COMPOSABLE_BIGQUERY_ENDPOINT is set, the one for that endpoint."""
    _bigquery()
    endpoint = os.environ.get(ENDPOINT_SETTING)
    if endpoint:
        from .bigquery_endpoint import BigQueryAtEndpoint

        return BigQueryAtEndpoint(project=project, location=location, api_endpoint=endpoint)
    from dagster_gcp import BigQueryResource

    return BigQueryResource(project=project, location=location)


def _query_error(engine: BigQueryEngine, exc: Any) -> str:
    """Which setting is likely wrong, and BigQuery's own words (which never hold a credential)."""
    message = (getattr(exc, "message", None) or str(exc)).split("\n\nLocation:")[0].strip()
    code = getattr(exc, "code", None)
    text = message.lower()
    if code == 404 and f"dataset {engine.project}:{engine.dataset}".lower() in text:
        setting = f"the dataset {engine.dataset!r} in COMPOSABLE_WAREHOUSE does not exist in project {engine.project!r}"
    elif code == 404 and "project" in text and "table" not in text:
        setting = f"the project {engine.project!r} in COMPOSABLE_WAREHOUSE does not exist or is not visible"
    elif code in (401, 403):
        setting = (
            f"the credentials ({CREDENTIALS_SETTING} or gcloud auth) were refused for {engine.describe()}; "
            "check the account's BigQuery roles"
        )
    else:
        return f"BigQuery: {message}"
    return f"BigQuery warehouse: {setting}. BigQuery said: {message}"

"""BigQuery REST stand-in: the query endpoints the google-cloud-bigquery client calls, over one DuckDB file.

Served under `/bigquery/v2`: jobs.insert (query jobs, run to completion at once but answered as RUNNING), jobs.get,
jobs.getQueryResults (pages by maxResults / pageToken), tables.get (schema, numRows, lastModifiedTime), datasets.get
and datasets.insert. Each query is GoogleSQL; it is transpiled to DuckDB with sqlglot, statement by statement, and
run on the DuckDB file (a dataset is a DuckDB schema; `CREATE TABLE t COPY s` is a copy by query). Sessions
(`createSession`, then the `session_id` connection property) each hold one DuckDB connection, so BEGIN TRANSACTION
... COMMIT TRANSACTION spans queries as in BigQuery's session mode. BigQuery rules kept here because the engine must
live with them: an unqualified table needs the job's default dataset; DDL on permanent tables is refused inside a
transaction; a failed statement rolls its transaction back; a transaction left open at the end of a query outside a
session is rolled back; `CALL BQ.ABORT_SESSION()` ends a session. Credentials are not checked.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import math
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from .server import FakeServer, Request, Response

PREFIX = "/bigquery/v2"
# BigQuery caps a page at 10 MB; the stand-in caps it in rows, so a test can make many small pages.
DEFAULT_PAGE_ROWS = 10_000
ABORT_SESSION = re.compile(r"^\s*CALL\s+BQ\.ABORT_SESSION\s*\(\s*\)\s*;?\s*$", re.IGNORECASE)
# DuckDB type (prefix) -> BigQuery REST type name.
TYPES = [
    ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"), ("TIMESTAMP", "DATETIME"), ("DATE", "DATE"), ("TIME", "TIME"),
    ("BIGINT", "INTEGER"), ("INTEGER", "INTEGER"), ("SMALLINT", "INTEGER"), ("TINYINT", "INTEGER"),
    ("HUGEINT", "INTEGER"), ("UBIGINT", "INTEGER"), ("UINTEGER", "INTEGER"), ("DOUBLE", "FLOAT"), ("FLOAT", "FLOAT"),
    ("DECIMAL", "NUMERIC"), ("BOOLEAN", "BOOLEAN"), ("VARCHAR", "STRING"), ("JSON", "JSON"), ("BLOB", "BYTES"),
]
STATEMENT_TYPES = {
    exp.Select: "SELECT", exp.Union: "SELECT", exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE",
    exp.Merge: "MERGE", exp.Create: "CREATE_TABLE", exp.Drop: "DROP_TABLE", exp.Alter: "ALTER_TABLE",
    exp.Transaction: "BEGIN_TRANSACTION", exp.Commit: "COMMIT_TRANSACTION", exp.Rollback: "ROLLBACK_TRANSACTION",
}
DML = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
DDL = (exp.Create, exp.Drop, exp.Alter)


class QueryError(Exception):
    """A statement BigQuery would fail: HTTP status, error reason and message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Session:
    """One BigQuery session: its own DuckDB connection, and whether a transaction is open on it."""

    con: duckdb.DuckDBPyConnection
    in_transaction: bool = False
    # Tables changed by the open transaction; their lastModifiedTime moves at COMMIT.
    pending_changes: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Job:
    """A finished query job: its resource as jobs.get returns it, and its result rows."""

    resource: dict[str, Any]
    schema: list[dict[str, str]] | None = None
    rows: list[tuple] = field(default_factory=list)
    dml_rows: int | None = None
    error: QueryError | None = None


class BigQueryFake(FakeServer):
    """One BigQuery project on 127.0.0.1, its datasets being schemas of one DuckDB file."""

    def __init__(self, path: str | Path, project: str = "test-project", *, page_rows: int = DEFAULT_PAGE_ROWS):
        self.path = str(path)
        self.project = project
        self.page_rows = page_rows
        self.db: duckdb.DuckDBPyConnection | None = None
        self._local = threading.local()
        super().__init__(api_key="")

    def _reset_state(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = duckdb.connect(self.path)
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Session] = {}
        self.modified: dict[tuple[str, str], int] = {}

    def stop(self) -> None:
        super().stop()
        if self.db is not None:
            self.db.close()
            self.db = None

    def create_dataset(self, name: str) -> None:
        """Create a dataset (a DuckDB schema), as `bq mk` would."""
        with self._lock:
            self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(name)}").fetchall()

    def _injected_response(self, status: int) -> Response:
        reason = {429: "rateLimitExceeded", 503: "backendError"}.get(status, "internalError")
        return _error(status, reason, f"injected {status}")

    # Routing --------------------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        parts = request.path.removeprefix(PREFIX).strip("/").split("/")
        query = {k: v[-1] for k, v in parse_qs(self._local.query).items()}
        if len(parts) < 3 or parts[0] != "projects":
            return _error(404, "notFound", f"Not found: URL {request.path}")
        if parts[1] != self.project:
            return _error(404, "notFound", f"Not found: Project {parts[1]}")
        route = (request.method, *[p if i % 2 == 0 else "*" for i, p in enumerate(parts[2:])])
        if route == ("POST", "jobs"):
            return self._insert_job(request.body or {})
        if route == ("GET", "jobs", "*"):
            return self._with_job(parts[3], lambda job: Response(200, job.resource))
        if route == ("GET", "queries", "*"):
            return self._with_job(parts[3], lambda job: self._results(job, query))
        if route == ("POST", "datasets"):
            name = ((request.body or {}).get("datasetReference") or {}).get("datasetId", "")
            if self._dataset_exists(name):
                return _error(409, "duplicate", f"Already Exists: Dataset {self.project}:{name}")
            self.create_dataset(name)
            return Response(200, self._dataset_resource(name))
        if route == ("GET", "datasets", "*"):
            if not self._dataset_exists(parts[3]):
                return _error(404, "notFound", f"Not found: Dataset {self.project}:{parts[3]}")
            return Response(200, self._dataset_resource(parts[3]))
        if route == ("GET", "datasets", "*", "tables", "*"):
            return self._get_table(parts[3], parts[5])
        if route == ("GET", "datasets", "*", "tables"):
            return self._list_tables(parts[3])
        return _error(404, "notFound", f"Not found: {request.method} {request.path}")

    def _process(self, method, target, headers, raw):
        # The query string (pageToken, maxResults) is not part of Request; the handler runs in this thread.
        self._local.query = urlsplit(target).query
        return super()._process(method, target, headers, raw)

    def _with_job(self, job_id: str, respond) -> Response:
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, "notFound", f"Not found: Job {self.project}:{job_id}")
        return respond(job)

    # Jobs -------------------------------------------------------------------------------------------------------

    def _insert_job(self, body: dict[str, Any]) -> Response:
        config = (body.get("configuration") or {}).get("query")
        if not config or "query" not in config:
            return _error(400, "invalid", "Only query jobs are supported by this stand-in")
        if config.get("useLegacySql"):
            return _error(400, "invalid", "Legacy SQL is not supported by this stand-in")
        reference = dict(body.get("jobReference") or {})
        reference.setdefault("jobId", f"job_{uuid.uuid4().hex}")
        reference["projectId"] = self.project
        reference.setdefault("location", "US")  # BigQuery always names the job's location
        if reference["jobId"] in self.jobs:
            return _error(409, "duplicate", f"Already Exists: Job {self.project}:{reference['jobId']}")
        now = _millis()
        statistics: dict[str, Any] = {"creationTime": now, "startTime": now, "query": {}}
        job = Job(resource={
            "kind": "bigquery#job",
            "id": f"{self.project}:{reference.get('location', 'US')}.{reference['jobId']}",
            "jobReference": reference,
            "configuration": body["configuration"],
            "statistics": statistics,
            "status": {"state": "DONE"},
        })
        try:
            session_id, session = self._session(config)
            if session_id:
                statistics["sessionInfo"] = {"sessionId": session_id}
            try:
                self._run(job, config, session_id, session)
            except QueryError:
                raise
            except Exception as exc:
                # A bug here must fail the query at once: a 5xx or a backendError would be retried for minutes.
                traceback.print_exc()
                raise QueryError(400, "invalidQuery", f"BigQuery stand-in error: {exc!r}") from None
        except QueryError as error:
            job.error = error
            detail = {"reason": error.reason, "location": "query", "message": error.message}
            job.resource["status"] = {"state": "DONE", "errorResult": detail, "errors": [detail]}
        statistics["endTime"] = _millis()
        self.jobs[reference["jobId"]] = job
        # The job is finished already, but as BigQuery's jobs.insert, the answer says RUNNING: the client must poll.
        return Response(200, {**job.resource, "status": {"state": "RUNNING"}})

    def _session(self, config: dict[str, Any]) -> tuple[str | None, Session | None]:
        properties = {p.get("key"): p.get("value") for p in config.get("connectionProperties") or []}
        if "session_id" in properties:
            session_id = properties["session_id"]
            if session_id not in self.sessions:
                raise QueryError(400, "invalidQuery", f"Session {session_id} has expired or was terminated")
            return session_id, self.sessions[session_id]
        if config.get("createSession"):
            session_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            self.sessions[session_id] = Session(self.db.cursor())
            return session_id, self.sessions[session_id]
        return None, None

    def _run(self, job: Job, config: dict[str, Any], session_id: str | None, session: Session | None) -> None:
        text = config["query"]
        if ABORT_SESSION.match(text):
            if session is None:
                raise QueryError(400, "invalidQuery", "BQ.ABORT_SESSION() must be called in a session")
            self.sessions.pop(session_id).con.close()  # closing rolls back an open transaction
            return
        params = _parameters(config)
        default = (config.get("defaultDataset") or {}).get("datasetId")
        if default and not self._dataset_exists(default):
            raise QueryError(404, "notFound", f"Not found: Dataset {self.project}:{default}")
        own = session or Session(self.db.cursor())
        try:
            statements = _split(text, self.project, default)
            job.resource["statistics"]["query"]["statementType"] = (
                "SCRIPT" if len(statements) > 1 else STATEMENT_TYPES.get(type(statements[0][0]), "OTHER")
            )
            for tree, names in statements:
                self._statement(job, own, tree, names, params)
        finally:
            if session is None:
                own.con.close()  # outside a session, a transaction left open is rolled back

    def _statement(self, job: Job, session: Session, tree: exp.Expression, names: list[str], params: dict) -> None:
        if session.in_transaction and isinstance(tree, DDL) and not tree.find(exp.TemporaryProperty):
            raise self._fail(session, QueryError(
                400, "invalidQuery",
                f"{STATEMENT_TYPES[type(tree)]} on a permanent table is not supported inside a transaction",
            ))
        missing = [n for n in names if n not in params]
        if missing:
            raise self._fail(session, QueryError(
                400, "invalidQuery", f"The query has {len(missing)} more positional parameter(s) than values"
            ))
        changed = _changed_table(tree)
        try:
            cursor = session.con.execute(tree.sql("duckdb"), {n: params[n] for n in names} or None)
            description = cursor.description
            rows = cursor.fetchall()
        except duckdb.Error as exc:
            status, reason = (404, "notFound") if isinstance(exc, duckdb.CatalogException) else (400, "invalidQuery")
            raise self._fail(session, QueryError(status, reason, str(exc).splitlines()[0])) from None
        if isinstance(tree, exp.Transaction):
            session.in_transaction = True
        elif isinstance(tree, (exp.Commit, exp.Rollback)):
            if isinstance(tree, exp.Commit):
                self._touch(session.pending_changes)
            session.in_transaction = False
            session.pending_changes.clear()
        if changed and session.in_transaction:
            session.pending_changes.add(changed)
        elif changed:
            self._touch({changed})
        if isinstance(tree, exp.Query):
            job.schema = [{"name": d[0], "type": _bq_type(str(d[1])), "mode": "NULLABLE"} for d in description]
            job.rows, job.dml_rows = rows, None
        elif isinstance(tree, DML):
            job.schema, job.rows, job.dml_rows = None, [], rows[0][0] if rows else 0
        else:
            job.schema, job.rows, job.dml_rows = None, [], None

    def _fail(self, session: Session, error: QueryError) -> QueryError:
        """BigQuery rolls back the open transaction of a failed statement."""
        if session.in_transaction:
            session.con.execute("ROLLBACK").fetchall()
            session.in_transaction = False
            session.pending_changes.clear()
        return error

    def _touch(self, tables: set[tuple[str, str]]) -> None:
        now = int(time.time() * 1000)
        for key in tables:
            # Strictly increasing, so two changes in one millisecond still differ.
            self.modified[key] = max(now, self.modified.get(key, 0) + 1)

    def _results(self, job: Job, query: dict[str, str]) -> Response:
        if job.error is not None:
            return _error(job.error.status, job.error.reason, job.error.message)
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job.resource["jobReference"],
            "jobComplete": True,
            "cacheHit": False,
        }
        if job.dml_rows is not None:
            body["numDmlAffectedRows"] = str(job.dml_rows)
        if job.schema is None:
            return Response(200, body)
        try:
            start = int(query.get("pageToken") or query.get("startIndex") or 0)
            size = min(int(query.get("maxResults", self.page_rows)), self.page_rows)
        except ValueError:
            return _error(400, "invalid", "Invalid pageToken, startIndex or maxResults")
        int64_timestamps = query.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        page = job.rows[start:start + size]
        body["schema"] = {"fields": job.schema}
        body["totalRows"] = str(len(job.rows))
        if page:  # BigQuery leaves `rows` out of an empty page (maxResults=0 asks for the schema only)
            body["rows"] = [
                {"f": [{"v": _cell(v, f["type"], int64_timestamps)} for v, f in zip(row, job.schema)]} for row in page
            ]
        if start + size < len(job.rows) and size > 0:
            body["pageToken"] = str(start + size)
        return Response(200, body)

    # Datasets and tables ----------------------------------------------------------------------------------------

    def _dataset_exists(self, name: str) -> bool:
        return bool(self.db.execute(
            "SELECT 1 FROM information_schema.schemata WHERE catalog_name = current_database() AND schema_name = ?",
            [name],
        ).fetchall())

    def _dataset_resource(self, name: str) -> dict[str, Any]:
        return {
            "kind": "bigquery#dataset",
            "id": f"{self.project}:{name}",
            "datasetReference": {"projectId": self.project, "datasetId": name},
            "location": "US",
        }

    def _list_tables(self, dataset: str) -> Response:
        """tables.list: every table and view of a dataset, one page (`tables` is left out when there are none)."""
        if not self._dataset_exists(dataset):
            return _error(404, "notFound", f"Not found: Dataset {self.project}:{dataset}")
        names = self.db.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = ? ORDER BY table_name",
            [dataset],
        ).fetchall()
        tables = [{
            "kind": "bigquery#table",
            "id": f"{self.project}:{dataset}.{name}",
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": name},
            "type": "VIEW" if kind == "VIEW" else "TABLE",
        } for name, kind in names]
        return Response(200, {"kind": "bigquery#tableList", "totalItems": len(tables), **({"tables": tables} if tables else {})})

    def _get_table(self, dataset: str, table: str) -> Response:
        columns = self.db.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not columns:
            return _error(404, "notFound", f"Not found: Table {self.project}:{dataset}.{table}")
        view = self.db.execute(
            "SELECT sql FROM duckdb_views() WHERE database_name = current_database() AND schema_name = ? AND view_name = ?",
            [dataset, table],
        ).fetchone()
        if view is not None:  # a view has its query (here in DuckDB's words) and no row count
            return Response(200, {
                "kind": "bigquery#table",
                "id": f"{self.project}:{dataset}.{table}",
                "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
                "type": "VIEW",
                "view": {"query": view[0], "useLegacySql": False},
                "schema": {"fields": [{"name": n, "type": _bq_type(t), "mode": "NULLABLE"} for n, t, _ in columns]},
                "location": "US",
            })
        (rows,) = self.db.execute(f"SELECT count(*) FROM {_quote(dataset)}.{_quote(table)}").fetchone()
        modified = self.modified.get((dataset, table)) or self.modified.setdefault((dataset, table), _now_ms())
        return Response(200, {
            "kind": "bigquery#table",
            "id": f"{self.project}:{dataset}.{table}",
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
            "type": "TABLE",
            "schema": {"fields": [
                {"name": n, "type": _bq_type(t), "mode": "NULLABLE" if nullable == "YES" else "REQUIRED"}
                for n, t, nullable in columns
            ]},
            "numRows": str(rows),
            "creationTime": str(modified),
            "lastModifiedTime": str(modified),
            "location": "US",
        })


# GoogleSQL -> DuckDB ------------------------------------------------------------------------------------------------


def _split(text: str, project: str, default_dataset: str | None) -> list[tuple[exp.Expression, list[str]]]:
    """The statements of a query as DuckDB trees, each with the names of the parameters it uses (`?` -> $pN)."""
    numbered, counter = [], itertools.count()
    last = 0
    try:
        tokens = sqlglot.Dialect.get_or_raise("bigquery").tokenize(text)
        for token in tokens:
            if token.token_type == TokenType.PLACEHOLDER:
                numbered += [text[last:token.start], f"@p{next(counter)}"]
                last = token.end + 1
        trees = [t for t in sqlglot.parse("".join(numbered) + text[last:], read="bigquery") if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(400, "invalidQuery", f"Syntax error: {exc}") from None
    if not trees:
        raise QueryError(400, "invalidQuery", "Syntax error: the query has no statement")
    statements = []
    for tree in trees:
        if isinstance(tree, exp.Command):
            raise QueryError(400, "invalidQuery", f"Unsupported statement by this stand-in: {tree.sql('bigquery')}")
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            _resolve(table, project, default_dataset, ctes)
        clone = tree.args.get("clone") if isinstance(tree, exp.Create) else None
        if clone is not None and clone.args.get("copy"):  # CREATE TABLE t COPY s: DuckDB copies by a query
            tree.set("clone", None)
            tree.set("expression", exp.select("*").from_(clone.this.copy()))
        names = [p.name for p in tree.find_all(exp.Parameter)]
        statements.append((tree, names))
    return statements


def _resolve(table: exp.Table, project: str, default_dataset: str | None, ctes: set[str]) -> None:
    """`project.dataset.table` -> `dataset.table`; an unqualified name needs the default dataset, as in BigQuery."""
    if not table.name or table.name in ctes and not table.db:
        return
    if table.catalog:
        if table.catalog != project:
            raise QueryError(404, "notFound", f"Not found: Project {table.catalog}")
        table.set("catalog", None)
    if not table.db:
        if not default_dataset:
            raise QueryError(
                400, "invalidQuery",
                f'Table "{table.name}" must be qualified with a dataset (e.g. dataset.table).',
            )
        table.set("db", exp.to_identifier(default_dataset, quoted=True))


def _changed_table(tree: exp.Expression) -> tuple[str, str] | None:
    """(dataset, table) a DML or DDL statement changes, for tables.get's lastModifiedTime."""
    if isinstance(tree, (*DML, exp.Create, exp.Alter)):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if isinstance(target, exp.Table) and target.db:
            return target.db, target.name
    return None


def _parameters(config: dict[str, Any]) -> dict[str, Any]:
    """Positional query parameters as Python values, named p0, p1, ... in order."""
    params = config.get("queryParameters") or []
    mode = config.get("parameterMode", "POSITIONAL").upper()
    if params and (mode != "POSITIONAL" or any(p.get("name") for p in params)):
        raise QueryError(400, "invalidQuery", "Named query parameters are not supported by this stand-in")
    values = {}
    for i, param in enumerate(params):
        kind = (param.get("parameterType") or {}).get("type", "STRING").upper()
        value = (param.get("parameterValue") or {}).get("value")
        values[f"p{i}"] = None if value is None else _from_text(kind, value)
    return values


def _from_text(kind: str, value: str) -> Any:
    if kind in ("INT64", "INTEGER"):
        return int(value)
    if kind in ("FLOAT64", "FLOAT"):
        return float(value)
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return Decimal(value)
    if kind in ("BOOL", "BOOLEAN"):
        return value.lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(value)
    if kind == "DATETIME":
        return dt.datetime.fromisoformat(value)
    if kind == "TIMESTAMP":
        stamp = dt.datetime.fromisoformat(value.replace(" UTC", "+00:00"))
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    if kind == "BYTES":
        return base64.b64decode(value)
    if kind == "STRING":
        return value
    raise QueryError(400, "invalidQuery", f"Query parameter type {kind} is not supported by this stand-in")


# REST shapes --------------------------------------------------------------------------------------------------------


def _bq_type(duckdb_type: str) -> str:
    upper = duckdb_type.upper()
    return next((bq for prefix, bq in TYPES if upper.startswith(prefix)), "STRING")


def _cell(value: Any, kind: str, int64_timestamps: bool) -> str | None:
    """A value as BigQuery's REST API sends it: always text (or null)."""
    if value is None:
        return None
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "FLOAT":
        if math.isnan(value) or math.isinf(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return repr(value)
    if kind == "DATETIME":
        return value.isoformat(sep="T")
    if kind == "TIMESTAMP":
        micros = round(value.timestamp() * 1_000_000)
        return str(micros) if int64_timestamps else f"{micros / 1_000_000:.6f}"
    if kind in ("DATE", "TIME"):
        return value.isoformat()
    if kind == "BYTES":
        return base64.b64encode(value).decode()
    return str(value)


def _error(status: int, reason: str, message: str) -> Response:
    """BigQuery's error body."""
    statuses = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}
    return Response(status, {"error": {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": statuses.get(status, "UNKNOWN"),
    }})


def _quote(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _millis() -> str:
    return str(_now_ms())


def _now_ms() -> int:
    return int(time.time() * 1000)

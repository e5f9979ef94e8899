"""Databricks: URL and secrets, the rendered SQL (golden), and that SQL executed on a local Spark session.

No Databricks workspace is reachable here, and Delta Lake's jars are not installed, so:
- the engine's connection code runs for real on the `databricks-sql-connector` only up to connecting (errors);
- the rendered statements are checked as text (parsed back with sqlglot's databricks dialect, and MERGE /
  UPDATE / DELETE / CREATE OR REPLACE by Spark's own SQL parser);
- everything Spark runs without Delta is executed on a local Spark session, through `DatabricksConnection`
  itself over a small DB-API shim on the session, and compared row for row with DuckDB running the original
  SQL: the row hash, the JSON payload, the snapshot, the delta (mirror and upsert), the delivery read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlglot
from sqlglot import exp

from composable_assets.delta import ledger
from composable_assets.delivery import audience as delivery
from composable_assets.delta.diff import compute_delta, delta_select, latest_delta_run
from composable_assets.delta.snapshot import SyncShape, build_snapshot
from composable_assets.warehouse.sql import json_object
from composable_assets.store import PairTables
from composable_assets.warehouse import WarehouseError, engine_from_url
from composable_assets.warehouse import databricks_engine
from composable_assets.warehouse.base import Connection
from composable_assets.warehouse.databricks_engine import DatabricksConnection, DatabricksEngine
from composable_assets.warehouse.dialect import render
from composable_assets.warehouse.duckdb_engine import DuckDBEngine

URL = "databricks://dbc-1234.cloud.databricks.com/main/crm?http_path=/sql/1.0/warehouses/abc123"
TOKEN = "dapi0123456789abcdef-SECRET"
SCHEMA = "composable"


# --- URL, token, errors ------------------------------------------------------------------------------------


def test_the_url_names_host_catalog_schema_and_warehouse():
    engine = engine_from_url(URL)
    assert isinstance(engine, DatabricksEngine)
    assert (engine.host, engine.catalog, engine.schema, engine.http_path, engine.port) == (
        "dbc-1234.cloud.databricks.com", "main", "crm", "/sql/1.0/warehouses/abc123", None
    )
    assert engine.dialect == "databricks" and engine.kind == "databricks"
    assert "main.crm" in engine.describe() and "abc123" in engine.describe()


@pytest.mark.parametrize(
    "url, words",
    [
        ("databricks://host/main?http_path=/sql/1.0/warehouses/x", "catalog and schema"),
        ("databricks://host/main/crm", "http_path"),
        ("databricks:///main/crm?http_path=/x", "workspace-host"),
        ("databricks://host/main/crm?http_path=/x&warehouse=y", "unknown Databricks URL parameter(s) warehouse"),
    ],
)
def test_a_malformed_url_says_what_is_expected(url: str, words: str):
    with pytest.raises(WarehouseError, match="COMPOSABLE_WAREHOUSE") as info:
        DatabricksEngine.from_url(url)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"databricks://token:{TOKEN}@host/main/crm?http_path=/x",
        f"databricks://host/main/crm?http_path=/x&access_token={TOKEN}",
        f"databricks://host/main/crm?http_path=/x&token={TOKEN}",
    ],
)
def test_a_token_in_the_url_is_refused_without_being_shown(url: str):
    with pytest.raises(WarehouseError) as info:
        DatabricksEngine.from_url(url)
    assert TOKEN not in str(info.value)
    assert "COMPOSABLE_WAREHOUSE_PASSWORD or DATABRICKS_TOKEN" in str(info.value)


def test_the_token_comes_from_the_environment_project_variable_first(monkeypatch):
    engine = DatabricksEngine.from_url(URL)
    monkeypatch.delenv("COMPOSABLE_WAREHOUSE_PASSWORD", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    with pytest.raises(WarehouseError, match="no access token; set COMPOSABLE_WAREHOUSE_PASSWORD or DATABRICKS_TOKEN"):
        engine.connect().__enter__()
    monkeypatch.setenv("DATABRICKS_TOKEN", "from-databricks-token")
    assert engine._token() == "from-databricks-token"
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", "from-project-variable")
    assert engine._token() == "from-project-variable"


def test_the_real_connector_failing_to_connect_names_the_host_and_never_the_token(monkeypatch):
    """The real connector against a port where nothing listens: the error names the host setting, not the token."""
    pytest.importorskip("databricks.sql")
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", TOKEN)
    # One attempt instead of the connector's patient retries (meant for a warehouse that is starting up).
    options = {
        **databricks_engine.CONNECT_OPTIONS, "_retry_stop_after_attempts_count": 1, "_socket_timeout": 5,
        "enable_telemetry": False,
    }
    monkeypatch.setattr(databricks_engine, "CONNECT_OPTIONS", options)
    engine = DatabricksEngine.from_url("databricks://127.0.0.1:1/main/crm?http_path=/sql/1.0/warehouses/abc123")
    with pytest.raises(WarehouseError) as info:
        with engine.connect():
            pass
    message = str(info.value)
    assert TOKEN not in message
    assert "the workspace host '127.0.0.1' in COMPOSABLE_WAREHOUSE cannot be reached" in message


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (the connector speaks HTTPS only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    root = tmp_path_factory.mktemp("tls")
    (root / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(root / "cert.pem"), str(root / "key.pem")


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize(
    "status, words",
    [(401, "the access token was refused by 127.0.0.1"), (403, "the access token was refused by 127.0.0.1"),
     (404, "the http_path '/sql/1.0/warehouses/abc123' in COMPOSABLE_WAREHOUSE names no SQL warehouse")],
)
def test_the_real_connector_refused_by_the_server_names_the_setting(monkeypatch, tls_files, status: int, words: str):
    """The real connector opening a session against an HTTPS stand-in that answers every request with `status`."""
    pytest.importorskip("databricks.sql")
    import http.server
    import ssl
    import threading

    seen: list[str] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", TOKEN)
        options = {
            **databricks_engine.CONNECT_OPTIONS, "_retry_stop_after_attempts_count": 1, "_socket_timeout": 5,
            "_tls_no_verify": True, "enable_telemetry": False,
        }
        monkeypatch.setattr(databricks_engine, "CONNECT_OPTIONS", options)
        port = server.server_address[1]
        engine = DatabricksEngine.from_url(f"databricks://127.0.0.1:{port}/main/crm?http_path=/sql/1.0/warehouses/abc123")
        with pytest.raises(WarehouseError) as info:
            with engine.connect():
                pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert words in str(info.value) and f"(HTTP {status})" in str(info.value)
    assert TOKEN not in str(info.value)
    assert seen and seen[0] == f"Bearer {TOKEN}"  # the token went to the server, only there


@pytest.mark.parametrize(
    "detail, words",
    [
        ("Error during request to server: 403 Forbidden. Invalid access token " + TOKEN, "access token was refused"),
        ("HTTP 404: Not Found /sql/1.0/warehouses/abc123", "http_path '/sql/1.0/warehouses/abc123'"),
        ("[NO_SUCH_CATALOG_EXCEPTION] Catalog 'main' was not found", "catalog 'main'"),
        ("[SCHEMA_NOT_FOUND] The schema `crm` cannot be found", "schema 'crm'"),
        ("something else entirely", "cannot connect to Databricks schema main.crm"),
    ],
)
def test_connection_errors_name_the_setting_and_never_the_token(detail: str, words: str):
    message = databricks_engine._connect_error(DatabricksEngine.from_url(URL), detail, TOKEN)
    assert words in message and TOKEN not in message and message.startswith("Databricks warehouse: ")


def test_the_real_connector_cursor_sends_values_as_typed_native_parameters():
    """The connector's own Cursor (only its network backend replaced): `?` stays in the text, values travel apart."""
    pytest.importorskip("databricks.sql")
    from types import SimpleNamespace

    from databricks.sql.client import Cursor

    sent: list[tuple[str, list]] = []

    class Backend:
        def execute_command(self, operation, parameters, **kwargs):
            sent.append((operation, [(p.type, p.value and p.value.stringValue) for p in parameters]))
            return SimpleNamespace(num_modified_rows=1, is_staging_operation=False, close=lambda: None)

    session = SimpleNamespace(
        use_inline_params=False, lz4_compression=False, use_cloud_fetch=False,
        session=SimpleNamespace(session_id="s", host="h"), get_session_id_hex=lambda: "s",
    )
    conn = DatabricksConnection(type("Con", (), {"cursor": lambda self: Cursor(session, Backend())})())
    hostile = "x'); DROP TABLE ledger; --"
    conn.execute(
        'INSERT INTO "composable"."t" VALUES (?, ?, ?, ?, ?, ?, ?)',
        [hostile, dt.datetime(2026, 3, 2, 6, 0, 0, 120000), dt.datetime(2026, 3, 2, 6, tzinfo=dt.timezone.utc),
         DAY, 2**40, Decimal("12.50"), None],
    )
    assert sent == [(
        "INSERT INTO `composable`.`t` VALUES (?, ?, ?, ?, ?, ?, ?)",
        [("STRING", hostile), ("TIMESTAMP_NTZ", "2026-03-02 06:00:00.120000"), ("TIMESTAMP", "2026-03-02 06:00:00+00:00"),
         ("DATE", "2026-03-02"), ("BIGINT", "1099511627776"), ("DECIMAL(4,2)", "12.50"), ("VOID", None)],
    )]


# --- golden: the statements the flow issues, rendered for Databricks ---------------------------------------------


class Recorder(Connection):
    """Records the statements a flow function issues (as DuckDB SQL) and answers every query with `answer`."""

    dialect = "databricks"
    has_merge = True

    def __init__(self, answer: int = 0):
        self.statements: list[tuple[str, list]] = []
        self.answer = answer

    def execute(self, sql, params=None):
        self.statements.append((sql, list(params or [])))

    def fetch_all(self, sql, params=None):
        self.statements.append((sql, list(params or [])))
        return []

    def fetch_one(self, sql, params=None):
        self.statements.append((sql, list(params or [])))
        return (self.answer,)

    def fetch_arrow(self, sql, params=None):
        raise NotImplementedError

    def stream_arrow(self, sql, params=None, batch_rows=100_000):
        raise NotImplementedError

    def table_columns(self, schema, table):
        return []


SHAPE = SyncShape(
    destination="braze", identifier_column="customer_id", fields={"email": "email", "ltv": "lifetime_value", "city": "city"}
)
PAIR = PairTables(SCHEMA, "vip", "braze")
NOW = dt.datetime(2026, 3, 2, 6, 0, 0)
DAY = dt.date(2026, 3, 2)


def databricks(sql: str) -> tuple[str, exp.Expression]:
    """`sql` rendered for Databricks, and parsed back by sqlglot's databricks dialect (it must parse)."""
    rendered = render(sql, "databricks", "?")
    return rendered, sqlglot.parse_one(rendered, read="databricks")


def issued(recorder: Recorder, start: str) -> str:
    matches = [sql for sql, _ in recorder.statements if sql.lstrip().upper().startswith(start.upper())]
    assert matches, f"no statement starting with {start!r}"
    return matches[0]


def test_golden_row_hash_is_md5_over_the_same_text():
    rendered, tree = databricks(f"SELECT {SHAPE.hash_sql()} AS h FROM t")
    md5 = tree.find(exp.MD5)
    assert md5 is not None
    # Salt, then separator + coalesce(cast(column as STRING), '\N') per column, joined by || (DPipe).
    coalesces = list(md5.find_all(exp.Coalesce, bfs=False))
    assert [c.this.this.name for c in coalesces] == ["customer_id", "email", "lifetime_value", "city"]
    assert all(c.this.to.this == exp.DataType.Type.TEXT for c in coalesces)
    assert all(c.expressions[0].name == "\\N" for c in coalesces)
    assert [lit.name for lit in md5.find_all(exp.Literal) if lit.name == "\x1f"] == ["\x1f"] * 4
    assert "'\\037'" in rendered and "'\\\\N'" in rendered


def test_golden_json_payload_keeps_nulls_and_key_order():
    rendered, tree = databricks(f"SELECT {json_object(SHAPE.fields, alias='a')} AS j FROM t AS a")
    assert "JSON_OBJECT" not in rendered.upper()
    to_json = tree.find(exp.JSONFormat)  # sqlglot reads to_json(named_struct(...)) back as JSONFormat(Struct)
    assert [(kv.name, kv.expression.sql("databricks")) for kv in to_json.this.expressions] == [
        ("email", "`a`.`email`"), ("ltv", "`a`.`lifetime_value`"), ("city", "`a`.`city`")
    ]
    options = to_json.args["options"]  # MAP(k, v, ...) read back as keys and values
    keys, values = ([lit.name for lit in options.args[side].expressions] for side in ("keys", "values"))
    assert dict(zip(keys, values))["ignoreNullFields"] == "false"
    assert "TO_JSON(NAMED_STRUCT('email', `a`.`email`, 'ltv', `a`.`lifetime_value`, 'city', `a`.`city`), MAP(" in rendered
    assert "MAP('ignoreNullFields', 'false'" in rendered


def test_golden_diff_select_joins_on_key_and_compares_hash_null_safely():
    rendered, tree = databricks(delta_select(PAIR, SHAPE, "mirror", "databricks"))
    join = tree.find(exp.Join)
    assert join.side == "FULL" and join.args["on"].sql("databricks") == "a._key = l._key"
    assert isinstance(tree.args["where"].this, exp.NullSafeNEQ)
    assert "`composable`.`audience__vip` AS a" in rendered and "`composable`.`ledger__vip__braze` AS l" in rendered
    assert "TO_JSON(NAMED_STRUCT(" in rendered and "rowid" not in rendered
    upsert, tree = databricks(delta_select(PAIR, SHAPE, "upsert", "databricks"))
    assert tree.find(exp.Join).side == "LEFT"


class AckedBefore(Recorder):
    """A pair whose ledger holds rows (the probe for an empty ledger finds one), so the delta joins."""

    def fetch_all(self, sql, params=None):
        rows = super().fetch_all(sql, params)
        return [(1,)] if sql.startswith("SELECT 1 FROM") and "ledger__" in sql else rows


def test_golden_first_sync_insert_scans_the_snapshot_once_numbered_by_key():
    recorder = Recorder()  # answers the probe for ledger rows with none: a first sync
    compute_delta(recorder, PAIR, SHAPE, "mirror", run_id="r1", partition=DAY, now=NOW)
    rendered, tree = databricks(issued(recorder, f"INSERT INTO {PAIR.delta}"))
    assert tree.find(exp.Join) is None and "`composable`.`audience__vip` AS a" in rendered
    assert "ROW_NUMBER() OVER (ORDER BY a._key NULLS LAST) AS _n" in rendered


def test_golden_delta_insert_binds_every_value_and_transactions_render_as_nothing():
    recorder = AckedBefore()
    compute_delta(recorder, PAIR, SHAPE, "mirror", run_id="r1", partition=DAY, now=NOW)
    insert = issued(recorder, f"INSERT INTO {PAIR.delta}")
    rendered, tree = databricks(insert)
    assert isinstance(tree, exp.Insert) and rendered.count("?") == 4
    assert "? + _n" in rendered  # the rows numbered by key in the select, NULLs last as DuckDB sorts them, said explicitly
    assert "ROW_NUMBER() OVER (ORDER BY COALESCE(a._key, l._key) NULLS LAST) AS _n" in rendered
    statements = [sql.strip().upper() for sql, _ in recorder.statements]
    assert "BEGIN TRANSACTION" in statements and "COMMIT" in statements
    assert [render(s, "databricks", "?") for s in ("BEGIN TRANSACTION", "COMMIT", "ROLLBACK")] == ["", "", ""]


def test_golden_ledger_merge_deletes_updates_inserts_from_the_newest_ack_per_key():
    recorder = Recorder(answer=1)
    ledger.fold_acks(recorder, PAIR)
    rendered, tree = databricks(issued(recorder, "MERGE INTO"))
    assert isinstance(tree, exp.Merge)
    whens = [w.sql("databricks") for w in tree.find_all(exp.When)]
    assert whens[0].startswith("WHEN MATCHED AND s._op = 'remove' THEN DELETE")
    assert whens[1].startswith("WHEN MATCHED THEN UPDATE SET _identifier = s._identifier")
    assert whens[2].startswith("WHEN NOT MATCHED AND s._op <> 'remove' THEN INSERT")
    assert tree.find(exp.Select).args.get("qualify") is not None
    assert rendered.count("?") == 2 and "`composable`.`sync_acks`" in rendered
    update, tree = databricks(issued(recorder, "UPDATE"))
    assert isinstance(tree, exp.Update) and "folded = TRUE" in update


def test_golden_tables_ddl_is_delta_ready():
    recorder = Recorder()
    PAIR.ensure(recorder)
    ledger_ddl, _ = databricks(issued(recorder, f"CREATE TABLE IF NOT EXISTS {PAIR.ledger}"))
    assert "_fields STRING" in ledger_ddl and "_synced_at TIMESTAMP_NTZ NOT NULL" in ledger_ddl
    acks_ddl, tree = databricks(issued(recorder, f"CREATE TABLE IF NOT EXISTS {PAIR.acks}"))
    assert "DEFAULT FALSE" in acks_ddl and "TBLPROPERTIES ('delta.feature.allowColumnDefaults'='supported')" in acks_ddl
    assert "TBLPROPERTIES" not in ledger_ddl


def test_golden_snapshot_swap_renames_within_the_schema_and_columns_come_from_information_schema():
    rendered, _ = databricks(f'ALTER TABLE {PAIR.snapshot[:-1]}__staging" RENAME TO "audience__vip"')
    assert rendered == "ALTER TABLE `composable`.`audience__vip__staging` RENAME TO `composable`.`audience__vip`"
    rendered, _ = databricks("SELECT 1 FROM information_schema.columns WHERE table_name = lower(?)")
    assert "information_schema.columns" in rendered
    assert render("SELECT i FROM range(0, ?) AS r(i)", "databricks", "?") == "SELECT i FROM RANGE(0, ?) AS r(i)"


def test_golden_qualify_stays_but_not_on_a_grouped_select():
    grouped, tree = databricks(
        "SELECT c, k FROM t GROUP BY c, k QUALIFY row_number() OVER (PARTITION BY c ORDER BY count(*) DESC, k) = 1"
    )
    assert "QUALIFY" not in grouped and tree.args["where"].sql("databricks") == "WHERE _w = 1"
    assert tree.find(exp.Subquery).this.args["group"] is not None
    plain, _ = databricks("SELECT c FROM t QUALIFY row_number() OVER (PARTITION BY c ORDER BY k) = 1")
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY c ORDER BY k NULLS LAST) = 1" in plain


# --- Spark: the rendered SQL executed, compared with DuckDB ------------------------------------------------------


class SparkCursor:
    """The part of the connector's cursor DatabricksConnection uses, over a local SparkSession.

    `?` values are bound by Spark's own positional parameters. Spark without Delta cannot CREATE OR REPLACE a
    table, so that one statement runs as DROP then CREATE here (Delta does it atomically).
    """

    def __init__(self, spark, statements: list[str]):
        self.spark = spark
        self.statements = statements
        self._df = None
        self._arrow = None
        self._offset = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._df = self._arrow = None

    def execute(self, sql: str, params: list | None = None):
        self.statements.append(sql)
        if sql.startswith("CREATE OR REPLACE TABLE "):
            name = sqlglot.parse_one(sql, read="databricks").this.sql("databricks")
            self.spark.sql(f"DROP TABLE IF EXISTS {name}")
            sql = "CREATE TABLE " + sql.removeprefix("CREATE OR REPLACE TABLE ")
        values = [getattr(p, "value", p) for p in params] if params else None
        self._df = self.spark.sql(sql, args=values)
        self._arrow, self._offset = None, 0
        return self

    def fetchall(self):
        return [tuple(r) for r in self._df.collect()]

    def fetchone(self):
        rows = self._df.limit(1).collect()
        return tuple(rows[0]) if rows else None

    def fetchall_arrow(self):
        return self._df.toArrow()

    def fetchmany_arrow(self, size: int):
        if self._arrow is None:
            self._arrow = self._df.toArrow()
        part = self._arrow.slice(self._offset, size)
        self._offset += part.num_rows
        return part


class SparkConnector:
    def __init__(self, spark):
        self.spark = spark
        self.statements: list[str] = []  # as sent, in order

    def cursor(self):
        return SparkCursor(self.spark, self.statements)


class SparkDatabricksConnection(DatabricksConnection):
    """DatabricksConnection on local Spark; columns by DESCRIBE TABLE, since OSS Spark has no information_schema."""

    def table_columns(self, schema, table):
        name = f"`{schema}`.`{table}`" if schema else f"`{table}`"
        if not self._con.spark.catalog.tableExists(name.replace("`", "")):
            return []
        rows = self._con.spark.sql(f"DESCRIBE TABLE {name}").collect()
        return [(r[0], r[1]) for r in rows if r[0] and not r[0].startswith("#")]


SPARK_TIMES: dict[str, float] = {}
# Slower than this to start, a local session is impractical on a small shared machine: the Spark tests skip.
SPARK_START_LIMIT_SECONDS = 60


@pytest.fixture(scope="module")
def spark(tmp_path_factory) -> Iterator[Any]:
    """One local Spark session for the module: one core, no UI, one shuffle partition, a temporary warehouse."""
    pytest.importorskip("pyspark")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime for a local Spark session")
    from pyspark.sql import SparkSession

    root = tmp_path_factory.mktemp("spark")
    started = time.monotonic()
    session = (
        SparkSession.builder.master("local[1]")
        .appName("composable-databricks-sql")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(root / "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={root}")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")  # Databricks SQL warehouses default to UTC too
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    SPARK_TIMES["start_seconds"] = time.monotonic() - started
    print(f"\nlocal Spark {session.version} session started in {SPARK_TIMES['start_seconds']:.1f}s")
    if SPARK_TIMES["start_seconds"] > SPARK_START_LIMIT_SECONDS:
        session.stop()
        pytest.skip(f"local Spark took {SPARK_TIMES['start_seconds']:.0f}s to start: too slow here, golden tests only")
    try:
        yield session
    finally:
        session.stop()


# Customers of every column type an audience maps, with NULLs, empty strings, quotes, non-ASCII, fractions.
CUSTOMERS_DDL = (
    "CREATE TABLE customers (customer_id BIGINT, email VARCHAR, lifetime_value DOUBLE, balance DECIMAL(10, 2), "
    "city VARCHAR, signup DATE, last_order_at TIMESTAMP, vip BOOLEAN, orders INTEGER)"
)
CUSTOMERS = [
    (1, "a@example.com", 1234.5, Decimal("12.50"), "Lyon", dt.date(2026, 1, 2), dt.datetime(2026, 2, 1, 10, 0, 0), True, 3),
    (2, "b@example.com", 100.0, Decimal("0.00"), None, dt.date(2025, 12, 31), dt.datetime(2026, 2, 1, 10, 0, 0, 120000), False, 0),
    (3, "", 0.25, None, "São \"Paulo\"", None, None, None, None),
    (4, None, -7.0, Decimal("-3.10"), "back\\slash", dt.date(2026, 2, 28), dt.datetime(2026, 2, 28, 23, 59, 59, 999999), True, 12),
    (5, "e@example.com", 99.99, Decimal("1.00"), "Zürich", dt.date(2026, 1, 1), dt.datetime(2026, 1, 1), False, 1),
    (6, "f@example.com", 5.0, Decimal("5.55"), "Kyiv", dt.date(2026, 1, 6), dt.datetime(2026, 1, 6, 6, 6, 6), True, 6),
    (7, "g@example.com", 7.5, Decimal("7.77"), "Oslo", dt.date(2026, 1, 7), dt.datetime(2026, 1, 7, 7, 7, 7), True, 7),
]
COLUMNS = ["customer_id", "email", "lifetime_value", "balance", "city", "signup", "last_order_at", "vip", "orders"]
FIELDS = {c: c for c in COLUMNS[1:]}
# With a membership attribute (Braze's in_<audience>), a constant in every row's hash salt and JSON payload.
SHAPE_ALL = SyncShape(destination="braze", identifier_column="customer_id", fields=FIELDS, constants={"in_vip": True})


def load_customers(conn: Connection) -> None:
    """The same rows into either engine, through its Connection: DuckDB DDL rendered, values bound."""
    conn.execute("DROP TABLE IF EXISTS customers")
    conn.execute(CUSTOMERS_DDL)
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(CUSTOMERS))
    conn.execute(f"INSERT INTO customers VALUES {rows}", [v for r in CUSTOMERS for v in r])


@pytest.fixture(scope="module")
def engines(spark, tmp_path_factory) -> Iterator[tuple[Connection, Connection]]:
    """(DuckDB, Databricks-on-Spark) connections holding the same customers."""
    spark.sql(f"DROP DATABASE IF EXISTS {SCHEMA} CASCADE")
    spark.sql("DROP TABLE IF EXISTS customers")
    sparky = SparkDatabricksConnection(SparkConnector(spark))
    engine = DuckDBEngine(str(tmp_path_factory.mktemp("duck") / "warehouse.duckdb"))
    with engine.connect() as duck:
        load_customers(duck)
        load_customers(sparky)
        yield duck, sparky


def both(engines, sql: str, params: list | None = None) -> tuple[list[tuple], list[tuple]]:
    duck, sparky = engines
    return duck.fetch_all(sql, params), sparky.fetch_all(sql, params)


def test_spark_row_hash_equals_duckdb_row_for_row(engines):
    sql = f"SELECT customer_id, {SHAPE_ALL.hash_sql()} AS h FROM customers ORDER BY customer_id"
    duck, spark = both(engines, sql)
    assert len(duck) == len(CUSTOMERS) and duck == spark


def test_spark_row_hash_text_of_large_doubles_differs_from_duckdb(engines):
    """Known difference: a double of 1e7 or more is cast to text as 1.0E7 by Spark, 10000000.0 by DuckDB.

    Hashes stay stable on each engine; only a ledger carried over from DuckDB would see such rows as updated once.
    """
    duck, spark = both(engines, "SELECT CAST(CAST(? AS DOUBLE) AS VARCHAR), CAST(CAST(? AS DOUBLE) AS VARCHAR)", [1e7, 1234.5])
    assert duck == [("10000000.0", "1234.5")] and spark == [("1.0E7", "1234.5")]


def payload_values(text: str) -> list[tuple[str, Any]]:
    """(key, value) in order; timestamp text as datetimes (DuckDB omits trailing fraction zeros, Spark does not)."""
    out = []
    for key, value in json.loads(text).items():
        if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == " ":
            value = dt.datetime.fromisoformat(value)
        out.append((key, value))
    return out


def test_spark_json_payload_has_duckdbs_keys_and_values(engines):
    sql = f"SELECT customer_id, {json_object(FIELDS)} AS j FROM customers ORDER BY customer_id"
    duck, spark = both(engines, sql)
    assert len(duck) == len(spark) == len(CUSTOMERS)
    for (duck_id, duck_json), (spark_id, spark_json) in zip(duck, spark):
        assert duck_id == spark_id
        assert payload_values(duck_json) == payload_values(spark_json), (duck_json, spark_json)
    row3 = json.loads(dict(spark)[3])
    assert list(row3) == list(FIELDS) and row3["signup"] is None and row3["email"] == ""  # NULLs kept, in order
    assert json.loads(dict(spark)[2])["last_order_at"] == "2026-02-01 10:00:00.120000"


UPSERT_SHAPE = SyncShape("braze_upsert", SHAPE_ALL.identifier_column, SHAPE_ALL.fields, constants=SHAPE_ALL.constants)


def snapshot(conn: Connection) -> list[tuple]:
    build_snapshot(
        conn, schema=SCHEMA, audience="vip", audience_file=Path("audiences/vip.yaml"), model="customers",
        primary_key="customer_id", columns=COLUMNS, where=sqlglot.parse_one("orders IS NULL OR orders < 10", read="duckdb"),
        syncs=[SHAPE_ALL, UPSERT_SHAPE, SyncShape("outbox", "email", {"city": "city"})],
    )
    return conn.fetch_all(f"SELECT * FROM {PAIR.snapshot} ORDER BY _key")


LEDGER = "INSERT INTO {table} (_key, _identifier, _hash, _fields, _synced_at, _run_id) VALUES (?, ?, ?, ?, ?, ?)"


def seed_ledger(conn: Connection, tables: PairTables, hashes: dict[str, str]) -> None:
    """Acknowledged before: 1 and 5 as they are now, 2 with an older hash, 99 no longer a member; 3, 6, 7 never."""
    tables.ensure(conn)
    rows = [
        ("1", "1", hashes["1"], '{"email": "a@example.com"}'),
        ("2", "2", "stale-hash", '{"email": "old@example.com"}'),
        ("5", "5", hashes["5"], '{"email": "e@example.com"}'),
        ("99", "99", "gone-hash", '{"email": "gone@example.com"}'),
    ]
    for key, identifier, hash_, fields in rows:
        conn.execute(LEDGER.format(table=tables.ledger), [key, identifier, hash_, fields, NOW - dt.timedelta(days=1), "r0"])


def delta_rows(conn: Connection, tables: PairTables) -> list[tuple]:
    rows = conn.fetch_all(f"SELECT * FROM {tables.delta} ORDER BY _seq")
    # _fields / _previous compared as JSON values (timestamp text normalized), the rest as is.
    return [(*r[:7], r[7] and payload_values(r[7]), r[8] and json.loads(r[8]), r[9]) for r in rows]


@pytest.fixture(scope="module")
def flow(engines) -> dict[str, Any]:
    """Snapshot, ledger, delta (mirror and upsert) and delivery reads, by the flow's own code, on both engines."""
    out: dict[str, Any] = {"snapshot": tuple(snapshot(conn) for conn in engines)}
    duck = engines[0]
    hashes = dict(duck.fetch_all(f'SELECT _key, "_hash__braze" FROM {PAIR.snapshot}'))
    for mode, shape in (("mirror", SHAPE_ALL), ("upsert", UPSERT_SHAPE)):
        tables = PairTables(SCHEMA, "vip", shape.destination)
        results = []
        for conn in engines:
            seed_ledger(conn, tables, hashes)
            run = compute_delta(conn, tables, shape, mode, run_id=f"run-{mode}", partition=DAY, now=NOW)
            results.append({
                "run": run,
                "rows": delta_rows(conn, tables),
                "latest_of_day": latest_delta_run(conn, tables, DAY),
                "latest": latest_delta_run(conn, tables, None),
                "chunks": list(delivery._chunks(conn, tables, run, batch_size=2)),
            })
        out[mode] = results
    return out


def test_spark_builds_the_same_snapshot_with_the_same_hashes(flow):
    duck, spark = flow["snapshot"]
    assert [r[0] for r in duck] == ["1", "2", "3", "5", "6", "7"]  # orders < 10 or NULL: 4 (12 orders) is out
    # Every column compares as is (ids, text, doubles, decimals, dates, timestamps, booleans), hashes included.
    assert duck == spark


def test_spark_snapshot_swap_replaces_the_table_in_one_statement(engines, flow):
    """DROP t + RENAME s TO t in a block is sent as CREATE OR REPLACE t AS SELECT * FROM s, then DROP s."""
    _, sparky = engines
    sent = sparky._con.statements
    swap = sent.index(
        "CREATE OR REPLACE TABLE `composable`.`audience__vip` AS SELECT * FROM `composable`.`audience__vip__staging`"
    )
    assert sent[swap + 1] == "DROP TABLE `composable`.`audience__vip__staging`"
    assert not any(s.startswith("ALTER TABLE") or s == "DROP TABLE IF EXISTS `composable`.`audience__vip`" for s in sent)
    assert sparky.table_columns(SCHEMA, "audience__vip__staging") == []


def test_spark_computes_the_same_mirror_delta(flow):
    duck, spark = flow["mirror"]
    run = duck["run"]
    assert (run.added, run.updated, run.removed, run.audience_size) == (3, 1, 1, 6)  # 3, 6, 7 new; 2 changed; 99 left
    assert spark["run"] == run
    assert spark["rows"] == duck["rows"]
    assert {(r[3], r[4]) for r in spark["rows"]} == {("add", "3"), ("add", "6"), ("add", "7"), ("update", "2"), ("remove", "99")}
    assert spark["latest_of_day"] == duck["latest_of_day"] == run and spark["latest"] == duck["latest"] == run


def test_spark_computes_the_same_upsert_delta(flow):
    duck, spark = flow["upsert"]
    assert (duck["run"].added, duck["run"].updated, duck["run"].removed) == (3, 1, 0)
    assert spark["run"] == duck["run"] and spark["rows"] == duck["rows"]


def records(chunks) -> list[tuple]:
    return [
        (r.seq, r.change, r.key, r.identifier, r.fields and payload_values(json.dumps(r.fields)), r.previous)
        for batch, _ in chunks for r in batch
    ]


def test_spark_reads_the_same_delivery_batches(flow):
    duck, spark = flow["mirror"]
    assert [(len(batch), skipped) for batch, skipped in spark["chunks"]] == [(len(b), s) for b, s in duck["chunks"]]
    assert records(spark["chunks"]) == records(duck["chunks"]) and len(records(spark["chunks"])) == 5


def test_spark_runs_the_ledger_merge_source_the_same(engines, flow):
    """The MERGE's source (newest acknowledged row per key, by QUALIFY) on both engines; MERGE itself needs Delta."""
    recorder = Recorder(answer=1)
    ledger.fold_acks(recorder, PAIR)
    merge = sqlglot.parse_one(issued(recorder, "MERGE INTO"), read="duckdb")
    source = merge.args["using"].this.sql("duckdb")  # the USING (...) subquery, DuckDB SQL with two `?`
    results = []
    for conn in engines:
        # Two overlapping acknowledged ranges: the newest row per key is taken once, as the MERGE requires.
        ledger.record_acks(conn, PAIR, "sync-1", [(1, 3), (2, 5)], NOW)
        results.append(sorted(conn.fetch_all(source, [PAIR.audience, PAIR.destination])))
    duck, spark = results
    assert sorted((r[0], r[1]) for r in duck) == [("add", "3"), ("add", "6"), ("add", "7"), ("remove", "99"), ("update", "2")]
    normalize = lambda rows: [(*r[:4], r[4] and payload_values(r[4]), *r[5:]) for r in rows]  # noqa: E731
    assert normalize(spark) == normalize(duck)


def test_spark_parses_what_it_cannot_run_without_delta(spark):
    """MERGE, UPDATE, DELETE and CREATE OR REPLACE as rendered: accepted by Spark's own SQL parser."""
    merge, update = Recorder(answer=1), Recorder()
    ledger.fold_acks(merge, PAIR)
    ledger.clear_intents(update, PAIR, "r1")
    statements = {
        issued(merge, "MERGE INTO"): "'MergeIntoTable ('l._key = 's._key), [deleteaction(Some(('s._op = remove)))",
        issued(merge, "UPDATE"): "'UpdateTable [assignment('folded, true)]",
        issued(update, "DELETE FROM"): "'DeleteFromTable",
        f"CREATE OR REPLACE TABLE {PAIR.snapshot} AS SELECT {SHAPE.hash_sql()} AS h FROM customers": "'ReplaceTableAsSelect",
        f'ALTER TABLE {SCHEMA}."audience__vip__staging" RENAME TO "audience__vip"': "'RenameTable [composable, audience__vip]",
    }
    parser = spark._jsparkSession.sessionState().sqlParser()
    for sql, head in statements.items():
        plan = parser.parsePlan(render(sql, "databricks", "?")).toString()
        assert plan.startswith(head), plan
    with pytest.raises(Exception, match="PARSE_SYNTAX_ERROR"):
        parser.parsePlan("MERGE INTO t USING s ON WHEN MATCHED THEN DELETE")  # the parser does refuse bad SQL


def test_spark_streams_arrow_batches_through_the_connection(engines):
    _, sparky = engines
    batches = list(sparky.stream_arrow("SELECT i, i * 2 AS j FROM range(0, ?) AS r(i)", [7], batch_rows=3))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    assert [v for b in batches for v in b.column("j").to_pylist()] == [i * 2 for i in range(7)]
    table = sparky.fetch_arrow("SELECT customer_id, email FROM customers WHERE customer_id > ? ORDER BY customer_id", [5])
    assert table.column_names == ["customer_id", "email"] and table.column("customer_id").to_pylist() == [6, 7]


def test_spark_session_starts_in_utc(spark):
    """A workspace whose default time zone is not UTC: each session is set to UTC before any statement."""
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        databricks_engine.start_session(SparkConnector(spark))
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)


def test_spark_change_marker_falls_back_when_a_table_has_no_history(engines):
    """A table without Delta history (here: every local Spark table) gets the portable row-count marker."""
    _, sparky = engines
    assert sparky.table_marker("customers") == "7:None"
    assert sparky.table_marker("no_such_table") is None


class ScriptedCursor:
    """Answers DESCRIBE HISTORY as Databricks does (version, timestamp, ...) for the tables in `history`."""

    def __init__(self, history: dict[str, tuple], columns: dict[str, list]):
        self.history, self.columns, self.row = history, columns, None
        self.statements: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def execute(self, sql, params=None):
        self.statements.append(sql)
        if sql.startswith("DESCRIBE HISTORY"):
            name = sql.split("`")[1]
            if name not in self.history:
                raise RuntimeError(f"[DELTA_MISSING_DELTA_TABLE] `{name}` is not a Delta table")
            self.rows = [self.history[name]]
        elif "information_schema.columns" in sql:
            self.rows = self.columns.get(params[0], [])
        else:
            self.rows = [(42, None)]

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


class ListCursor:
    def __init__(self, sent: list[str]):
        self.sent = sent

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def execute(self, sql, params=None):
        self.sent.append(sql)


def test_a_held_back_drop_runs_before_the_next_statement_at_commit_and_never_after_rollback():
    sent: list[str] = []
    conn = DatabricksConnection(type("Con", (), {"cursor": lambda self: ListCursor(sent)})())
    conn.execute('DROP TABLE IF EXISTS "s"."a"')  # outside a block: at once
    conn.execute("BEGIN TRANSACTION")
    conn.execute('DROP TABLE IF EXISTS "s"."b"')
    assert sent == ["DROP TABLE IF EXISTS `s`.`a`"]
    conn.execute('INSERT INTO "s"."c" VALUES (?)', [1])  # anything else: the DROP first, in order
    conn.execute('DROP TABLE IF EXISTS "s"."d"')
    conn.execute("COMMIT")
    assert sent == [
        "DROP TABLE IF EXISTS `s`.`a`", "DROP TABLE IF EXISTS `s`.`b`", "INSERT INTO `s`.`c` VALUES (?)",
        "DROP TABLE IF EXISTS `s`.`d`",
    ]
    conn.execute("BEGIN TRANSACTION")
    conn.execute('DROP TABLE IF EXISTS "s"."e"')
    conn.execute("ROLLBACK")
    conn.execute('ALTER TABLE "s"."x" RENAME TO "e"')  # after the block: a plain rename
    assert sent[4:] == ["ALTER TABLE `s`.`x` RENAME TO `s`.`e`"]
    conn.execute("BEGIN TRANSACTION")
    conn.execute('DROP TABLE IF EXISTS "s"."f"')
    conn.execute('ALTER TABLE "s"."other" RENAME TO "g"')  # not a swap of f: the DROP runs, then the rename
    conn.execute("COMMIT")
    assert sent[5:] == ["DROP TABLE IF EXISTS `s`.`f`", "ALTER TABLE `s`.`other` RENAME TO `s`.`g`"]


def test_change_markers_read_the_delta_version_and_fall_back_for_views(monkeypatch):
    cursor = ScriptedCursor(
        history={"orders": (17, dt.datetime(2026, 3, 2, 5, 59), "user", "WRITE")},
        columns={"orders": [("id", "bigint")], "orders_view": [("id", "bigint")]},
    )
    engine = DatabricksEngine.from_url(URL)
    monkeypatch.setattr(engine, "_open", lambda: type("Con", (), {"cursor": lambda self: cursor, "close": lambda self: None})())
    markers = engine.change_markers(["orders", "orders_view", "missing"])
    assert markers == {"orders": "v17@2026-03-02 05:59:00", "orders_view": "42:None", "missing": None}
    assert "DESCRIBE HISTORY `orders` LIMIT 1" in cursor.statements


def test_spark_runs_the_sample_models_as_duckdb_does(spark, tmp_path):
    """The bundled sample's models, materialized as the models asset does, on seeded sample data in both engines."""
    import duckdb

    from composable_assets.warehouse.sql import ident
    from composable_assets_tests.demo import SAMPLE_PROJECT_DIR
    from composable_assets_tests.demo.generator import seed

    models = sorted((SAMPLE_PROJECT_DIR / "models").glob("*.sql"))
    assert [m.stem for m in models] == ["cart_abandoners", "customer_profiles", "order_events"]
    duck = duckdb.connect(str(tmp_path / "sample.duckdb"))
    duck.execute("SET TimeZone = 'UTC'")  # as every engine's session, and the Spark session here
    seed(duck, customers=200)
    previous = spark.catalog.currentDatabase()
    spark.sql("CREATE DATABASE IF NOT EXISTS sample")
    spark.catalog.setCurrentDatabase("sample")
    # cart_abandoners looks back 48 hours from now: an event near that edge could fall on either side while the two
    # engines run, so events within 10 minutes of it are left out of both (the seed is fixed, the clock is not).
    duck.execute(
        "DELETE FROM web_events WHERE occurred_at BETWEEN now()::TIMESTAMP - INTERVAL 48 HOUR - INTERVAL 10 MINUTE "
        "AND now()::TIMESTAMP - INTERVAL 48 HOUR + INTERVAL 10 MINUTE"
    )
    try:
        for source in ("customers", "orders", "web_events"):
            rows = duck.sql(f"SELECT * FROM {source}").to_arrow_table()
            spark.createDataFrame(rows).write.mode("overwrite").saveAsTable(source)
        sparky = SparkDatabricksConnection(SparkConnector(spark))
        for model in models:
            sql = model.read_text()
            sparky.execute(f"CREATE OR REPLACE TABLE {ident(model.stem)} AS {sql}")
            spark_rows = sorted(sparky.fetch_all(f"SELECT * FROM {ident(model.stem)}"), key=repr)
            duck_rows = sorted(duck.sql(sql).fetchall(), key=repr)
            assert len(duck_rows) > 0 and spark_rows == duck_rows, model.name
    finally:
        spark.catalog.setCurrentDatabase(previous)
        spark.sql("DROP DATABASE IF EXISTS sample CASCADE")
        duck.close()


def test_spark_appends_rows_in_values_chunks_through_insert_rows(engines):
    """insert_rows (the log and stream tables' appends): Databricks takes multi-row VALUES chunks, values bound."""
    from composable_assets.warehouse.base import INSERT_CHUNK_ROWS, insert_rows

    _, sparky = engines
    sparky.execute("CREATE TABLE IF NOT EXISTS appended (id BIGINT, name VARCHAR, at TIMESTAMP)")
    rows = [(i, f"name {i}'s", NOW + dt.timedelta(seconds=i)) for i in range(INSERT_CHUNK_ROWS * 2 + 7)]
    insert_rows(sparky, "appended", {"id": "BIGINT", "name": "VARCHAR", "at": "TIMESTAMP"}, rows)
    assert sparky.fetch_all("SELECT id, name, at FROM appended ORDER BY id") == rows

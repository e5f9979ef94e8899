"""BigQuery: the URL, errors without secrets, the REST stand-in's protocol, sessions and transactions, the rendered SQL.

Everything here runs the real google-cloud-bigquery client against the local stand-in (fakes/bigquery.py); the
shared flow test (test_engines_flow.py) runs the whole flow on it too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import duckdb
import pytest

from composable_assets.delta.snapshot import SyncShape
from composable_assets.warehouse.sql import json_object, row_hash
from composable_assets.warehouse import WarehouseError, engine_from_url
from composable_assets.warehouse.dialect import render

from .bigquery_fixtures import BIGQUERY_DATASET, BIGQUERY_PROJECT

pytest.importorskip("google.cloud.bigquery")


def _jobs(fake) -> list[dict]:
    """The query configurations the stand-in received, in order."""
    return [r.body["configuration"]["query"] for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs")]


def _http(fake, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{fake.url}/bigquery/v2/projects/{BIGQUERY_PROJECT}{path}", data=data, method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# URL and credentials ----------------------------------------------------------------------------------------------


def test_the_url_names_project_dataset_and_location():
    engine = engine_from_url("bigquery://my-project/analytics?location=EU")
    assert (engine.project, engine.dataset, engine.location) == ("my-project", "analytics", "EU")
    assert (engine.kind, engine.dialect) == ("bigquery", "bigquery")
    assert engine.describe() == "BigQuery dataset my-project.analytics in EU"
    assert engine_from_url("bigquery://my-project/analytics").location is None


def test_bad_urls_name_the_setting_and_never_show_a_secret():
    with pytest.raises(WarehouseError, match="GOOGLE_APPLICATION_CREDENTIALS") as info:
        engine_from_url("bigquery://me:s3cret-value@my-project/analytics")
    assert "s3cret-value" not in str(info.value)
    with pytest.raises(WarehouseError, match="secret parameter.*credentials") as info:
        engine_from_url("bigquery://my-project/analytics?credentials=s3cret-value")
    assert "s3cret-value" not in str(info.value)
    with pytest.raises(WarehouseError, match="unknown BigQuery URL parameter.*region; known: location"):
        engine_from_url("bigquery://my-project/analytics?region=EU")
    for url in ("bigquery://my-project", "bigquery://my-project/a/b", "bigquery:///analytics"):
        with pytest.raises(WarehouseError, match=r"expected bigquery://project/dataset\?location=EU"):
            engine_from_url(url)


def test_credentials_come_from_adc_and_a_bad_key_file_is_named_not_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPOSABLE_BIGQUERY_ENDPOINT", raising=False)
    key = tmp_path / "key.json"
    key.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "client_email": "sa@p.example",
        "private_key": "-----BEGIN PRIVATE KEY-----\ns3cret-value\n-----END PRIVATE KEY-----\n", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    for path in (key, tmp_path / "missing.json"):
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        with pytest.raises(WarehouseError, match="set GOOGLE_APPLICATION_CREDENTIALS to a service account key") as info:
            with engine_from_url("bigquery://my-project/analytics").connect():
                pass
        assert str(path) in str(info.value) and "s3cret-value" not in str(info.value)


def test_a_missing_dataset_is_named(bigquery_url):
    url = bigquery_url.replace(BIGQUERY_DATASET, "no_such_dataset")
    with pytest.raises(WarehouseError, match="the dataset 'no_such_dataset' in COMPOSABLE_WAREHOUSE does not exist"):
        with engine_from_url(url).connect() as conn:
            conn.fetch_all("SELECT 1")


# The stand-in's protocol --------------------------------------------------------------------------------------------


def test_results_come_in_pages_by_max_results_and_page_token(bigquery_fake):
    status, job = _http(bigquery_fake, "POST", "/jobs", {"configuration": {"query": {
        "query": "SELECT x, CAST(x AS STRING) AS s, x > 2 AS big FROM UNNEST(GENERATE_ARRAY(1, 5)) AS x ORDER BY x",
        "useLegacySql": False,
    }}})
    assert status == 200 and job["status"] == {"state": "RUNNING"}  # the client has to poll, as with BigQuery
    job_id = job["jobReference"]["jobId"]
    assert _http(bigquery_fake, "GET", f"/jobs/{job_id}")[1]["status"] == {"state": "DONE"}
    status, page = _http(bigquery_fake, "GET", f"/queries/{job_id}?maxResults=2")
    assert status == 200 and page["jobComplete"] is True and page["totalRows"] == "5"
    assert page["schema"]["fields"] == [
        {"name": "x", "type": "INTEGER", "mode": "NULLABLE"},
        {"name": "s", "type": "STRING", "mode": "NULLABLE"},
        {"name": "big", "type": "BOOLEAN", "mode": "NULLABLE"},
    ]
    seen = [page["rows"]]
    while "pageToken" in page:
        status, page = _http(bigquery_fake, "GET", f"/queries/{job_id}?maxResults=2&pageToken={page['pageToken']}")
        seen.append(page["rows"])
    assert [[r["f"][0]["v"] for r in rows] for rows in seen] == [["1", "2"], ["3", "4"], ["5"]]
    assert seen[0][0] == {"f": [{"v": "1"}, {"v": "1"}, {"v": "false"}]}
    status, schema_only = _http(bigquery_fake, "GET", f"/queries/{job_id}?maxResults=0")
    assert "rows" not in schema_only and schema_only["totalRows"] == "5"


def test_a_failed_query_is_a_done_job_with_an_error_result_and_a_400(bigquery_fake):
    status, job = _http(bigquery_fake, "POST", "/jobs", {"configuration": {"query": {
        "query": f"SELECT nope FROM {BIGQUERY_DATASET}.missing_table", "useLegacySql": False,
    }}})
    assert status == 200 and job["status"]["state"] == "RUNNING"
    status, job = _http(bigquery_fake, "GET", f"/jobs/{job['jobReference']['jobId']}")
    assert job["status"]["state"] == "DONE" and job["status"]["errorResult"]["reason"] == "notFound"
    status, body = _http(bigquery_fake, "GET", f"/queries/{job['jobReference']['jobId']}")
    assert status == 404 and body["error"]["code"] == 404 and body["error"]["errors"][0]["reason"] == "notFound"
    status, body = _http(bigquery_fake, "GET", "/jobs/no_such_job")
    assert status == 404 and "no_such_job" in body["error"]["message"]
    status, job = _http(bigquery_fake, "POST", "/jobs", {"configuration": {"query": {"query": "SELECT 1 FROM t"}}})
    status, job = _http(bigquery_fake, "GET", f"/jobs/{job['jobReference']['jobId']}")
    assert job["status"]["errorResult"]["message"] == 'Table "t" must be qualified with a dataset (e.g. dataset.table).'


def test_the_client_follows_pages_and_retries_a_backend_error(bigquery_url, bigquery_fake):
    bigquery_fake.page_rows = 3  # a page cap below the result size: fetch_all must follow page tokens
    with engine_from_url(bigquery_url).connect() as conn:
        assert conn.fetch_all("SELECT i FROM range(0, 10) AS r(i) ORDER BY i") == [(i,) for i in range(10)]
        bigquery_fake.faults.fail_next = 1  # one 500 backendError: the client retries it
        assert conn.fetch_all("SELECT 42") == [(42,)]
        with pytest.raises(WarehouseError, match="^BigQuery: .*no_such_column"):
            conn.fetch_all("SELECT no_such_column FROM range(0, 1) AS r(i)")
    pages = [r.query for r in bigquery_fake.requests if "/queries/" in r.path and "pageToken=" in r.query]
    assert len(pages) == 3  # rows 3.., 6.., 9
    assert any(r.status == 500 for r in bigquery_fake.requests)


def test_the_location_and_default_dataset_go_with_every_job(bigquery_url, bigquery_fake):
    with engine_from_url(bigquery_url + "?location=EU").connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT)")
        conn.execute("INSERT INTO t VALUES (?)", [1])
    posted = [r.body for r in bigquery_fake.requests if r.method == "POST"]
    assert all(b["jobReference"]["location"] == "EU" for b in posted)
    assert all(
        b["configuration"]["query"].get("defaultDataset") == {"projectId": BIGQUERY_PROJECT, "datasetId": BIGQUERY_DATASET}
        for b in posted[:-1]  # the last one ends the session
    )


# Sessions, parameters and transactions --------------------------------------------------------------------------------


def test_one_connection_is_one_session_ended_on_close(bigquery_url, bigquery_fake):
    with engine_from_url(bigquery_url).connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT)")
        conn.execute("INSERT INTO t VALUES (1)")
        session = conn.session_id
        assert session in bigquery_fake.sessions
    jobs = _jobs(bigquery_fake)
    assert jobs[0]["createSession"] is True and "connectionProperties" not in jobs[0]
    assert all(j["connectionProperties"] == [{"key": "session_id", "value": session}] for j in jobs[1:])
    assert jobs[-1]["query"] == "CALL BQ.ABORT_SESSION()" and bigquery_fake.sessions == {}


def test_parameters_are_positional_and_typed_from_python_values(bigquery_url, bigquery_fake):
    import datetime as dt
    from decimal import Decimal

    values = [1, 2.5, True, "a?b", None, dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 10, 30, 1, 5), Decimal("1.25")]
    with engine_from_url(bigquery_url).connect() as conn:
        row = conn.fetch_all(f"SELECT {', '.join(['?'] * len(values))}, '?' AS literal", values)
    assert row == [(*values, "?")]
    (job,) = [j for j in _jobs(bigquery_fake) if j.get("queryParameters")]
    assert job["parameterMode"] == "POSITIONAL"
    assert [p["parameterType"]["type"] for p in job["queryParameters"]] == [
        "INT64", "FLOAT64", "BOOL", "STRING", "DATE", "DATETIME", "NUMERIC"
    ]
    # None is an untyped NULL in the text (a typed NULL parameter would not fit a column of another type).
    assert job["query"] == "SELECT ?, ?, ?, ?, NULL, ?, ?, ?, '?' AS literal"


def test_a_null_parameter_fits_a_column_of_any_type(bigquery_url):
    with engine_from_url(bigquery_url).connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT, flag BOOLEAN, day DATE, payload JSON)")
        conn.execute("INSERT INTO t VALUES (?, ?, ?, ?)", [None, None, None, None])
        assert conn.fetch_all("SELECT * FROM t WHERE ? IS NULL", [None]) == [(None, None, None, None)]
        with pytest.raises(WarehouseError, match="2 parameter.*1 value"):
            conn.execute("SELECT ?, ?", [None])


def test_a_transaction_spans_queries_of_the_session(bigquery_url):
    engine = engine_from_url(bigquery_url)
    with engine.connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT)")
        conn.execute("BEGIN TRANSACTION")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (2)")
        assert conn.fetch_all("SELECT count(*) FROM t") == [(2,)]  # seen inside the transaction
        with engine.connect() as other:
            assert other.fetch_all("SELECT count(*) FROM t") == [(0,)]  # not outside it, before COMMIT
        conn.execute("ROLLBACK")
        assert conn.fetch_all("SELECT count(*) FROM t") == [(0,)]
        conn.execute("BEGIN TRANSACTION")
        conn.execute("INSERT INTO t VALUES (3)")
        conn.execute("COMMIT")
    with engine.connect() as conn:
        assert conn.fetch_all("SELECT id FROM t") == [(3,)]


def test_the_snapshot_swap_is_an_atomic_copy_and_ddl_after_dml_is_refused(bigquery_url, bigquery_fake):
    """BigQuery refuses DDL on permanent tables in a transaction; BEGIN, DROP IF EXISTS t, RENAME s TO t still swaps."""
    with engine_from_url(bigquery_url).connect() as conn:
        conn.execute("CREATE TABLE staging AS SELECT 1 AS id")
        conn.execute("CREATE TABLE target AS SELECT 0 AS id")
        conn.execute("BEGIN TRANSACTION")
        conn.execute("DROP TABLE IF EXISTS target")
        conn.execute("ALTER TABLE staging RENAME TO target")
        conn.execute("COMMIT")
        assert conn.fetch_all("SELECT id FROM target") == [(1,)]
        assert conn.table_columns(None, "staging") == []
        conn.execute("BEGIN TRANSACTION")  # a DROP held back and rolled back never ran
        conn.execute("DROP TABLE IF EXISTS target")
        conn.execute("ROLLBACK")
        conn.execute("BEGIN TRANSACTION")  # a DROP held back and committed runs, before the transaction
        conn.execute("CREATE TABLE gone AS SELECT 1 AS id")
        conn.execute("DROP TABLE IF EXISTS gone")
        conn.execute("INSERT INTO target VALUES (2)")
        with pytest.raises(WarehouseError, match="BigQuery runs no DROP statement inside a transaction"):
            conn.execute("DROP TABLE target")
        conn.execute("ROLLBACK")
        assert conn.fetch_all("SELECT id FROM target") == [(1,)]
        assert conn.table_columns(None, "gone") == []
    sent = [j["query"] for j in _jobs(bigquery_fake)]
    swap = sent.index("CREATE OR REPLACE TABLE target COPY staging")
    assert sent[swap + 1] == "DROP TABLE staging" and "BEGIN TRANSACTION" not in sent[:swap]
    assert sent.count("DROP TABLE IF EXISTS target") == 0
    assert sent.index("DROP TABLE IF EXISTS gone") < sent.index("BEGIN TRANSACTION")
    # The stand-in keeps the rule too, so the engine cannot silently break it.
    with engine_from_url(bigquery_url).connect() as conn:
        conn._submit("BEGIN TRANSACTION")
        with pytest.raises(WarehouseError, match="DROP_TABLE on a permanent table is not supported inside a transaction"):
            conn._submit("DROP TABLE target")


def test_a_failed_statement_rolls_its_transaction_back_and_rollback_keeps_the_error(bigquery_url):
    engine = engine_from_url(bigquery_url)
    with engine.connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT)")
        conn.execute("BEGIN TRANSACTION")
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(WarehouseError, match="no_such_table"):
            conn.execute("INSERT INTO t SELECT id FROM no_such_table")
        conn.execute("ROLLBACK")  # BigQuery already rolled back: nothing to send, no second error
        assert conn.fetch_all("SELECT count(*) FROM t") == [(0,)]


def test_acks_fold_by_merge_inside_a_transaction(bigquery_url):
    import datetime as dt

    from composable_assets.delta.ledger import fold_acks, record_acks
    from composable_assets.store import PairTables

    tables = PairTables("composable", "a", "d")
    now, day = dt.datetime(2026, 3, 2), dt.date(2026, 3, 2)
    with engine_from_url(bigquery_url).connect() as conn:
        assert conn.has_merge
        tables.ensure(conn)
        rows = [
            (day, "r1", 1, "add", "k1", "i1", "h1", '{"x": 1}', None, now),
            (day, "r1", 2, "add", "k2", "i2", "h2", '{"x": 2}', None, now),
            (day, "r2", 3, "update", "k1", "i1", "h1b", '{"x": 3}', '{"x": 1}', now),
            (day, "r2", 4, "remove", "k2", "i2", None, None, '{"x": 2}', now),
        ]
        # BigQuery does not turn a STRING into JSON by itself: json(?) is PARSE_JSON there.
        conn.execute(
            f"INSERT INTO {tables.delta} VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, json(?), json(?), ?)'] * len(rows))}",
            [v for r in rows for v in r],
        )
        record_acks(conn, tables, "r1", [(1, 2)], now)
        assert fold_acks(conn, tables) == 1
        record_acks(conn, tables, "r2", [(3, 4)], now)
        assert fold_acks(conn, tables) == 1
        ledger = conn.fetch_all(f"SELECT _key, _identifier, _hash, _fields FROM {tables.ledger}")
    assert [(k, i, h, json.loads(f)) for k, i, h, f in ledger] == [("k1", "i1", "h1b", {"x": 3})]


# Change markers -------------------------------------------------------------------------------------------------------


def test_change_markers_come_from_table_metadata_and_move_with_the_data(bigquery_url, bigquery_fake):
    engine = engine_from_url(bigquery_url)
    with engine.connect() as conn:
        conn.execute("CREATE TABLE orders (id BIGINT, total DOUBLE)")
        conn.execute("INSERT INTO orders VALUES (1, 10.0)")
    seen = [engine.change_markers(["orders", "missing"])]
    assert seen[0]["missing"] is None and seen[0]["orders"].startswith("1:")
    assert engine.change_markers(["orders"])["orders"] == seen[0]["orders"]  # nothing changed: same marker
    with engine.connect() as conn:  # a rolled-back change is no change
        conn.execute("BEGIN TRANSACTION")
        conn.execute("UPDATE orders SET total = 11.0")
        conn.execute("ROLLBACK")
    assert engine.change_markers(["orders"])["orders"] == seen[0]["orders"]
    for statement in ("INSERT INTO orders VALUES (2, 5.0)", "UPDATE orders SET total = 12.0 WHERE id = 1",
                      "DELETE FROM orders WHERE id = 2"):
        with engine.connect() as conn:
            conn.execute(statement)
        seen.append(engine.change_markers(["orders"]))
        assert seen[-1]["orders"] != seen[-2]["orders"], statement
    # Markers are read with tables.get, not with query jobs.
    jobs_before = len(_jobs(bigquery_fake))
    engine.change_markers(["orders"])
    assert len(_jobs(bigquery_fake)) == jobs_before


# The rendered SQL ----------------------------------------------------------------------------------------------------


def test_the_row_hash_is_hex_text_and_json_keeps_nulls():
    shape = SyncShape("dest", "id", {"email": "email", "name": "name"})
    assert render(f"SELECT {shape.hash_sql()} FROM t", "bigquery", "?").startswith("SELECT TO_HEX(MD5(")
    assert render(f"SELECT {json_object({'e': 'email'})} FROM t", "bigquery", "?") == (
        "SELECT JSON_OBJECT('e', `email`) FROM t"
    )
    assert render("SELECT i FROM range(1, ?) AS r(i)", "bigquery", "?") == (
        "SELECT i FROM (SELECT i FROM UNNEST(GENERATE_ARRAY(1, ? - 1)) AS i) AS r"
    )
    assert render("CREATE TABLE t (f BOOLEAN NOT NULL DEFAULT false)", "bigquery", "?") == (
        "CREATE TABLE t (f BOOL DEFAULT FALSE NOT NULL)"
    )
    assert render("SELECT a FROM t QUALIFY row_number() OVER (ORDER BY a) = 1", "bigquery", "?") == (
        "SELECT a FROM t WHERE TRUE QUALIFY ROW_NUMBER() OVER (ORDER BY a NULLS LAST) = 1"
    )


def test_hashes_and_json_payloads_agree_with_duckdb(bigquery_url):
    """The same rows hash to the same hex text as on DuckDB (NULL differs from ''); JSON payloads keep NULL as null."""
    rows = [(1, "a", "b"), (2, None, "b"), (3, "", "b"), (4, "ab", ""), (5, "a", "b")]
    select = f"SELECT id, {row_hash(['x', 'y'], salt='s')} AS h, {json_object({'x': 'x', 'y': 'y'})} AS j FROM t ORDER BY id"
    with engine_from_url(bigquery_url).connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT, x VARCHAR, y VARCHAR)")
        conn.execute(f"INSERT INTO t VALUES {', '.join(['(?, ?, ?)'] * len(rows))}", [v for r in rows for v in r])
        remote = conn.fetch_all(select)
    local = duckdb.connect()
    local.execute("CREATE TABLE t (id BIGINT, x VARCHAR, y VARCHAR)")
    local.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    expected = local.execute(select).fetchall()
    assert [(i, h) for i, h, _ in remote] == [(i, h) for i, h, _ in expected]
    assert [json.loads(j) for _, _, j in remote] == [json.loads(j) for _, _, j in expected]
    hashes = [h for _, h, _ in remote]
    assert hashes[0] == hashes[4] and len(set(hashes)) == 4 and all(len(h) == 32 for h in hashes)
    assert json.loads(remote[1][2]) == {"x": None, "y": "b"}

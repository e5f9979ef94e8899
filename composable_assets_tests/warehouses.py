"""The warehouses tests can reach here, as fixtures that yield a warehouse URL and clean up after themselves.

PostgreSQL is the server on 127.0.0.1:5432 (a database per test, dropped after it); Snowflake is the real
connector against fakesnow, patched in-process, a database under the test's tmp_path.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

PG_HOST = os.environ.get("COMPOSABLE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("COMPOSABLE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("COMPOSABLE_TEST_PG_USER", "postgres")


def _admin():
    import psycopg2

    con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    con.autocommit = True
    return con


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local server, dropped (WITH (FORCE)) at the end."""
    import psycopg2

    try:
        admin = _admin()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT}: {exc}")
    name = f"composable_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def snowflake_url(tmp_path: Path, monkeypatch) -> Iterator[str]:
    """The real Snowflake connector against fakesnow, in-process: a database of its own under tmp_path."""
    fakesnow = pytest.importorskip("fakesnow")
    # Any password does in-process; dagster-snowflake's resource refuses to be built without credentials.
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", "fakesnow")
    (tmp_path / "fakesnow").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fakesnow"):
        yield "snowflake://tester@fake_account/composable_test/public?warehouse=test_wh&role=test_role"


# Every engine the one flow test body runs on here; each has a `<name>_url` fixture (DuckDB's is a file).
FLOW_ENGINES = ["duckdb", "postgres", "snowflake", "snowflake_server", "bigquery"]


@pytest.fixture(params=FLOW_ENGINES)
def warehouse_url(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="module")
def fakesnow_server() -> Iterator[dict]:
    """fakesnow's local server (HTTP, as Snowflake's REST API), for the connector's real network path."""
    # Started here rather than with `fakesnow.server()`: that function imports the module `fakesnow.server`, which
    # then shadows the function on the package, so a second module's fixture could not call it.
    pytest.importorskip("fakesnow")
    uvicorn = pytest.importorskip("uvicorn")
    from fakesnow.server import app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="fakesnow server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "fakesnow's server did not start"
    try:
        yield {"user": "fake", "password": "snow", "account": "fakesnow", "host": "127.0.0.1", "port": port}
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def snowflake_server_url(fakesnow_server: dict, monkeypatch) -> str:
    """A database of its own on fakesnow's server; the password comes from the environment, as in production."""
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", fakesnow_server["password"])
    database = f"composable_{uuid.uuid4().hex[:10]}"
    return (
        f"snowflake://{fakesnow_server['user']}@{fakesnow_server['account']}/{database}/public"
        f"?host={fakesnow_server['host']}&port={fakesnow_server['port']}&protocol=http&warehouse=test_wh"
    )

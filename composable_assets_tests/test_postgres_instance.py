"""deploy/dagster.yaml against a real PostgreSQL: a sample job's runs, materializations, cursors and pools live there.

Needs PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth), or wherever DAGSTER_PG_HOST, DAGSTER_PG_PORT,
DAGSTER_PG_USER and DAGSTER_PG_PASSWORD point. Each test run creates its own database and drops it at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from composable_assets.definitions import load_definitions
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator

DEPLOY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
DAY = dt.date(2026, 11, 2)  # a Monday after the sample's start_date: the weekly audiences' partition
JOB = "sync_lapsed_customers"  # the sample's smallest job: one model, one audience, a delta and an outbox sync
SYNC_KEY = dg.AssetKey(["sync", "lapsed_customers", "outbox"])


def _server() -> dict[str, str]:
    return {
        "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
        "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT", "5432"),
        "DAGSTER_PG_USER": os.environ.get("DAGSTER_PG_USER", "postgres"),
        "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),
    }


def _connect(server: dict[str, str], dbname: str):
    return psycopg2.connect(
        host=server["DAGSTER_PG_HOST"], port=int(server["DAGSTER_PG_PORT"]), user=server["DAGSTER_PG_USER"],
        password=server["DAGSTER_PG_PASSWORD"], dbname=dbname, connect_timeout=5,
    )


@pytest.fixture
def pg_database():
    """A fresh, uniquely named database for this test; dropped afterwards (even if the test failed)."""
    server = _server()
    name = f"composable_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = _connect(server, "postgres")
    except psycopg2.OperationalError as exc:
        pytest.fail(f"this test needs PostgreSQL at {server['DAGSTER_PG_HOST']}:{server['DAGSTER_PG_PORT']}: {exc}")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield {**server, "DAGSTER_PG_DB": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() == (0,), f"database {name} was not dropped"
        admin.close()


@pytest.fixture
def production_home(pg_database, tmp_path, monkeypatch):
    """DAGSTER_HOME holding a copy of deploy/dagster.yaml, its DAGSTER_PG_* variables naming the fresh database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in pg_database.items():
        monkeypatch.setenv(name, value)
    return pg_database


@pytest.fixture
def sample_project(tmp_path, monkeypatch):
    """The bundled sample on a temporary DuckDB file, seeded with 200 customers as of DAY."""
    data = tmp_path / "data"
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(SAMPLE_PROJECT_DIR))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", f"duckdb:///{warehouse}")
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(data))
    with duckdb.connect(str(warehouse)) as con:
        generator.seed(con, customers=200, as_of=DAY)
    return warehouse


def test_deploy_yaml_takes_every_connection_value_from_the_environment():
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    # Run limits live under `concurrency`; the queue's own settings must not repeat them (Dagster refuses both).
    assert "max_concurrent_runs" not in config.get("run_coordinator", {}).get("config", {})
    assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1


def test_a_partitioned_sample_run_its_cursors_and_pools_live_in_postgres(production_home, sample_project):
    instance = dg.DagsterInstance.get()
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        # The next run may start up while the one holding the warehouse pool runs its steps.
        assert instance.get_concurrency_config().run_queue_config.op_concurrency_slot_buffer == 1

        defs = load_definitions()
        result = defs.resolve_job_def(JOB).execute_in_process(partition_key=DAY.isoformat(), instance=instance)
        assert result.success
        added = result.asset_materializations_for_node(SYNC_KEY.to_python_identifier())[0].metadata["added"].value
        assert added > 0

        # What a sensor keeps between ticks, and what an operator sets with `dagster instance concurrency set`.
        instance.daemon_cursor_storage.set_cursor_values({"composable/test_cursor": f"{DAY.isoformat()}:{added}"})
        instance.event_log_storage.set_concurrency_slots("braze_api", 3)
    finally:
        instance.dispose()

    # A new instance object (as after a restart of the webserver or daemon) reads it all back from PostgreSQL.
    instance = dg.DagsterInstance.get()
    try:
        [record] = instance.get_run_records(dg.RunsFilter(job_name=JOB))
        assert record.dagster_run.run_id == result.run_id
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == DAY.isoformat()
        [materialization] = instance.fetch_materializations(SYNC_KEY, limit=1).records
        assert materialization.run_id == result.run_id
        assert materialization.partition_key == DAY.isoformat()
        assert materialization.asset_materialization.metadata["added"].value == added
        assert instance.daemon_cursor_storage.get_cursor_values({"composable/test_cursor"}) == {
            "composable/test_cursor": f"{DAY.isoformat()}:{added}"
        }
        # The run claimed the warehouse pool, which the instance created with default_limit: 1.
        warehouse = instance.event_log_storage.get_concurrency_info("warehouse")
        assert (warehouse.limit, warehouse.using_default_limit, warehouse.claimed_slots) == (1, True, [])
        assert instance.event_log_storage.get_concurrency_info("braze_api").slot_count == 3
    finally:
        instance.dispose()

    # And it is really in PostgreSQL's tables, not in files under DAGSTER_HOME.
    with _connect(production_home, production_home["DAGSTER_PG_DB"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, pipeline_name, status, partition FROM runs")
        assert cur.fetchall() == [(result.run_id, JOB, "SUCCESS", DAY.isoformat())]
        cur.execute(
            "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND run_id = %s ORDER BY id",
            (result.run_id,),
        )
        stored = cur.fetchall()
        assert stored == [(e.asset_key.to_string(), e.partition) for e in result.get_asset_materialization_events()]
        assert (SYNC_KEY.to_string(), DAY.isoformat()) in stored
        cur.execute("SELECT value FROM kvs WHERE key = 'composable/test_cursor'")
        assert cur.fetchall() == [(f"{DAY.isoformat()}:{added}",)]
        cur.execute('SELECT concurrency_key, "limit", using_default_limit FROM concurrency_limits ORDER BY 1')
        assert cur.fetchall() == [("braze_api", 3, False), ("warehouse", 1, True)]
        cur.execute("SELECT concurrency_key, count(*) FROM concurrency_slots WHERE NOT deleted GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("braze_api", 3), ("warehouse", 1)]
    assert not (Path(os.environ["DAGSTER_HOME"]) / "history").exists()  # no SQLite run storage was created

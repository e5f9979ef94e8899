"""The minute-level change sensor, driven tick by tick with explicit cursors and clocks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import zoneinfo

import dagster as dg
import pytest

from composable_assets.automation.sensors import change_sensor
from composable_assets.definitions import load_definitions
from composable_assets.landing import landing_folders
from composable_assets.project import load_project
from composable_assets.sample import SAMPLE_PROJECT_DIR, generator
from composable_assets.sample.simulator import Simulator
from composable_assets.settings import Settings
from composable_assets.warehouse import Warehouse

from .test_landing import land_parquet

SENSOR = "cart_abandoners_on_change"
JOB = "sync_cart_abandoners"


@pytest.fixture
def sample(tmp_path):
    """The sample seeded into a temporary warehouse, with its landing folders and definitions."""
    settings = Settings(SAMPLE_PROJECT_DIR, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path)
    warehouse = Warehouse(url=settings.warehouse_url)
    with warehouse.connect() as conn:
        generator.seed(conn.raw, customers=200)
    project = load_project(SAMPLE_PROJECT_DIR)
    folders = landing_folders(project.settings.landing, tmp_path)
    return settings, warehouse, folders, load_definitions(settings)


def tick(defs, instance, cursor=None, name=SENSOR):
    sensor = defs.resolve_sensor_def(name) if isinstance(name, str) else name
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, context.cursor


def today() -> str:
    return dt.datetime.now(zoneinfo.ZoneInfo("UTC")).date().isoformat()


def run_job_in_process(defs, instance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(JOB).execute_in_process(instance=instance, partition_key=today())


def test_new_files_request_todays_partition_once_and_the_cursor_remembers(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        run_job_in_process(defs, instance)  # a recent run: no heartbeat due
        result, cursor = tick(defs, instance)
        assert not result.run_requests
        assert "no new data in customers, orders, web_events" in result.skip_message

        Simulator(folders, warehouse, seed=1).tick()
        result, cursor = tick(defs, instance)
        [request] = result.run_requests
        assert request.partition_key == today()
        assert request.tags["composable/changed"] == "customers,orders,web_events"
        newest = json.loads(cursor)
        assert newest["orders"] == folders["orders"].marker()

        # The daemon passes the stored cursor to the next tick (it survives a restart): nothing is requested twice.
        again, cursor_after = tick(defs, instance, cursor=cursor)
        assert not again.run_requests and cursor_after == cursor

        # Only a new file in one folder: only that table is named.
        folders["orders"].path.joinpath("later").mkdir()  # a stray folder is ignored
        land_parquet(folders["orders"], [{"order_id": 10**9, "customer_id": 1}])
        result, _ = tick(defs, instance, cursor=cursor)
        assert result.run_requests[0].tags["composable/changed"] == "orders"


def test_a_run_in_flight_makes_the_sensor_wait_without_losing_the_change(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        Simulator(folders, warehouse, seed=1).tick()
        running = dg.DagsterRun(job_name=JOB, run_id="a1b2c3d4-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(running)
        result, cursor = tick(defs, instance)
        assert not result.run_requests
        assert "run a1b2c3d4 of sync_cart_abandoners is started" in result.skip_message
        assert "new data in customers, orders, web_events waits for it" in result.skip_message
        assert cursor is None  # not advanced: the change is requested once the run is done

        instance.report_run_failed(running)
        result, _ = tick(defs, instance, cursor=cursor)
        assert len(result.run_requests) == 1


def test_the_loaded_files_are_no_news_after_the_run(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        Simulator(folders, warehouse, seed=1).tick()
        result, cursor = tick(defs, instance)
        assert result.run_requests
        outcome = run_job_in_process(defs, instance)
        assert outcome.success
        assert all(f.pending() == [] for f in folders.values())
        result, _ = tick(defs, instance, cursor=cursor)
        assert not result.run_requests


def test_a_quiet_target_gets_a_heartbeat_run_once_half_its_warn_window_has_passed(sample):
    settings, warehouse, folders, defs = sample
    job = defs.resolve_job_def(JOB)
    clock = {"now": time.time()}
    sensor = change_sensor(
        "cart_abandoners", dg.define_asset_job(JOB), ["orders"], folders, warehouse, "UTC",
        heartbeat=dt.timedelta(minutes=1), clock=lambda: clock["now"],
    )
    with dg.instance_for_test() as instance:
        # Never run: the first tick proves the destination current.
        result, _ = tick(defs, instance, name=sensor)
        assert result.run_requests[0].tags["composable/trigger"] == "heartbeat"
        job.execute_in_process(instance=instance, partition_key=today())
        result, _ = tick(defs, instance, name=sensor)
        assert not result.run_requests
        clock["now"] = time.time() + 61
        result, _ = tick(defs, instance, name=sensor)
        [request] = result.run_requests
        assert request.tags["composable/trigger"] == "heartbeat" and request.partition_key == today()


def test_a_warehouse_table_marker_sees_new_rows_and_a_locked_warehouse_is_a_skip(sample, tmp_path):
    settings, warehouse, folders, defs = sample
    sensor = change_sensor("t", dg.define_asset_job(JOB), ["consents"], {}, warehouse, "UTC", heartbeat=None)
    with dg.instance_for_test() as instance:
        result, cursor = tick(defs, instance, name=sensor)
        assert len(result.run_requests) == 1
        result, cursor = tick(defs, instance, cursor=cursor, name=sensor)
        assert not result.run_requests and "no new data in consents" in result.skip_message
        with warehouse.connect() as conn:
            conn.execute("UPDATE consents SET updated_at = now() WHERE customer_id = 1")
        result, cursor2 = tick(defs, instance, cursor=cursor, name=sensor)
        assert len(result.run_requests) == 1 and cursor2 != cursor

        # Another process (a run) holds DuckDB's one-writer lock: the sensor skips quickly instead of waiting.
        holder = subprocess.Popen(
            [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(tmp_path / 'w.duckdb')!r}); "
             "print('locked', flush=True); time.sleep(30)"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            result, _ = tick(defs, instance, cursor=cursor2, name=sensor)
            assert time.monotonic() - started < 5
            assert not result.run_requests and "in use by another process" in result.skip_message
        finally:
            holder.kill()
            holder.wait()


def test_minute_level_syncs_carry_a_time_window_and_weekly_ones_a_monday_deadline(sample):
    *_, defs = sample
    graph = defs.resolve_asset_graph()
    vip = graph.get(dg.AssetKey(["sync", "vip_customers", "braze"])).freshness_policy
    newsletter = graph.get(dg.AssetKey(["sync", "weekly_newsletter", "iterable"])).freshness_policy
    assert (vip.warn_window.to_timedelta(), vip.fail_window.to_timedelta()) == (dt.timedelta(minutes=2), dt.timedelta(minutes=5))
    assert newsletter.deadline_cron == "0 9 * * 1" and newsletter.timezone == "UTC"
    assert {s.name for s in defs.sensors} == {"vip_customers_on_change", "cart_abandoners_on_change", "stream_purchases_on_change"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)

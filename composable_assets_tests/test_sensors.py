"""The minute-level change sensor, driven tick by tick with explicit cursors and clocks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from composable_assets.automation.sensors import JOB_NAME, SENSOR_NAME, Watch, change_sensor, minute_level_job
from composable_assets.definitions import load_definitions
from composable_assets.landing import landing_folders
from composable_assets.project import load_project
from composable_assets.settings import Settings
from composable_assets.warehouse import Warehouse
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator
from composable_assets_tests.demo.simulator import Simulator

from .test_landing import land_parquet

VIP_SYNC = dg.AssetKey(["sync", "vip_customers", "braze"])
CART_SYNC = dg.AssetKey(["sync", "cart_abandoners", "outbox"])
PURCHASES = dg.AssetKey(["stream", "purchases", "braze"])
LOAD_ORDERS = dg.AssetKey(["source", "orders"])


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


def tick(defs, instance, cursor=None, sensor=None):
    sensor = sensor or defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, context.cursor


def today() -> str:
    return dt.datetime.now(zoneinfo.ZoneInfo("UTC")).date().isoformat()


def quiet_cursor(defs, instance) -> str:
    """The cursor after the first tick, which runs everything once (nothing was ever requested)."""
    result, cursor = tick(defs, instance)
    assert result.run_requests[0].tags["composable/trigger"] == "heartbeat"
    return cursor


def test_new_files_request_todays_partition_of_every_affected_file_in_one_run(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        cursor = quiet_cursor(defs, instance)
        result, cursor = tick(defs, instance, cursor=cursor)
        assert not result.run_requests
        assert "no new data in customers, orders, web_events" in result.skip_message

        Simulator(folders, warehouse, seed=1).tick()
        result, cursor = tick(defs, instance, cursor=cursor)
        [request] = result.run_requests
        assert request.partition_key == today()
        assert request.tags["composable/changed"] == "customers,orders,web_events"
        assert request.tags["composable/targets"] == "cart_abandoners,vip_customers,stream:purchases"  # file order
        assert {VIP_SYNC, CART_SYNC, PURCHASES, LOAD_ORDERS} <= set(request.asset_selection)
        assert json.loads(cursor)["markers"]["orders"] == folders["orders"].marker()

        # The daemon passes the stored cursor to the next tick (it survives a restart): nothing is requested twice.
        again, cursor_after = tick(defs, instance, cursor=cursor)
        assert not again.run_requests and cursor_after == cursor

        # Only web events changed: only the cart abandoners (and what they read) run.
        land_parquet(folders["web_events"], [{"event_id": "e1", "customer_id": 1, "event_type": "add_to_cart"}])
        result, _ = tick(defs, instance, cursor=cursor)
        [request] = result.run_requests
        assert request.tags["composable/targets"] == "cart_abandoners"
        assert CART_SYNC in request.asset_selection and VIP_SYNC not in request.asset_selection
        assert PURCHASES not in request.asset_selection


def test_a_run_waiting_to_start_makes_the_sensor_wait_without_losing_the_change(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        cursor = quiet_cursor(defs, instance)
        Simulator(folders, warehouse, seed=1).tick()
        running = dg.DagsterRun(job_name=JOB_NAME, run_id="a1b2c3d4-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.STARTING)
        instance.add_run(running)
        result, cursor_after = tick(defs, instance, cursor=cursor)
        assert not result.run_requests
        assert "run a1b2c3d4 of minute_level is starting" in result.skip_message
        assert "new data in customers, orders, web_events waits for it" in result.skip_message
        assert cursor_after == cursor  # not advanced: the change is requested once the run is done

        instance.report_run_failed(running)
        result, _ = tick(defs, instance, cursor=cursor)
        assert len(result.run_requests) == 1


def test_a_run_already_executing_does_not_hold_the_next_change_back(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        cursor = quiet_cursor(defs, instance)
        Simulator(folders, warehouse, seed=1).tick()
        running = dg.DagsterRun(job_name=JOB_NAME, run_id="a1b2c3d4-0000-0000-0000-000000000000", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(running)
        result, _ = tick(defs, instance, cursor=cursor)
        [request] = result.run_requests
        assert request.tags["composable/refresh"] == "incremental"


def test_the_files_a_run_loaded_are_no_news_after_it(sample):
    settings, warehouse, folders, defs = sample
    with dg.instance_for_test() as instance:
        cursor = quiet_cursor(defs, instance)
        Simulator(folders, warehouse, seed=1).tick()
        result, cursor = tick(defs, instance, cursor=cursor)
        [request] = result.run_requests
        # Run what was requested (the sensor's own job, the subset it asked for), as the daemon would.
        job = defs.resolve_job_def(JOB_NAME)
        cart_only = [k for k in request.asset_selection if "braze" not in k.path and "iterable" not in k.path]
        outcome = job.execute_in_process(instance=instance, partition_key=request.partition_key, asset_selection=cart_only)
        assert outcome.success
        assert all(f.pending() == [] for f in folders.values())
        result, _ = tick(defs, instance, cursor=cursor)
        assert not result.run_requests


def test_a_quiet_file_gets_a_heartbeat_run_once_its_interval_has_passed(sample):
    settings, warehouse, folders, defs = sample
    clock = {"now": time.time()}
    watches = [
        Watch("often", ("orders",), (VIP_SYNC,), heartbeat=dt.timedelta(minutes=1)),
        Watch("never", ("orders",), (CART_SYNC,), heartbeat=None),
    ]
    sensor = change_sensor(watches, minute_level_job(watches), folders, warehouse, "UTC", clock=lambda: clock["now"])
    with dg.instance_for_test() as instance:
        # Never requested: the first tick proves the destination current.
        result, cursor = tick(defs, instance, sensor=sensor)
        [request] = result.run_requests
        assert request.tags["composable/trigger"] == "heartbeat" and request.asset_selection == [VIP_SYNC]
        clock["now"] += 59
        result, cursor = tick(defs, instance, cursor=cursor, sensor=sensor)
        assert not result.run_requests
        clock["now"] += 1
        result, cursor = tick(defs, instance, cursor=cursor, sensor=sensor)
        [request] = result.run_requests
        assert request.tags["composable/targets"] == "often"
        assert request.partition_key == dt.datetime.fromtimestamp(clock["now"], dt.UTC).date().isoformat()


@contextmanager
def warehouse_held(path: Path) -> Iterator[None]:
    """Another process (as a run would) holds the DuckDB file's one-writer lock while the block runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); "
         "print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_warehouse_table_marker_sees_new_rows_and_a_locked_warehouse_is_a_skip(sample, tmp_path):
    settings, warehouse, folders, defs = sample
    watches = [Watch("consent_audience", ("consents",), (VIP_SYNC,))]
    sensor = change_sensor(watches, minute_level_job(watches), {}, warehouse, "UTC")
    with dg.instance_for_test() as instance:
        result, cursor = tick(defs, instance, sensor=sensor)
        assert len(result.run_requests) == 1
        result, cursor = tick(defs, instance, cursor=cursor, sensor=sensor)
        assert not result.run_requests and "no new data in consents" in result.skip_message
        with warehouse.connect() as conn:
            conn.execute("UPDATE consents SET updated_at = now() WHERE customer_id = 1")
        result, cursor2 = tick(defs, instance, cursor=cursor, sensor=sensor)
        assert len(result.run_requests) == 1 and cursor2 != cursor

        # Another process (a run) holds DuckDB's one-writer lock: the sensor skips quickly instead of waiting.
        with warehouse_held(tmp_path / "w.duckdb"):
            started = time.monotonic()
            result, _ = tick(defs, instance, cursor=cursor2, sensor=sensor)
            assert time.monotonic() - started < 5
            assert not result.run_requests and "in use by another process" in result.skip_message


def test_a_landed_file_is_requested_while_a_run_holds_the_warehouse(sample, tmp_path):
    """Landing folders are read without the warehouse: a run holding DuckDB's lock (most of the time, under load)
    must not hold back the next change; the warehouse tables are looked at again at the next tick."""
    settings, warehouse, folders, defs = sample
    watches = [Watch("vip", ("consents", "orders"), (VIP_SYNC,))]
    sensor = change_sensor(watches, minute_level_job(watches), {"orders": folders["orders"]}, warehouse, "UTC")
    with dg.instance_for_test() as instance:
        _, cursor = tick(defs, instance, sensor=sensor)
        with warehouse_held(tmp_path / "w.duckdb"):
            result, _ = tick(defs, instance, cursor=cursor, sensor=sensor)
            assert not result.run_requests and "in use by another process" in result.skip_message
            land_parquet(folders["orders"], [{"order_id": 1, "customer_id": 1}])
            result, locked_cursor = tick(defs, instance, cursor=cursor, sensor=sensor)
            assert len(result.run_requests) == 1 and result.run_requests[0].tags["composable/changed"] == "orders"
        # The consents marker was not read under the lock: it stays as last seen.
        assert json.loads(locked_cursor)["markers"]["consents"] == json.loads(cursor)["markers"]["consents"]
        with warehouse.connect() as conn:
            conn.execute("UPDATE consents SET updated_at = now() WHERE customer_id = 1")
        result, _ = tick(defs, instance, cursor=locked_cursor, sensor=sensor)
        assert result.run_requests and result.run_requests[0].tags["composable/changed"] == "consents"


def test_a_five_second_sensor_ticks_on_every_look_of_the_daemon():
    """The daemon looks every 5 s and the last tick is then just under 5 s old: a 5 s minimum ticked every 10 s."""
    from composable_assets.automation.sensors import tick_interval

    assert tick_interval(5) < 5 and tick_interval(30) == 29 and tick_interval(1) == 1


def test_minute_level_syncs_carry_a_time_window_and_weekly_ones_a_monday_deadline(sample):
    *_, defs = sample
    graph = defs.resolve_asset_graph()
    vip = graph.get(VIP_SYNC).freshness_policy
    newsletter = graph.get(dg.AssetKey(["sync", "weekly_newsletter", "iterable"])).freshness_policy
    assert (vip.warn_window.to_timedelta(), vip.fail_window.to_timedelta()) == (dt.timedelta(minutes=2), dt.timedelta(minutes=5))
    assert newsletter.deadline_cron == "0 9 * * 1" and newsletter.timezone == "UTC"
    assert graph.get(PURCHASES).freshness_policy.fail_window.to_timedelta() == dt.timedelta(minutes=5)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_shipped_instance_starts_the_next_run_while_one_holds_the_warehouse_pool(tmp_path, monkeypatch):
    """Every warehouse step is in one pool of one slot; Dagster's default keeps a run queued while that slot is held,
    so under a steady stream of changes each minute-level run began its 3-4 s start-up only after the previous run
    had finished. The shipped dagster.yaml lets one run start up meanwhile."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.op_concurrency_slot_buffer == 1 and queue.max_concurrent_runs == 4

"""The live-traffic simulator lands files that load into the sample and move minute-level audiences."""

from __future__ import annotations

import threading

import pytest

from composable_assets.landing import landing_folders, load_landing
from composable_assets.project import load_project
from composable_assets.warehouse import Warehouse
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator
from composable_assets_tests.demo.simulator import Simulator


@pytest.fixture
def seeded(tmp_path):
    warehouse = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    with warehouse.connect() as conn:
        generator.seed(conn.raw, customers=300)
    folders = landing_folders(load_project(SAMPLE_PROJECT_DIR).settings.landing, tmp_path)
    return warehouse, folders


def test_ticks_land_orders_events_and_edits_that_load_with_fresh_ids(seeded):
    warehouse, folders = seeded
    with warehouse.connect() as conn:
        (orders_before,) = conn.fetch_one("SELECT count(*) FROM orders")
        (max_order,) = conn.fetch_one("SELECT max(order_id) FROM orders")
    simulator = Simulator(folders, warehouse, seed=7, orders_per_tick=4)
    simulator.run(interval=0, stop=threading.Event(), ticks=3)
    assert [len(folders[t].pending()) for t in ("orders", "web_events", "customers")] == [3, 3, 3]

    # A simulator started while files still wait continues after the ids in them.
    assert Simulator(folders, warehouse, seed=8).next_order_id == max_order + 13

    with warehouse.connect() as conn:
        reports = [load_landing(conn, folders[t], "composable", "run-1") for t in ("orders", "web_events", "customers")]
        assert all(not r.rejected for r in reports)
        assert conn.fetch_one("SELECT count(*), count(DISTINCT order_id) FROM orders") == (orders_before + 12,) * 2
        (edited,) = conn.fetch_one("SELECT count(*) FROM customers WHERE updated_at >= now()::TIMESTAMP - INTERVAL 1 MINUTE")
        assert edited >= 3
        (carts,) = conn.fetch_one("SELECT count(*) FROM web_events WHERE event_id LIKE 'sim_%' AND event_type = 'add_to_cart'")
        assert carts >= 3


def test_the_simulator_needs_a_seeded_warehouse_and_the_sample_folders(tmp_path, seeded):
    warehouse, folders = seeded
    with pytest.raises(ValueError, match="no landing folder for customers"):
        Simulator({k: v for k, v in folders.items() if k != "customers"}, warehouse)
    empty = Warehouse(url=f"duckdb:///{tmp_path / 'empty.duckdb'}")
    with empty.connect() as conn:
        conn.execute("CREATE TABLE orders (order_id BIGINT)")
        conn.execute("CREATE TABLE customers (customer_id BIGINT)")
    with pytest.raises(ValueError, match="composable demo"):
        Simulator(folders, empty)

"""Minute-level activation for real: dagster-webserver and dagster-daemon processes, live traffic, the Braze fake.

The daemon's change sensors see files landing, launch runs that deliver to the Braze fake over HTTP, and the
freshness daemon turns the Braze sync's status to DEGRADED during an outage and back to HEALTHY after it.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from composable_assets.landing import landing_folders
from composable_assets.project import load_project
from composable_assets.warehouse import Warehouse
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator
from composable_assets_tests.demo.simulator import Simulator
from composable_assets_tests.fakes.braze import BrazeFake
from composable_assets_tests.fakes.iterable import IterableFake
from composable_assets_tests.fakes.local import NEWSLETTER_LIST_ID

from .dagster_processes import DagsterProcesses

REPO = Path(__file__).resolve().parents[1]
KEY = "e2e-key"
VIP_SYNC = "sync/vip_customers/braze"


def vip_updates_since(braze: BrazeFake, since: float) -> set[str]:
    """External ids whose VIP attributes reached Braze after `since`."""
    ids = set()
    for request in list(braze.requests):
        if request.path == "/users/track" and request.time >= since and request.status == 201:
            ids |= {a["external_id"] for a in (request.body or {}).get("attributes", []) if "ltv" in a}
    return ids


def purchases_at_braze(braze: BrazeFake) -> list[int]:
    """Order ids of every purchase Braze accepted, repeats included."""
    orders = []
    for request in list(braze.requests):
        if request.path == "/users/track" and request.status == 201:
            orders += [int(p["properties"]["order_id"]) for p in (request.body or {}).get("purchases", [])]
    return orders


@pytest.fixture
def deployment(tmp_path):
    """The sample project (VIP syncs must be at most 1 minute old) seeded into a DuckDB file, and the fakes."""
    project = tmp_path / "project"
    shutil.copytree(SAMPLE_PROJECT_DIR, project)
    with (project / "audiences" / "vip_customers.yaml").open("a") as f:
        f.write("freshness:\n  fail_after: 1m\n")
    data = tmp_path / "data"
    warehouse = Warehouse(url=f"duckdb:///{data / 'warehouse.duckdb'}")
    with warehouse.connect() as conn:
        generator.seed(conn.raw, customers=300)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    braze = BrazeFake(KEY).start()
    iterable = IterableFake(KEY, lists={NEWSLETTER_LIST_ID: "weekly newsletter"}).start()
    env = {
        "COMPOSABLE_PROJECT_DIR": str(project),
        "COMPOSABLE_DATA_DIR": str(data),
        "BRAZE_REST_ENDPOINT": braze.url,
        "BRAZE_API_KEY": KEY,
        "ITERABLE_BASE_URL": iterable.url,
        "ITERABLE_API_KEY": KEY,
    }
    folders = landing_folders(load_project(project).settings.landing, data)
    try:
        yield home, env, braze, Simulator(folders, warehouse, seed=3, orders_per_tick=2, big_basket_share=0.5)
    finally:
        braze.stop()
        iterable.stop()


def test_live_traffic_reaches_braze_and_freshness_fails_in_an_outage_and_recovers(deployment):
    home, env, braze, simulator = deployment
    stop = threading.Event()
    with DagsterProcesses(home, REPO / "workspace.yaml", env) as dagster:
        assert dagster.sensor_status("minute_level_on_change") == "RUNNING"  # on by default, no clicks needed
        started = time.time()
        first_order = simulator.next_order_id
        traffic = threading.Thread(target=simulator.run, args=(2.0, stop), daemon=True)
        traffic.start()
        try:
            # Orders landing as files become VIP attributes at Braze, through sensor-launched runs.
            dagster.wait_for(lambda: vip_updates_since(braze, started), timeout=120, what="VIP updates at the Braze fake")
            dagster.wait_for(
                lambda: dagster.freshness_status(VIP_SYNC) == "HEALTHY", timeout=120, what=f"{VIP_SYNC} to be fresh"
            )
            run = dagster.latest_materialization(VIP_SYNC)
            assert run is not None

            # Braze goes down: runs fail, nothing new is acknowledged, and within the 1 minute window plus a
            # freshness evaluation the sync is reported as failing its policy.
            braze.faults.unavailable = True
            outage = time.time()
            dagster.wait_for(
                lambda: dagster.freshness_status(VIP_SYNC) == "DEGRADED", timeout=180, what=f"{VIP_SYNC} to go stale"
            )
            assert not vip_updates_since(braze, outage + 1)

            braze.faults.unavailable = False
            back = time.time()
            dagster.wait_for(lambda: vip_updates_since(braze, back), timeout=120, what="deliveries to resume")
            dagster.wait_for(
                lambda: dagster.freshness_status(VIP_SYNC) == "HEALTHY", timeout=120, what=f"{VIP_SYNC} to be fresh again"
            )
        finally:
            stop.set()
            traffic.join(timeout=10)

        # Every order the simulator landed, before, during and after the outage, reaches Braze as a purchase
        # through the purchases stream's sensor-launched runs: none lost, none twice.
        landed = set(range(first_order, simulator.next_order_id))
        dagster.wait_for(
            lambda: landed <= set(purchases_at_braze(braze)), timeout=120, what="every landed order as a Braze purchase"
        )
        purchases = [order for order in purchases_at_braze(braze) if order in landed]
        assert len(purchases) == len(set(purchases)) == len(landed) > 20

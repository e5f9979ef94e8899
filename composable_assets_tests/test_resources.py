"""What the definitions hand Dagster as resources: the warehouse (with the vendor's own resource), the coordination
store and every destination, each shown on the Resources page with secrets as variable names, never values."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from composable_assets.coordination import Coordination
from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.project import load_project
from composable_assets.project.keys import DELIVERY_TAG, Delivery, sync_key
from composable_assets.runner import delivery_assets, run_selection
from composable_assets.destinations.resource import DestinationResource, destination_resource_key
from composable_assets.warehouse import Warehouse
from composable_assets_tests.test_definitions import sample_defs


def test_the_warehouse_coordination_and_every_destination_are_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAZE_API_KEY", "braze-key-never-shown")
    monkeypatch.setenv("COMPOSABLE_COORDINATION_PASSWORD", "coordination-pw-never-shown")
    defs = sample_defs(tmp_path)
    resources = defs.resources
    assert set(resources) == {
        "warehouse", "coordination", *(destination_resource_key(d) for d in ("braze", "iterable", "outbox"))
    }
    warehouse = resources["warehouse"]
    assert isinstance(warehouse, Warehouse) and isinstance(warehouse.connection, DuckDBResource)
    assert warehouse.connection.database == str(tmp_path / "w.duckdb")
    braze = resources["destination_braze"]
    assert isinstance(braze, DestinationResource) and braze.type == "braze"
    assert braze.settings["api_key"] == {"env": "BRAZE_API_KEY"}
    coordination = resources["coordination"]
    assert isinstance(coordination, Coordination)
    assert isinstance(coordination.password, dg.EnvVar)
    assert coordination.password.env_var_name == "COMPOSABLE_COORDINATION_PASSWORD"
    # The config Dagster shows and stores for each resource holds the variables' names only.
    config = str([r.model_dump() for r in resources.values()])
    assert "BRAZE_API_KEY" in config and "COMPOSABLE_COORDINATION_PASSWORD" in config
    assert "never-shown" not in config


def test_a_deployments_own_duckdb_resource_is_the_warehouses_connection(tmp_path):
    path = tmp_path / "elsewhere.duckdb"
    warehouse = Warehouse(url="duckdb:///ignored.duckdb", connection=DuckDBResource(database=str(path)))
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 42 AS x")
    assert path.exists() and not (tmp_path / "ignored.duckdb").exists()
    with Warehouse(url=f"duckdb:///{path}").connect() as conn:
        assert conn.fetch_all("SELECT x FROM t") == [(42,)]


def test_the_coordination_password_comes_from_its_env_var_in_and_outside_a_run(monkeypatch):
    monkeypatch.setenv("COMPOSABLE_COORDINATION_PASSWORD", "anything")  # trust auth: PostgreSQL ignores it
    coordination = Coordination.from_url("postgresql://postgres@127.0.0.1:5432/postgres")
    assert coordination.password == "COMPOSABLE_COORDINATION_PASSWORD"  # the EnvVar, unresolved in the config
    assert coordination.store is not None

    @dg.asset
    def uses(coordination: Coordination) -> None:
        assert coordination.password == "anything"  # resolved by Dagster for the run

    assert dg.materialize([uses], resources={"coordination": coordination}).success


BOX_AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: box
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email}
"""


def test_a_deployment_that_points_a_destination_resource_elsewhere_delivers_there(small, tmp_path):
    small.write("audiences/boxed.yaml", BOX_AUDIENCE)
    defs = load_definitions(small.settings)
    elsewhere = tmp_path / "staging_outbox"
    swapped = dg.Definitions(
        assets=defs.assets,
        resources={
            **defs.resources,
            destination_resource_key("box"): DestinationResource(
                name="box", type="outbox", settings={"path": str(elsewhere), "batch_size": 2}
            ),
        },
    )
    project = load_project(small.settings.project_dir)
    outcome = run_selection(swapped, audience_selection(project, "boxed", "box"), "2026-03-02", small.instance)
    assert outcome.success, outcome.errors
    (sync,) = outcome.syncs
    assert (sync.delivery, sync.destination, sync.count("added")) == (Delivery("audience", "boxed"), "box", 10)
    written = [line for f in elsewhere.rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(written) == 10  # every member went to the deployment's folder
    assert not list((small.settings.data_dir / "outbox").rglob("*.jsonl"))  # none to the project's own


def test_the_runner_finds_delivery_assets_by_their_tag_not_their_key(small):
    defs = load_definitions(small.settings)
    found = delivery_assets(defs)
    assert found == {
        sync_key("high", d): (Delivery("audience", "high"), d) for d in ("rec_mirror", "rec_upsert")
    }
    tagged = dg.AssetSelection.tag(DELIVERY_TAG, "audience").resolve(defs.resolve_asset_graph())
    assert tagged == set(found)

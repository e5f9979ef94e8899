"""The sample project's asset graph: keys, groups, lineage, partitions and jobs as a user sees them in the UI."""

from __future__ import annotations

import dagster as dg

from composable_assets.definitions import load_definitions
from composable_assets.settings import Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR


def sample_defs(tmp_path) -> dg.Definitions:
    return load_definitions(Settings(SAMPLE_PROJECT_DIR, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path))


def test_layers_keys_and_groups(tmp_path):
    graph = sample_defs(tmp_path).resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    # deletion_requests: read by no model, but the source of governance/deletion_requests.
    assert groups["sources"] == {f"source/{t}" for t in ("customers", "orders", "web_events", "deletion_requests")}
    assert "governance/deletion_requests" in groups["governance"]
    assert groups["models"] == {"model/customer_profiles", "model/cart_abandoners", "model/order_events"}
    assert groups["streams"] == {f"stream/purchases/{d}" for d in ("braze", "iterable", "outbox")}
    assert groups["audiences"] == {
        "audience/vip_customers", "audience/lapsed_customers", "audience/weekly_newsletter", "audience/cart_abandoners"
    }
    assert "delta/vip_customers/outbox" in groups["deltas"] and "sync/vip_customers/outbox" in groups["syncs"]
    assert "sync/vip_customers/braze" in groups["syncs"] and "sync/weekly_newsletter/iterable" in groups["syncs"]
    assert len(groups["deltas"]) == len(groups["syncs"]) == 6


def test_lineage_runs_from_sources_to_syncs(tmp_path):
    graph = sample_defs(tmp_path).resolve_asset_graph()
    key = dg.AssetKey.from_user_string
    assert graph.get(key("model/customer_profiles")).parent_keys == {key("source/customers"), key("source/orders")}
    assert graph.get(key("audience/vip_customers")).parent_keys == {key("model/customer_profiles")}
    assert graph.get(key("delta/vip_customers/outbox")).parent_keys == {key("audience/vip_customers")}
    assert graph.get(key("sync/vip_customers/outbox")).parent_keys == {key("delta/vip_customers/outbox")}
    upstream = dg.AssetSelection.assets(key("sync/vip_customers/outbox")).upstream().resolve(graph)
    assert key("model/customer_profiles") in upstream and key("model/cart_abandoners") not in upstream


def test_deltas_and_syncs_are_daily_partitioned_with_today(tmp_path):
    graph = sample_defs(tmp_path).resolve_asset_graph()
    sync = graph.get(dg.AssetKey(["sync", "vip_customers", "outbox"]))
    assert isinstance(sync.partitions_def, dg.DailyPartitionsDefinition)
    assert sync.partitions_def.get_first_partition_key() == "2026-01-01"
    import datetime as dt

    assert sync.partitions_def.get_last_partition_key() == dt.datetime.now(dt.UTC).date().isoformat()
    assert graph.get(dg.AssetKey(["audience", "vip_customers"])).partitions_def is None


def test_descriptions_owners_and_kinds_come_from_the_files(tmp_path):
    graph = sample_defs(tmp_path).resolve_asset_graph()
    audience = graph.get(dg.AssetKey(["audience", "vip_customers"]))
    assert audience.description.startswith("High-value customers")
    assert audience.owners == ["crm-team@example.com"]
    model = graph.get(dg.AssetKey(["model", "customer_profiles"]))
    assert model.description.startswith("One row per customer")
    assert "duckdb" in model.kinds
    assert "json" in graph.get(dg.AssetKey(["sync", "vip_customers", "outbox"])).kinds


def test_one_job_per_audience_selects_exactly_what_its_syncs_need(tmp_path):
    defs = sample_defs(tmp_path)
    job = defs.resolve_job_def("sync_vip_customers")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert keys == {
        "source/customers", "source/orders",  # the landing loads of the model's sources run first
        "model/customer_profiles", "audience/vip_customers", "delta/vip_customers/outbox", "sync/vip_customers/outbox",
        "delta/vip_customers/braze", "sync/vip_customers/braze",
    }


def test_sync_assets_show_their_destinations_limits(tmp_path):
    graph = sample_defs(tmp_path).resolve_asset_graph()
    metadata = graph.get(dg.AssetKey(["sync", "vip_customers", "braze"])).metadata
    assert metadata["batch_size"] == 75 and metadata["concurrency"] == 8
    assert metadata["rate_limit"] == "3000 requests / 3 s"


def test_every_asset_has_a_description_owners_and_kinds(tmp_path):
    """Owners come from each file, else from project.yaml `owners:` (the sample's sources have no file of their own)."""
    graph = sample_defs(tmp_path).resolve_asset_graph()
    lacking = {
        key.to_user_string(): [what for what, value in (("description", node.description), ("owners", node.owners),
                                                         ("kinds", node.kinds)) if not value]
        for key in graph.get_all_asset_keys()
        if (node := graph.get(key)).is_materializable or node.is_observable
    }
    assert {key: missing for key, missing in lacking.items() if missing} == {}
    assert graph.get(dg.AssetKey(["source", "customers"])).owners == ["team:data-platform"]
    assert graph.get(dg.AssetKey(["audience", "vip_customers"])).owners == ["crm-team@example.com"]

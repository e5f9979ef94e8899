"""Column lineage from the sample's SQL: where `email` goes, read from the asset graph and from `composable lineage`."""

from __future__ import annotations

import dagster as dg
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.definitions import build_definitions
from composable_assets.governance.lineage import column_lineage, downstream, upstream
from composable_assets.project import load_project
from composable_assets.settings import Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR

EMAIL = (dg.AssetKey(["source", "customers"]), "email")
# Every destination field the sample sends a customer's e-mail to, and nothing else.
EMAIL_REACHES = {
    ("sync/vip_customers/braze", "email"),
    ("sync/weekly_newsletter/iterable", "email"),
    ("stream/purchases/iterable", "email"),
    ("sync/vip_customers/outbox", "email"),
    ("sync/weekly_newsletter/outbox", "email"),
    ("sync/lapsed_customers/outbox", "email"),
    ("sync/cart_abandoners/outbox", "email"),
}


def delivered(columns) -> set[tuple[str, str]]:
    return {(key.to_user_string(), column) for key, column in columns if key.path[0] in ("sync", "stream")}


def test_source_email_reaches_exactly_the_email_fields_of_braze_iterable_and_the_outbox(tmp_path):
    project = load_project(SAMPLE_PROJECT_DIR)
    deps = column_lineage(project)
    assert delivered(downstream(deps, EMAIL)) == EMAIL_REACHES
    # And the reverse: Braze's email comes from customers.email only; lifetime value from orders.amount (a CTE sum).
    braze_email = (dg.AssetKey(["sync", "vip_customers", "braze"]), "email")
    assert {c for c in upstream(deps, braze_email) if c[0].path[0] == "source"} == {EMAIL}
    ltv = (dg.AssetKey(["sync", "vip_customers", "braze"]), "ltv")
    assert {c for c in upstream(deps, ltv) if c[0].path[0] == "source"} == {(dg.AssetKey(["source", "orders"]), "amount")}

    # The same lineage, read back from the asset graph Dagster shows (`dagster/column_lineage`).
    settings = Settings(SAMPLE_PROJECT_DIR, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path / "data")
    graph = build_definitions(project, settings).resolve_asset_graph()

    def graph_deps(key: dg.AssetKey) -> dict[str, list[tuple[dg.AssetKey, str]]]:
        lineage = graph.get(key).metadata["dagster/column_lineage"]
        return {c: [(d.asset_key, d.column_name) for d in ds] for c, ds in lineage.deps_by_column.items()}

    from_graph = {key: graph_deps(key) for key in graph.get_all_asset_keys() if "dagster/column_lineage" in graph.get(key).metadata}
    assert delivered(downstream(from_graph, EMAIL)) == EMAIL_REACHES
    assert graph_deps(dg.AssetKey(["model", "customer_profiles"]))["email"] == [EMAIL]


def test_the_lineage_command_answers_both_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(SAMPLE_PROJECT_DIR))
    monkeypatch.delenv("COMPOSABLE_WAREHOUSE", raising=False)
    result = CliRunner().invoke(cli, ["lineage", "customers.email"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {tuple(c.strip() for c in line.split("│")[1:4]) for line in result.output.splitlines() if line.startswith("│")}
    assert {(via, field) for _, field, via in rows} == EMAIL_REACHES

    result = CliRunner().invoke(cli, ["lineage", "braze.ltv"], catch_exceptions=False)
    rows = {tuple(c.strip() for c in line.split("│")[1:3]) for line in result.output.splitlines() if line.startswith("│")}
    assert rows == {("orders", "amount")}

    result = CliRunner().invoke(cli, ["lineage", "customers.no_such_column"])
    assert result.exit_code != 0 and "no column 'customers.no_such_column'" in result.output
    result = CliRunner().invoke(cli, ["lineage", "braze.no_such_field"])
    assert result.exit_code != 0 and "destination 'braze' is sent no field 'no_such_field'" in result.output


def test_lineage_it_cannot_derive_is_left_out_not_guessed():
    from composable_assets.governance.lineage import _model_column_sources

    assert _model_column_sources("WITH r AS (SELECT * FROM t) SELECT a, b + 1 AS c FROM r") == {"a": [], "c": []}
    assert _model_column_sources("SELECT x.a, y.b AS c FROM t AS x JOIN u AS y USING (id)") == {
        "a": [("t", "a")], "c": [("u", "b")]
    }


def test_personal_columns_are_tagged_by_name_by_declaration_and_through_lineage():
    from composable_assets.governance.pii import category_by_name, pii_categories

    assert [category_by_name(c) for c in ("email", "EmailAddress", "work_email", "phone_number", "mobile", "firstName",
                                          "last_name", "street", "postal_code", "ip_address", "date_of_birth")] == [
        "email", "email", "email", "phone", "phone", "name", "name", "address", "address", "ip_address", "birth_date"]
    assert [category_by_name(c) for c in ("emails_sent", "product_name", "ltv", "customer_id", "country")] == [None] * 5
    assert category_by_name("country", {"country": "location"}) == "location"
    assert category_by_name("username", {"username": "none"}) is None

    source, model, sync = dg.AssetKey(["source", "people"]), dg.AssetKey(["model", "m"]), dg.AssetKey(["sync", "a", "b"])
    deps = {
        model: {"contact": [(source, "email")], "score": [(source, "points")], "handle": [(source, "username")]},
        sync: {"to": [(model, "contact")], "points": [(model, "score")], "handle": [(model, "handle")]},
    }
    assert pii_categories(deps) == {model: {"contact": "email", "handle": "name"}, sync: {"to": "email", "handle": "name"}}
    # Declared `none` stops inheritance at that name, wherever it is.
    assert pii_categories(deps, {"username": "none", "handle": "none"}) == {model: {"contact": "email"}, sync: {"to": "email"}}


def test_lineage_and_pii_tags_are_read_back_from_the_demo_s_materializations(demo_home):
    result = CliRunner().invoke(cli, ["demo", "--customers", "300", "--no-changes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    instance = dg.DagsterInstance.get()
    latest = {}
    for key in instance.get_asset_keys():
        records = instance.fetch_materializations(key, limit=1).records
        if records:
            latest[key] = records[0].asset_materialization.metadata
    from_runs = {
        key: {c: [(d.asset_key, d.column_name) for d in ds] for c, ds in meta["dagster/column_lineage"].value.deps_by_column.items()}
        for key, meta in latest.items()
        if "dagster/column_lineage" in meta
    }
    assert delivered(downstream(from_runs, EMAIL)) == EMAIL_REACHES

    def tags(key: list[str]) -> dict[str, str]:
        schema = latest[dg.AssetKey(key)]["dagster/column_schema"].value
        return {c.name: c.tags.get("pii") for c in schema.columns if c.tags}

    # The model's materialized schema (real types) keeps the tags: by name, and `country` as declared in project.yaml.
    model = latest[dg.AssetKey(["model", "customer_profiles"])]["dagster/column_schema"].value
    assert {c.name: c.type for c in model.columns}["email"].upper() == "VARCHAR"
    assert tags(["model", "customer_profiles"]) == {
        "email": "email", "phone": "phone", "first_name": "name", "last_name": "name", "country": "location"}
    assert tags(["sync", "vip_customers", "braze"]) == {"email": "email", "first_name": "name"}

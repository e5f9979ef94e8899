"""dbt projects as models (project.yaml `dbt:`): a dbt project's models and seeds, built by dagster-dbt, feed audiences.

Real components: dbt-core with dbt-duckdb on a DuckDB file and dbt-postgres on the local PostgreSQL, dagster-dbt's
multi-asset and resource, the recording destination, `composable validate` and `composable lineage` in process.
The dbt project is composable_assets_tests/dbt_project (jaffle-shop-like: two seeds, two staging models, `customers`),
copied for each project. The DuckDB flow shares one module-scoped project, built and synced once; its tests read
what that run left; then, in file order, a second sync, a failing dbt test and a dbt project that no longer parses
change it (dbt costs 2-5 s per command).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from composable_assets.automation.sensors import SENSOR_NAME
from composable_assets.cli import cli
from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.destinations import DESTINATION_TYPES
from composable_assets.governance.lineage import column_lineage
from composable_assets.project import Project, ProjectError, load_project
from composable_assets.project.keys import audience_key, model_key, source_key
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings

from .conftest import Recording, modules_imported_by_loading

ROOT = Path(__file__).resolve().parents[1]

DBT_PROJECT = Path(__file__).parent / "dbt_project"

BUYERS = """\
description: Customers with at least one order.
model: customers
primary_key: customer_id
where: number_of_orders > 0
syncs:
  - destination: rec
    mode: mirror
    identifier: {email: email}
    fields: {first_name: first_name, orders: number_of_orders, spent: lifetime_value}
"""

PROJECT_YAML = """\
name: shop
start_date: "2026-01-01"
dbt: {project_dir: dbt}
"""


class Shop:
    """A project folder whose models are the test dbt project, on a given warehouse, synced to the recording destination."""

    def __init__(self, root: Path, warehouse_url: str):
        self.project_dir = root / "project"
        shutil.copytree(DBT_PROJECT, self.project_dir / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
        (self.project_dir / "audiences").mkdir()
        (self.project_dir / "project.yaml").write_text(PROJECT_YAML)
        (self.project_dir / "audiences" / "buyers.yaml").write_text(BUYERS)
        (self.project_dir / "destinations.yaml").write_text("rec: {type: recording, batch_size: 10}\n")
        self.settings = Settings(project_dir=self.project_dir, warehouse_url=warehouse_url, data_dir=root / "data")
        self.instance = dg.DagsterInstance.ephemeral()

    @property
    def dbt_dir(self) -> Path:
        return self.project_dir / "dbt"

    @property
    def manifest(self) -> Path:
        return self.dbt_dir / "target" / "manifest.json"

    def load(self) -> Project:
        return load_project(
            self.project_dir, known_destination_types=DESTINATION_TYPES, warehouse_url=self.settings.warehouse_url
        )

    def sync(self, date: str = "2026-03-02") -> RunOutcome:
        defs = load_definitions(self.settings)
        return run_selection(defs, audience_selection(self.load(), "buyers"), date, self.instance, log_level=None)

    def append_orders(self, *rows: str) -> None:
        with (self.dbt_dir / "seeds" / "raw_orders.csv").open("a") as file:
            file.writelines(f"{row}\n" for row in rows)

    def check(self, key: dg.AssetKey, name: str) -> dg.AssetCheckEvaluation | None:
        check = dg.AssetCheckKey(key, name)
        record = self.instance.event_log_storage.get_latest_asset_check_execution_by_key([check]).get(check)
        return None if record is None or record.event is None else record.event.dagster_event.event_specific_data


def sent() -> dict[str, dict]:
    """Identifier -> fields of every row the recording destination `rec` acknowledged (None: a removal)."""
    return {r.identifier: r.fields for r in Recording.received["rec"]}


# Orders in the seed: Michael 2 completed (300 + 250), Shawn 1 (600), Kathleen 1 completed (200; her returned order
# does not count), Katherine 1 placed (120). Jimmy and Sarah have none, so are not buyers.
FIRST_BUYERS = {
    "michael@example.com": {"first_name": "Michael", "orders": 2, "spent": 550},
    "shawn@example.com": {"first_name": "Shawn", "orders": 1, "spent": 600},
    "kathleen@example.com": {"first_name": "Kathleen", "orders": 1, "spent": 200},
    "katherine@example.com": {"first_name": "Katherine", "orders": 1, "spent": 120},
}


@dataclass
class Synced:
    shop: Shop
    outcome: RunOutcome
    received: dict[str, dict] = field(default_factory=dict)


@pytest.fixture(scope="module")
def duck(tmp_path_factory) -> Synced:
    """The shop on a DuckDB file, synced once (dbt parse, seed, build, test; snapshot, delta, sync)."""
    root = tmp_path_factory.mktemp("dbt_duckdb")
    shop = Shop(root, f"duckdb:///{root / 'warehouse.duckdb'}")
    Recording.reset()
    outcome = shop.sync()
    return Synced(shop, outcome, sent())


def test_dbt_models_and_seeds_are_models_named_as_sql_models(duck):
    project = duck.shop.load()
    customers = project.models["customers"]
    assert customers.is_dbt and not customers.is_seed and customers.path == duck.shop.dbt_dir / "models" / "customers.sql"
    assert customers.model_deps == ["stg_customers", "stg_orders"] and customers.source_deps == []
    assert customers.description == "One row per customer, with their order history."
    assert customers.owners == ["team:analytics"]
    # `SELECT *` over the staging models, read with their columns (which come from the seeds' CSV headers).
    assert customers.columns == [
        "customer_id", "first_name", "last_name", "email", "first_order", "most_recent_order", "number_of_orders",
        "lifetime_value",
    ]
    assert project.models["raw_orders"].is_seed and project.models["stg_orders"].model_deps == ["raw_orders"]
    assert project.refreshes["customers"].describe() == "full: a dbt model is built by dbt"
    # A dbt source() is a source table, as for SQL models.
    assert project.models["loyalty"].source_deps == ["loyalty_points"] and project.sources == ["loyalty_points"]

    graph = load_definitions(duck.shop.settings).resolve_asset_graph()
    node = graph.get(model_key("customers"))
    assert node.parent_keys == {model_key("stg_customers"), model_key("stg_orders")}
    assert graph.get(audience_key("buyers")).parent_keys == {model_key("customers")}
    assert graph.get(model_key("stg_customers")).parent_keys == {model_key("raw_customers")}
    assert graph.get(model_key("loyalty")).parent_keys == {source_key("loyalty_points")}
    assert graph.get(source_key("loyalty_points")).is_observable  # the source observer's, shared with dbt's source
    assert node.group_name == "models" and set(node.owners) == {"team:analytics"} and "dbt" in node.kinds
    assert node.metadata["file"] == "dbt/models/customers.sql"
    assert {check.name for check in node.check_keys} == {"unique_customers_customer_id", "not_null_customers_customer_id", "not_null_customers_email"}
    # The PII tag reaches the dbt model's column schema, as on a SQL model's.
    schema = node.metadata["dagster/column_schema"]
    assert {c.name: c.tags for c in schema.columns}["email"] == {"pii": "email"}


def test_the_sync_builds_the_dbt_project_and_sends_the_audience(duck):
    assert duck.outcome.success, duck.outcome.errors
    assert duck.received == FIRST_BUYERS
    # dbt built in the very DuckDB file the audience read: tables (and staging views) in `main`.
    with duckdb.connect(duck.shop.settings.warehouse_url.removeprefix("duckdb:///"), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(number_of_orders) FROM main.customers").fetchone() == (6, 5)
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'").fetchall())
    assert kinds["customers"] == "BASE TABLE" and kinds["stg_orders"] == "VIEW" and kinds["raw_orders"] == "BASE TABLE"
    assert "model/customers" in duck.outcome.materialized
    # Only what the audience reads was built (`dbt build --select` of the selected assets), not `loyalty`.
    assert "model/loyalty" not in duck.outcome.materialized and "loyalty" not in kinds
    rows = {key: getattr(metadata.get("dagster/row_count"), "value", None) for key, metadata in duck.outcome.materialized.items()}
    assert rows["model/customers"] == 6 and rows["model/raw_orders"] == 6
    # dbt-duckdb on that same file, closing it after each use (else the file stays locked by whoever asked dbt).
    profile = (duck.shop.dbt_dir / "target" / "composable" / "profiles.yml").read_text()
    assert f"path: {duck.shop.settings.warehouse_url.removeprefix('duckdb:///')}\n" in profile
    assert "keep_open: false" in profile and "schema: main" in profile


def test_dbt_tests_are_asset_checks(duck):
    for name in ("unique_customers_customer_id", "not_null_customers_customer_id", "not_null_customers_email"):
        evaluation = duck.shop.check(model_key("customers"), name)
        assert evaluation is not None and evaluation.passed, name
    assert duck.shop.check(model_key("stg_orders"), "unique_stg_orders_order_id").passed


def test_lineage_runs_from_the_destination_field_to_the_dbt_seed(duck, monkeypatch):
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(duck.shop.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", duck.shop.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(duck.shop.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(cli, ["lineage", "rec.email"])
    assert result.exit_code == 0, result.output
    assert "raw_customers (dbt seed)" in result.output and "email" in result.output
    # Through a renamed column of a staging model (user_id AS customer_id) and an aggregate.
    result = CliRunner().invoke(cli, ["lineage", "rec.spent"])
    assert result.exit_code == 0, result.output
    assert "raw_orders (dbt seed)" in result.output and "amount" in result.output
    result = CliRunner().invoke(cli, ["lineage", "raw_orders.amount"])
    assert result.exit_code == 0, result.output
    assert "rec" in result.output and "spent" in result.output and "sync/buyers/rec" in result.output
    # A dbt model's column computed from a source() table's column.
    deps = column_lineage(duck.shop.load())
    assert deps[model_key("loyalty")] == {
        "customer_id": [(source_key("loyalty_points"), "customer_id")],
        "double_points": [(source_key("loyalty_points"), "points")],
    }


def test_validate_passes_and_says_dbt_builds_its_models(duck, monkeypatch):
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(duck.shop.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", duck.shop.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(duck.shop.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert "6 models, 1 audiences" in result.output
    assert "model customers: full: a dbt model is built by dbt" in result.output


def test_a_second_sync_sends_only_what_changed(duck):
    """Runs after the tests reading the first sync: it changes the shared project's seed data (which parses nothing)."""
    shop = duck.shop
    stamp = shop.dbt_dir / "target" / "composable" / "manifest.fingerprint"
    parsed_at = (shop.manifest.stat().st_mtime_ns, stamp.stat().st_mtime_ns)
    shop.load()
    assert (shop.manifest.stat().st_mtime_ns, stamp.stat().st_mtime_ns) == parsed_at, "an unchanged project was parsed"
    # Jimmy's first order makes him a buyer; Shawn's second updates him; Katherine's placed order is cancelled
    # (status changes): she has none left that count, so the mirror removes her.
    shop.append_orders("7,4,2026-02-01,completed,40", "8,2,2026-02-02,completed,5")
    orders = shop.dbt_dir / "seeds" / "raw_orders.csv"
    orders.write_text(orders.read_text().replace("6,5,2026-01-06,placed,120", "6,5,2026-01-06,cancelled,120"))
    Recording.reset()
    outcome = shop.sync(date="2026-03-03")
    assert outcome.success, outcome.errors
    assert stamp.stat().st_mtime_ns == parsed_at[1], "new rows in a seed made the project be parsed again"
    assert sent() == {
        "jimmy@example.com": {"first_name": "Jimmy", "orders": 1, "spent": 40},
        "shawn@example.com": {"first_name": "Shawn", "orders": 2, "spent": 605},
        "katherine@example.com": None,  # removed
    }
    (counts,) = [s for s in outcome.syncs if s.destination == "rec"]
    assert (counts.count("added"), counts.count("updated"), counts.count("removed")) == (1, 1, 1)


def test_a_failing_dbt_test_fails_the_run_and_sends_nothing(duck):
    """After the second sync (module order): a duplicate customer breaks `unique`; the audience is never refreshed."""
    shop = duck.shop
    customers = shop.dbt_dir / "seeds" / "raw_customers.csv"
    customers.write_text(customers.read_text() + "6,Sarah,again,sarah2@example.com\n")  # customer_id 6 twice
    Recording.reset()
    outcome = shop.sync(date="2026-03-04")
    assert not outcome.success
    assert Recording.received["rec"] == []
    evaluation = shop.check(model_key("customers"), "unique_customers_customer_id")
    assert evaluation is not None and not evaluation.passed
    assert shop.check(model_key("customers"), "not_null_customers_email").passed
    assert "audience/buyers" not in outcome.materialized


def test_a_changed_model_is_parsed_again_and_a_parse_error_names_the_dbt_project(duck):
    """Last of the module's flow: a model's file changed, so the manifest is stale and `dbt parse` runs, and fails."""
    shop = duck.shop
    model = shop.dbt_dir / "models" / "customers.sql"
    model.write_text(model.read_text().replace("ref('stg_orders')", "ref('stg_ordres')"))
    with pytest.raises(ProjectError) as raised:
        shop.load()
    message = str(raised.value)
    assert message.startswith("project.yaml:3: dbt: `dbt parse` of the dbt project"), message
    assert str(shop.dbt_dir) in message and "stg_ordres" in message


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("dbt: {project_dir: nowhere}", "project.yaml:3: dbt.project_dir: no dbt project at nowhere"),
        ("dbt: {target: prod}", "project.yaml:3: `dbt`: `target` names a target of your own profiles.yml"),
        ("dbt: {profiles_dir: profiles}", "project.yaml:3: dbt.profiles_dir: no profiles.yml in profiles"),
    ],
)
def test_dbt_settings_errors_name_project_yaml(tmp_path, settings, message):
    shop = Shop(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    (shop.project_dir / "project.yaml").write_text(PROJECT_YAML.replace("dbt: {project_dir: dbt}", settings))
    with pytest.raises(ProjectError) as raised:
        shop.load()
    assert message in str(raised.value)


def test_a_warehouse_without_a_generated_profile_asks_for_profiles_yml(tmp_path):
    shop = Shop(tmp_path, "redshift://tester@cluster.example.com:5439/analytics")
    with pytest.raises(ProjectError) as raised:
        shop.load()
    assert "project.yaml:3: dbt: no dbt profile is generated for Redshift database 'analytics'" in str(raised.value)
    assert "set dbt.profiles_dir" in str(raised.value)


def test_a_profiles_yml_of_the_project_and_its_target_are_used(tmp_path):
    """`profiles_dir` and `target`: dbt parses with that profile's target (its schema shows in the manifest)."""
    shop = Shop(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    profiles = shop.project_dir / "profiles"
    profiles.mkdir()
    (profiles / "profiles.yml").write_text(
        "jaffle:\n"
        "  target: dev\n"
        "  outputs:\n"
        f"    dev: {{type: duckdb, path: '{tmp_path / 'dev.duckdb'}', schema: main, keep_open: false}}\n"
        f"    prod: {{type: duckdb, path: '{tmp_path / 'warehouse.duckdb'}', schema: analytics, keep_open: false}}\n"
    )
    (shop.project_dir / "project.yaml").write_text(
        PROJECT_YAML.replace("dbt: {project_dir: dbt}", "dbt: {project_dir: dbt, profiles_dir: profiles, target: prod}")
    )
    project = shop.load()
    assert project.dbt is not None and not project.dbt.generated_profile and project.dbt.profiles_dir == profiles
    manifest = json.loads(shop.manifest.read_text())
    assert manifest["nodes"]["model.jaffle.customers"]["schema"] == "analytics"
    assert not (shop.dbt_dir / "target" / "composable" / "profiles.yml").exists()
    resource = load_definitions(shop.settings).resources["dbt"]
    assert (resource.target, resource.profiles_dir) == ("prod", str(profiles))


def test_the_dbt_project_runs_on_postgres_and_no_secret_is_written(tmp_path, postgres_url, monkeypatch):
    """dbt-postgres on the test's own database; the password travels only in the environment (trust auth ignores it)."""
    import psycopg2

    secret = "pg-secret-never-written-9f3b"
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", secret)
    shop = Shop(tmp_path, postgres_url)
    outcome = shop.sync()
    assert outcome.success, outcome.errors
    assert sent() == FIRST_BUYERS
    assert shop.check(model_key("customers"), "unique_customers_customer_id").passed
    with psycopg2.connect(postgres_url.replace("postgresql://", "postgres://")) as con, con.cursor() as cur:
        cur.execute("SELECT count(*), sum(number_of_orders) FROM public.customers")
        assert cur.fetchone() == (6, 5)
    profile = (shop.dbt_dir / "target" / "composable" / "profiles.yml").read_text()
    assert "type: postgres" in profile and 'env_var("COMPOSABLE_WAREHOUSE_PASSWORD"' in profile
    written = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert written == []
    assert secret not in repr(outcome.materialized)
    assert outcome.materialized["model/customers"]["dagster/row_count"].value == 6


PLAIN_MODEL_WITH_JINJA = [
    ("-- People with a score.\nSELECT id, email, name, score FROM {{ ref('people') }}\n", 2, "{{ ref('people') }}"),
    ("-- People with a score.\n{% set limit = 10 %}\nSELECT id, email, name, score FROM people\n", 2, "{% set limit = 10 %}"),
    # Passed `validate` before (DuckDB reads `{{ x }}` as a struct and sqlglot skips `{# #}`), failed at run time.
    ("-- People with a score.\n{# the scored ones #}\nSELECT id, email, name, score FROM people\n", 2, "{# the scored ones #}"),
    ("SELECT id, email, name,\n  '{{ kept }}' AS note, -- {{ also kept }}\n  {{ score }} AS score FROM people\n", 3, "{{ score }}"),
]


@pytest.mark.parametrize(("sql", "line", "construct"), PLAIN_MODEL_WITH_JINJA)
def test_jinja_in_a_plain_sql_model_fails_validate_pointing_at_dbt(small, monkeypatch, sql, line, construct):
    small.write("models/people_model.sql", sql)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"models/people_model.sql:{line}: `{construct}` is Jinja" in output, output
    assert "dbt: {project_dir: dbt}" in output


def test_dbt_is_imported_only_for_projects_with_a_dbt_project(small):
    """Loading a project without `dbt:` imports neither dagster-dbt nor dbt (about a second of start-up)."""
    assert modules_imported_by_loading(small, ["dagster_dbt", "dbt", "jinja2"]) == []


def test_the_readme_dbt_path_from_a_clean_folder(tmp_path, monkeypatch):
    """README.md, "Start your own project", with a dbt project: init, add the dbt project, validate, sync."""
    readme = ROOT.joinpath("README.md").read_text()
    steps = [
        "composable init my_project",
        "cp -r path/to/your/dbt_project dbt",
        "rm models/customers.sql",
        "echo 'dbt: {project_dir: dbt}' >> project.yaml",
        "composable validate",
        "composable sync high_value_customers",
    ]
    for step in steps:
        assert step in readme, step
    monkeypatch.chdir(tmp_path)
    for name in ("COMPOSABLE_WAREHOUSE", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "my_project"]).exit_code == 0
    project = tmp_path / "my_project"
    monkeypatch.chdir(project)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(project))
    shutil.copytree(DBT_PROJECT, project / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "customers.sql").unlink()
    with (project / "project.yaml").open("a") as file:
        file.write("dbt: {project_dir: dbt}\n")
    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert "model customers: full: a dbt model is built by dbt" in result.output
    result = runner.invoke(cli, ["sync", "high_value_customers"])
    assert result.exit_code == 0, result.output
    # The example audience (lifetime_value >= 500) over the dbt model: Michael (550) and Shawn (600).
    files = (tmp_path / "data" / "outbox").rglob("*.jsonl")
    sent_lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert sorted((line["identifier"]["external_id"], line["fields"]["email"]) for line in sent_lines) == [
        ("1", "michael@example.com"), ("2", "shawn@example.com")
    ]


LOYAL = """\
description: Members with loyalty points, kept current within minutes.
model: loyalty
primary_key: customer_id
where: double_points > 0
cadence: minutes
syncs:
  - destination: rec
    mode: mirror
    identifier: {external_id: customer_id}
    fields: {points: double_points}
"""


def test_new_rows_in_a_dbt_source_start_a_minute_level_run_that_builds_the_dbt_model(tmp_path):
    """The minute-level path: the change sensor watches the dbt source's table; its run has dbt build the model."""
    shop = Shop(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    (shop.project_dir / "audiences" / "loyal.yaml").write_text(LOYAL)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE main.loyalty_points (customer_id INTEGER, points INTEGER)")
        con.execute("INSERT INTO main.loyalty_points VALUES (1, 10), (2, 0)")
    defs = load_definitions(shop.settings)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
        return sensor.evaluate_tick(context), context.cursor

    with dg.instance_for_test() as instance:
        _, cursor = tick(None)  # the first tick requests everything once
        result, cursor = tick(cursor)
        assert not result.run_requests and "no new data in loyalty_points" in result.skip_message
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
            con.execute("INSERT INTO main.loyalty_points VALUES (3, 7)")
        result, cursor = tick(cursor)
    (request,) = result.run_requests
    assert request.tags["composable/changed"] == "loyalty_points" and request.tags["composable/trigger"] == "change"
    assert model_key("loyalty") in request.asset_selection and model_key("customers") not in request.asset_selection

    Recording.reset()
    outcome = run_selection(defs, dg.AssetSelection.assets(*request.asset_selection), request.partition_key,
                            shop.instance, log_level=None, tags=dict(request.tags))
    assert outcome.success, outcome.errors
    assert "model/loyalty" in outcome.materialized
    assert sent() == {"1": {"points": 20}, "3": {"points": 14}}


def test_a_misspelled_column_of_a_dbt_model_fails_validate_at_the_audience_line(tmp_path):
    """The issue's case: the dbt staging pattern (`select *`) and a misspelled column, caught before any dbt build."""
    shop = Shop(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    audience = shop.project_dir / "audiences" / "buyers.yaml"
    assert shop.load().models["customers"].is_dbt  # spelled right, it loads (dbt parses the project once, here)
    for old, new, line in [
        ("where: number_of_orders > 0", "where: number_of_ordrs > 0", 4),
        ("primary_key: customer_id", "primary_key: customer_ud", 3),
    ]:
        audience.write_text(BUYERS.replace(old, new))
        with pytest.raises(ProjectError) as caught:
            shop.load()
        misspelled = new.split(": ")[1].split()[0]
        assert f"audiences/buyers.yaml:{line}" in str(caught.value) and misspelled in str(caught.value), new

"""Column checks against the real schema (project/schema.py): a dbt-style staging project of `select *` chains on a
real DuckDB file (and PostgreSQL for the column listing), through `composable validate` and `composable lineage`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.governance.lineage import column_lineage, source_columns
from composable_assets.project import ProjectError, load_project
from composable_assets.definitions import load_definitions
from composable_assets.project.schema import SNAPSHOT_FILE, chain_lookups, static_lookup, warehouse_lookup
from composable_assets.settings import Settings
from composable_assets.warehouse import engine_from_url

# jaffle_shop's shape: raw tables, staging models that rename through `select * from source` / `select * from
# renamed`, and a mart selecting `c.*` from a CTE. Without the warehouse no model's columns are known.
STG_CUSTOMERS = """\
-- Customers as the shop has them, renamed.
with source as (
    select * from raw_customers
),

renamed as (
    select
        id as customer_id,
        first_name,
        email
    from source
)

select * from renamed
"""

STG_ORDERS = """\
with source as (select * from raw_orders),
renamed as (select id as order_id, user_id as customer_id, amount, ordered_at from source)
select * from renamed
"""

CUSTOMERS = """\
-- One row per customer with their orders.
with customer_orders as (
    select customer_id, count(*) as number_of_orders, sum(amount) as customer_lifetime_value
    from stg_orders
    group by customer_id
),

final as (
    select c.*, o.number_of_orders, o.customer_lifetime_value
    from stg_customers as c
    left join customer_orders as o using (customer_id)
)

select * from final
"""

LOYAL = """\
model: customers
primary_key: customer_id
where: number_of_orders >= 2
syncs:
  - destination: braze
    identifier: {external_id: customer_id}
    fields: {email: email, ltv: customer_lifetime_value}
"""
# Lines of LOYAL the errors point at.
PRIMARY_KEY_LINE, WHERE_LINE, IDENTIFIER_LINE, FIELDS_LINE = 2, 3, 6, 7

RAW_TABLES = (
    "CREATE OR REPLACE TABLE raw_customers (id INTEGER, first_name VARCHAR, email VARCHAR)",
    "CREATE OR REPLACE TABLE raw_orders (id INTEGER, user_id INTEGER, amount DOUBLE, ordered_at TIMESTAMP)",
)


@pytest.fixture
def staging(tmp_path: Path, monkeypatch) -> Path:
    """The project folder; its warehouse is a DuckDB file holding the raw tables (no model has run)."""
    root = tmp_path / "project"
    files = {
        "project.yaml": "name: staging\n",
        "destinations.yaml": "braze: {type: outbox}\n",
        "models/stg_customers.sql": STG_CUSTOMERS,
        "models/stg_orders.sql": STG_ORDERS,
        "models/customers.sql": CUSTOMERS,
        "audiences/loyal.yaml": LOYAL,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as con:
        for statement in RAW_TABLES:
            con.execute(statement)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(root))
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", f"duckdb:///{db}")
    return root


def composable(*args: str):
    return CliRunner().invoke(cli, list(args))


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_validate_checks_every_column_through_select_star(staging):
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns: all checked against the warehouse (3 models)" in result.output
    # Without the warehouse the same project passes too, but says that its columns were not checked.
    offline = composable("validate", "--offline")
    assert offline.exit_code == 0, offline.output
    assert "columns not checked against the warehouse (--offline)" in offline.output
    assert "all checked" not in offline.output


@pytest.mark.parametrize(
    ("old", "new", "line", "column"),
    [
        ("where: number_of_orders", "where: number_of_ordrs", WHERE_LINE, "number_of_ordrs"),
        ("primary_key: customer_id", "primary_key: customerid", PRIMARY_KEY_LINE, "customerid"),
        ("{external_id: customer_id}", "{external_id: customer_idd}", IDENTIFIER_LINE, "customer_idd"),
        ("ltv: customer_lifetime_value", "ltv: lifetime_value", FIELDS_LINE, "lifetime_value"),
    ],
    ids=["where", "primary_key", "identifier", "field"],
)
def test_a_misspelled_audience_column_fails_validate_at_its_file_and_line(staging, old, new, line, column):
    edit(staging, "audiences/loyal.yaml", old, new)
    result = composable("validate")
    assert result.exit_code == 1, result.output
    assert f"audiences/loyal.yaml:{line}:" in result.output
    assert f"`{column}`" in result.output and "not an output of model `customers`" in result.output
    # Offline the same file passes: its model's columns are unknown without the warehouse, never guessed.
    assert composable("validate", "--offline").exit_code == 0


def test_a_stream_over_a_select_star_model_has_its_columns_checked(staging):
    (staging / "streams").mkdir()
    (staging / "streams/purchases.yaml").write_text(
        "table: stg_orders\nevent_id: order_id\ncursor: ordered_at\nsyncs:\n  - destination: braze\n"
        "    identifier: {external_id: customer_id}\n    event: purchase\n    properties: {amount: amount}\n"
    )
    assert composable("validate").exit_code == 0
    edit(staging, "streams/purchases.yaml", "{amount: amount}", "{amount: amnt}")
    result = composable("validate")
    assert result.exit_code == 1
    assert "streams/purchases.yaml:8: column `amnt` is not an output of model `stg_orders`" in result.output


@pytest.mark.parametrize(
    ("name", "old", "new", "line", "column"),
    [
        ("models/stg_customers.sql", "        email\n", "        emial\n", 10, "emial"),
        ("models/customers.sql", "sum(amount)", "sum(amout)", 3, "amout"),
        ("models/customers.sql", "select c.*,", "select c.*, c.frist_name,", 9, "frist_name"),
    ],
    ids=["staging", "aggregate", "qualified"],
)
def test_a_model_naming_a_column_its_tables_lack_fails_validate_at_its_line(staging, name, old, new, line, column):
    edit(staging, name, old, new)
    result = composable("validate")
    assert result.exit_code == 1, result.output
    assert f"{name}:{line}: column `{column}` is in none of the tables" in result.output


def test_lineage_goes_through_select_star_to_the_source_column(staging):
    result = composable("lineage", "customers.customer_lifetime_value")
    assert result.exit_code == 0, result.output
    assert rows(result.output, 3) == {("braze", "ltv", "sync/loyal/braze")}
    result = composable("lineage", "braze.ltv")
    assert rows(result.output, 2) == {("raw_orders", "amount")}
    result = composable("lineage", "raw_customers.email")
    assert rows(result.output, 3) == {("braze", "email", "sync/loyal/braze")}
    # The identifier too: the source's `id`, renamed in staging; sqlglot traces a USING join column to both sides.
    assert rows(composable("lineage", "braze.external_id").output, 2) == {("raw_customers", "id"), ("raw_orders", "user_id")}
    # Offline, the source columns the last command read still say (the snapshot); without it the lineage stops at
    # `select *`, as before: no column is known.
    assert rows(composable("lineage", "--offline", "braze.ltv").output, 2) == {("raw_orders", "amount")}
    (staging.parent / "data" / SNAPSHOT_FILE).unlink()
    result = composable("lineage", "--offline", "customers.customer_lifetime_value")
    assert result.exit_code == 1 and "no column 'customers.customer_lifetime_value'" in result.output


def rows(output: str, width: int) -> set[tuple[str, ...]]:
    return {tuple(c.strip() for c in line.split("│")[1 : width + 1]) for line in output.splitlines() if line.startswith("│")}


def test_without_a_warehouse_validate_says_what_it_did_not_check_and_passes(staging, tmp_path, monkeypatch):
    edit(staging, "audiences/loyal.yaml", "where: number_of_orders", "where: number_of_ordrs")
    missing = tmp_path / "nowhere" / "warehouse.duckdb"
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", f"duckdb:///{missing}")
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns not checked: cannot read the warehouse" in result.output and "does not exist yet" in result.output
    assert "all checked" not in result.output
    assert not missing.parent.exists()  # checking a project made no warehouse


def test_a_table_not_created_yet_skips_its_models_checks_and_nothing_else(staging, tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("DROP TABLE raw_orders")
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns of stg_orders not checked: table raw_orders not found in the warehouse" in result.output
    assert "columns of customers not checked: the columns of model stg_orders it reads are not known" in result.output
    # stg_customers is still checked: its misspelling is an error even with raw_orders missing.
    edit(staging, "models/stg_customers.sql", "        email\n", "        emial\n")
    result = composable("validate")
    assert result.exit_code == 1 and "models/stg_customers.sql:10:" in result.output


def test_columns_from_elsewhere_plug_in_as_a_lookup(staging, tmp_path):
    """A model without SQL (a Python model; a dbt model's catalog) takes its columns from any lookup, first."""
    (staging / "models/customers.sql").unlink()
    (staging / "models/customers.py").write_text(
        "import pandas as pd\n\n\ndef model(stg_customers: pd.DataFrame) -> pd.DataFrame:\n    return stg_customers\n"
    )
    engine = engine_from_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    catalog = static_lookup({"customers": ["customer_id", "email", "number_of_orders", "customer_lifetime_value"]})
    project = load_project(staging, columns=chain_lookups(catalog, warehouse_lookup(engine)))
    assert project.models["customers"].columns == ["customer_id", "email", "number_of_orders", "customer_lifetime_value"]
    assert project.models["stg_customers"].columns == ["customer_id", "first_name", "email"]
    assert project.schema is not None and project.schema.skipped == []
    deps = column_lineage(project)
    assert [(k.to_user_string(), c) for k, c in source_columns(deps, "braze", "email") or []] == []  # a Python model's
    edit(staging, "audiences/loyal.yaml", "where: number_of_orders", "where: number_of_ordrs")
    with pytest.raises(ProjectError, match="number_of_ordrs"):
        load_project(staging, columns=chain_lookups(catalog, warehouse_lookup(engine)))
    # Only the warehouse: the Python model has not run, so its columns (and its audience's) are not checked.
    project = load_project(staging, columns=warehouse_lookup(engine))
    assert project.schema is not None
    assert project.schema.skipped == [
        "columns of customers not checked: its table is not in the warehouse yet (a Python model has columns once it "
        "has run)"
    ]
    # After a run its table exists: the warehouse says its columns.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE customers (customer_id INTEGER, email VARCHAR, number_of_orders INTEGER)")
    with pytest.raises(ProjectError, match="number_of_ordrs"):
        load_project(staging, columns=warehouse_lookup(engine))


def test_sql_sqlglot_cannot_place_is_not_an_error(staging):
    """An ambiguous join column, a lambda parameter, a DuckDB function: skipped or derived, never a false error."""
    edit(staging, "models/customers.sql", "select * from final", "select *, list_transform([1], x -> x + 1) AS l from final")
    # `amount` is in both tables: sqlglot cannot place it, but it is a real column, so this is no misspelling.
    joined = "select order_id, customer_id, amount from renamed join raw_orders as r on r.id = renamed.order_id"
    edit(staging, "models/stg_orders.sql", "select * from renamed", joined)
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns of stg_orders not checked: sqlglot could not derive its columns" in result.output


def test_postgres_lists_the_columns_of_every_table_in_one_query(postgres_url):
    """The information_schema query on a real PostgreSQL: current and named schemas, missing tables left out."""
    engine = engine_from_url(postgres_url)
    with engine.connect() as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute('CREATE TABLE crm.people (id INTEGER, "Email" TEXT, first_name TEXT)')
        conn.execute("CREATE TABLE orders (id INTEGER, person_id INTEGER, amount NUMERIC)")
        conn.execute("CREATE TABLE people (other INTEGER)")
    found = engine.tables_columns([("crm", "people"), (None, "orders"), (None, "people"), (None, "absent")])
    assert found == {
        ("crm", "people"): ["id", "Email", "first_name"],
        (None, "orders"): ["id", "person_id", "amount"],
        (None, "people"): ["other"],
    }


def test_postgres_warehouse_checks_a_qualified_source_through_select_star(postgres_url, tmp_path, monkeypatch):
    engine = engine_from_url(postgres_url)
    with engine.connect() as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute("CREATE TABLE crm.members (id INTEGER, email TEXT)")
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "audiences").mkdir()
    (root / "models/crm_members.sql").write_text("with source as (select * from crm.members) select * from source\n")
    (root / "audiences/all.yaml").write_text(LOYAL.replace("customers", "crm_members").replace("number_of_orders", "id"))
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(root))
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", postgres_url)
    (root / "destinations.yaml").write_text("braze: {type: outbox}\n")
    result = composable("validate")
    assert result.exit_code == 1, result.output
    # members has no customer_id (the audience names it): found through `select *` on PostgreSQL's own columns.
    assert "audiences/all.yaml:2: column `customer_id` is not an output of model `crm_members` (its columns: id, email)" in result.output


def test_the_definitions_derive_columns_from_the_last_validate_without_asking_the_warehouse(staging, tmp_path):
    settings = Settings.from_env()

    def lineage(key: list[str]) -> dict[str, set[tuple[str, str]]] | None:
        graph = load_definitions(settings).resolve_asset_graph()
        found = graph.get(dg.AssetKey(key)).metadata.get("dagster/column_lineage")
        if found is None:
            return None
        return {c: {(d.asset_key.to_user_string(), d.column_name) for d in ds} for c, ds in found.deps_by_column.items()}

    assert lineage(["model", "customers"]) is None  # before any validate: `select *` hides every column
    assert composable("validate").exit_code == 0
    assert lineage(["model", "customers"])["customer_lifetime_value"] == {("model/stg_orders", "amount")}
    assert lineage(["model", "stg_customers"])["email"] == {("source/raw_customers", "email")}
    assert lineage(["sync", "loyal", "braze"])["ltv"] == {("audience/loyal", "customer_lifetime_value")}
    # Nothing is checked against the snapshot: a source that changed since (it lost `email`) never stops the
    # definitions from loading; the models it no longer explains simply have no lineage until the next validate.
    snapshot = tmp_path / "data" / SNAPSHOT_FILE
    snapshot.write_text(snapshot.read_text().replace('"email"', '"e_mail"'))
    assert lineage(["model", "stg_customers"]) is None
    assert lineage(["model", "stg_orders"])["amount"] == {("source/raw_orders", "amount")}
    # A snapshot of another warehouse is not used.
    other = Settings(settings.project_dir, f"duckdb:///{tmp_path / 'other.duckdb'}", settings.data_dir)
    assert "dagster/column_lineage" not in load_definitions(other).resolve_asset_graph().get(
        dg.AssetKey(["model", "customers"])).metadata


PEOPLE = {"people": ["id", "email", "address", "tags"], "orders": ["id", "person_id", "amount"]}


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        ("select p.id, p.address.city as city from people p", ["id", "city"]),
        ("select * exclude (email) from people", ["id", "address", "tags"]),
        ("select * replace (lower(email) as email) from people", ["id", "email", "address", "tags"]),
        ("select p.id, t.tag from people p, unnest(p.tags) as t(tag)", ["id", "tag"]),
        ("select id, list_transform(tags, x -> upper(x)) as t from people", ["id", "t"]),
        ("select * from people natural join orders", ["id", "email", "address", "tags", "person_id", "amount"]),
        ("select person_id, sum(amount) as s from orders group by all order by s", ["person_id", "s"]),
        ("select amount * 2 as dbl, dbl + 1 as dbl2 from orders", ["dbl", "dbl2"]),
        ("with a as (select * from people) select a.* exclude (tags) from a", ["id", "email", "address"]),
        ("select * from (values (1, 'a')) as v(a, b)", ["a", "b"]),
        # Unknown, never guessed: a pseudo-column sqlglot cannot place, a table function's columns, COLUMNS(...),
        # PIVOT's.
        ("select rowid, id from orders", None),
        ("select a, b from read_parquet('x.parquet')", None),
        ("select columns('e.*') from people", None),
        ("pivot orders on person_id using sum(amount)", None),
    ],
)
def test_duckdb_constructs_are_derived_or_left_unknown_never_an_error(sql, columns):
    from composable_assets.project.schema import resolve_columns
    from composable_assets.project.specs import ModelSpec

    model = ModelSpec(name="m", path=Path("models/m.sql"), sql=sql, source_deps=["people", "orders"])
    resolved = resolve_columns({"m": model}, static_lookup(PEOPLE))
    assert resolved.errors == []
    assert resolved.columns.get("m") == columns
    assert (resolved.skipped != []) == (columns is None)


def test_an_unreachable_warehouse_is_a_skipped_check_for_validate_and_lineage(staging, monkeypatch):
    import os

    duckdb_url = os.environ["COMPOSABLE_WAREHOUSE"]
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", "postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens there
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns not checked: cannot read the warehouse (PostgreSQL" in result.output
    result = composable("lineage", "raw_customers.email")
    assert "lineage may be partial: columns not checked: cannot read the warehouse" in result.output
    assert result.exit_code == 1  # no snapshot yet: `select *` hides the column
    # With the columns a validate read earlier from the same warehouse, the lineage still goes through `select *`.
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", duckdb_url)
    assert composable("validate").exit_code == 0
    db = Path(duckdb_url.removeprefix("duckdb:///"))
    db.rename(db.with_suffix(".away"))  # the same URL, now unreadable
    assert composable("validate").exit_code == 0  # which keeps the last snapshot
    result = composable("lineage", "braze.email")
    assert "lineage may be partial" in result.output
    assert rows(result.output, 2) == {("raw_customers", "email")}


def test_duckdb_lists_the_columns_of_every_table_in_one_query(tmp_path):
    engine = engine_from_url(f"duckdb:///{tmp_path / 'w.duckdb'}")
    with engine.connect() as conn:
        conn.execute("CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.people (id INTEGER, Email VARCHAR)")
        conn.execute("CREATE TABLE people (other INTEGER)")
        conn.execute("CREATE VIEW people_view AS SELECT id FROM raw.people")
    found = engine.tables_columns([("raw", "people"), (None, "people"), ("RAW", "PEOPLE"), (None, "people_view"),
                                   ("raw", "absent"), ("nowhere", "people")])
    assert found == {
        ("raw", "people"): ["id", "Email"],
        (None, "people"): ["other"],
        ("RAW", "PEOPLE"): ["id", "Email"],  # unquoted names are case-insensitive in DuckDB
        (None, "people_view"): ["id"],  # a view is a table to read from, too
    }


def test_engines_without_one_query_list_columns_table_by_table(tmp_path):
    """The base class's default (Snowflake, BigQuery, Databricks keep it): each engine's own `table_columns`, in turn."""
    from composable_assets.warehouse import Connection

    engine = engine_from_url(f"duckdb:///{tmp_path / 'w.duckdb'}")
    with engine.connect() as conn:
        conn.execute("CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.people (id INTEGER, email VARCHAR)")
        found = Connection.tables_columns(conn, [("raw", "people"), (None, "people"), ("raw", "absent")])
    assert found == {("raw", "people"): ["id", "email"]}


def test_a_python_model_s_columns_are_checked_once_it_has_run(small, monkeypatch):
    """Before its first run a Python model's columns are unknown (said so); after it, its table in the warehouse says."""
    from .test_python_models import LIKELY_AUDIENCE, PROPENSITY

    small.write("models/propensity.py", PROPENSITY)
    small.write("audiences/likely.yaml", LIKELY_AUDIENCE)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = composable("validate")
    assert result.exit_code == 0, result.output
    assert "columns of propensity not checked: its table is not in the warehouse yet" in result.output
    assert small.sync("likely").success
    # The audience's field names a column the function does not return: found now, at its line.
    small.write("audiences/likely.yaml", LIKELY_AUDIENCE.replace("propensity: propensity", "propensity: propensty"))
    result = composable("validate")
    assert result.exit_code == 1, result.output
    assert "audiences/likely.yaml:9: column `propensty` is not an output of model `propensity`" in result.output

"""The seeded retail generator and the bundled sample project that reads its tables."""

from __future__ import annotations

import datetime
import importlib.resources
import re
import time

import duckdb
import pytest
import yaml

from composable_assets_tests.demo import SAMPLE_PROJECT_DIR
from composable_assets_tests.demo.generator import (
    CATEGORIES,
    COUNTRIES,
    SOURCE_TABLES,
    apply_day_of_changes,
    seed,
)

AS_OF = datetime.date(2026, 1, 1)
DAY = datetime.date(2026, 1, 2)

EXPECTED_COLUMNS = {
    "customers": [
        ("customer_id", "BIGINT"), ("email", "VARCHAR"), ("phone", "VARCHAR"), ("first_name", "VARCHAR"),
        ("last_name", "VARCHAR"), ("country", "VARCHAR"), ("created_at", "TIMESTAMP"), ("updated_at", "TIMESTAMP"),
    ],
    "orders": [
        ("order_id", "BIGINT"), ("customer_id", "BIGINT"), ("amount", "DECIMAL(12,2)"), ("currency", "VARCHAR"),
        ("status", "VARCHAR"), ("category", "VARCHAR"), ("ordered_at", "TIMESTAMP"),
    ],
    "web_events": [
        ("event_id", "VARCHAR"), ("customer_id", "BIGINT"), ("event_type", "VARCHAR"),
        ("product_category", "VARCHAR"), ("occurred_at", "TIMESTAMP"),
    ],
    "consents": [
        ("customer_id", "BIGINT"), ("purpose", "VARCHAR"), ("granted", "BOOLEAN"), ("updated_at", "TIMESTAMP"),
    ],
    "deletion_requests": [
        ("request_id", "VARCHAR"), ("customer_id", "BIGINT"), ("email", "VARCHAR"), ("requested_at", "TIMESTAMP"),
    ],
}
PRIMARY_KEYS = {
    "customers": "customer_id",
    "orders": "order_id",
    "web_events": "event_id",
    "consents": "customer_id, purpose",
    "deletion_requests": "request_id",
}


def connect(path: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose current_date is the UTC date the generator anchors to."""
    con = duckdb.connect(path)
    con.execute("SET TimeZone = 'UTC'")
    return con


def scalar(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> object:
    """The single value of a one-row, one-column query."""
    [(value,)] = con.execute(sql, list(params)).fetchall()
    return value


def fingerprints(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    """Order-independent (row count, sum of row hashes) per source table."""
    return {
        table: con.execute(f"SELECT count(*), sum(hash(t)) FROM {table} AS t").fetchall()[0]
        for table in SOURCE_TABLES
    }


def model_sql(name: str) -> str:
    """The SQL of one bundled model."""
    return (SAMPLE_PROJECT_DIR / "models" / f"{name}.sql").read_text()


def audience(name: str) -> dict:
    """One bundled audience file, parsed."""
    return yaml.safe_load((SAMPLE_PROJECT_DIR / "audiences" / f"{name}.yaml").read_text())


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory warehouse."""
    with connect() as connection:
        yield connection


def test_same_seed_gives_identical_tables_and_another_seed_does_not(tmp_path):
    results = []
    # Over a row group (122,880 rows) so DuckDB parallelises; the single-threaded run must match it.
    for name, seed_value, threads in [("a", 42, 2), ("b", 42, 1), ("c", 7, 2)]:
        with connect(str(tmp_path / f"{name}.duckdb")) as con:
            con.execute(f"SET threads = {threads}")
            counts = seed(con, customers=150_000, seed=seed_value, as_of=AS_OF)
            results.append((counts, fingerprints(con)))
    assert results[0] == results[1]
    assert all(results[0][1][table] != results[2][1][table] for table in SOURCE_TABLES)


def test_a_later_as_of_shifts_every_timestamp_and_nothing_else(con):
    timestamps = {
        "customers": ["created_at", "updated_at"],
        "orders": ["ordered_at"],
        "web_events": ["occurred_at"],
        "consents": ["updated_at"],
        "deletion_requests": ["requested_at"],
    }
    seed(con, customers=3000, as_of=AS_OF)
    for table in SOURCE_TABLES:
        con.execute(f"CREATE TEMP TABLE {table}_before AS FROM {table}")
    seed(con, customers=3000, as_of=AS_OF + datetime.timedelta(days=10))
    for table, columns in timestamps.items():
        shifted = ", ".join(f"{column} + INTERVAL 10 DAY AS {column}" for column in columns)
        differences = scalar(con, f"""
            SELECT count(*) FROM (
                (SELECT * REPLACE ({shifted}) FROM {table}_before EXCEPT SELECT * FROM {table})
                UNION ALL
                (SELECT * FROM {table} EXCEPT SELECT * REPLACE ({shifted}) FROM {table}_before)
            )""")
        assert differences == 0, table


@pytest.mark.parametrize("customers", [1000, 4000])
def test_row_counts_scale_with_customers(con, customers):
    counts = seed(con, customers=customers, as_of=AS_OF)
    assert set(counts) == set(SOURCE_TABLES)
    assert counts == {table: scalar(con, f"SELECT count(*) FROM {table}") for table in SOURCE_TABLES}
    assert counts["customers"] == customers
    assert counts["consents"] == 3 * customers
    assert counts["deletion_requests"] == customers // 1000
    assert 2.7 * customers < counts["orders"] < 3.3 * customers
    assert 1.8 * customers < counts["web_events"] < 2.2 * customers


def test_orders_per_customer_controls_order_volume(con):
    assert 0.9 * 5000 < seed(con, customers=5000, orders_per_customer=1, as_of=AS_OF)["orders"] < 1.1 * 5000
    assert seed(con, customers=100, orders_per_customer=0, as_of=AS_OF)["orders"] == 0


def test_invalid_sizes_are_rejected(con):
    with pytest.raises(ValueError):
        seed(con, customers=0)
    with pytest.raises(ValueError):
        seed(con, customers=10, orders_per_customer=-1)


def test_default_as_of_is_today_utc(con):
    seed(con, customers=200)
    today = datetime.datetime.now(datetime.UTC).date()
    newest_signup = scalar(con, "SELECT max(created_at) FROM customers")
    assert today - datetime.timedelta(days=5) <= newest_signup.date() < today


def test_tables_have_the_documented_columns_in_the_main_schema(con):
    seed(con, customers=100, as_of=AS_OF)
    for table, columns in EXPECTED_COLUMNS.items():
        described = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        assert described == columns, table


def test_keys_stay_unique_and_activity_follows_signup_over_several_days(con):
    seed(con, customers=3000, as_of=AS_OF)
    for day in range(3):
        apply_day_of_changes(con, AS_OF + datetime.timedelta(days=day))
    for table, key in PRIMARY_KEYS.items():
        assert scalar(con, f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}") == 0, table
    assert scalar(con, "SELECT count(*) - count(DISTINCT email) FROM customers") == 0
    for table, column in [("orders", "ordered_at"), ("web_events", "occurred_at"), ("consents", "updated_at")]:
        before_signup = scalar(con, f"""
            SELECT count(*) FROM {table} AS t JOIN customers AS c USING (customer_id)
            WHERE t.{column} < c.created_at""")
        assert before_signup == 0, table


def test_values_are_plausible(con):
    seed(con, customers=5000, as_of=AS_OF)
    emails = [email for (email,) in con.execute("SELECT email FROM customers").fetchall()]
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\.\d+@example\.com", email) for email in emails)
    phones = [phone for (phone,) in con.execute("SELECT phone FROM customers").fetchall()]
    assert 0.12 < phones.count(None) / len(phones) < 0.18
    assert all(re.fullmatch(r"\+[1-9]\d{7,14}", phone) for phone in phones if phone)
    assert {c for (c,) in con.execute("SELECT DISTINCT country FROM customers").fetchall()} == set(COUNTRIES)
    assert {c for (c,) in con.execute("SELECT DISTINCT category FROM orders").fetchall()} == set(CATEGORIES)
    assert {c for (c,) in con.execute("SELECT DISTINCT currency FROM orders").fetchall()} == {"EUR", "USD", "GBP"}
    assert scalar(con, "SELECT avg((status = 'completed')::INT) FROM orders") > 0.85
    assert {s for (s,) in con.execute("SELECT DISTINCT status FROM orders").fetchall()} == {
        "completed", "refunded", "cancelled",
    }
    assert {e for (e,) in con.execute("SELECT DISTINCT event_type FROM web_events").fetchall()} == {
        "page_view", "add_to_cart", "checkout_started", "app_open",
    }
    granted = dict(con.execute("SELECT purpose, avg(granted::INT) FROM consents GROUP BY purpose").fetchall())
    assert set(granted) == {"email_marketing", "push", "advertising"}
    assert granted["email_marketing"] > 0.7
    # Nothing happens before the customer signs up or after as_of; orders span roughly 400 days.
    for table, column in [
        ("orders", "ordered_at"), ("web_events", "occurred_at"), ("consents", "updated_at"),
        ("deletion_requests", "requested_at"),
    ]:
        before_signup = scalar(con, f"""
            SELECT count(*) FROM {table} AS t JOIN customers AS c USING (customer_id)
            WHERE t.{column} < c.created_at""")
        assert before_signup == 0, table
        assert scalar(con, f"SELECT max({column}) FROM {table}") <= datetime.datetime(2026, 1, 1)
    assert scalar(con, "SELECT count(*) FROM customers WHERE updated_at < created_at") == 0
    assert scalar(con, "SELECT min(created_at)::DATE FROM customers") == AS_OF - datetime.timedelta(days=730)
    assert scalar(con, "SELECT min(ordered_at)::DATE FROM orders") == AS_OF - datetime.timedelta(days=400)
    # A few percent of customers are worth more than 500.
    high_value = scalar(con, """
        SELECT count(*) / 5000 FROM (
            SELECT customer_id FROM orders WHERE status = 'completed' GROUP BY ALL HAVING sum(amount) > 500
        )""")
    assert 0.02 < high_value < 0.1


def test_a_day_of_changes_is_deterministic_and_days_differ(tmp_path):
    results = []
    for name, day in [("a", DAY), ("b", DAY), ("c", DAY + datetime.timedelta(days=1))]:
        with connect(str(tmp_path / f"{name}.duckdb")) as con:
            seed(con, customers=5000, as_of=AS_OF)
            counts = apply_day_of_changes(con, day)
            results.append((counts, fingerprints(con)))
    assert results[0] == results[1]
    assert results[0][1]["orders"] != results[2][1]["orders"]
    assert results[0][1]["customers"] != results[2][1]["customers"]


def test_a_day_of_changes_changes_every_kind_of_thing(con):
    seed(con, customers=20000, as_of=AS_OF)
    con.execute("CREATE TEMP TABLE customers_before AS FROM customers")
    con.execute("CREATE TEMP TABLE consents_before AS FROM consents")
    con.execute("""
        CREATE TEMP TABLE ltv_before AS
        SELECT customer_id, sum(amount) AS ltv FROM orders WHERE status = 'completed' GROUP BY ALL""")
    counts = apply_day_of_changes(con, DAY)

    assert set(counts) == {
        "new_orders", "profile_edits", "churned_customers", "new_customers",
        "new_web_events", "consent_changes", "deletion_requests",
    }
    assert all(count > 0 for count in counts.values()), counts
    # Rates: orders ~2%, edits ~1%, churn ~0.2%, new customers ~0.5%.
    assert 300 < counts["new_orders"] < 500
    assert 150 < counts["profile_edits"] < 250
    assert 20 < counts["churned_customers"] < 60
    assert counts["new_customers"] == round((20000 - counts["churned_customers"]) * 0.02 / 4)
    assert counts["deletion_requests"] == round((20000 - counts["churned_customers"]) * 0.02 / 100)

    churned = scalar(con, """
        SELECT count(*) FROM customers_before
        WHERE customer_id NOT IN (SELECT customer_id FROM customers)""")
    assert churned == counts["churned_customers"]

    new = con.execute("""
        SELECT count(*), min(created_at)::DATE, max(created_at)::DATE, min(customer_id)
        FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM customers_before)""").fetchall()
    assert new == [(counts["new_customers"], DAY, DAY, 20001)]
    assert scalar(con, "SELECT count(*) FROM consents WHERE customer_id > 20000") == 3 * counts["new_customers"]

    edits = con.execute("""
        SELECT
            (a.email <> b.email)::INT + (a.first_name <> b.first_name)::INT + (a.country <> b.country)::INT,
            a.updated_at::DATE
        FROM customers AS a JOIN customers_before AS b USING (customer_id)
        WHERE a.updated_at <> b.updated_at OR a.email <> b.email OR a.first_name <> b.first_name
            OR a.country <> b.country""").fetchall()
    assert len(edits) == counts["profile_edits"]
    assert all(changed == 1 and day == DAY for changed, day in edits)

    assert scalar(con, "SELECT count(*) FROM orders WHERE ordered_at::DATE = ?", DAY) == counts["new_orders"]
    crossed_vip_threshold = scalar(con, """
        SELECT count(*) FROM (
            SELECT customer_id, sum(amount) AS ltv FROM orders WHERE status = 'completed' GROUP BY ALL
        ) AS after LEFT JOIN ltv_before AS before USING (customer_id)
        WHERE after.ltv > 500 AND coalesce(before.ltv, 0) <= 500""")
    assert crossed_vip_threshold > 0

    day_events = dict(con.execute(
        "SELECT event_type, count(*) FROM web_events WHERE occurred_at::DATE = ? GROUP BY ALL", [DAY]
    ).fetchall())
    assert sum(day_events.values()) == counts["new_web_events"]
    assert day_events["add_to_cart"] > 0

    flipped = scalar(con, """
        SELECT count(*) FROM consents AS a JOIN consents_before AS b USING (customer_id, purpose)
        WHERE a.granted <> b.granted AND a.updated_at::DATE = ?""", DAY)
    assert flipped == counts["consent_changes"]
    assert scalar(con, "SELECT count(*) FROM deletion_requests WHERE requested_at::DATE = ?", DAY) == counts[
        "deletion_requests"
    ]


def test_sample_project_files_ship_with_the_tests_package():
    packaged = importlib.resources.files("composable_assets_tests") / "demo" / "project"
    expected = [
        "project.yaml", "destinations.yaml", "models/customer_profiles.sql", "models/cart_abandoners.sql",
        "audiences/vip_customers.yaml", "audiences/lapsed_customers.yaml",
        "audiences/weekly_newsletter.yaml", "audiences/cart_abandoners.yaml",
        "models/order_events.sql", "streams/purchases.yaml",
    ]
    for relative in expected:
        assert (SAMPLE_PROJECT_DIR / relative).is_file(), relative
        assert packaged.joinpath(relative).is_file(), relative
    assert yaml.safe_load((SAMPLE_PROJECT_DIR / "project.yaml").read_text()) == {
        "name": "retail_sample", "start_date": "2026-01-01",
        "landing": {"orders": {}, "web_events": {}, "customers": {"key": "customer_id"}},
        "owners": ["team:data-platform"], "pii": {"country": "location"},
        "consent": {"table": "consents", "key": "customer_id", "updated_at": "updated_at"},
        "deletion_requests": {
            "table": "deletion_requests", "key": "customer_id", "requested_at": "requested_at", "id": "request_id"
        },
    }
    destinations = yaml.safe_load((SAMPLE_PROJECT_DIR / "destinations.yaml").read_text())
    assert {name: d["type"] for name, d in destinations.items()} == {"outbox": "outbox", "braze": "braze", "iterable": "iterable"}
    assert destinations["braze"]["api_key"] == {"env": "BRAZE_API_KEY"}  # secrets only by variable name
    assert model_sql("customer_profiles").splitlines()[:2] == [
        "-- One row per customer with computed traits (lifetime value, orders, last order, favourite category).",
        "-- owners: team:data-platform",
    ]


def test_models_run_on_generated_data_and_audiences_select_realistic_subsets(con):
    seed(con, customers=2000)
    for model in ["customer_profiles", "cart_abandoners"]:
        con.execute(f"CREATE TABLE {model} AS " + model_sql(model))

    profiles = [name for (name,) in con.execute("SELECT column_name FROM (DESCRIBE customer_profiles)").fetchall()]
    assert profiles == [
        "customer_id", "email", "phone", "first_name", "last_name", "country", "created_at",
        "lifetime_value", "order_count", "last_order_at", "favourite_category", "updated_at",
    ]
    assert scalar(con, "SELECT count(DISTINCT customer_id) FROM customer_profiles") == 2000
    missing_traits = "SELECT count(*) FROM customer_profiles WHERE lifetime_value IS NULL OR order_count IS NULL"
    assert scalar(con, missing_traits) == 0
    assert scalar(con, """
        SELECT count(*) FROM customer_profiles
        WHERE (order_count = 0) <> (last_order_at IS NULL) OR (order_count = 0) <> (favourite_category IS NULL)""") == 0
    carts = [name for (name,) in con.execute("SELECT column_name FROM (DESCRIBE cart_abandoners)").fetchall()]
    assert carts == ["customer_id", "email", "first_name", "last_cart_at", "cart_category"]
    assert 0 < scalar(con, "SELECT count(*) FROM cart_abandoners") < 400
    assert scalar(con, "SELECT count(*) - count(DISTINCT customer_id) FROM cart_abandoners") == 0

    shares = {}
    for name in ["vip_customers", "lapsed_customers", "weekly_newsletter", "cart_abandoners"]:
        spec = audience(name)
        where = spec.get("where") or "TRUE"
        members = scalar(con, f"SELECT count(*) FROM {spec['model']} WHERE {where}")
        shares[name] = members / 2000
        assert members > 0, name
        # Every column the audience maps must exist in its model.
        columns = {spec["primary_key"]}
        for sync in spec["syncs"]:
            columns |= {*sync["identifier"].values(), *sync["fields"].values()}
        con.execute(f"SELECT {', '.join(sorted(columns))} FROM {spec['model']} LIMIT 0")
    assert 0.01 < shares["vip_customers"] < 0.1
    assert 0.05 < shares["lapsed_customers"] < 0.5
    assert shares["weekly_newsletter"] == 1


def test_200k_customers_generate_in_a_few_seconds(tmp_path, capsys):
    with connect(str(tmp_path / "big.duckdb")) as con:
        started = time.perf_counter()
        counts = seed(con, customers=200_000, as_of=AS_OF)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        changes = apply_day_of_changes(con, DAY)
        day_elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nseed(200_000 customers): {elapsed:.2f}s {counts}; one day of changes: {day_elapsed:.2f}s {changes}")
    assert counts["customers"] == 200_000

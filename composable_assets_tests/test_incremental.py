"""The incremental minute-level path: which models qualify, and that recomputing changed keys gives the full answer."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from composable_assets.automation.priority import PRIORITY_TAG
from composable_assets.definitions import build_definitions
from composable_assets.landing import landing_folders
from composable_assets.project import load_project
from composable_assets.project.incremental import plan_refresh, restricted_sql
from composable_assets.settings import Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator
from composable_assets_tests.demo.simulator import ORDER_SCHEMA

TABLES = {"customers", "orders", "web_events"}


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id", "incremental by customer_id"),
        ("SELECT o.order_id, o.customer_id, c.email FROM orders o LEFT JOIN customers c "
         "ON c.customer_id = o.customer_id", "incremental by customer_id"),
        ("SELECT customer_id, amount FROM orders WHERE ordered_at >= current_date - INTERVAL 7 DAY",
         "incremental by customer_id"),
        ("SELECT customer_id FROM orders WHERE customer_id IN (SELECT customer_id FROM customers WHERE country = 'DE')",
         "incremental by customer_id"),
        ("SELECT customer_id, amount FROM orders ORDER BY amount DESC LIMIT 10", "full: by customer_id: LIMIT"),
        ("SELECT customer_id, rank() OVER (ORDER BY amount) AS r FROM orders", "full: by customer_id: the window"),
        ("SELECT o.customer_id FROM orders o WHERE o.amount > (SELECT avg(amount) FROM orders)",
         "full: by customer_id: in the subquery"),
        ("SELECT c.customer_id FROM orders o LEFT JOIN customers c ON c.customer_id = o.customer_id",
         "full: by customer_id: the key is read from c, the optional side of a LEFT JOIN"),
        ("SELECT o.customer_id FROM orders o FULL JOIN customers c ON c.customer_id = o.customer_id",
         "full: by customer_id: a FULL JOIN"),
        ("SELECT o.customer_id FROM orders o JOIN customers c ON c.customer_id = o.customer_id OR c.vip",
         "full: by customer_id: c is not joined on the key"),
        ("SELECT customer_id, random() AS r FROM orders", "full: it calls RANDOM()"),
        ("SELECT customer_id, datediff('day', max(ordered_at), current_date) AS days FROM orders GROUP BY 1",
         "full: by customer_id: CURRENT_DATE is read outside a WHERE condition"),
        ("-- incremental_key: none\nSELECT customer_id FROM orders", "full: the file says"),
        ("-- incremental_key: order_id\nSELECT o.order_id, o.customer_id, c.email FROM orders o "
         "JOIN customers c ON c.customer_id = o.customer_id", "full: by order_id: c is not joined on the key"),
        ("SELECT customer_id FROM other_schema.orders", "full: by customer_id: it reads other_schema.orders"),
    ],
)
def test_which_models_qualify(sql, expected):
    assert plan_refresh(sql, TABLES, {}).describe().startswith(expected)


def test_the_sample_models_are_incremental_by_customer_and_say_so():
    project = load_project(SAMPLE_PROJECT_DIR)
    described = {name: plan.describe() for name, plan in project.refreshes.items()}
    assert described == dict.fromkeys(["cart_abandoners", "customer_profiles", "order_events"], "incremental by customer_id")
    cart = project.refreshes["cart_abandoners"]
    # The 48-hour window is a clock condition over web_events: its edge is watched, not the whole table.
    assert list(cart.time_filters) == ["web_events"]


def test_a_model_reading_a_full_model_is_full():
    plans = {"ranked": plan_refresh("SELECT customer_id, rank() OVER (ORDER BY amount) AS r FROM orders", TABLES, {})}
    downstream = plan_refresh("SELECT customer_id, r FROM ranked", TABLES | {"ranked"}, {"ranked": plans["ranked"].key})
    assert downstream.describe() == "full: by customer_id: it reads model ranked, which is refreshed in full"


def test_the_restricted_sql_gives_the_full_answer_for_those_keys():
    con = duckdb.connect()
    generator.seed(con, customers=300)
    sql = (SAMPLE_PROJECT_DIR / "models" / "customer_profiles.sql").read_text()
    plan = load_project(SAMPLE_PROJECT_DIR).refreshes["customer_profiles"]
    con.execute("CREATE TABLE keys AS SELECT CAST(customer_id AS VARCHAR) AS key FROM customers WHERE customer_id % 7 = 0")
    now = {"timestamp": "current_timestamp", "date": "current_date"}
    restricted = restricted_sql(sql, plan, lambda t, c: f"{c} IN (SELECT CAST(key AS BIGINT) FROM keys)", now)
    full = con.execute(f"SELECT * FROM ({sql}) WHERE customer_id % 7 = 0 ORDER BY customer_id").fetchall()
    assert full and con.execute(f"SELECT * FROM ({restricted}) ORDER BY customer_id").fetchall() == full


class Sample:
    """The sample project on a small DuckDB file, run in process with the `minute_level` job."""

    def __init__(self, root: Path):
        shutil.copytree(SAMPLE_PROJECT_DIR, root / "project")
        # Only the outbox: no HTTP stand-ins needed to see what each run sends.
        (root / "project" / "destinations.yaml").write_text("outbox: {type: outbox}\n")
        for audience in (root / "project" / "audiences").glob("*.yaml"):
            text = audience.read_text()
            cut = text.find("  - destination: braze")
            if cut < 0:
                cut = text.find("  - destination: iterable")
            audience.write_text(text[:cut] if cut > 0 else text)
        stream = root / "project" / "streams" / "purchases.yaml"
        stream.unlink()
        self.db = root / "data" / "warehouse.duckdb"
        self.db.parent.mkdir(parents=True)
        with duckdb.connect(str(self.db)) as con:
            generator.seed(con, customers=200)
            self.max_order = con.execute("SELECT max(order_id) FROM orders").fetchone()[0]
        self.settings = Settings(project_dir=root / "project", warehouse_url=f"duckdb:///{self.db}", data_dir=root / "data")
        self.project = load_project(self.settings.project_dir)
        self.job = build_definitions(self.project, self.settings).resolve_job_def("minute_level")
        self.instance = dg.DagsterInstance.ephemeral()
        self.folders = landing_folders(self.project.settings.landing, self.settings.data_dir)

    def run(self, mode: str) -> dict[str, dict]:
        """Run the minute-level job; asset path -> its materialization metadata."""
        today = dt.datetime.now(dt.UTC).date().isoformat()
        result = self.job.execute_in_process(
            partition_key=today, tags={"composable/refresh": mode}, instance=self.instance
        )
        assert result.success
        self.step_order = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
        return {
            "/".join(m.asset_key.path): {k: v.value for k, v in m.metadata.items()}
            for m in (
                e.event_specific_data.materialization
                for e in result.all_events
                if e.event_type_value == "ASSET_MATERIALIZATION"
            )
        }

    def land_order(self, customer: int, amount: str = "700.00") -> None:
        self.max_order += 1
        folder = self.folders["orders"]
        now = dt.datetime.now(dt.UTC)
        name = folder.new_file_name(".parquet", now=now)
        temp = folder.temp_path(name)
        row = {"order_id": self.max_order, "customer_id": customer, "amount": Decimal(amount), "currency": "EUR",
               "status": "completed", "category": "shoes", "ordered_at": now.replace(tzinfo=None)}
        pq.write_table(pa.Table.from_pylist([row], schema=ORDER_SCHEMA), temp)
        folder.publish(temp, name)

    def sql(self, statement: str, params=None):
        with duckdb.connect(str(self.db)) as con:
            return con.execute(statement, params).fetchall()


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return Sample(tmp_path)


def test_a_landed_order_is_applied_to_its_customer_only_and_sent(sample: Sample):
    sample.run("full")
    customer = sample.sql("SELECT min(customer_id) FROM customers WHERE customer_id NOT IN "
                          "(SELECT customer_id FROM composable.audience__vip_customers)")[0][0]
    sample.land_order(customer)
    runs = sample.run("incremental")
    assert runs["model/customer_profiles"]["mode"] == "incremental"
    assert runs["model/customer_profiles"]["affected_keys"] == 1
    assert runs["audience/vip_customers"]["affected_keys"] == 1
    delta = runs["delta/vip_customers/outbox"]
    assert (delta["mode"], delta["added"], delta["updated"], delta["removed"]) == ("incremental", 1, 0, 0)
    # The nightly full recompute finds nothing left to repair or send.
    nightly = sample.run("full")
    assert nightly["model/customer_profiles"]["repaired_rows"] == 0
    assert nightly["audience/vip_customers"]["repaired_rows"] == 0
    assert nightly["delta/vip_customers/outbox"]["total"] == 0


def test_a_run_delivers_one_audience_before_starting_the_next(sample: Sample):
    """Each audience's chain (audience, delta, sync) runs through to its delivery before another one starts, and the
    model feeding more deliveries goes first; in plain graph order every audience ran before any delivery."""
    sample.run("full")
    sample.land_order(3)
    sample.run("incremental")
    order = sample.step_order
    chains = {name: [i for i, step in enumerate(order) if step.split("__")[1:2] == [name]
                     and step.startswith(("audience__", "delta__", "sync__"))]
              for name in ("vip_customers", "cart_abandoners")}
    for steps in chains.values():
        assert steps == list(range(steps[0], steps[0] + len(steps))), order  # one after the other, nothing between
        assert order[steps[-1]].startswith("sync__"), order
    first = min(chains, key=lambda name: chains[name][0])
    # Each step still runs after what it reads: the first chain's model before it, the landing load before all.
    assert order[0] == "load_landing"
    assert order.index(f"model__{sample.project.audiences[first].model}") < chains[first][0]


def test_steps_feeding_more_minute_level_deliveries_go_first(tmp_path: Path):
    project = load_project(SAMPLE_PROJECT_DIR)
    settings = Settings(project_dir=SAMPLE_PROJECT_DIR, warehouse_url="duckdb:///:memory:", data_dir=tmp_path)
    defs = build_definitions(project, settings)

    def priority(*path: str) -> int:
        return int(defs.get_assets_def(dg.AssetKey(list(path))).op.tags[PRIORITY_TAG])

    # customer_profiles feeds two minute-level deliveries (vip_customers to braze and outbox), cart_abandoners one.
    assert priority("model", "customer_profiles") > priority("model", "cart_abandoners")
    assert (priority("sync", "vip_customers", "braze") > priority("delta", "vip_customers", "braze")
            > priority("audience", "vip_customers") > priority("model", "customer_profiles"))
    assert priority("stream", "purchases", "braze") > priority("delta", "cart_abandoners", "outbox")


def test_a_delete_outside_the_landing_folders_falls_back_to_the_full_recompute(sample: Sample):
    sample.run("full")
    vip = sample.sql("SELECT min(_key) FROM composable.audience__vip_customers")[0][0]
    sample.sql("DELETE FROM orders WHERE customer_id = ?", [int(vip)])
    runs = sample.run("incremental")
    assert runs["model/customer_profiles"]["mode"].startswith("full (orders lost ")
    assert runs["delta/vip_customers/outbox"]["removed"] == 1


def test_the_nightly_full_recompute_repairs_what_the_increments_missed_and_sends_it(sample: Sample):
    sample.run("full")
    vip = sample.sql("SELECT min(_key) FROM composable.audience__vip_customers")[0][0]
    # A change the journal cannot see: an in-place edit of a table without updated_at.
    sample.sql("UPDATE orders SET amount = 1 WHERE customer_id = ?", [int(vip)])
    assert sample.run("incremental")["delta/vip_customers/outbox"]["total"] == 0
    nightly = sample.run("full")
    # One customer's profile row was wrong; the audience followed the repaired key (its own path was right).
    assert nightly["model/customer_profiles"]["repaired_rows"] == 1
    assert nightly["audience/vip_customers"]["repaired_rows"] == 0
    assert nightly["delta/vip_customers/outbox"]["removed"] == 1


def test_a_cart_leaving_the_48_hour_window_leaves_the_audience_without_any_new_data(sample: Sample):
    sample.run("full")
    customer = sample.sql("SELECT max(customer_id) FROM customers")[0][0]
    sample.sql("DELETE FROM web_events WHERE customer_id = ?", [customer])
    sample.sql("DELETE FROM orders WHERE customer_id = ?", [customer])
    sample.run("full")  # the deletes above are the test's set-up, not what it watches
    # A cart that turns 48 hours old a few seconds from now.
    sample.sql(
        "INSERT INTO web_events SELECT 'test-cart', ?, 'add_to_cart', 'shoes', "
        "CAST(now() AS TIMESTAMP) - INTERVAL 48 HOUR + INTERVAL 3 SECOND",
        [customer],
    )
    sample.run("full")
    assert sample.sql("SELECT count(*) FROM composable.audience__cart_abandoners WHERE _key = ?", [str(customer)]) == [(1,)]
    time.sleep(4)
    runs = sample.run("incremental")
    assert runs["model/cart_abandoners"]["mode"] == "incremental"
    assert runs["delta/cart_abandoners/outbox"]["removed"] == 1


def test_an_edited_model_is_recomputed_in_full_once(sample: Sample):
    sample.run("full")
    path = sample.settings.project_dir / "models" / "customer_profiles.sql"
    path.write_text(path.read_text().replace("coalesce(t.order_count, 0) AS order_count", "coalesce(t.order_count, 0) + 1 AS order_count"))
    sample.job = build_definitions(load_project(sample.settings.project_dir), sample.settings).resolve_job_def("minute_level")
    first = sample.run("incremental")
    assert first["model/customer_profiles"]["mode"] == "full (the model's SQL changed)"
    assert sample.sql("SELECT count(*) FROM customer_profiles WHERE order_count = 0") == [(0,)]
    assert sample.run("incremental")["model/customer_profiles"]["mode"] == "incremental"


def test_a_rolling_window_edge_is_a_range_the_engine_can_prune():
    from composable_assets.project.incremental import flip_condition, now_literals

    before = now_literals(dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC), dt.date(2026, 12, 6))
    after = now_literals(dt.datetime(2026, 12, 6, 10, 5, tzinfo=dt.UTC), dt.date(2026, 12, 6))
    band = flip_condition(("occurred_at >= CURRENT_TIMESTAMP - INTERVAL '48' HOUR",), before, after)
    con = duckdb.connect()
    con.execute("CREATE TABLE e AS SELECT TIMESTAMP '2026-12-04 10:00:00' + to_minutes(i) AS occurred_at FROM range(-10, 10) t(i)")
    # Carts from 10:00 to 10:05 two days ago crossed the edge between the two runs (both ends counted).
    crossed = [r[0].minute for r in con.execute(f"SELECT occurred_at FROM e WHERE {band} ORDER BY 1").fetchall()]
    assert crossed == [0, 1, 2, 3, 4, 5]
    assert "least(" in band.lower() and "timestamptz" not in band.lower()


def test_only_the_parts_of_a_condition_that_read_the_clock_are_compared_and_not_within_one_day():
    """The VIP condition scanned all 10M profiles each run to find keys whose answer flipped, though `current_date`
    had not moved; now an unchanged clock costs nothing and a new day costs a band on the one dated column."""
    from composable_assets.project.incremental import flip_condition, now_literals

    vip = "lifetime_value > 500 AND last_order_at >= current_date - INTERVAL 90 DAY"
    at = [now_literals(dt.datetime(2026, 12, d, h, 0, tzinfo=dt.UTC), dt.date(2026, 12, d)) for d, h in
          ((6, 10), (6, 11), (7, 0))]
    assert flip_condition((vip,), at[0], at[1]) == "false"
    next_day = flip_condition((vip,), at[1], at[2])
    assert "lifetime_value" not in next_day and "least(" in next_day.lower()
    con = duckdb.connect()
    con.execute("CREATE TABLE p AS SELECT i AS lifetime_value, DATE '2026-09-07' + to_days(i % 3 - 1) AS last_order_at "
                "FROM range(490, 510) t(i)")
    # Every row whose answer changed between the two days is selected (none is missed), whatever its value.
    flipped = (f"({vip.replace('current_date', 'DATE ' + repr('2026-12-06'))}) "
               f"IS DISTINCT FROM ({vip.replace('current_date', 'DATE ' + repr('2026-12-07'))})")
    assert con.execute(f"SELECT count(*) FROM p WHERE {flipped}").fetchone()[0] > 0
    assert con.execute(f"SELECT count(*) FROM p WHERE {flipped} AND NOT ({next_day})").fetchone()[0] == 0
    # Not reading the clock at all: never compared.
    assert flip_condition(("lifetime_value > 500",), at[0], at[2]) == "false"


def test_run_after_run_stays_incremental_once_the_journal_was_read_and_emptied(sample: Sample):
    sample.run("full")
    customers = [r[0] for r in sample.sql("SELECT customer_id FROM customers ORDER BY customer_id LIMIT 3")]
    for customer in customers:
        sample.land_order(customer, "5.00")
        runs = sample.run("incremental")
        assert runs["model/customer_profiles"]["mode"] == "incremental", runs["model/customer_profiles"]["mode"]
        assert runs["model/customer_profiles"]["affected_keys"] == 1
    assert sample.sql("SELECT count(*) FROM composable.key_changes WHERE key IS NOT NULL") == [(0,)]


def test_a_landed_deletion_is_applied_by_key_without_a_full_recompute(sample: Sample):
    sample.run("full")
    customer = sample.sql("SELECT min(customer_id) FROM customers")[0][0]
    folder = sample.folders["customers"]
    name = folder.new_file_name(".parquet")
    temp = folder.temp_path(name)
    pq.write_table(pa.Table.from_pylist([{"customer_id": customer, "_deleted": True}]), temp)
    folder.publish(temp, name)
    runs = sample.run("incremental")
    assert runs["model/customer_profiles"]["mode"] == "incremental"
    assert sample.sql("SELECT count(*) FROM customer_profiles WHERE customer_id = ?", [customer]) == [(0,)]


def test_a_plain_full_run_recomputes_without_comparing_and_the_next_runs_stay_incremental(sample: Sample):
    sample.run("full")
    plain = sample.run("weekly")  # any other tag, or none: a schedule's or the UI's run
    assert plain["model/customer_profiles"]["mode"] == "full" and "repaired_rows" not in plain["model/customer_profiles"]
    assert plain["audience/vip_customers"]["mode"] == "full"
    sample.land_order(sample.sql("SELECT min(customer_id) FROM customers")[0][0])
    # The plain run rebuilt the audience and compared every delta, so their cursors moved past its "everything".
    first = sample.run("incremental")
    assert first["model/customer_profiles"]["mode"] == "incremental"
    assert first["audience/vip_customers"]["mode"] == "incremental"
    assert first["delta/vip_customers/outbox"]["mode"] == "incremental"

"""A trimmed copy of the sample project, driven one batch of source changes at a time, for the property test of
incremental minute-level runs (test_incremental_property.py).

The project: the sample's three models (customer_profiles, order_events, cart_abandoners), copied verbatim, the
minute-level audiences vip_customers and cart_abandoners as mirror syncs to outboxes (one of them behind a consent
purpose), and the purchases stream to an outbox, so every sample model is in the minute-level job and nothing
needs an HTTP fake. Source tables come from the sample's generator; consents and deletion requests are declared as
in the sample, so the audiences' member conditions and the consent condition of a delta are exercised too.

A `Workbench` seeds the warehouse, applies `Change`s (files landed in the landing folders on DuckDB; direct
writes to the warehouse on either engine), runs the minute-level job with a `composable/refresh` tag and reads
back the `State`: every model table, audience snapshot and ledger, each as a multiset of rows.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from composable_assets.automation.sensors import JOB_NAME
from composable_assets.definitions import load_definitions
from composable_assets.landing import LandingFolder, landing_folders
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.warehouse import engine_from_url
from composable_assets.warehouse.base import insert_rows
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator

REFRESH_TAG = "composable/refresh"
SCHEMA = "composable"
MODELS = ("customer_profiles", "order_events", "cart_abandoners")
# (audience, destination) of every mirror sync.
PAIRS = (("vip_customers", "outbox"), ("vip_customers", "email_outbox"), ("cart_abandoners", "outbox"))
AUDIENCES = tuple(dict.fromkeys(a for a, _ in PAIRS))
CATEGORIES = ("shoes", "home", "beauty")  # few, so favourite categories tie and flip
FIRST_NAMES = ("Anna", "Ben", "Chloe")
COUNTRIES = ("DE", "FR", "NL")
# Long enough ago for any `updated_at` cursor to have passed it: a row written now but stamped as old.
STALE = dt.timedelta(days=400)
# cart_abandoners' rolling window.
CART_WINDOW = dt.timedelta(hours=48)

PROJECT = """\
name: incremental_property
start_date: "{start}"
owners: [team:data-platform]
pii: {{country: location}}
consent: {{table: consents, key: customer_id, updated_at: updated_at}}
deletion_requests: {{table: deletion_requests, key: customer_id, requested_at: requested_at, id: request_id}}
"""

LANDING = """\
landing:
  orders: {}
  web_events: {}
  customers:
    key: customer_id
"""

DESTINATIONS = """\
outbox: {type: outbox}
email_outbox: {type: outbox, consent: email_marketing}
"""

VIP = """\
description: High-value customers (lifetime value over 500) who ordered in the last 90 days.
owners: [crm-team@example.com]
model: customer_profiles
primary_key: customer_id
where: lifetime_value > 500 AND last_order_at >= current_date - INTERVAL 90 DAY
cadence: minutes
syncs:
  - destination: outbox
    mode: mirror
    identifier: {external_id: customer_id}
    fields: {email: email, first_name: first_name, ltv: lifetime_value, favourite_category: favourite_category}
  - destination: email_outbox
    mode: mirror
    identifier: {email: email}
    fields: {first_name: first_name, country: country, last_order_at: last_order_at}
"""

CART = """\
description: Customers who added to cart in the last 48 hours without ordering.
owners: [crm-team@example.com]
model: cart_abandoners
primary_key: customer_id
cadence: minutes
syncs:
  - destination: outbox
    mode: mirror
    identifier: {external_id: customer_id}
    fields: {email: email, first_name: first_name, cart_category: cart_category, last_cart_at: last_cart_at}
"""

STREAM = """\
description: Completed orders as purchase events.
owners: [crm-team@example.com]
table: order_events
event_id: order_id
cursor: ordered_at
where: status = 'completed'
cadence: minutes
lookback: 1d
start: now
syncs:
  - destination: outbox
    identifier: {external_id: customer_id}
    event: purchase
    properties: {amount: amount, category: category}
"""

ORDER_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("amount", pa.decimal128(12, 2)),
        ("currency", pa.string()),
        ("status", pa.string()),
        ("category", pa.string()),
        ("ordered_at", pa.timestamp("us")),
    ]
)
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("customer_id", pa.int64()),
        ("event_type", pa.string()),
        ("product_category", pa.string()),
        ("occurred_at", pa.timestamp("us")),
    ]
)
CUSTOMER_COLUMNS = {
    "customer_id": pa.int64(),
    "email": pa.string(),
    "phone": pa.string(),
    "first_name": pa.string(),
    "last_name": pa.string(),
    "country": pa.string(),
    "created_at": pa.timestamp("us"),
    "updated_at": pa.timestamp("us"),
    "_deleted": pa.bool_(),
}


def utc_now() -> dt.datetime:
    """Naive UTC, as the warehouse's timestamp columns hold it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------------------------
# Changes. Each is one small, printable fact, so hypothesis shows a failing sequence as something to replay by hand.
# Times are given as an age before the moment the change is applied.


@dataclass(frozen=True)
class Order:
    customer: int
    amount: int
    status: str = "completed"
    category: str = "shoes"
    age: dt.timedelta = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class CartEvent:
    customer: int
    event_type: str = "add_to_cart"
    category: str | None = "shoes"
    age: dt.timedelta = dt.timedelta(minutes=2)


class Change:
    """One change to the sources; `landed` ones go through a landing folder (DuckDB only)."""

    landed: ClassVar[bool] = False

    def apply(self, bench: "Workbench", conn: Any, now: dt.datetime) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class LandOrders(Change):
    orders: tuple[Order, ...]
    landed: ClassVar[bool] = True

    def apply(self, bench, conn, now):
        rows = [
            {
                "order_id": bench.next_order_id(),
                "customer_id": o.customer,
                "amount": Decimal(o.amount).quantize(Decimal("0.01")),
                "currency": "EUR",
                "status": o.status,
                "category": o.category,
                "ordered_at": now - o.age,
            }
            for o in self.orders
        ]
        bench.land("orders", pa.Table.from_pylist(rows, schema=ORDER_SCHEMA), now)


@dataclass(frozen=True)
class LandCartEvents(Change):
    events: tuple[CartEvent, ...]
    landed: ClassVar[bool] = True

    def apply(self, bench, conn, now):
        rows = [
            {
                "event_id": bench.next_event_id(),
                "customer_id": e.customer,
                "event_type": e.event_type,
                "product_category": e.category,
                "occurred_at": now - e.age,
            }
            for e in self.events
        ]
        bench.land("web_events", pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), now)
        bench.crossings += [now - e.age + CART_WINDOW for e in self.events]


@dataclass(frozen=True)
class LandProfileEdit(Change):
    """A row in the customers upsert folder: one column edited, a whole new customer (column "new"), or the
    customer deleted (column "deleted": `_deleted` true, as a change-data-capture feed marks a deletion)."""

    customer: int
    column: str  # first_name | country | email | new | deleted
    value: int = 0
    stale: bool = False  # the file's updated_at is old: the loader's journal must still see the key
    landed: ClassVar[bool] = True

    def apply(self, bench, conn, now):
        stamp = now - STALE if self.stale else now
        if self.column == "deleted":
            row = {"customer_id": self.customer, "_deleted": True}
        elif self.column == "new":
            row = new_customer(self.customer, self.value, stamp)
        else:
            row = {"customer_id": self.customer, self.column: column_value(self.column, self.value, self.customer),
                   "updated_at": stamp}
        schema = pa.schema([(name, CUSTOMER_COLUMNS[name]) for name in row])
        bench.land("customers", pa.Table.from_pylist([row], schema=schema), now)


@dataclass(frozen=True)
class UpdateCustomer(Change):
    """UPDATE customers SET <column> = ..., updated_at = now."""

    customer: int
    column: str  # first_name | country | email
    value: int = 0

    def apply(self, bench, conn, now):
        conn.execute(
            f"UPDATE customers SET {self.column} = ?, updated_at = ? WHERE customer_id = ?",
            [column_value(self.column, self.value, self.customer), now, self.customer],
        )


@dataclass(frozen=True)
class InsertCustomer(Change):
    """INSERT a customer who is not there yet, stamped now or long ago (`stale`)."""

    customer: int
    stale: bool = True

    def apply(self, bench, conn, now):
        (present,) = conn.fetch_one("SELECT count(*) FROM customers WHERE customer_id = ?", [self.customer])
        if not present:
            row = new_customer(self.customer, 0, now - STALE if self.stale else now)
            columns = bench.columns("customers")
            insert_rows(conn, "customers", columns, [[row.get(c) for c in columns]])


@dataclass(frozen=True)
class DeleteCustomer(Change):
    customer: int

    def apply(self, bench, conn, now):
        conn.execute("DELETE FROM customers WHERE customer_id = ?", [self.customer])


@dataclass(frozen=True)
class InsertOrder(Change):
    """INSERT INTO orders directly (not landed); where orders carry updated_at, stamped now or long ago."""

    order: Order
    stale: bool = False

    def apply(self, bench, conn, now):
        o = self.order
        row = {
            "order_id": bench.next_order_id(), "customer_id": o.customer, "amount": Decimal(o.amount),
            "currency": "EUR", "status": o.status, "category": o.category, "ordered_at": now - o.age,
            "updated_at": now - STALE if self.stale else now,
        }
        columns = bench.columns("orders")
        insert_rows(conn, "orders", columns, [[row[c] for c in columns]])


@dataclass(frozen=True)
class DeleteOrders(Change):
    """DELETE a customer's newest order, or all of them."""

    customer: int
    all: bool = False

    def apply(self, bench, conn, now):
        if self.all:
            conn.execute("DELETE FROM orders WHERE customer_id = ?", [self.customer])
        else:
            conn.execute(
                "DELETE FROM orders WHERE order_id = (SELECT max(order_id) FROM orders WHERE customer_id = ?)",
                [self.customer],
            )


@dataclass(frozen=True)
class SetOrderStatus(Change):
    """UPDATE a customer's newest order's status, updated_at = now.

    Drawn only where orders carry `updated_at` (Workbench.stamped): elsewhere no change capture could see it.
    """

    customer: int
    status: str = "refunded"

    def apply(self, bench, conn, now):
        conn.execute(
            "UPDATE orders SET status = ?, updated_at = ? "
            "WHERE order_id = (SELECT max(order_id) FROM orders WHERE customer_id = ?)",
            [self.status, now, self.customer],
        )


@dataclass(frozen=True)
class InsertCartEvent(Change):
    """INSERT INTO web_events directly; where web_events carry updated_at, stamped now."""

    event: CartEvent

    def apply(self, bench, conn, now):
        e = self.event
        row = {
            "event_id": bench.next_event_id(), "customer_id": e.customer, "event_type": e.event_type,
            "product_category": e.category, "occurred_at": now - e.age, "updated_at": now,
        }
        columns = bench.columns("web_events")
        insert_rows(conn, "web_events", columns, [[row[c] for c in columns]])
        bench.crossings.append(now - e.age + CART_WINDOW)


@dataclass(frozen=True)
class FlipConsent(Change):
    """The customer's email_marketing consent flips, updated_at = now."""

    customer: int

    def apply(self, bench, conn, now):
        conn.execute(
            "UPDATE consents SET granted = NOT granted, updated_at = ? "
            "WHERE customer_id = ? AND purpose = 'email_marketing'",
            [now, self.customer],
        )


@dataclass(frozen=True)
class RequestDeletion(Change):
    """A right-to-be-forgotten request for the customer: the audiences must drop them."""

    customer: int

    def apply(self, bench, conn, now):
        conn.execute(
            "INSERT INTO deletion_requests (request_id, customer_id, email, requested_at) "
            "SELECT ?, ?, email, ? FROM customers WHERE customer_id = ?",
            [f"dsr_prop_{bench.next_event_id()}", self.customer, now, self.customer],
        )


def column_value(column: str, value: int, customer: int) -> str:
    if column == "first_name":
        return FIRST_NAMES[value % len(FIRST_NAMES)]
    if column == "country":
        return COUNTRIES[value % len(COUNTRIES)]
    return f"edited{value}.{customer}@example.org"


def new_customer(customer: int, value: int, stamp: dt.datetime) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "email": f"new{value}.{customer}@example.com",
        "phone": None,
        "first_name": FIRST_NAMES[value % len(FIRST_NAMES)],
        "last_name": "Newman",
        "country": COUNTRIES[value % len(COUNTRIES)],
        "created_at": stamp,
        "updated_at": stamp,
    }


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class State:
    """What the platform holds after a run, each table as a multiset of rows."""

    models: dict[str, Counter]
    snapshots: dict[str, Counter]
    # (audience, destination) -> (_key, _hash, _fields); when and by which run a row was synced legitimately differs.
    ledgers: dict[tuple[str, str], Counter]

    def differences(self, other: "State", mine: str = "incremental", theirs: str = "full") -> list[str]:
        """Human-readable differences, table by table: rows only one side has (at most five each)."""
        found = []
        for kind, a, b in (("model", self.models, other.models), ("snapshot", self.snapshots, other.snapshots),
                           ("ledger", self.ledgers, other.ledgers)):
            for name in sorted(set(a) | set(b), key=str):
                left, right = a.get(name, Counter()), b.get(name, Counter())
                if left == right:
                    continue
                only_left = sorted((left - right).elements(), key=repr)
                only_right = sorted((right - left).elements(), key=repr)
                found.append(
                    f"{kind} {name}: {len(only_left)} row(s) only after {mine}, {len(only_right)} only after {theirs}\n"
                    + "".join(f"    {mine}: {r}\n" for r in only_left[:5])
                    + "".join(f"    {theirs}: {r}\n" for r in only_right[:5])
                )
        return found


@dataclass
class Run:
    """One run of the minute-level job."""

    refresh: str
    outcome: RunOutcome
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, asset: str, name: str) -> Any:
        value = self.metadata.get(asset, {}).get(name)
        return getattr(value, "value", value)


class Workbench:
    """The trimmed sample on one warehouse, reset for each example.

    `landing`: changes may arrive as files in landing folders (DuckDB only). `stamped`: orders and web_events get
    an `updated_at` column (on PostgreSQL, where nothing lands, that is how a new order is seen).
    """

    def __init__(self, root: Path, url: str | None = None, landing: bool = True, stamped: bool = False):
        self.root = root
        self.url = url
        self.landing = landing
        self.stamped = stamped
        self.examples = 0
        self._columns: dict[str, dict[str, str]] = {}

    # -- setting up ------------------------------------------------------------------------------------------

    def reset(self, customers: int, seed: int) -> None:
        """A fresh warehouse, data folder, project and Dagster instance, seeded with `customers` customers."""
        self.examples += 1
        work = self.root / f"example{self.examples}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        self.now0 = utc_now()
        url = self.url or f"duckdb:///{work / 'warehouse.duckdb'}"
        self.engine = engine_from_url(url)
        if self.url:
            self.drop_everything()  # one database serves every example
        project = work / "project"
        self._write_project(project)
        self.settings = Settings(project_dir=project, warehouse_url=url, data_dir=work / "data")
        self._seed(customers, seed)
        self.defs = load_definitions(self.settings)
        loaded = load_project(project)
        self.folders: dict[str, LandingFolder] = landing_folders(loaded.settings.landing, self.settings.data_dir)
        self.instance = dg.DagsterInstance.ephemeral()
        job = self.defs.resolve_job_def(JOB_NAME)
        self.selection = dg.AssetSelection.assets(*job.asset_layer.executable_asset_keys)
        with self.engine.connect() as conn:
            self._order_id = conn.fetch_one("SELECT coalesce(max(order_id), 0) FROM orders")[0]
        self._event_id = 0
        # When each drawn cart event leaves the 48-hour window, and when the last run started (UTC, naive).
        self.crossings: list[dt.datetime] = []
        self.last_run = utc_now()

    def _write_project(self, project: Path) -> None:
        (project / "models").mkdir(parents=True)
        (project / "audiences").mkdir()
        (project / "streams").mkdir()
        for model in MODELS:
            shutil.copy(SAMPLE_PROJECT_DIR / "models" / f"{model}.sql", project / "models" / f"{model}.sql")
        start = (self.now0.date() - dt.timedelta(days=30)).isoformat()
        (project / "project.yaml").write_text(PROJECT.format(start=start) + (LANDING if self.landing else ""))
        (project / "destinations.yaml").write_text(DESTINATIONS)
        (project / "audiences" / "vip_customers.yaml").write_text(VIP)
        (project / "audiences" / "cart_abandoners.yaml").write_text(CART)
        (project / "streams" / "purchases.yaml").write_text(STREAM)

    def _seed(self, customers: int, seed: int) -> None:
        """The sample's generator, in a scratch DuckDB; copied into the warehouse table by table."""
        with duckdb.connect() as scratch:
            generator.seed(scratch, customers=customers, seed=seed, as_of=self.now0.date())
            # No seeded event within five minutes of the 48-hour boundary: a run a few seconds later must not
            # see one cross it (see the test's docstring on time).
            boundary = self.now0 - dt.timedelta(hours=48)
            scratch.execute(
                "UPDATE web_events SET occurred_at = occurred_at - INTERVAL 10 MINUTE "
                "WHERE occurred_at BETWEEN ? AND ?",
                [boundary - dt.timedelta(minutes=5), boundary + dt.timedelta(minutes=5)],
            )
            if self.stamped:
                scratch.execute("ALTER TABLE orders ADD COLUMN updated_at TIMESTAMP")
                scratch.execute("UPDATE orders SET updated_at = ordered_at")
                scratch.execute("ALTER TABLE web_events ADD COLUMN updated_at TIMESTAMP")
                scratch.execute("UPDATE web_events SET updated_at = occurred_at")
            tables = {t: scratch.execute(f"DESCRIBE {t}").fetchall() for t in generator.SOURCE_TABLES}
            rows = {t: scratch.execute(f"SELECT * FROM {t}").fetchall() for t in generator.SOURCE_TABLES}
        self._columns = {t: {name: type_ for name, type_, *_ in described} for t, described in tables.items()}
        with self.engine.connect() as conn:
            for t, columns in self._columns.items():
                conn.execute(f"DROP TABLE IF EXISTS {t}")
                conn.execute(f"CREATE TABLE {t} ({', '.join(f'{c} {type_}' for c, type_ in columns.items())})")
                insert_rows(conn, t, columns, rows[t])

    def drop_everything(self) -> None:
        """The warehouse back to empty: what the platform and the last example left."""
        with self.engine.connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            for t in (*generator.SOURCE_TABLES, *MODELS):
                conn.execute(f"DROP TABLE IF EXISTS {t} CASCADE")

    def columns(self, table: str) -> dict[str, str]:
        return self._columns[table]

    def next_order_id(self) -> int:
        self._order_id += 1
        return self._order_id

    def next_event_id(self) -> str:
        self._event_id += 1
        return f"prop_{self.examples}_{self._event_id}"

    # -- changes and runs ------------------------------------------------------------------------------------

    def land(self, table: str, rows: pa.Table, now: dt.datetime) -> None:
        folder = self.folders[table]
        name = folder.new_file_name(".parquet", now=now.replace(tzinfo=dt.UTC))
        temp = folder.temp_path(name)
        pq.write_table(rows, temp)
        folder.publish(temp, name)

    def apply(self, changes: list[Change]) -> None:
        """One batch of changes, in order; each at the wall clock's now (so `updated_at` always moves forward)."""
        with self.engine.connect() as conn:
            for change in changes:
                change.apply(self, conn, utc_now())

    def settle(self) -> bool:
        """Whether a drawn cart left the window after the last run started; if so, waits until it surely has."""
        soon = utc_now() + dt.timedelta(minutes=1)  # the others cross an hour or more from now
        pending = [c for c in self.crossings if self.last_run - dt.timedelta(seconds=1) <= c <= soon]
        if not pending:
            return False
        wait = (max(pending) - utc_now()).total_seconds() + 1
        if wait > 0:
            time.sleep(wait)
        return True

    def run(self, refresh: str) -> Run:
        self.last_run = utc_now()
        outcome = run_selection(
            self.defs, self.selection, utc_now().date().isoformat(), self.instance, log_level=None,
            tags={REFRESH_TAG: refresh},
        )
        assert outcome.success, f"the {refresh} run failed: {outcome.errors}"
        return Run(refresh, outcome, outcome.materialized)

    # -- reading back ----------------------------------------------------------------------------------------

    def rows(self, sql: str) -> Counter:
        with self.engine.connect() as conn:
            return Counter(tuple(normal(v) for v in row) for row in conn.fetch_all(sql))

    def state(self) -> State:
        return State(
            models={m: self.rows(f"SELECT * FROM {m}") for m in MODELS},
            snapshots={a: self.rows(f'SELECT * FROM {SCHEMA}."audience__{a}"') for a in AUDIENCES},
            ledgers={
                (a, d): self.rows(f'SELECT _key, _hash, _fields FROM {SCHEMA}."ledger__{a}__{d}"') for a, d in PAIRS
            },
        )

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        with self.engine.connect() as conn:
            conn.execute(sql, params)


def normal(value: Any) -> Any:
    """Values as comparable across runs: JSON text parsed (key order and spacing are not the data)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value

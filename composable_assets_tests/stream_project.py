"""A project folder with an `orders` table on a temporary DuckDB file, for the event stream tests."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pytest

from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.project import load_project
from composable_assets.runner import DeliveryOutcome, RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.warehouse import engine_from_url
from composable_assets.warehouse.base import insert_rows
from composable_assets_tests.fakes import BrazeFake, IterableFake

KEY = "stream-test-key-5b1c"


@pytest.fixture
def fakes(monkeypatch) -> Iterator[dict[str, BrazeFake | IterableFake]]:
    """The Braze and Iterable stand-ins, started, with the sample's endpoint and key variables pointing at them."""
    braze = BrazeFake(KEY).start()
    iterable = IterableFake(KEY, rate_limits=None).start()
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    monkeypatch.setenv("ITERABLE_BASE_URL", iterable.url)
    monkeypatch.setenv("ITERABLE_API_KEY", KEY)
    yield {"braze": braze, "iterable": iterable}
    braze.stop()
    iterable.stop()
# An order: (order_id, customer_id, email, sku, amount, currency, status, ordered_at).
Order = tuple[int, int, str | None, str, float, str, str, dt.datetime]

MODEL = """\
-- Orders as they land; read by the stream (and a model, so `orders` is a known source table).
SELECT order_id, customer_id, email, sku, amount, currency, status, ordered_at FROM orders
"""

STREAM = """\
description: Completed orders.
owners: [crm@example.com]
table: orders
event_id: order_id
cursor: ordered_at
where: status = 'completed'
lookback: {lookback}
start: {start}
syncs:
  - destination: braze
    identifier: {{external_id: customer_id}}
    event: purchase
    properties: {{order_id: order_id}}
    options:
      purchase: {{product_id: sku, price: amount, currency: currency}}
  - destination: iterable
    identifier: {{email: email}}
    event: purchase
    properties: {{order_id: order_id, amount: amount, currency: currency}}
  - destination: box
    identifier: {{external_id: customer_id}}
    event: purchase
    properties: {{amount: amount}}
"""

DESTINATIONS = """\
braze: {{type: braze, rest_endpoint: {{env: BRAZE_REST_ENDPOINT}}, api_key: {{env: BRAZE_API_KEY}}, event_batch_size: {batch}, concurrency: {concurrency}, max_tries: 3, backoff_base_seconds: 0.01}}
iterable: {{type: iterable, base_url: {{env: ITERABLE_BASE_URL}}, api_key: {{env: ITERABLE_API_KEY}}, event_batch_size: {batch}, concurrency: {concurrency}, max_tries: 3, backoff_base_seconds: 0.01, track_bulk_limit: {{requests: 1000, window_seconds: 1}}}}
box: {{type: outbox, batch_size: {batch}}}
"""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


# The `orders` source table the stream's model reads.
ORDERS_COLUMNS = {
    "order_id": "BIGINT", "customer_id": "BIGINT", "email": "VARCHAR", "sku": "VARCHAR",
    "amount": "DECIMAL(12, 2)", "currency": "VARCHAR", "status": "VARCHAR", "ordered_at": "TIMESTAMP",
}


class StreamProject:
    """A project folder (stream `orders` to braze, iterable and an outbox) on a warehouse (a DuckDB file by default)."""

    def __init__(
        self, root: Path, url: str | None = None, *, lookback: str = "1h", start: str = "now", batch: int = 5,
        concurrency: int = 2,
    ):
        self.root = root
        self.settings = Settings(
            project_dir=root / "project", warehouse_url=url or f"duckdb:///{root / 'warehouse.duckdb'}",
            data_dir=root / "data",
        )
        self.engine = engine_from_url(self.settings.warehouse_url)
        self.instance = dg.DagsterInstance.ephemeral()
        self.write("project.yaml", 'name: events\nstart_date: "2026-01-01"\n')
        self.write("models/order_facts.sql", MODEL)
        self.write("streams/orders.yaml", STREAM.format(lookback=lookback, start=start))
        self.write("destinations.yaml", DESTINATIONS.format(batch=batch, concurrency=concurrency))
        with self.engine.connect() as conn:
            conn.execute(f"CREATE TABLE orders ({', '.join(f'{c} {t}' for c, t in ORDERS_COLUMNS.items())})")

    def write(self, path: str, text: str) -> None:
        target = self.settings.project_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    def add_orders(self, orders: list[Order]) -> None:
        with self.engine.connect() as conn:
            insert_rows(conn, "orders", ORDERS_COLUMNS, orders)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def statuses(self, destination: str) -> dict[str, str]:
        """event id -> status in the pair's sent log."""
        return dict(self.query(f'SELECT event_id, status FROM composable."stream_sent__orders__{destination}"'))

    def high_water(self, destination: str) -> dt.datetime:
        [(mark,)] = self.query(
            "SELECT high_water FROM composable.stream_cursors WHERE stream = 'orders' AND destination = ?", [destination]
        )
        return mark

    def run(self, destination: str | None = None, date: str | None = None) -> RunOutcome:
        defs = load_definitions(self.settings)
        project = load_project(self.settings.project_dir)
        date = date or dt.datetime.now(dt.UTC).date().isoformat()
        return run_selection(defs, stream_selection(project, "orders", destination), date, self.instance)

    def outbox_ids(self) -> list[str]:
        """Event ids in the outbox, in the order the runs wrote them."""
        folder = self.settings.data_dir / "outbox" / "box" / "streams" / "orders"
        files = sorted(folder.glob("*/*.jsonl"), key=lambda f: f.stat().st_mtime_ns)  # one file per run
        return [json.loads(line)["id"] for f in files for line in f.read_text().splitlines()]


def outcome_of(outcome: RunOutcome, destination: str) -> DeliveryOutcome:
    [found] = [s for s in outcome.streams if s.destination == destination]
    return found


def order(order_id: int, at: dt.datetime, *, status: str = "completed", email: str | None = "", currency: str = "EUR") -> Order:
    """A completed order of customer order_id % 7 (email derived from it unless given)."""
    customer = order_id % 7 + 1
    email = f"c{customer}@example.com" if email == "" else email
    return (order_id, customer, email, f"sku-{order_id % 3}", 10.5 + order_id, currency, status, at)


def ids(*order_ids: int) -> set[str]:
    """Event ids of the stream `orders` for these order ids."""
    return {f"orders:{i}" for i in order_ids}

"""Live traffic for the sample: new orders, cart events and profile edits land as files every few seconds.

The simulator writes Parquet files into the sample's landing folders and never opens the warehouse while it
runs (only once at start, to learn the highest ids), so it never holds DuckDB's one-writer lock against a sync.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from composable_assets.landing import LandingFolder
from composable_assets.warehouse import Warehouse
from .generator import CATEGORIES, COUNTRIES, FIRST_NAMES

# Which tables the simulator writes; the sample's project.yaml declares a landing folder for each.
TABLES = ("orders", "web_events", "customers")

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
# A profile edit carries only what changed plus the key and updated_at: the loader upserts those columns.
PROFILE_SCHEMA = pa.schema(
    [("customer_id", pa.int64()), ("first_name", pa.string()), ("country", pa.string()), ("updated_at", pa.timestamp("us"))]
)


@dataclass
class TickCounts:
    orders: int = 0
    cart_events: int = 0
    profile_edits: int = 0


class Simulator:
    """Writes one small file per table and tick; `orders_per_tick` new orders, a share of them big baskets."""

    def __init__(
        self,
        folders: Mapping[str, LandingFolder],
        warehouse: Warehouse,
        seed: int | None = None,
        orders_per_tick: int = 3,
        big_basket_share: float = 0.3,
    ):
        missing = [t for t in TABLES if t not in folders]
        if missing:
            raise ValueError(f"the project declares no landing folder for {', '.join(missing)} (project.yaml `landing:`)")
        self.folders = folders
        self.random = random.Random(seed)
        self.orders_per_tick = orders_per_tick
        self.big_basket_share = big_basket_share
        self.next_order_id, self.max_customer_id = self._highest_ids(warehouse)

    def _highest_ids(self, warehouse: Warehouse) -> tuple[int, int]:
        """The next order id and the highest customer id, counting files that landed but are not loaded yet."""
        with warehouse.connect() as conn:
            (orders,) = conn.fetch_one("SELECT coalesce(max(order_id), 0) FROM orders")
            (customers,) = conn.fetch_one("SELECT coalesce(max(customer_id), 0) FROM customers")
        pending = [str(p) for p in self.folders["orders"].pending() if p.suffix == ".parquet"]
        if pending:
            with duckdb.connect() as scratch:  # in memory: reading the files needs no warehouse lock
                (landed,) = scratch.execute("SELECT coalesce(max(order_id), 0) FROM read_parquet(?)", [pending]).fetchone()
            orders = max(orders, landed)
        if customers == 0:
            raise ValueError("the warehouse has no customers; run `composable demo` first to seed the sample")
        return orders + 1, customers

    def tick(self, now: dt.datetime | None = None) -> TickCounts:
        """Land one file of new orders, one of cart events and one of profile edits."""
        now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
        counts = TickCounts()
        orders = []
        for _ in range(self.orders_per_tick):
            big = self.random.random() < self.big_basket_share
            amount = self.random.uniform(200, 600) if big else self.random.uniform(5, 120)
            orders.append(
                {
                    "order_id": self.next_order_id,
                    "customer_id": self.random.randint(1, self.max_customer_id),
                    "amount": Decimal(f"{amount:.2f}"),
                    "currency": "EUR",
                    "status": "completed",
                    "category": self.random.choice(CATEGORIES),
                    "ordered_at": now,
                }
            )
            self.next_order_id += 1
        counts.orders = self._land("orders", orders, ORDER_SCHEMA, now)
        events = [
            {
                "event_id": f"sim_{now:%Y%m%d%H%M%S%f}_{i}",
                "customer_id": self.random.randint(1, self.max_customer_id),
                "event_type": "add_to_cart",
                "product_category": self.random.choice(CATEGORIES),
                "occurred_at": now,
            }
            for i in range(self.random.randint(1, 3))
        ]
        counts.cart_events = self._land("web_events", events, EVENT_SCHEMA, now)
        edits = [
            {
                "customer_id": self.random.randint(1, self.max_customer_id),
                "first_name": self.random.choice(FIRST_NAMES),
                "country": self.random.choice(COUNTRIES),
                "updated_at": now,
            }
            for _ in range(self.random.randint(1, 2))
        ]
        counts.profile_edits = self._land("customers", edits, PROFILE_SCHEMA, now)
        return counts

    def _land(self, table: str, rows: list[dict], schema: pa.Schema, now: dt.datetime) -> int:
        folder = self.folders[table]
        name = folder.new_file_name(".parquet", now=now.replace(tzinfo=dt.UTC))
        temp = folder.temp_path(name)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), temp)
        folder.publish(temp, name)
        return len(rows)

    def run(self, interval: float, stop: threading.Event, ticks: int | None = None, on_tick=None) -> None:
        """Tick every `interval` seconds until `stop` is set (or `ticks` ticks have landed)."""
        done = 0
        while not stop.is_set() and (ticks is None or done < ticks):
            counts = self.tick()
            done += 1
            if on_tick:
                on_tick(counts)
            stop.wait(interval)

"""Event streams on every warehouse engine: the same test bodies, the real assets, Braze and Iterable fakes over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.destinations import Event
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.streams import StreamDataError, StreamShape, StreamTables
from composable_assets.streams.intents import record_intents
from composable_assets.warehouse import engine_from_url

from .stream_project import DESTINATIONS, MODEL, STREAM, Order, ids, order, outcome_of, utc_now
from .test_streams_kill import COMPOSABLE, PATHS, settle

MINUTE = dt.timedelta(minutes=1)
DESTINATIONS_SENT = ("braze", "iterable", "box")


class EngineStreamProject:
    """The stream project of stream_project.py on any warehouse; `orders` is written through the Warehouse connection."""

    def __init__(self, root: Path, url: str, *, lookback: str = "1h", start: str = "now", batch: int = 2):
        self.settings = Settings(project_dir=root / "project", warehouse_url=url, data_dir=root / "data")
        self.engine = engine_from_url(url)
        self.instance = dg.DagsterInstance.ephemeral()
        for path, text in {
            "project.yaml": 'name: events\nstart_date: "2026-01-01"\n',
            "models/order_facts.sql": MODEL,
            "streams/orders.yaml": STREAM.format(lookback=lookback, start=start),
            "destinations.yaml": DESTINATIONS.format(batch=batch, concurrency=2),
        }.items():
            target = self.settings.project_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        with self.engine.connect() as conn:
            conn.execute(
                "CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, email VARCHAR, sku VARCHAR, "
                "amount DECIMAL(12, 2), currency VARCHAR, status VARCHAR, ordered_at TIMESTAMP)"
            )

    def add_orders(self, orders: list[Order]) -> None:
        with self.engine.connect() as conn:
            rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(orders))
            conn.execute(f"INSERT INTO orders VALUES {rows}", [v for o in orders for v in o])

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def statuses(self, destination: str) -> dict[str, str]:
        return dict(self.query(f'SELECT event_id, status FROM composable."stream_sent__orders__{destination}"'))

    def high_water(self, destination: str) -> dt.datetime:
        [(mark,)] = self.query(
            "SELECT high_water FROM composable.stream_cursors WHERE stream = 'orders' AND destination = ?", [destination]
        )
        return mark

    def run(self, destination: str | None = None) -> RunOutcome:
        defs = load_definitions(self.settings)
        project = load_project(self.settings.project_dir)
        outcome = run_selection(
            defs, stream_selection(project, "orders", destination), dt.datetime.now(dt.UTC).date().isoformat(), self.instance
        )
        assert outcome.success, outcome.errors
        return outcome

    def outbox_ids(self) -> list[str]:
        folder = self.settings.data_dir / "outbox" / "box" / "streams" / "orders"
        files = sorted(folder.glob("*/*.jsonl"), key=lambda f: f.stat().st_mtime_ns)
        return [json.loads(line)["id"] for f in files for line in f.read_text().splitlines()]


def sent(outcome: RunOutcome) -> dict[str, int]:
    return {d: outcome_of(outcome, d).count("sent") for d in DESTINATIONS_SENT}


def test_a_stream_delivers_once_and_resolves_a_killed_runs_intents_on_every_engine(tmp_path, warehouse_url, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    now = utc_now()
    p = EngineStreamProject(tmp_path, warehouse_url)
    p.add_orders(
        [
            order(1, now - 3 * 60 * MINUTE),  # older than the lookback when the stream starts: never sent
            order(2, now - 30 * MINUTE),
            order(3, now - 10 * MINUTE, email=None),  # no email: Iterable cannot take it
            order(4, now - 5 * MINUTE, status="refunded"),  # not a completed order
            order(2, now - 20 * MINUTE),  # order 2 landed twice: sent once, at its first time
        ]
    )

    # First delivery: the completed orders within the lookback, once each, with their properties.
    first = p.run()
    assert sent(first) == {"braze": 2, "iterable": 1, "box": 2}
    assert braze.received_event_ids() == Counter(ids(2, 3))
    assert set(iterable.events) == ids(2)
    assert p.statuses("iterable") == {"orders:2": "sent", "orders:3": "rejected"}
    assert p.outbox_ids() == ["orders:2", "orders:3"]
    assert iterable.events["orders:2"]["dataFields"] == {"order_id": 2, "amount": 12.5, "currency": "EUR"}
    [purchase] = [x for x in braze.purchases if x["properties"]["event_id"] == "orders:2"]
    assert (purchase["external_id"], purchase["product_id"], purchase["price"]) == ("3", "sku-2", 12.5)
    assert purchase["time"] == (now - 30 * MINUTE).isoformat() + ".000Z"
    started = {d: p.high_water(d) for d in DESTINATIONS_SENT}
    assert min(started.values()) >= now  # a stream starting now: the mark is the first run's time

    # Nothing new: nothing is sent, nothing is recorded.
    second = p.run()
    assert sent(second) == {"braze": 0, "iterable": 0, "box": 0}
    assert braze.received_event_ids() == Counter(ids(2, 3)) and len(iterable.event_receipts) == 1
    assert len(p.statuses("box")) == 2

    # New events: only those go out (order 6 is in the future, it waits).
    p.add_orders([order(5, now - MINUTE), order(6, now + 60 * MINUTE), order(7, now - 2 * MINUTE, status="refunded")])
    third = p.run()
    assert sent(third) == {"braze": 1, "iterable": 1, "box": 1}
    assert braze.received_event_ids() == Counter(ids(2, 3, 5))
    assert iterable.event_receipts == Counter(ids(2, 5))
    assert p.outbox_ids() == ["orders:2", "orders:3", "orders:5"]

    # A run killed with orders 8 and 9 in flight left its intents (declared before sending, never cleared).
    p.add_orders([order(8, now - 3 * MINUTE), order(9, now - 2 * MINUTE)])
    with p.engine.connect() as conn:
        for destination in DESTINATIONS_SENT:
            in_flight = [
                Event(seq=i, event_id=f"orders:{i}", identifier=str(i), name="purchase", time=now - (11 - i) * MINUTE, properties={})
                for i in (8, 9)
            ]
            record_intents(conn, StreamTables("composable", "orders", destination), "killed-run", in_flight, now)
    fourth = p.run()
    # Braze does not deduplicate: recorded in doubt, never sent. Iterable and the outbox get them again.
    braze_outcome = outcome_of(fourth, "braze")
    assert (braze_outcome.count("in_doubt"), braze_outcome.count("sent")) == (2, 0)
    assert braze.received_event_ids() == Counter(ids(2, 3, 5))
    assert {e: s for e, s in p.statuses("braze").items() if e in ids(8, 9)} == {"orders:8": "in_doubt", "orders:9": "in_doubt"}
    reason = p.query("SELECT reason FROM composable.stream_sent__orders__braze WHERE event_id = 'orders:8'")[0][0]
    assert reason.startswith("in flight when run killed-run was killed")
    for destination in ("iterable", "box"):
        outcome = outcome_of(fourth, destination)
        assert (outcome.count("resent_after_crash"), outcome.count("sent")) == (2, 2), destination
    assert iterable.event_receipts == Counter(ids(2, 5, 8, 9))
    assert p.outbox_ids() == ["orders:2", "orders:3", "orders:5", "orders:8", "orders:9"]
    assert p.query("SELECT count(*) FROM composable.stream_intents") == [(0,)]
    # Every event sent so far is older than the marks the first run set: they stay.
    assert {d: p.high_water(d) for d in DESTINATIONS_SENT} == started

    # And then nothing is left: a fifth run sends nothing anywhere.
    assert sent(p.run()) == {"braze": 0, "iterable": 0, "box": 0}


def test_a_cursor_of_each_engines_time_types_is_read_as_naive_utc(warehouse_url):
    """Timestamps with a time zone are converted to UTC, naive ones taken as UTC, dates as their midnight."""
    with engine_from_url(warehouse_url).connect() as conn:
        conn.execute("CREATE TABLE ev (id BIGINT, who VARCHAR, at_tz TIMESTAMPTZ, at_ntz TIMESTAMP, on_day DATE)")
        conn.execute(
            "INSERT INTO ev VALUES (1, 'a', CAST('2026-03-01 12:00:00+02:00' AS TIMESTAMPTZ), "
            "CAST('2026-03-01 12:00:00' AS TIMESTAMP), CAST('2026-03-01' AS DATE))"
        )
        expected = {"at_tz": dt.datetime(2026, 3, 1, 10), "at_ntz": dt.datetime(2026, 3, 1, 12), "on_day": dt.datetime(2026, 3, 1)}
        for column, moment in expected.items():
            shape = StreamShape(
                stream="ev", table="ev", event_id_column="id", cursor_column=column, where=None,
                lookback=dt.timedelta(hours=1), start="now", identifier_column="who", event="e",
            )
            rows = conn.fetch_all(f"SELECT _event_id, _cursor, _identifier FROM ({shape.rows_sql(conn)}) AS r")
            assert rows == [("ev:1", moment, "a")], column
        shape = StreamShape(
            stream="ev", table="ev", event_id_column="id", cursor_column="who", where=None,
            lookback=dt.timedelta(hours=1), start="now", identifier_column="who", event="e",
        )
        with pytest.raises(StreamDataError, match="cursor column `who` is .*, not a timestamp or date"):
            shape.rows_sql(conn)


def test_a_stream_killed_with_sigkill_on_postgres_delivers_every_event_at_most_once_to_braze(tmp_path, postgres_url, fakes):
    """The real kill of test_streams_kill.py, with the warehouse on a PostgreSQL server the killed process shared."""
    braze = fakes["braze"]
    events, batch = 400, 20
    t = utc_now() - dt.timedelta(hours=10)
    p = EngineStreamProject(
        tmp_path, postgres_url, lookback="1m", start=(t - dt.timedelta(days=1)).date().isoformat(), batch=batch
    )
    p.add_orders([order(i, t + dt.timedelta(seconds=30 * i)) for i in range(1, events + 1)])
    braze.faults.latency_seconds = 0.05
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        COMPOSABLE_PROJECT_DIR=str(p.settings.project_dir),
        COMPOSABLE_WAREHOUSE=p.settings.warehouse_url,
        COMPOSABLE_DATA_DIR=str(p.settings.data_dir),
    )
    day = dt.datetime.now(dt.UTC).date().isoformat()
    proc = subprocess.Popen(
        [COMPOSABLE, "stream", "orders", "--destination", "braze", "--date", day],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while sum(1 for r in braze.requests if r.path == PATHS["braze"]) < 8:
        assert proc.poll() is None, "the stream finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    braze.faults.latency_seconds = 0.0
    settle(braze)
    left = {
        event_id
        for (event_id,) in p.query(
            "SELECT DISTINCT event_id FROM composable.stream_intents WHERE destination = 'braze' "
            "AND event_id NOT IN (SELECT event_id FROM composable.stream_sent__orders__braze)"
        )
    }
    assert 0 < len(left) <= 2 * batch, "a kill leaves at most `concurrency` batches unsettled"

    outcome = p.run("braze")
    [stream] = outcome.streams
    assert stream.count("in_doubt") == len(left)
    assert p.query("SELECT count(*) FROM composable.stream_intents") == [(0,)]
    assert p.high_water("braze") == t + dt.timedelta(seconds=30 * events)
    received = braze.received_event_ids()
    assert max(received.values()) == 1  # none twice
    assert ids(*range(1, events + 1)) - set(received) <= left  # what never arrived is recorded in doubt

"""Event streams on every warehouse engine: the same test bodies, the real assets, Braze and Iterable fakes over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from composable_assets.destinations import Event
from composable_assets.runner import RunOutcome
from composable_assets.streams import StreamDataError, StreamShape, StreamTables
from composable_assets.streams.intents import record_intents
from composable_assets.warehouse import engine_from_url

from .stream_project import StreamProject, ids, order, outcome_of, utc_now
from .test_streams_kill import COMPOSABLE, PATHS, settle

MINUTE = dt.timedelta(minutes=1)
DESTINATIONS_SENT = ("braze", "iterable", "box")


def ran(p: StreamProject, destination: str | None = None) -> RunOutcome:
    """Run the stream and insist that the run succeeded."""
    outcome = p.run(destination)
    assert outcome.success, outcome.errors
    return outcome


def sent(outcome: RunOutcome) -> dict[str, int]:
    return {d: outcome_of(outcome, d).count("sent") for d in DESTINATIONS_SENT}


def test_a_stream_delivers_once_and_resolves_a_killed_runs_intents_on_every_engine(tmp_path, warehouse_url, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    now = utc_now()
    p = StreamProject(tmp_path, warehouse_url, batch=2)
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
    first = ran(p)
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
    second = ran(p)
    assert sent(second) == {"braze": 0, "iterable": 0, "box": 0}
    assert braze.received_event_ids() == Counter(ids(2, 3)) and len(iterable.event_receipts) == 1
    assert len(p.statuses("box")) == 2

    # New events: only those go out (order 6 is in the future, it waits).
    p.add_orders([order(5, now - MINUTE), order(6, now + 60 * MINUTE), order(7, now - 2 * MINUTE, status="refunded")])
    third = ran(p)
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
    fourth = ran(p)
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
    assert sent(ran(p)) == {"braze": 0, "iterable": 0, "box": 0}


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
    p = StreamProject(
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

    outcome = ran(p, "braze")
    [stream] = outcome.streams
    assert stream.count("in_doubt") == len(left)
    assert p.query("SELECT count(*) FROM composable.stream_intents") == [(0,)]
    assert p.high_water("braze") == t + dt.timedelta(seconds=30 * events)
    received = braze.received_event_ids()
    assert max(received.values()) == 1  # none twice
    assert ids(*range(1, events + 1)) - set(received) <= left  # what never arrived is recorded in doubt

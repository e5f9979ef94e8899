"""What a stream run reads: the rows in its window, found by their cursor value, not every row of the table.

Query-plan checks on DuckDB (the plan is data, not a timing): each scan of the stream's table filters by the
window's bounds, so the event id, the JSON columns and the member conditions are only worked out for those rows.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from composable_assets.streams import StreamShape, StreamTables
from composable_assets.streams.candidates import candidates_sql, has_leftovers, pending_events, record_late
from composable_assets.warehouse.duckdb_engine import DuckDBConnection

T0 = dt.datetime(2026, 3, 1, 12)
NOW = T0 + dt.timedelta(hours=1)
START = T0


@pytest.fixture
def conn():
    raw = duckdb.connect()
    raw.execute(
        "CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, email VARCHAR, amount DOUBLE, status VARCHAR, "
        "ordered_at TIMESTAMP)"
    )
    # Two days of orders, one a minute; the window [START, NOW] holds the last hour's.
    raw.execute(
        "INSERT INTO orders SELECT i, i % 50, concat('p', i % 50, '@example.com'), i, 'completed', "
        "? - to_minutes(2880 - i) FROM range(2941) AS r(i)",
        [NOW - dt.timedelta(minutes=60)],
    )
    raw.execute("CREATE TABLE consents (customer_id BIGINT, purpose VARCHAR, granted BOOLEAN, updated_at TIMESTAMP)")
    raw.execute("INSERT INTO consents SELECT i, 'email', i % 2 = 0, ? FROM range(50) AS r(i)", [T0 - dt.timedelta(days=9)])
    yield DuckDBConnection(raw)
    raw.close()


def shape(allowed: str | None = None) -> StreamShape:
    return StreamShape(
        stream="orders", table="orders", event_id_column="order_id", cursor_column="ordered_at",
        where=None, lookback=dt.timedelta(hours=1), start="now", identifier_column="email", event="purchase",
        properties={"amount": "amount"}, key_column="customer_id" if allowed else None, allowed=allowed,
    )


def tables(conn) -> StreamTables:
    t = StreamTables("composable", "orders", "box")
    t.ensure(conn)
    return t


def scans(plan: list[dict], table: str) -> list[dict]:
    """Every scan of `table` in a DuckDB JSON plan."""
    found = []
    for node in plan:
        info = node.get("extra_info", {})
        if isinstance(info, dict) and str(info.get("Table", "")).endswith(f".{table}"):
            found.append(info)
        found += scans(node.get("children", []), table)
    return found


def plan_of(conn, sql: str, params: list) -> list[dict]:
    return json.loads(conn.raw.execute(f"EXPLAIN (FORMAT json) {sql}", params).fetchall()[0][1])


def bounded_by_the_window(scan: dict, low: dt.datetime) -> bool:
    return f"ordered_at >= '{low}'" in str(scan.get("Filters", ""))


def test_every_scan_of_the_stream_table_is_bounded_below_by_the_window_start(conn):
    t = tables(conn)
    sql, params = candidates_sql(conn, shape(), t, window_start=START, now=NOW, leftovers=False)
    found = scans(plan_of(conn, sql, params), "orders")
    assert found and all(bounded_by_the_window(s, START) for s in found), found


def test_the_late_band_is_read_by_its_cursor_range(conn):
    t = tables(conn)
    captured = {}

    class Capture:
        def fetch_one(self, sql, params):
            captured.update(sql=sql, params=params)
            return (0,)

        # The count is read by fetch_row (an aggregate always answers one row), which Connection builds on fetch_one.
        fetch_row = fetch_one

        def __getattr__(self, name):
            return getattr(conn, name)

    low = START - dt.timedelta(hours=1)
    record_late(Capture(), shape(), t, band=(low, START), run_id="r", partition=T0.date(), now=NOW)
    found = scans(plan_of(conn, captured["sql"], captured["params"]), "orders")
    assert found and all(bounded_by_the_window(s, low) for s in found), found


def test_rows_behind_the_window_are_read_only_when_a_killed_run_left_intents_naming_them(conn):
    """After an orderly run the pair has no intents: the query has no branch computing every older row's id."""
    t = tables(conn)
    assert not has_leftovers(conn, t)
    events = [e for chunk in pending_events(conn, shape(), t, window_start=START, now=NOW) for e in chunk]
    window = list(range(2880, 2941))
    assert [e.event_id for e in events] == [f"orders:{i}" for i in window]

    # A killed run had order 100 (two days old) in flight: it is a candidate again, with the window's rows.
    conn.execute(
        f"INSERT INTO {t.intents} VALUES ('orders', 'box', 'killed', 'orders:100', ?, ?)", [T0 - dt.timedelta(days=2), T0]
    )
    assert has_leftovers(conn, t)
    events = [e for chunk in pending_events(conn, shape(), t, window_start=START, now=NOW) for e in chunk]
    assert [e.event_id for e in events] == [f"orders:{i}" for i in [100, *window]]


def test_member_conditions_only_see_the_windows_rows(conn):
    """People without consent are left out, in and behind the window alike (the semantics do not change)."""
    allowed = (
        'CAST("customer_id" AS VARCHAR) IN (SELECT CAST("customer_id" AS VARCHAR) FROM "consents" '
        "WHERE \"purpose\" = 'email' AND \"granted\")"
    )
    t = tables(conn)
    events = [e for chunk in pending_events(conn, shape(allowed), t, window_start=START, now=NOW) for e in chunk]
    assert [e.event_id for e in events] == [f"orders:{i}" for i in range(2880, 2941) if i % 2 == 0]

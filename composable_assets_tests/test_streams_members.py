"""Who a stream may send to, when the member conditions read only the window's members: the same answer on every
engine, whether the stream's key is compared with the consent table's key as it is or as text."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from composable_assets.definitions import native_stream_conditions, stream_conditions
from composable_assets.governance.consent import consent_conditions
from composable_assets.project import load_project
from composable_assets.streams import StreamShape, StreamTables
from composable_assets.streams.candidates import candidates_sql, pending_events, record_late
from composable_assets.streams.shape import MEMBER_KEYS

from .stream_project import DESTINATIONS, StreamProject, order

NOW = dt.datetime(2026, 3, 2, 12)
WINDOW_START = NOW - dt.timedelta(hours=1)
LATE_BAND = (NOW - dt.timedelta(hours=2), WINDOW_START)
HOUR = dt.timedelta(hours=1)

PROJECT = """\
name: events
start_date: "2026-01-01"
consent: {table: consents, key: customer_id, updated_at: updated_at}
deletion_requests: {table: deletion_requests, key: customer_id, requested_at: requested_at, id: request_id}
"""

# Customer -> (email consent granted?, when it was last updated, asked to be forgotten when, where the request is).
PEOPLE = {
    1: (True, NOW - 90 * HOUR, None, None),
    2: (False, NOW - 90 * HOUR, None, None),
    3: (True, NOW - 90 * HOUR, NOW - 10 * HOUR, "requests"),  # asked after consenting: forgotten
    4: (True, NOW - 5 * HOUR, NOW - 10 * HOUR, "requests"),  # consented again after asking: back
    5: (True, NOW - 90 * HOUR, NOW - 10 * HOUR, "log"),  # the request row is gone, the proof stays: forgotten
    6: (True, NOW - 5 * HOUR, NOW - 10 * HOUR, "log"),  # back, after a request only the proof remembers
    7: (False, NOW - 5 * HOUR, NOW - 10 * HOUR, "requests"),  # a newer consent, but not granted: forgotten
}
# Who may receive events: every destination leaves out the forgotten; `box` also those without email consent.
MAY_RECEIVE = {"braze": {1, 2, 4, 6}, "box": {1, 4, 6}}


def seeded(tmp_path, url: str | None = None) -> StreamProject:
    p = StreamProject(tmp_path, url)
    p.write("project.yaml", PROJECT)
    box = "box: {type: outbox, batch_size: 5}"
    p.write("destinations.yaml", DESTINATIONS.format(batch=5, concurrency=1).replace(
        box, "box: {type: outbox, batch_size: 5, consent: email}"
    ))
    with p.engine.connect() as conn:
        conn.execute("CREATE TABLE consents (customer_id BIGINT, purpose VARCHAR, granted BOOLEAN, updated_at TIMESTAMP)")
        conn.execute("CREATE TABLE deletion_requests (request_id VARCHAR, customer_id BIGINT, requested_at TIMESTAMP)")
        StreamTables("composable", "orders", "box").ensure(conn)  # the proof table (deletion_log) too
        for person, (granted, updated, asked, where) in PEOPLE.items():
            conn.execute("INSERT INTO consents VALUES (?, 'email', ?, ?)", [person, granted, updated])
            if where == "requests":
                conn.execute("INSERT INTO deletion_requests VALUES (?, ?, ?)", [f"dsr-{person}", person, asked])
            elif where == "log":
                conn.execute(
                    'INSERT INTO composable.deletion_log (request_id, "key", destination, status, requested_at, done_at) '
                    "VALUES (?, ?, 'box', 'deleted', ?, ?)",
                    [f"dsr-{person}", str(person), asked, asked],
                )
    # order n belongs to customer n % 7 + 1: two orders per person in the window, one in the late band each.
    orders = [order(n, NOW - dt.timedelta(minutes=n)) for n in range(1, 15)]
    orders += [order(100 + n, LATE_BAND[0] + dt.timedelta(minutes=n)) for n in range(1, 8)]
    no_key = order(200, NOW - dt.timedelta(minutes=30))
    orders.append((no_key[0], None, *no_key[2:]))  # nobody can tell whether this person asked: never sent
    p.add_orders(orders)
    return p


def shapes(p: StreamProject, destination: str) -> dict[str, StreamShape]:
    """The sync's shape with its member condition compared as text, and as the keys are."""
    project = load_project(p.settings.project_dir)
    stream, conditions = stream_conditions(project, project.streams["orders"])
    native, against = native_stream_conditions(project, stream)
    [sync] = [s for s in stream.syncs if s.destination == destination]
    text = StreamShape.of(stream, sync, {}, stream.key, conditions[destination])
    return {"text": text, "native": dataclasses.replace(text, allowed_native=native[destination], native_against=against)}


def customers(event_ids) -> set[int]:
    return {int(e.split(":")[1]) % 7 + 1 for e in event_ids}


@pytest.mark.parametrize("destination", ["braze", "box"])
def test_the_window_and_the_late_band_leave_out_the_same_people_on_every_engine(tmp_path, warehouse_url, destination):
    p = seeded(tmp_path, warehouse_url)
    for how, shape in shapes(p, destination).items():
        tables = StreamTables("composable", "orders", destination)
        with p.engine.connect() as conn:
            tables.ensure(conn)
            events = [e for chunk in pending_events(conn, shape, tables, window_start=WINDOW_START, now=NOW) for e in chunk]
            assert customers(e.event_id for e in events) == MAY_RECEIVE[destination], how
            assert len(events) == 2 * len(MAY_RECEIVE[destination]), how
            late = record_late(conn, shape, tables, band=LATE_BAND, run_id=how, partition=NOW.date(), now=NOW)
            assert late == len(MAY_RECEIVE[destination]), how
            recorded = conn.fetch_all(f"SELECT event_id FROM {tables.sent} WHERE status = 'late_skipped'")
            assert customers(e for (e,) in recorded) == MAY_RECEIVE[destination], how
            conn.execute(f"DELETE FROM {tables.sent}")


def test_the_consent_key_is_compared_as_text_when_the_stream_keys_type_differs(tmp_path):
    p = seeded(tmp_path)
    with p.engine.connect() as conn:
        conn.execute("ALTER TABLE orders ALTER customer_id TYPE VARCHAR")
        tables = StreamTables("composable", "orders", "box")
        native = shapes(p, "box")["native"]
        assert native._member_condition(conn, native._checked_columns(conn)) == native.allowed
        events = [e for chunk in pending_events(conn, native, tables, window_start=WINDOW_START, now=NOW) for e in chunk]
        assert customers(e.event_id for e in events) == MAY_RECEIVE["box"]


def test_native_member_conditions_never_cast_the_consent_key_and_read_only_the_members_checked(tmp_path):
    p = seeded(tmp_path)
    project = load_project(p.settings.project_dir)
    for condition in consent_conditions(project, "customer_id", keys=MEMBER_KEYS).values():
        assert 'CAST("customer_id" AS VARCHAR) IN' not in condition and 'CAST(c."customer_id"' not in condition
        assert MEMBER_KEYS in condition  # who came back is looked up for the members checked only


def test_the_consent_table_is_read_for_the_windows_members_only(tmp_path):
    """A plan check on DuckDB: with 100,000 people and one of them buying in the window, the scans of the consent
    table return a handful of rows (the join's key filter), not one per person."""
    p = seeded(tmp_path)
    with p.engine.connect() as conn:
        conn.execute(
            "INSERT INTO consents SELECT i, 'email', true, ? FROM range(1000, 101000) AS r(i)", [NOW - 90 * HOUR]
        )
        conn.execute(
            "INSERT INTO orders SELECT i, i, 'x@example.com', 'sku', 1, 'EUR', 'completed', ? FROM range(1000, 101000) "
            "AS r(i)", [NOW - 50 * HOUR]
        )
        tables = StreamTables("composable", "orders", "box")
        tables.ensure(conn)
        read = {}
        for how, shape in shapes(p, "box").items():
            sql, params = candidates_sql(conn, shape, tables, window_start=WINDOW_START, now=NOW, leftovers=False)
            plan = json.loads(conn.raw.execute(f"EXPLAIN (ANALYZE, FORMAT json) {sql}", params).fetchall()[0][1])
            read[how] = sum(s["intermediate_rows"] for s in scans_of(plan["operator"], "consents"))
        assert read["native"] < 100 < 100_000 <= read["text"], read


def scans_of(nodes: list[dict], table: str) -> list[dict]:
    found = []
    for node in nodes:
        if str(node.get("extra_info", {}).get("Table", "")).endswith(f".{table}"):
            found.append(node)
        found += scans_of(node.get("children", []), table)
    return found


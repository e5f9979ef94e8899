"""Which rows a run sends (and which arrived too late), read from the warehouse in chunks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

from ..destinations import Event
from ..warehouse import Connection
from .shape import StreamShape
from .tables import StreamTables

# Rows read from the warehouse per Arrow batch; never the whole window in memory.
READ_CHUNK_ROWS = 10_000


def candidates_sql(conn: Connection, shape: StreamShape, tables: StreamTables) -> str:
    """Rows in [window start, now] (or left in flight by a killed run) not yet settled, once per event id, in order.

    Bound values: window start, now, stream, destination.
    """
    # A table may repeat an event id (a re-landed file): the event is sent once, at its first cursor value. Ranked
    # in a subquery rather than with QUALIFY, which PostgreSQL lacks (sqlglot's rewrite of it would move the ORDER
    # BY inside a subquery, where it does not order the result).
    return (
        "SELECT c._event_id, c._cursor, c._identifier, c._properties, c._extras FROM ("
        "SELECT r.*, row_number() OVER (PARTITION BY r._event_id ORDER BY r._cursor) AS _nth "
        f"FROM ({shape.rows_sql(conn)}) AS r "
        "WHERE r._cursor <= ? AND (r._cursor >= ? OR r._event_id IN "
        f"(SELECT event_id FROM {tables.intents} WHERE stream = ? AND destination = ?)) "
        f"AND NOT EXISTS (SELECT 1 FROM {tables.sent} AS s WHERE s.event_id = r._event_id)) AS c "
        "WHERE c._nth = 1 ORDER BY c._cursor, c._event_id"
    )


def pending_events(
    conn: Connection,
    shape: StreamShape,
    tables: StreamTables,
    *,
    window_start: dt.datetime,
    now: dt.datetime,
    chunk_rows: int = READ_CHUNK_ROWS,
) -> Iterator[list[Event]]:
    """The events to send, a chunk at a time, numbered from 1 in send order."""
    sql = candidates_sql(conn, shape, tables)
    seq = 0
    reader = conn.stream_arrow(sql, [now, window_start, *tables.pair], batch_rows=chunk_rows)
    try:
        for batch in reader:
            if not batch.num_rows:
                continue
            columns = batch.to_pydict()
            # One JSON parse per column and chunk (an array of the row objects), not one per row.
            properties = json.loads("[" + ",".join(columns["_properties"]) + "]")
            extras = json.loads("[" + ",".join(columns["_extras"]) + "]")
            events = [
                Event(
                    seq=seq + index + 1,
                    event_id=event_id,
                    identifier=identifier,
                    name=shape.event,
                    time=cursor,
                    properties=props,
                    extras=extra,
                )
                for index, (event_id, identifier, cursor, props, extra) in enumerate(
                    zip(columns["_event_id"], columns["_identifier"], columns["_cursor"], properties, extras)
                )
            ]
            seq += len(events)
            yield events
    finally:
        reader.close()


def record_late(
    conn: Connection,
    shape: StreamShape,
    tables: StreamTables,
    *,
    band: tuple[dt.datetime, dt.datetime],
    run_id: str,
    partition: dt.date,
    now: dt.datetime,
) -> int:
    """Record rows behind the window that were never sent as `late_skipped` (each once); returns how many.

    They landed after the mark had moved more than `lookback` past their cursor value. Only the band the sent log
    still covers can be told apart from rows that were sent; older late rows are invisible.
    """
    lo, hi = band
    if lo >= hi:
        return 0
    late = (
        f"SELECT r._event_id, min(r._cursor) AS _cursor FROM ({shape.rows_sql(conn)}) AS r "
        "WHERE r._cursor >= ? AND r._cursor < ? "
        f"AND NOT EXISTS (SELECT 1 FROM {tables.sent} AS s WHERE s.event_id = r._event_id) "
        f"AND r._event_id NOT IN (SELECT event_id FROM {tables.intents} WHERE stream = ? AND destination = ?) "
        "GROUP BY r._event_id"
    )
    params = [lo, hi, *tables.pair]
    (count,) = conn.fetch_one(f"SELECT count(*) FROM ({late}) AS l", params)
    if count:
        conn.execute(
            f"INSERT INTO {tables.sent} SELECT _event_id, _cursor, 'late_skipped', ?, ?, ?, "
            f"'arrived after the window had passed (more than lookback behind the high-water mark)' FROM ({late}) AS l",
            [run_id, now, partition, *params],
        )
    return count

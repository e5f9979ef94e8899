"""Which rows a run sends (and which arrived too late), read from the warehouse in chunks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

from ..destinations import Event
from ..store import StreamTables
from ..warehouse import Connection
from .shape import StreamShape

# Rows read from the warehouse per Arrow batch; never the whole window in memory.
READ_CHUNK_ROWS = 10_000


def candidates_sql(
    conn: Connection,
    shape: StreamShape,
    tables: StreamTables,
    *,
    window_start: dt.datetime,
    now: dt.datetime,
    leftovers: bool = True,
) -> tuple[str, list]:
    """Rows in [window start, now] (or left in flight by a killed run) not yet settled, once per event id, in order.

    The query and its bound values. The window's rows are picked by their cursor value first (a range the engine
    filters in the scan), so a run costs the rows in its window, not the table (see `StreamShape.select`). Rows
    behind the window named by intents of a killed run (`leftovers`) come from a second branch, which has to
    compute every older row's event id to find them; it is left out when the pair has no intents, as after every
    orderly run.
    """
    unsent: list[tuple[str, list]] = [(f"SELECT event_id FROM {tables.sent}", [])]
    rows, params = shape.select(conn, "{cursor} <= ? AND {cursor} >= ?", [now, window_start], unsent)
    if leftovers:
        named = (
            "{cursor} <= ? AND {cursor} < ? AND "
            f"{{event_id}} IN (SELECT event_id FROM {tables.intents} WHERE stream = ? AND destination = ?)"
        )
        behind, more = shape.select(conn, named, [now, window_start, *tables.pair], unsent)
        rows, params = f"{rows} UNION ALL {behind}", [*params, *more]
    # A table may repeat an event id (a re-landed file): the event is sent once, at its first cursor value. Ranked
    # in a subquery rather than with QUALIFY, which PostgreSQL lacks (sqlglot's rewrite of it would move the ORDER
    # BY inside a subquery, where it does not order the result).
    return (
        "SELECT c._event_id, c._cursor, c._identifier, c._properties, c._extras FROM ("
        "SELECT r.*, row_number() OVER (PARTITION BY r._event_id ORDER BY r._cursor) AS _nth "
        f"FROM ({rows}) AS r) AS c "
        "WHERE c._nth = 1 ORDER BY c._cursor, c._event_id"
    ), params


def has_leftovers(conn: Connection, tables: StreamTables) -> bool:
    """Whether the pair has intents (events a killed run may have had in flight, not settled yet)."""
    (count,) = conn.fetch_row(
        f"SELECT count(*) FROM {tables.intents} WHERE stream = ? AND destination = ?", tables.pair
    )
    return count > 0


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
    sql, params = candidates_sql(
        conn, shape, tables, window_start=window_start, now=now, leftovers=has_leftovers(conn, tables)
    )
    seq = 0
    reader = conn.stream_arrow(sql, params, batch_rows=chunk_rows)
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
        # Every engine's stream_arrow is a generator, which Connection types as a plain Iterator.
        reader.close()  # type: ignore[attr-defined]


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
    # Neither settled nor possibly in flight (a killed run's intents: the candidate query sends those).
    rows, params = shape.select(
        conn,
        "{cursor} >= ? AND {cursor} < ?",
        [lo, hi],
        [
            (f"SELECT event_id FROM {tables.sent}", []),
            (f"SELECT event_id FROM {tables.intents} WHERE stream = ? AND destination = ?", tables.pair),
        ],
    )
    late = f"SELECT r._event_id, min(r._cursor) AS _cursor FROM ({rows}) AS r GROUP BY r._event_id"
    (count,) = conn.fetch_row(f"SELECT count(*) FROM ({late}) AS l", params)
    if count:
        conn.execute(
            f"INSERT INTO {tables.sent} SELECT _event_id, _cursor, 'late_skipped', ?, ?, ?, "
            f"'arrived after the window had passed (more than lookback behind the high-water mark)' FROM ({late}) AS l",
            [run_id, now, partition, *params],
        )
    return count

"""Intents: the events a delivery may have in flight, written before they are sent, so a kill leaves a trace."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ..destinations import Event
from ..store import StreamTables, types_of
from ..store.registry import STREAM_INTENTS
from ..warehouse import Connection
from ..warehouse.base import insert_rows


def record_intents(
    conn: Connection, tables: StreamTables, run_id: str, events: Sequence[Event], now: dt.datetime
) -> None:
    """Declare `events` as possibly in flight, durably, before any of them is sent (one insert)."""
    if not events:
        return
    insert_rows(
        conn,
        tables.intents,
        types_of(STREAM_INTENTS),
        [(*tables.pair, run_id, e.event_id, e.time, now) for e in events],
    )


def resolve_leftovers(
    conn: Connection, tables: StreamTables, *, idempotent: bool, now: dt.datetime, partition: dt.date
) -> tuple[int, int]:
    """Settle what killed runs left in flight; returns (recorded in doubt, to send again).

    Called before this run sends anything. Intents are deleted on every orderly exit, so any found here come from a
    killed process (runs of one pair never overlap: the warehouse pool runs one at a time), whatever their run id (a
    step retried within one Dagster run keeps it). An event among them that the sent log lacks may or may not
    have arrived. A destination that deduplicates by event id gets it again: its intent stays until the event is
    settled, and the candidate query includes it whatever its cursor. Any other destination would show it twice,
    so it is recorded `in_doubt` and never sent again: at most once.
    """
    params = tables.pair
    # After an orderly run the pair has none: then the sent log is not read at all.
    (intents,) = conn.fetch_row(f"SELECT count(*) FROM {tables.intents} WHERE stream = ? AND destination = ?", params)
    if not intents:
        return 0, 0
    leftover = (
        f"SELECT event_id, min(cursor_value) AS cursor_value, min(run_id) AS run_id FROM {tables.intents} "
        "WHERE stream = ? AND destination = ? "
        f"AND event_id NOT IN (SELECT event_id FROM {tables.sent}) GROUP BY event_id"
    )
    (count,) = conn.fetch_row(f"SELECT count(*) FROM ({leftover}) AS l", params)
    with conn.transaction():
        in_doubt = 0
        if count and not idempotent:
            conn.execute(
                f"INSERT INTO {tables.sent} SELECT event_id, cursor_value, 'in_doubt', run_id, ?, ?, "
                "'in flight when run ' || run_id || ' was killed; not resent: the destination does not deduplicate' "
                f"FROM ({leftover}) AS l",
                [now, partition, *params],
            )
            in_doubt = count
        # Intents of events now settled (or just recorded in doubt) have done their job.
        conn.execute(
            f"DELETE FROM {tables.intents} WHERE stream = ? AND destination = ? "
            f"AND event_id IN (SELECT event_id FROM {tables.sent})",
            params,
        )
    return (in_doubt, 0) if not idempotent else (0, count)


def clear_intents(conn: Connection, tables: StreamTables, run_id: str) -> None:
    """On an orderly exit: forget this run's intents, and earlier ones whose events are settled by now."""
    (earlier,) = conn.fetch_row(
        f"SELECT count(*) FROM {tables.intents} WHERE stream = ? AND destination = ? AND run_id <> ?",
        [*tables.pair, run_id],
    )
    if not earlier:  # as after every orderly run: the sent log need not be read
        conn.execute(
            f"DELETE FROM {tables.intents} WHERE stream = ? AND destination = ? AND run_id = ?", [*tables.pair, run_id]
        )
        return
    conn.execute(
        f"DELETE FROM {tables.intents} WHERE stream = ? AND destination = ? "
        f"AND (run_id = ? OR event_id IN (SELECT event_id FROM {tables.sent}))",
        [*tables.pair, run_id],
    )

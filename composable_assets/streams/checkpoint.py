"""Checkpoints: answered batches into the sent log, the mark advanced, the next batches declared: one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ..destinations import Event
from ..store import StreamTables, types_of
from ..store.registry import STREAM_SENT
from ..warehouse import Connection
from ..warehouse.base import insert_rows
from .high_water import advance_sql
from .intents import record_intents


@dataclass
class Settled:
    """Events of answered batches: (event id, cursor value, status, reason) rows for the sent log."""

    event_ids: list[str]
    cursors: list[dt.datetime]
    statuses: list[str]
    reasons: list[str | None]

    @classmethod
    def empty(cls) -> Settled:
        return cls([], [], [], [])

    def add(self, event_id: str, cursor: dt.datetime, status: str, reason: str | None = None) -> None:
        self.event_ids.append(event_id)
        self.cursors.append(cursor)
        self.statuses.append(status)
        self.reasons.append(reason)

    def __len__(self) -> int:
        return len(self.event_ids)


def checkpoint(
    conn: Connection,
    tables: StreamTables,
    settled: Settled,
    advance_to: dt.datetime | None,
    *,
    run_id: str,
    partition: dt.date,
    now: dt.datetime,
    intents: Sequence[Event] = (),
) -> None:
    """Record settled events, raise the mark to `advance_to` (None: leave it) and declare `intents`, atomically.

    Atomic, so a kill can never leave the mark past events the sent log does not hold, nor the reverse; and one
    commit per round of answers instead of two (the next batches' intents ride along).
    """
    if not settled and advance_to is None and not intents:
        return
    with conn.transaction():
        if settled:
            insert_rows(
                conn,
                tables.sent,
                types_of(STREAM_SENT),
                [
                    (event_id, cursor, status, run_id, now, partition, reason)
                    for event_id, cursor, status, reason in zip(
                        settled.event_ids, settled.cursors, settled.statuses, settled.reasons
                    )
                ],
            )
        if advance_to is not None:
            conn.execute(advance_sql(tables), [advance_to, now, run_id, *tables.pair])
        record_intents(conn, tables, run_id, intents, now)

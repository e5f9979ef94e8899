"""Names and shapes of the warehouse tables an event stream keeps, per (stream, destination)."""

from __future__ import annotations

from dataclasses import dataclass

from ..delta.sql import ident, table
from ..governance.deletion_log import ensure_deletion_log
from ..warehouse import Connection

# Shared by every stream and destination, one row per pair (cursors) or per event possibly in flight (intents).
STREAM_CURSORS = "stream_cursors"
STREAM_INTENTS = "stream_intents"
# Column -> type of the tables rows are appended to in batches (sent log, intents), in table order.
SENT_COLUMNS = {
    "event_id": "VARCHAR",
    "cursor_value": "TIMESTAMP",
    "status": "VARCHAR",
    "run_id": "VARCHAR",
    "recorded_at": "TIMESTAMP",
    "partition_date": "DATE",
    "reason": "VARCHAR",
}
INTENT_COLUMNS = {
    "stream": "VARCHAR",
    "destination": "VARCHAR",
    "run_id": "VARCHAR",
    "event_id": "VARCHAR",
    "cursor_value": "TIMESTAMP",
    "recorded_at": "TIMESTAMP",
}


@dataclass(frozen=True)
class StreamTables:
    """The warehouse tables of one (stream, destination) pair, plus the schema they live in."""

    schema: str
    stream: str
    destination: str

    @property
    def sent(self) -> str:
        return table(self.schema, f"stream_sent__{self.stream}__{self.destination}")

    @property
    def cursors(self) -> str:
        return table(self.schema, STREAM_CURSORS)

    @property
    def intents(self) -> str:
        return table(self.schema, STREAM_INTENTS)

    @property
    def pair(self) -> list[str]:
        """Bound values selecting this pair's rows in the shared tables."""
        return [self.stream, self.destination]

    def ensure(self, conn: Connection) -> None:
        """Create what does not exist yet (idempotent, cheap)."""
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")
        # Which events may be sent depends on the proof of deletion requests (governance/consent.py).
        ensure_deletion_log(conn, self.schema)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.sent} ("
            "event_id VARCHAR NOT NULL, cursor_value TIMESTAMP NOT NULL, status VARCHAR NOT NULL, "
            "run_id VARCHAR NOT NULL, recorded_at TIMESTAMP NOT NULL, partition_date DATE NOT NULL, reason VARCHAR)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.cursors} ("
            "stream VARCHAR NOT NULL, destination VARCHAR NOT NULL, high_water TIMESTAMP NOT NULL, "
            "floor_at TIMESTAMP NOT NULL, pruned_below TIMESTAMP, started_at TIMESTAMP NOT NULL, "
            "updated_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.intents} ("
            "stream VARCHAR NOT NULL, destination VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "event_id VARCHAR NOT NULL, cursor_value TIMESTAMP NOT NULL, recorded_at TIMESTAMP NOT NULL)"
        )

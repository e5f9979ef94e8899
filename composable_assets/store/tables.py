"""The quoted names of one pair's tables, and creating them: what delivery, governance and destinations read by."""

from __future__ import annotations

from dataclasses import dataclass

from ..warehouse import Connection
from ..warehouse.sql import table
from . import registry as r
from .migrations import ensure_store


@dataclass(frozen=True)
class PairTables:
    """The warehouse tables of one (audience, destination) pair, plus the schema they live in."""

    schema: str
    audience: str
    destination: str

    @property
    def snapshot(self) -> str:
        return table(self.schema, f"audience__{self.audience}")

    @property
    def delta(self) -> str:
        return r.qualified(self.schema, r.DELTA, audience=self.audience, destination=self.destination)

    @property
    def ledger(self) -> str:
        return r.qualified(self.schema, r.LEDGER, audience=self.audience, destination=self.destination)

    @property
    def delta_runs(self) -> str:
        return r.qualified(self.schema, r.DELTA_RUNS)

    @property
    def acks(self) -> str:
        return r.qualified(self.schema, r.SYNC_ACKS)

    @property
    def failures(self) -> str:
        return r.qualified(self.schema, r.SYNC_FAILURES)

    @property
    def inflight(self) -> str:
        return r.qualified(self.schema, r.SYNC_INFLIGHT)

    @property
    def gates(self) -> str:
        return r.qualified(self.schema, r.GATE_RESULTS)

    @property
    def sync_log(self) -> str:
        return r.qualified(self.schema, r.SYNC_LOG)

    @property
    def sync_runs(self) -> str:
        return r.qualified(self.schema, r.SYNC_RUNS)

    def ensure(self, conn: Connection) -> None:
        """Create what does not exist yet (idempotent, cheap)."""
        ensure_store(conn, self.schema)
        r.LEDGER.create(conn, self.ledger)
        r.DELTA.create(conn, self.delta)


@dataclass(frozen=True)
class StreamTables:
    """The warehouse tables of one (stream, destination) pair, plus the schema they live in."""

    schema: str
    stream: str
    destination: str

    @property
    def sent(self) -> str:
        return r.qualified(self.schema, r.STREAM_SENT, stream=self.stream, destination=self.destination)

    @property
    def cursors(self) -> str:
        return r.qualified(self.schema, r.STREAM_CURSORS)

    @property
    def intents(self) -> str:
        return r.qualified(self.schema, r.STREAM_INTENTS)

    @property
    def pair(self) -> list[str]:
        """Bound values selecting this pair's rows in the shared tables."""
        return [self.stream, self.destination]

    def ensure(self, conn: Connection) -> None:
        """Create what does not exist yet (idempotent, cheap)."""
        ensure_store(conn, self.schema)
        r.STREAM_SENT.create(conn, self.sent)


def types_of(entry: r.Table) -> dict[str, str]:
    """Column -> type without constraints, in table order: what `insert_rows` binds values as."""
    return {c: t.split(" ")[0] for c, t in entry.columns.items()}

"""The proof of deletion requests: `deletion_log`, one row per outcome (what was done, where, when, the answer).

Kept apart from governance/deletion.py (the work) because every delta and stream reads this table in its
suppression condition (governance/consent.py). The table is declared in the store (`store/registry.py`), which
creates it with the other shared tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from ..store import types_of
from ..store.registry import DELETION_LOG
from ..warehouse import Connection
from ..warehouse.sql import ident, table

# Column -> type (the store's registry), in table order.
COLUMNS = types_of(DELETION_LOG)
#: Outcomes that need nothing more; a `failed` one is tried again on the next run.
DONE_STATUSES = ("deleted", "not_found", "purged")
NOBODY = "(none)"


def deletion_log(schema: str) -> str:
    """The quoted name of the proof table."""
    return table(schema, DELETION_LOG.name)


def identifier_hash(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()


@dataclass(frozen=True)
class RequestState:
    """One request as the proof table tells it."""

    request_id: str
    key: str
    requested_at: dt.datetime
    #: Outcomes recorded for it (any run).
    outcomes: int
    #: (destination, source, identifier type, identifier hash) whose newest outcome is `failed`.
    failing: int

    @property
    def done(self) -> bool:
        return self.outcomes > 0 and self.failing == 0


def request_states(conn: Connection, schema: str) -> dict[str, RequestState]:
    """Request id -> its state, for every request the proof table knows."""
    log = deletion_log(schema)
    rows = conn.fetch_all(
        "WITH newest AS (SELECT request_id, key, requested_at, status, row_number() OVER ("
        "PARTITION BY request_id, destination, source, place, identifier_type, identifier_sha256 "
        f"ORDER BY done_at DESC) AS n FROM {log}) "
        "SELECT request_id, min(key), min(requested_at), count(*), "
        "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) FROM newest WHERE n = 1 GROUP BY request_id"
    )
    return {r[0]: RequestState(r[0], r[1], r[2], int(r[3]), int(r[4] or 0)) for r in rows}


def done_identifiers(conn: Connection, schema: str, request_ids: list[str]) -> set[tuple[str, str, str, str, str]]:
    """(request id, destination, source, identifier type, identifier hash) already deleted, gone or purged."""
    if not request_ids:
        return set()
    marks = ", ".join(["?"] * len(request_ids))
    statuses = ", ".join(["?"] * len(DONE_STATUSES))
    rows = conn.fetch_all(
        f"SELECT DISTINCT request_id, destination, source, identifier_type, identifier_sha256 FROM {deletion_log(schema)} "
        f"WHERE request_id IN ({marks}) AND status IN ({statuses}) AND identifier_sha256 IS NOT NULL",
        [*request_ids, *DONE_STATUSES],
    )
    return {tuple(r) for r in rows}


def outcomes(conn: Connection, schema: str, request_ids: list[str] | None = None) -> list[dict]:
    """Every proof row (of some requests), oldest first, as dicts: what `composable forget` prints."""
    names = ", ".join(ident(c) for c in COLUMNS)
    where, params = "", []
    if request_ids is not None:
        if not request_ids:
            return []
        where = f" WHERE request_id IN ({', '.join(['?'] * len(request_ids))})"
        params = list(request_ids)
    rows = conn.fetch_all(
        f"SELECT {names} FROM {deletion_log(schema)}{where} ORDER BY requested_at, request_id, done_at, destination",
        params,
    )
    return [dict(zip(COLUMNS, r)) for r in rows]

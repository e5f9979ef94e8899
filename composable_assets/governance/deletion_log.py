"""The proof of deletion requests: `deletion_log`, one row per outcome (what was done, where, when, the answer).

Kept apart from governance/deletion.py (the work) because every delta and stream reads this table in its
suppression condition (governance/consent.py), so the tables modules create it and must not import the work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from ..delta.sql import ident, table

DELETION_LOG = "deletion_log"
# Column -> type, in table order. No raw identifier: its sha256 tells identifiers apart without keeping an e-mail.
COLUMNS = {
    "request_id": "VARCHAR",
    "key": "VARCHAR",
    # The destination acted on, or "(none)" when no destination ever received the person.
    "destination": "VARCHAR",
    # Through which delivery the destination got the person: "audience <name>" or "stream <name>".
    "source": "VARCHAR",
    # What was acted on: the API call, or the table or folder purged.
    "place": "VARCHAR",
    "identifier_type": "VARCHAR",
    "identifier_sha256": "VARCHAR",
    # deleted | not_found | failed | purged
    "status": "VARCHAR",
    # Rows or lines purged, for status purged.
    "purged_rows": "BIGINT",
    # The destination's answer: status and a short body, secrets and identifiers scrubbed.
    "response": "VARCHAR",
    "requested_at": "TIMESTAMP",
    "done_at": "TIMESTAMP",
    "run_id": "VARCHAR",
}
#: Outcomes that need nothing more; a `failed` one is tried again on the next run.
DONE_STATUSES = ("deleted", "not_found", "purged")
NOBODY = "(none)"


def deletion_log(schema: str) -> str:
    """The quoted name of the proof table."""
    return table(schema, DELETION_LOG)


def ensure_deletion_log(conn, schema: str) -> None:
    """Create the proof table if missing (cheap): every suppression condition reads it."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    columns = ", ".join(f"{ident(name)} {type_}" for name, type_ in COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS {deletion_log(schema)} ({columns})")


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


def request_states(conn, schema: str) -> dict[str, RequestState]:
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


def done_identifiers(conn, schema: str, request_ids: list[str]) -> set[tuple[str, str, str, str, str]]:
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


def outcomes(conn, schema: str, request_ids: list[str] | None = None) -> list[dict]:
    """Every proof row (of some requests), oldest first, as dicts: what `composable forget` prints."""
    names = ", ".join(ident(c) for c in COLUMNS)
    where, params = "", []
    if request_ids is not None:
        if not request_ids:
            return []
        where = f" WHERE request_id IN ({', '.join(['?'] * len(request_ids))})"
        params = list(request_ids)
    rows = conn.fetch_all(
        f"SELECT {names} FROM {deletion_log(schema)}{where} ORDER BY requested_at, request_id, done_at, destination", params
    )
    return [dict(zip(COLUMNS, r)) for r in rows]

"""Names and shapes of the tables the platform keeps in the warehouse, per audience and destination."""

from __future__ import annotations

from dataclasses import dataclass

from ..governance.deletion_log import ensure_deletion_log
from ..warehouse import Connection
from .sql import ident, table

# Shared logs, one table each for every audience and destination.
DELTA_RUNS = "delta_runs"
SYNC_ACKS = "sync_acks"
SYNC_FAILURES = "sync_failures"
SYNC_INFLIGHT = "sync_inflight"
GATE_RESULTS = "gate_results"
# Provenance (governance/provenance.py): one row per delivered or rejected row, one per sync run of a pair.
SYNC_LOG = "sync_log"
SYNC_RUNS = "sync_runs"
# Column -> type, in table order; the payload stays in the delta's `_fields` (member data is not copied twice).
SYNC_LOG_COLUMNS = {
    "partition_date": "DATE", "sync_run_id": "VARCHAR", "audience": "VARCHAR", "destination": "VARCHAR",
    "key": "VARCHAR", "identifier": "VARCHAR", "op": "VARCHAR", "row_hash": "VARCHAR", "status": "VARCHAR",
    "reason": "VARCHAR", "delta_run_id": "VARCHAR", "seq": "BIGINT", "recorded_at": "TIMESTAMP",
}
SYNC_RUNS_COLUMNS = {
    "run_id": "VARCHAR", "partition_date": "DATE", "audience": "VARCHAR", "destination": "VARCHAR",
    "delta_run_id": "VARCHAR", "code_version": "VARCHAR", "package_version": "VARCHAR",
    "audience_sha256": "VARCHAR", "model_sha256": "VARCHAR", "upstream_versions": "VARCHAR", "status": "VARCHAR",
    "added": "BIGINT", "updated": "BIGINT", "removed": "BIGINT", "failed": "BIGINT", "unsent": "BIGINT",
    "started_at": "TIMESTAMP", "finished_at": "TIMESTAMP",
}


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
        return table(self.schema, f"delta__{self.audience}__{self.destination}")

    @property
    def ledger(self) -> str:
        return table(self.schema, f"ledger__{self.audience}__{self.destination}")

    @property
    def delta_runs(self) -> str:
        return table(self.schema, DELTA_RUNS)

    @property
    def acks(self) -> str:
        return table(self.schema, SYNC_ACKS)

    @property
    def failures(self) -> str:
        return table(self.schema, SYNC_FAILURES)

    @property
    def inflight(self) -> str:
        return table(self.schema, SYNC_INFLIGHT)

    @property
    def gates(self) -> str:
        return table(self.schema, GATE_RESULTS)

    @property
    def sync_log(self) -> str:
        return table(self.schema, SYNC_LOG)

    @property
    def sync_runs(self) -> str:
        return table(self.schema, SYNC_RUNS)

    def ensure(self, conn: Connection) -> None:
        """Create what does not exist yet (idempotent, cheap)."""
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")
        # Every delta's condition on who may be sent reads the proof of deletion requests (governance/consent.py).
        ensure_deletion_log(conn, self.schema)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.ledger} ("
            "_key VARCHAR NOT NULL, _identifier VARCHAR, _hash VARCHAR NOT NULL, _fields JSON, "
            "_synced_at TIMESTAMP NOT NULL, _run_id VARCHAR NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.delta} ("
            "_partition DATE NOT NULL, _run_id VARCHAR NOT NULL, _seq BIGINT NOT NULL, _op VARCHAR NOT NULL, "
            "_key VARCHAR NOT NULL, _identifier VARCHAR, _hash VARCHAR, _fields JSON, _previous JSON, "
            "_computed_at TIMESTAMP NOT NULL)"
        )
        # Delta rows are read, and acks joined to them, by `_seq` range.
        conn.ensure_index(self.delta, "_seq")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.delta_runs} ("
            "audience VARCHAR NOT NULL, destination VARCHAR NOT NULL, partition_date DATE NOT NULL, "
            "run_id VARCHAR NOT NULL, computed_at TIMESTAMP NOT NULL, mode VARCHAR NOT NULL, "
            "first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, "
            "added BIGINT NOT NULL, updated BIGINT NOT NULL, removed BIGINT NOT NULL, audience_size BIGINT NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.acks} ("
            "audience VARCHAR NOT NULL, destination VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, acked_at TIMESTAMP NOT NULL, "
            "folded BOOLEAN NOT NULL DEFAULT false)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.failures} ("
            "audience VARCHAR NOT NULL, destination VARCHAR NOT NULL, partition_date DATE NOT NULL, "
            "run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, key VARCHAR NOT NULL, op VARCHAR NOT NULL, "
            "reason VARCHAR NOT NULL, failed_at TIMESTAMP NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.gates} ("
            "audience VARCHAR NOT NULL, destination VARCHAR NOT NULL, run_id VARCHAR NOT NULL, gate VARCHAR NOT NULL, "
            "passed BOOLEAN NOT NULL, overridden BOOLEAN NOT NULL, detail VARCHAR NOT NULL, checked_at TIMESTAMP NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.inflight} ("
            "audience VARCHAR NOT NULL, destination VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, started_at TIMESTAMP NOT NULL)"
        )
        for name, columns in ((self.sync_log, SYNC_LOG_COLUMNS), (self.sync_runs, SYNC_RUNS_COLUMNS)):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(f'{c} {t}' for c, t in columns.items())})")

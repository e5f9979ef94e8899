"""Send gates: judge a computed delta before anything of it leaves, and remember the verdict for the sync."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..delta.diff import DeltaRun
from ..delta.snapshot import SyncShape
from ..project.gates import GatesSpec
from ..store import PairTables
from ..warehouse import Connection
from ..warehouse.sql import among_keys, ident


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on one delta; no member data in it (identifiers may be emails)."""

    name: str
    passed: bool
    detail: str
    overridden: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return not self.passed and not self.overridden


def judge_delta(
    conn: Connection, tables: PairTables, shape: SyncShape, run: DeltaRun, mode: str, gates: GatesSpec, lifted: set[str]
) -> list[GateResult]:
    """Every gate's verdict on `run`, recorded in the warehouse (the sync refuses a delta a gate blocks)."""
    ledger_size = conn.fetch_row(f"SELECT count(*) FROM {tables.ledger}")[0]
    # The size at the last delta that was let through: a held delta must not become the baseline, or simply
    # computing it again would pass.
    previous = conn.fetch_one(
        f"SELECT audience_size FROM {tables.delta_runs} AS r WHERE audience = ? AND destination = ? AND run_id <> ? "
        f"AND NOT EXISTS (SELECT 1 FROM {tables.gates} AS g WHERE g.audience = r.audience "
        "AND g.destination = r.destination AND g.run_id = r.run_id AND NOT g.passed AND NOT g.overridden) "
        "ORDER BY computed_at DESC LIMIT 1",
        [tables.audience, tables.destination, run.run_id],
    )
    results = [
        _removals(run, mode, gates, ledger_size),
        _size_change(run, gates, previous[0] if previous else None),
        _required_fields(conn, tables, shape, run, gates),
        _unique_identifiers(conn, tables, shape, gates, run),
        _consent_applied(conn, tables, shape, run),
    ]
    results = [
        GateResult(r.name, r.passed, r.detail, overridden=not r.passed and r.name in lifted, metadata=r.metadata)
        for r in results
    ]
    _record(conn, tables, run, results)
    return results


def _removals(run: DeltaRun, mode: str, gates: GatesSpec, ledger_size: int) -> GateResult:
    name, limit = "max_remove_percent", gates.max_remove_percent
    if mode != "mirror":
        return GateResult(name, True, "upsert mode never removes")
    share = 100.0 * run.removed / ledger_size if ledger_size else 0.0
    metadata = {"removed": run.removed, "destination_members": ledger_size, "percent": round(share, 2), "limit": limit}
    if ledger_size < gates.min_members:
        return GateResult(
            name,
            True,
            f"{ledger_size} members at the destination, under min_members {gates.min_members}",
            metadata=metadata,
        )
    passed = share <= limit
    return GateResult(
        name,
        passed,
        f"removes {run.removed} of {ledger_size} members ({share:.1f}%, limit {limit:g}%)",
        metadata=metadata,
    )


def _size_change(run: DeltaRun, gates: GatesSpec, previous: int | None) -> GateResult:
    name, limit = "max_change_percent", gates.max_change_percent
    if previous is None:
        return GateResult(name, True, "first delta: nothing to compare with")
    change = 100.0 * abs(run.audience_size - previous) / previous if previous else 0.0
    metadata = {
        "audience_size": run.audience_size,
        "previous_size": previous,
        "percent": round(change, 2),
        "limit": limit,
    }
    if previous < gates.min_members:
        return GateResult(
            name, True, f"previous size {previous}, under min_members {gates.min_members}", metadata=metadata
        )
    passed = change <= limit
    return GateResult(
        name,
        passed,
        f"audience {previous} -> {run.audience_size} ({change:.1f}% change, limit {limit:g}%)",
        metadata=metadata,
    )


def _required_fields(
    conn: Connection, tables: PairTables, shape: SyncShape, run: DeltaRun, gates: GatesSpec
) -> GateResult:
    name = "required_fields"
    # A field this destination is not sent is not required of it.
    required = [f for f in gates.required_fields if f in shape.fields]
    if not required:
        return GateResult(name, True, "no required field is sent to this destination")
    missing = " OR ".join(f"a.{ident(shape.fields[f])} IS NULL" for f in required)
    count = conn.fetch_row(
        f"SELECT count(*) FROM {tables.delta} AS d JOIN {tables.snapshot} AS a ON a._key = d._key "
        f"WHERE d._seq BETWEEN ? AND ? AND d._op <> 'remove' AND ({missing})",
        [run.first_seq, run.last_seq],
    )[0]
    return GateResult(
        name,
        count == 0,
        f"{count} added or updated members lack one of {', '.join(required)}",
        metadata={"members_missing_a_field": count, "required": ", ".join(required)},
    )


def _unique_identifiers(
    conn: Connection, tables: PairTables, shape: SyncShape, gates: GatesSpec, run: DeltaRun
) -> GateResult:
    name = "unique_identifiers"
    if not gates.unique_identifiers:
        return GateResult(name, True, "not checked (unique_identifiers: false)")
    if not run.size:
        # Whatever the snapshot holds, an empty delta sends no one (and reading the whole snapshot is a quiet run's
        # largest cost after the snapshot itself).
        return GateResult(name, True, "nothing to send")
    column = ident(shape.identifier_column)
    shared = conn.fetch_row(
        f"SELECT count(*) FROM (SELECT {column} FROM {tables.snapshot} WHERE {column} IS NOT NULL "
        f"GROUP BY {column} HAVING count(*) > 1) AS shared"
    )[0]
    return GateResult(
        name,
        shared == 0,
        f"{shared} identifiers are shared by more than one member",
        metadata={"shared_identifiers": shared},
    )


def _consent_applied(conn: Connection, tables: PairTables, shape: SyncShape, run: DeltaRun) -> GateResult:
    name = "consent_applied"
    if not shape.allowed:
        return GateResult(name, True, "no consent purpose here and no deletion requests in the project")
    # Checked again on what is about to leave, independently of how the delta was computed: the destination's consent
    # purpose, and no deletion request (governance/consent.py puts both in `allowed`).
    leaving = f"SELECT _key FROM {tables.delta} WHERE _seq BETWEEN {int(run.first_seq)} AND {int(run.last_seq)}"
    count = conn.fetch_row(
        f"SELECT count(*) FROM {tables.delta} WHERE _seq BETWEEN ? AND ? AND _op <> 'remove' "
        f"AND NOT ({among_keys(shape.allowed, leaving)})",
        [run.first_seq, run.last_seq],
    )[0]
    return GateResult(
        name,
        count == 0,
        f"{count} added or updated members may not be sent here (no consent for the purpose, or a deletion request)",
        metadata={"members_without_consent": count},
    )


def _record(conn: Connection, tables: PairTables, run: DeltaRun, results: list[GateResult]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(results))
    params: list = []
    for r in results:
        params += [tables.audience, tables.destination, run.run_id, r.name, r.passed, r.overridden, r.detail, now]
    conn.execute(f"INSERT INTO {tables.gates} VALUES {rows}", params)


def blocking_gates(conn: Connection, tables: PairTables, delta_run_id: str) -> list[tuple[str, str]]:
    """(gate, detail) of each gate that holds back this delta: failed and not overridden."""
    return conn.fetch_all(
        f"SELECT gate, detail FROM {tables.gates} WHERE audience = ? AND destination = ? AND run_id = ? "
        "AND NOT passed AND NOT overridden ORDER BY gate",
        [tables.audience, tables.destination, delta_run_id],
    )

"""Whether a model, an audience snapshot or a delta would skip itself: one decision per step kind.

The assets (assets/models.py, audiences.py, deltas.py) and the command line's quiet check (cli/quiet_check.py) both
build their steps here and ask the same questions, so what a run skips and what the check expects it to skip cannot
drift apart. Nothing here imports dagster: the check runs before it is loaded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..destinations import DESTINATION_TYPES
from ..project import AudienceSpec, ModelSpec, SyncSpec
from ..project.incremental import Refresh
from ..store import PairTables
from ..warehouse import Connection
from . import quiet
from .diff import latest_delta_run
from .refresh import definition_of
from .snapshot import SyncShape


def today_utc() -> str:
    """The run's date as the engine's `current_date` reads it (every session runs in UTC)."""
    return dt.datetime.now(dt.UTC).date().isoformat()


@dataclass(frozen=True)
class Step:
    """One step's skip decision: what decides its output, and where it keeps the fingerprint of that."""

    #: The refresh_state reader its fingerprint is kept under.
    reader: str
    definition: str
    #: The tables it reads (None: something else too, never skipped).
    reads: list[tuple[str | None, str]] | None
    clock: quiet.Clock
    #: Its output table, whose content must still be what it wrote (None: a delta, whose rows are appended).
    output: tuple[str | None, str] | None

    def inputs(self, conn: Connection, known: quiet.Markers | None = None) -> quiet.Inputs:
        """Its fingerprint now (taken before it computes anything); `known`: markers read already."""
        return quiet.fingerprint(conn, self.definition, self.reads, self.clock, today_utc(), known)

    def unchanged(
        self, conn: Connection, schema: str, inputs: quiet.Inputs, known: quiet.Markers | None = None
    ) -> bool:
        """Whether it last computed from these very inputs and its output is untouched since: it would skip."""
        return quiet.unchanged(conn, schema, self.reader, inputs, self.output, known)


def model_step(model: ModelSpec, refresh: Refresh) -> Step:
    """A SQL model: its SQL, the clock it reads and every table it reads."""
    query = model.sql.strip().rstrip(";").strip()
    found = quiet.tables_read(query)
    reads = None if found is None else list(dict.fromkeys([*((None, t) for t in model.model_deps), *found]))
    return Step(
        f"model:{model.name}", definition_of(query, refresh, "model"), reads, quiet.clock_of(query), (None, model.name)
    )


def sync_shapes(audience: AudienceSpec, allowed: dict[str, str] | None = None) -> list[SyncShape]:
    """What each sync sends; `allowed`: destination -> who it may receive (its consent condition)."""
    return [
        SyncShape(
            destination=s.destination,
            identifier_column=s.identifier_column,
            fields=dict(s.fields),
            allowed=(allowed or {}).get(s.destination),
            constants=membership_fields(audience, s),
        )
        for s in audience.syncs
    ]


def membership_fields(audience: AudienceSpec, sync: SyncSpec) -> dict[str, Any]:
    """The fields its destination type has every member of this sync carry (e.g. Braze's `in_<audience>`)."""
    kind = DESTINATION_TYPES.get(audience.destination_types.get(sync.destination, ""))
    if kind is None:
        return {}
    options = kind.SyncOptions.model_validate(sync.options)
    return kind.membership_fields(options, audience.name, sync.mode, sync.identifier_type)


def audience_definition(audience: AudienceSpec, shapes: list[SyncShape], members: str | None) -> str:
    """What decides the snapshot's rows: the file (condition, columns, each sync's fields) and who may be a member."""
    return definition_of(
        audience.model, audience.primary_key, audience.where, audience.columns_needed(), shapes, members
    )


def audience_step(audience: AudienceSpec, schema: str, members: str | None) -> Step:
    """An audience snapshot: its definition and hashes, its conditions' clock and tables, its model's rows."""
    shapes = sync_shapes(audience)
    definition = definition_of(
        audience_definition(audience, shapes, members), [s.hash_sql() for s in shapes], "snapshot"
    )
    found = quiet.tables_read(audience.where, members)
    reads = None if found is None else [(None, audience.model), *found]
    return Step(
        f"audience:{audience.name}",
        definition,
        reads,
        quiet.clock_of(audience.where, members),
        (schema, f"audience__{audience.name}"),
    )


def delta_step(audience: AudienceSpec, sync: SyncSpec, shape: SyncShape, schema: str) -> Step:
    """A pair's delta: the snapshot, the sync's fields and mode, and who may receive (the tables that reads)."""
    found = quiet.tables_read(shape.allowed)
    reads = None if found is None else [(schema, f"audience__{audience.name}"), *found]
    return Step(
        f"delta:{audience.name}:{sync.destination}",
        definition_of(shape, sync.mode),
        reads,
        quiet.clock_of(shape.allowed),
        None,
    )


def in_flight(conn: Connection, tables: PairTables) -> bool:
    """Whether a killed sync left rows that may or may not have been sent (its intents)."""
    return bool(
        conn.fetch_row(
            f"SELECT count(*) FROM {tables.inflight} WHERE audience = ? AND destination = ?",
            [tables.audience, tables.destination],
        )[0]
    )


def latest_delta_kept(conn: Connection, tables: PairTables) -> bool:
    """Whether the pair's latest delta still has every row (an archived one does not: compare in full)."""
    run = latest_delta_run(conn, tables)
    if run is None:
        return False
    (rows,) = conn.fetch_row(
        f"SELECT count(*) FROM {tables.delta} WHERE _seq BETWEEN ? AND ?", [run.first_seq, run.last_seq]
    )
    return rows == run.size


def delta_pending_only(
    conn: Connection,
    schema: str,
    step: Step,
    inputs: quiet.Inputs,
    tables: PairTables,
    known: quiet.Markers | None = None,
) -> bool:
    """Whether the delta compares only its previous delta's unacknowledged rows (nothing it reads changed)."""
    # Rows in flight from a killed run, or an archived previous delta, take the full comparison.
    return (
        step.unchanged(conn, schema, inputs, known) and not in_flight(conn, tables) and latest_delta_kept(conn, tables)
    )

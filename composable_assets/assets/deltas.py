"""Deltas: per (audience, destination) and day, the rows to add, update and remove at that destination."""

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg

from ..delta import quiet
from ..delta.changes import Watched
from ..delta.diff import compute_delta
from ..delta.refresh import delta_scope, drop_keys, snapshot_relation
from ..delta.snapshot import SyncShape
from ..delta.steps import delta_pending_only, delta_step
from ..governance.gates import judge_delta
from ..governance.provenance import code_version, file_sha256
from ..project import AudienceSpec, SyncSpec
from ..project.gates import GATE_NAMES, OVERRIDE_TAG, GatesSpec, overridden
from ..project.keys import DELTAS, WAREHOUSE_POOL, audience_key, delta_key
from ..store import PairTables, ensure_store
from ..warehouse import Warehouse
from .metadata import markdown_table, shown
from .models import incremental_run, plain_run

GATE_DESCRIPTIONS = {
    "max_remove_percent": "Send gate: a mirror removes at most this share of the destination's members in one run.",
    "max_change_percent": "Send gate: the audience did not shrink or grow by more than this share since the last delta.",
    "required_fields": "Send gate: every added or updated member has the required fields.",
    "unique_identifiers": "Send gate: no two members share an identifier.",
    "consent_applied": "Send gate: every added or updated member granted the destination's consent purpose.",
}


def utc_now() -> dt.datetime:
    """Naive UTC, the form every warehouse timestamp column here holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def require_tables(conn, reads: dict[str, str], what: str) -> None:
    """Fail naming project.yaml when a table a member condition reads (`reads`: table -> setting) is missing."""
    for table, setting in reads.items():
        if not conn.table_columns(None, table):
            raise dg.Failure(
                description=f"project.yaml `{setting}:` names the table `{table}`, which the warehouse does not "
                f"have; {what} is computed without it."
            )


@dataclass(frozen=True)
class DeltaAsset:
    """What one (audience, destination) delta asset is built from."""

    audience: AudienceSpec
    sync: SyncSpec
    shape: SyncShape
    schema: str
    partitions: dg.PartitionsDefinition
    warehouse_kind: str
    gates: GatesSpec
    samples: bool = False
    #: The warehouse tables `shape.allowed` reads -> the project.yaml setting naming them.
    reads: dict[str, str] = field(default_factory=dict)
    #: The audience snapshot is kept by key, so minute-level runs compare only its changed keys (and those whose
    #: consent, in the `watched` tables, changed).
    incremental: bool = False
    watched: list[Watched] = field(default_factory=list)
    op_tags: dict[str, str] = field(default_factory=dict)


def mode_text(scope, pending_only: bool) -> str:
    if scope.keys_table is None:
        return "full" + (f" ({scope.why})" if scope.why else "")
    if pending_only:
        return "skipped (nothing it reads changed: only unacknowledged rows compared)"
    return "incremental"


def build_delta_asset(spec: DeltaAsset) -> dg.AssetsDefinition:
    """The asset that computes one pair's rows to add, update and remove, relative to what it has acknowledged."""
    audience, sync, shape, schema, partitions = spec.audience, spec.sync, spec.shape, spec.schema, spec.partitions
    warehouse_kind, gates, samples, incremental = spec.warehouse_kind, spec.gates, spec.samples, spec.incremental
    reads, watched, op_tags = spec.reads or None, spec.watched or None, spec.op_tags or None
    tables = PairTables(schema, audience.name, sync.destination)
    key = delta_key(audience.name, sync.destination)
    # What decides the rows besides the ledger: the snapshot, the sync's fields and mode, and who may receive.
    step = delta_step(audience, sync, shape, schema)
    definition = step.definition

    @dg.asset(
        key=key,
        group_name=DELTAS,
        deps=[audience_key(audience.name)],
        partitions_def=partitions,
        description=f"Rows of `{audience.name}` to {'add, update and remove' if sync.mode == 'mirror' else 'add and update'} "
        f"at `{sync.destination}` ({sync.mode}), relative to what it has acknowledged.",
        owners=audience.owners or None,
        kinds={warehouse_kind, "delta"},
        tags={"mode": sync.mode},
        pool=WAREHOUSE_POOL,
        op_tags=op_tags,
        # What decides the rows: the audience file, and from the destination's entry only who may receive (consent);
        # the gates decide whether they leave.
        code_version=code_version(file_sha256(audience.path), sync.destination, shape.allowed, gates.model_dump()),
        metadata={"mode": sync.mode, "destination": sync.destination, "gates": gates.model_dump_json()},
        # Send gates: a failed one stops the run before the sync (nothing leaves); see project/gates.py.
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=GATE_DESCRIPTIONS[name])
            for name in GATE_NAMES
        ],
    )
    def _delta(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        try:
            lifted = overridden(context.run.tags.get(OVERRIDE_TAG))
        except ValueError as exc:
            raise dg.Failure(description=str(exc)) from None
        reader = step.reader
        with warehouse.connect() as conn:
            require_tables(conn, reads or {}, f"no delta of {audience.name} -> {sync.destination}")
            inputs = step.inputs(conn) if plain_run(context) else quiet.Inputs(None, "only plain full runs skip")
            # Nothing it reads changed since its last full delta: only rows the destination has not acknowledged
            # since (rejected, unsent) can still differ; rows in flight from a killed run take the full comparison.
            pending_only = False
            if inputs.fingerprint is not None:
                ensure_store(conn, schema)  # where the fingerprints are kept
                pending_only = delta_pending_only(conn, schema, step, inputs, tables)
            scope = delta_scope(
                conn,
                schema=schema,
                tables=tables,
                watched=[
                    Watched(tables.audience, "_key", (snapshot_relation(audience.name),), guarded=False),
                    *(watched or []),
                ]
                if incremental
                else [],
                incremental=(incremental and incremental_run(context)) or pending_only,
                definition=definition,
            )

            def committed() -> None:
                scope.commit()
                quiet.record(conn, schema, reader, inputs, None, utc_now())

            try:
                run = compute_delta(
                    conn,
                    tables,
                    shape,
                    sync.mode,
                    run_id=context.run.run_id,
                    partition=dt.date.fromisoformat(context.partition_key),
                    now=utc_now(),
                    keys=scope.keys_table,
                    # With the rows: what the new delta was computed from (else dropped), so a later run compares
                    # only unacknowledged rows exactly when the snapshot is still what this delta saw.
                    on_commit=scope.commit if pending_only else committed,
                )
            finally:
                drop_keys(conn, scope)
            preview = (
                []
                if not run.size
                else conn.fetch_arrow(
                    f"SELECT _op AS change, _key AS key, _identifier AS identifier, _fields AS fields "
                    f"FROM {tables.delta} WHERE _seq BETWEEN ? AND ? ORDER BY _seq LIMIT 5",
                    [run.first_seq, run.last_seq],
                ).to_pylist()
            )
            verdicts = judge_delta(conn, tables, shape, run, sync.mode, gates, lifted)
        context.log.info(
            f"delta of {audience.name} -> {sync.destination}: {run.added} to add, {run.updated} to update, "
            f"{run.removed} to remove (audience of {run.audience_size})"
        )
        return dg.MaterializeResult(
            metadata=shown(
                {
                    "mode": mode_text(scope, pending_only),
                    "skip": inputs.why or "compares only unacknowledged rows when nothing it reads changed",
                    **({"affected_keys": scope.affected_keys} if scope.keys_table else {}),
                    "added": run.added,
                    "updated": run.updated,
                    "removed": run.removed,
                    "total": run.size,
                    "audience_size": run.audience_size,
                    "dagster/row_count": run.size,
                    "seq_range": f"{run.first_seq}..{run.last_seq}",
                    "preview": markdown_table(preview),
                },
                samples,
            ),
            check_results=[
                dg.AssetCheckResult(
                    check_name=v.name,
                    passed=v.passed or v.overridden,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"overridden by run tag {OVERRIDE_TAG}: {v.detail}" if v.overridden else v.detail,
                    metadata={**v.metadata, "overridden": v.overridden},
                )
                for v in verdicts
            ],
        )

    return _delta

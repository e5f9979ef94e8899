"""Provenance: which code and which upstream data every delivered row came from, and `explain` for one person.

Three records make a delivered row traceable (tables in delta/tables.py):
- the sync log (`sync_log`): one row per delivered or rejected delta row, written with the ledger fold and with
  `sync_failures` (delta/ledger.py); the payload itself stays in the delta's `_fields`;
- the sync runs (`sync_runs`): one row per sync run of a pair: its code version, the audience and model files'
  sha256, the package version and the Dagster data versions and runs of everything upstream of the delta;
- Dagster's own code versions on every model, audience, delta, sync and stream asset, so the UI shows a code
  change as staleness.

`explain` joins them back, with the stream sent logs, the ledgers, audience membership, consent and deletion
requests, into records the command line prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from ..delta.snapshot import snapshot_table
from ..destinations.base import Record
from ..destinations.changes import changed_fields
from ..project.project import Project
from ..project.specs import StreamSpec, StreamSyncSpec
from ..store import PairTables, StreamTables, types_of
from ..store.registry import SYNC_LOG, SYNC_RUNS
from ..streams.shape import StreamShape
from ..warehouse import Connection
from ..warehouse.sql import ident, json_object, table

try:
    PACKAGE_VERSION = importlib.metadata.version("composable_assets")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    PACKAGE_VERSION = "unknown"

# The proof of deletions (governance/deletion.py), read when it exists.
DELETION_LOG = "deletion_log"
# Columns that may hold the person's key in a table we only read, after the project's own key columns.
KEY_COLUMNS = ("key", "member_key", "_key", "customer_id")


# ---------------------------------------------------------------------------------------------------------------
# Code versions


def file_sha256(path: Path | None) -> str | None:
    """The sha256 of a project file's bytes (None without a file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None


def code_version(*parts: Any) -> str:
    """A short, stable hash of what defines an asset: file bytes, or settings (as canonical JSON)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Upstream data versions, from the Dagster instance


def run_data_version(context: dg.AssetExecutionContext) -> dg.DataVersion:
    """The data version of a model or audience table: the run that rebuilt it.

    Dagster's default for an asset with a code version is a hash of that code version and its inputs' versions.
    A model's inputs are warehouse tables that change without Dagster seeing it (they are observed only on
    request), so two runs over different data would share one version, and a delivered row could not be told
    apart by the data it came from. Every rebuild is new data here (CREATE OR REPLACE), so its run names it.
    """
    return dg.DataVersion(context.run.run_id)


def upstream_versions(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str, run_id: str) -> dict[str, dict]:
    """Everything the materialization of `key` (partition, run) was computed from, transitively.

    asset key -> {data_version, run_id, storage_id, code_version}: Dagster's data version of each input as the
    materialization saw it, and which run materialized (or observed) it. Read from the data provenance Dagster
    records on each materialization; {} when `key` was not materialized by that run (a delta computed outside
    Dagster).
    """
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), 20)
    record = next((r for r in records.records if r.run_id == run_id), None)
    found: dict[str, dict] = {}
    pending = [record] if record is not None else []
    while pending:
        materialization = pending.pop().event_log_entry.asset_materialization  # set on every materialization record
        tags = materialization.tags if materialization is not None else None
        provenance = dg.DataProvenance.from_tags(tags or {})
        if provenance is None:  # an asset without a code version records no provenance
            continue
        for upstream, version in provenance.input_data_versions.items():
            name = upstream.to_user_string()
            if name in found:
                continue
            storage_id = provenance.input_storage_ids.get(upstream)
            entry = {"data_version": version.value, "storage_id": storage_id, "run_id": None, "code_version": None}
            found[name] = entry
            if storage_id is None:
                continue
            upstream_record = _record(instance, upstream, storage_id)
            if upstream_record is not None:
                entry["run_id"] = upstream_record.run_id
                materialization = upstream_record.event_log_entry.asset_materialization
                if materialization is not None:  # an observed source has no inputs to follow
                    upstream_provenance = dg.DataProvenance.from_tags(materialization.tags or {})
                    entry["code_version"] = upstream_provenance.code_version if upstream_provenance else None
                    pending.append(upstream_record)
    return found


def _record(instance: dg.DagsterInstance, key: dg.AssetKey, storage_id: int):
    """The materialization (or, for an observed source, the observation) stored under `storage_id`."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, storage_ids=[storage_id])
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        records = fetch(records_filter, 1).records
        if records:
            return records[0]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Sync runs


@dataclass(frozen=True)
class SyncRun:
    """What one sync run of a pair delivers, and from which code and data."""

    run_id: str
    partition: dt.date
    delta_run_id: str
    code_version: str | None
    audience_sha256: str | None
    model_sha256: str | None
    upstream: dict[str, dict] = field(default_factory=dict)


def start_sync_run(conn: Connection, tables: PairTables, run: SyncRun, now: dt.datetime) -> None:
    """Record a sync run before it sends anything, so even a killed run's acknowledged rows trace to their code."""
    pair = [tables.audience, tables.destination]
    # A retried step runs again under the same run id: one row per run and pair.
    conn.execute(
        f"DELETE FROM {tables.sync_runs} WHERE run_id = ? AND audience = ? AND destination = ?", [run.run_id, *pair]
    )
    values = {
        "run_id": run.run_id,
        "partition_date": run.partition,
        "audience": tables.audience,
        "destination": tables.destination,
        "delta_run_id": run.delta_run_id,
        "code_version": run.code_version,
        "package_version": PACKAGE_VERSION,
        "audience_sha256": run.audience_sha256,
        "model_sha256": run.model_sha256,
        "upstream_versions": json.dumps(run.upstream, sort_keys=True),
        "status": "started",
        "added": 0,
        "updated": 0,
        "removed": 0,
        "failed": 0,
        "unsent": 0,
        "started_at": now,
        "finished_at": None,
    }
    columns = ", ".join(types_of(SYNC_RUNS))
    placeholders = ", ".join(
        f"CAST(? AS {type_})" if values[name] is None else "?" for name, type_ in types_of(SYNC_RUNS).items()
    )
    conn.execute(
        f"INSERT INTO {tables.sync_runs} ({columns}) VALUES ({placeholders})", [values[c] for c in types_of(SYNC_RUNS)]
    )


def finish_sync_run(conn: Connection, tables: PairTables, run_id: str, report, now: dt.datetime) -> None:
    """Record how a sync run ended: its counts (a SyncReport), or `failed` when it raised (report None)."""
    if report is None:
        status, counts = "failed", [0, 0, 0, 0, 0]
    else:
        status = "stopped" if report.stopped_by else "succeeded"
        counts = [report.added, report.updated, report.removed, report.failed, report.unsent]
    conn.execute(
        f"UPDATE {tables.sync_runs} SET status = ?, added = ?, updated = ?, removed = ?, failed = ?, unsent = ?, "
        "finished_at = ? WHERE run_id = ? AND audience = ? AND destination = ?",
        [status, *counts, now, run_id, tables.audience, tables.destination],
    )


def abandon_unfinished(conn: Connection, tables: PairTables, run_id: str, now: dt.datetime) -> list[str]:
    """Mark `abandoned` the pair's runs still `started` (killed before they could finish); returns their run ids.

    Called by the holder of the pair's lease: no other run of the pair can be alive, so every such row is a dead one.
    """
    pair = [tables.audience, tables.destination]
    dead = [
        r
        for (r,) in conn.fetch_all(
            f"SELECT run_id FROM {tables.sync_runs} WHERE audience = ? AND destination = ? AND status = 'started' "
            "AND run_id <> ? ORDER BY started_at",
            [*pair, run_id],
        )
    ]
    if dead:
        conn.execute(
            f"UPDATE {tables.sync_runs} SET status = 'abandoned', finished_at = ? WHERE audience = ? "
            "AND destination = ? AND status = 'started' AND run_id <> ?",
            [now, *pair, run_id],
        )
    return dead


@dataclass(frozen=True)
class Rejection:
    """One row a destination refused in a sync run, and its reason: what a data team fixes."""

    destination: str
    key: str
    identifier: str | None
    op: str
    reason: str | None
    sync_run_id: str
    at: dt.datetime


def rejections(
    conn: Connection, tables: PairTables, run_id: str | None = None, limit: int | None = None
) -> tuple[str | None, list[Rejection]]:
    """The rows the pair's sync run `run_id` (default: its latest) had rejected: (that run's id, its rejections).

    Read from the sync log, which keeps them with their identifier and reason (sync_failures has them too).
    """
    if not conn.table_exists(tables.schema, SYNC_RUNS.name) or not conn.table_exists(tables.schema, SYNC_LOG.name):
        return None, []
    if run_id is None:
        row = conn.fetch_one(
            f"SELECT run_id FROM {tables.sync_runs} WHERE audience = ? AND destination = ? "
            "ORDER BY started_at DESC LIMIT 1",
            [tables.audience, tables.destination],
        )
        if row is None:
            return None, []
        run_id = row[0]
    rows = conn.fetch_all(
        f"SELECT destination, key, identifier, op, reason, sync_run_id, recorded_at FROM {tables.sync_log} "
        "WHERE audience = ? AND destination = ? AND sync_run_id = ? AND status = 'rejected' ORDER BY seq"
        + (f" LIMIT {int(limit)}" if limit is not None else ""),
        [tables.audience, tables.destination, run_id],
    )
    return run_id, [Rejection(*row) for row in rows]


def finish_quietly(conn: Connection, tables: PairTables, run_id: str, now: dt.datetime) -> None:
    """Mark a sync run failed while its own error propagates; a broken connection must not hide that error."""
    with contextlib.suppress(Exception):
        finish_sync_run(conn, tables, run_id, None, now)


# ---------------------------------------------------------------------------------------------------------------
# explain


@dataclass(frozen=True)
class Change:
    """One row of a delta sent to a destination (or rejected by it), with where it came from."""

    audience: str
    destination: str
    at: dt.datetime
    op: str  # add | update | remove
    status: str  # delivered | rejected
    reason: str | None
    identifier: str | None
    #: Every mapped field of the row (add/update); None for a remove or once the delta partition is archived.
    fields: dict[str, Any] | None
    #: What the ledger held before (update/remove).
    previous: dict[str, Any] | None
    #: Fields whose value differs from `previous` (every non-null field for an add): what a destination that sends
    #: only changes (Braze, Iterable: billed per data point) was sent; see destinations/changes.py.
    changed: list[str]
    sync_run_id: str
    delta_run_id: str
    partition: dt.date
    seq: int
    code_version: str | None = None
    package_version: str | None = None
    audience_sha256: str | None = None
    model_sha256: str | None = None
    upstream: dict[str, dict] = field(default_factory=dict)

    @property
    def changed_values(self) -> dict[str, Any]:
        return {name: (self.fields or {}).get(name) for name in self.changed}


@dataclass(frozen=True)
class SentEvent:
    """One event of a stream about the person, as its sent log recorded it."""

    stream: str
    destination: str
    event: str
    event_id: str
    at: dt.datetime
    status: str  # sent | rejected | in_doubt | late_skipped
    reason: str | None
    run_id: str
    cursor_value: dt.datetime | None
    identifier: str | None
    properties: dict[str, Any]


@dataclass(frozen=True)
class LedgerEntry:
    """What a destination holds for the person now, as acknowledged."""

    audience: str
    destination: str
    identifier: str | None
    fields: dict[str, Any] | None
    synced_at: dt.datetime
    run_id: str


@dataclass
class Explanation:
    """Everything known about what was sent where for one person, and why."""

    customer_id: str
    changes: list[Change] = field(default_factory=list)
    events: list[SentEvent] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    #: Audiences the person is a member of now (their current snapshot).
    audiences: list[str] = field(default_factory=list)
    #: Consent purpose -> granted, from the project's consent table.
    consents: dict[str, bool] = field(default_factory=dict)
    #: Rows of the deletion request and deletion log tables about the person, where those tables exist.
    deletions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return any([self.changes, self.events, self.ledger, self.audiences, self.consents, self.deletions])

    @property
    def destinations(self) -> list[str]:
        return sorted(
            {c.destination for c in self.changes}
            | {e.destination for e in self.events}
            | {e.destination for e in self.ledger}
        )


def explain(
    conn: Connection,
    project: Project,
    customer_id: str,
    *,
    audience: str | None = None,
    destination: str | None = None,
    since: dt.date | None = None,
) -> Explanation:
    """What was sent where for `customer_id` (an audience primary key, compared as text), and why."""
    schema = project.settings.schema_name
    key = str(customer_id)
    start = dt.datetime.combine(since, dt.time()) if since is not None else None
    result = Explanation(key)

    def wanted(a: str | None, d: str | None) -> bool:
        return audience in (None, a) and destination in (None, d)

    pairs = {(a.name, s.destination) for a in project.audiences.values() for s in a.syncs}
    log = table(schema, SYNC_LOG.name)
    if conn.table_exists(schema, SYNC_LOG.name):
        # Pairs no longer in the project (a removed audience file) still explain what they sent.
        pairs |= set(conn.fetch_all(f"SELECT DISTINCT audience, destination FROM {log} WHERE key = ?", [key]))
    for a, d in sorted(pairs):
        if not wanted(a, d):
            continue
        tables = PairTables(schema, a, d)
        result.changes += _changes(conn, tables, key, start)
        result.ledger += _ledger(conn, tables, key)
    for stream in project.streams.values():
        for sync in stream.syncs:
            if audience is None and destination in (None, sync.destination):
                result.events += _events(conn, project, stream, sync, key, start)
    result.changes.sort(key=lambda c: (c.at, c.seq))
    result.events.sort(key=lambda e: (e.at, e.event_id))
    result.audiences = [a for a in sorted(project.audiences) if _is_member(conn, schema, a, key)]
    result.consents = _consents(conn, project, key)
    result.deletions = _deletions(conn, project, key)
    return result


def _changes(conn: Connection, tables: PairTables, key: str, start: dt.datetime | None) -> list[Change]:
    schema = tables.schema
    if not conn.table_exists(schema, SYNC_LOG.name):
        return []
    # The delta partition may have been archived (dropped from the hot table): the log row stays, fields unknown.
    has_delta = conn.table_exists(schema, f"delta__{tables.audience}__{tables.destination}")
    payload = "d._fields, d._previous" if has_delta else "CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR)"
    join = f"LEFT JOIN {tables.delta} AS d ON d._seq = s.seq " if has_delta else ""
    rows = conn.fetch_all(
        "SELECT s.audience, s.destination, s.recorded_at, s.op, s.status, s.reason, s.identifier, "
        f"{payload}, s.sync_run_id, s.delta_run_id, s.partition_date, s.seq, "
        "r.code_version, r.package_version, r.audience_sha256, r.model_sha256, r.upstream_versions "
        f"FROM {tables.sync_log} AS s {join}"
        f"LEFT JOIN {tables.sync_runs} AS r ON r.run_id = s.sync_run_id AND r.audience = s.audience "
        "AND r.destination = s.destination "
        "WHERE s.audience = ? AND s.destination = ? AND s.key = ? AND (CAST(? AS TIMESTAMP) IS NULL OR s.recorded_at >= ?)",
        [tables.audience, tables.destination, key, start, start],
    )
    changes = []
    for (
        a,
        d,
        at,
        op,
        status,
        reason,
        identifier,
        fields,
        previous,
        sync_run,
        delta_run,
        partition,
        seq,
        version,
        package,
        audience_sha,
        model_sha,
        upstream,
    ) in rows:
        fields, previous = _json(fields), _json(previous)
        changes.append(
            Change(
                audience=a,
                destination=d,
                at=at,
                op=op,
                status=status,
                reason=reason,
                identifier=identifier,
                fields=fields,
                previous=previous,
                changed=_changed(op, fields, previous),
                sync_run_id=sync_run,
                delta_run_id=delta_run,
                partition=partition,
                seq=seq,
                code_version=version,
                package_version=package,
                audience_sha256=audience_sha,
                model_sha256=model_sha,
                upstream=_json(upstream) or {},
            )
        )
    return changes


def _changed(op: str, fields: dict | None, previous: dict | None) -> list[str]:
    """The fields a destination that sends only changes (Braze, Iterable) was sent, by the rule they use."""
    if op == "remove" or fields is None:
        return []
    return list(changed_fields(Record(seq=0, key="", change=op, identifier="", fields=fields, previous=previous)))


def _ledger(conn: Connection, tables: PairTables, key: str) -> list[LedgerEntry]:
    if not conn.table_exists(tables.schema, f"ledger__{tables.audience}__{tables.destination}"):
        return []
    rows = conn.fetch_all(
        f"SELECT _identifier, _fields, _synced_at, _run_id FROM {tables.ledger} WHERE _key = ?", [key]
    )
    return [LedgerEntry(tables.audience, tables.destination, i, _json(f), at, run) for i, f, at, run in rows]


def _events(
    conn: Connection, project: Project, stream: StreamSpec, sync: StreamSyncSpec, key: str, start: dt.datetime | None
) -> list[SentEvent]:
    """The person's rows of the stream's table, joined to the pair's sent log on the event id."""
    tables = StreamTables(project.settings.schema_name, stream.name, sync.destination)
    key_column = stream.key or (project.settings.consent.key if project.settings.consent else None)
    columns = {name.lower() for name, _ in conn.table_columns(None, stream.table)}
    if key_column is None or key_column.lower() not in columns:
        return []  # no column says whose event a row is
    if not conn.table_exists(project.settings.schema_name, f"stream_sent__{stream.name}__{sync.destination}"):
        return []
    shape = StreamShape.of(stream, sync)
    rows = conn.fetch_all(
        "SELECT s.event_id, s.recorded_at, s.status, s.reason, s.run_id, s.cursor_value, "
        f"CAST(e.{ident(sync.identifier_column)} AS VARCHAR), {json_object(dict(sync.properties), alias='e')} "
        f"FROM {ident(stream.table)} AS e JOIN {tables.sent} AS s ON s.event_id = {shape.event_id_sql('e')} "
        f"WHERE CAST(e.{ident(key_column)} AS VARCHAR) = ? AND (CAST(? AS TIMESTAMP) IS NULL OR s.recorded_at >= ?)",
        [key, start, start],
    )
    seen: dict[str, SentEvent] = {}  # an appended table may hold an event id twice; it was sent once
    for event_id, at, status, reason, run_id, cursor, identifier, properties in rows:
        seen.setdefault(
            event_id,
            SentEvent(
                stream.name,
                sync.destination,
                sync.event,
                event_id,
                at,
                status,
                reason,
                run_id,
                cursor,
                identifier,
                _json(properties) or {},
            ),
        )
    return list(seen.values())


def _is_member(conn: Connection, schema: str, audience: str, key: str) -> bool:
    if not conn.table_exists(schema, f"audience__{audience}"):
        return False
    return conn.fetch_row(f"SELECT count(*) FROM {snapshot_table(schema, audience)} WHERE _key = ?", [key])[0] > 0


def _consents(conn: Connection, project: Project, key: str) -> dict[str, bool]:
    consent = project.settings.consent
    if consent is None or not conn.table_exists(None, consent.table):
        return {}
    rows = conn.fetch_all(
        f"SELECT {ident(consent.purpose)}, {ident(consent.granted)} FROM {ident(consent.table)} "
        f"WHERE CAST({ident(consent.key)} AS VARCHAR) = ?",
        [key],
    )
    return {purpose: bool(granted) for purpose, granted in rows}


def _deletions(conn: Connection, project: Project, key: str) -> list[dict[str, Any]]:
    """The person's deletion requests (project.yaml `deletion_requests:`) and their proof (`deletion_log`)."""
    spec = project.settings.deletion_requests
    # (schema, table, its key column if known)
    places: list[tuple[str | None, str, str | None]] = [(None, spec.table, spec.key)] if spec is not None else []
    places.append((project.settings.schema_name, DELETION_LOG, None))
    found = []
    for schema, name, column in places:
        columns = [c for c, _ in conn.table_columns(schema, name)]
        column = column if column in columns else _key_column(project, columns)
        if column is None:
            continue
        rows = conn.fetch_arrow(
            f"SELECT * FROM {table(schema, name)} WHERE CAST({ident(column)} AS VARCHAR) = ?", [key]
        ).to_pylist()
        found += [{"table": name, **row} for row in rows]
    return found


def _key_column(project: Project, columns: list[str]) -> str | None:
    """The column of a table we only read that holds the person's key."""
    named = [s.key for s in (project.settings.deletion_requests, project.settings.consent) if s is not None]
    lowered = {c.lower(): c for c in columns}
    return next((lowered[c.lower()] for c in [*named, *KEY_COLUMNS] if c.lower() in lowered), None)


def _json(value: Any) -> Any:
    """A JSON column as Python: drivers hand back text (DuckDB, Snowflake) or parsed values (psycopg2)."""
    return json.loads(value) if isinstance(value, str) else value

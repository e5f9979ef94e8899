"""Deletion requests (right to be forgotten): delete each person at every destination that ever received them.

One run (the asset `governance/deletion_requests`):

1. reads the requests not yet done: rows of the project's requests table, plus requests the proof table
   (`deletion_log`, governance/deletion_log.py) still shows failing, so a request row deleted early is finished;
2. finds who received each person, with the identifiers actually sent: every pair's ledger, the pair's delta rows
   that were acknowledged or possibly in flight (the history: a mirror may have removed them since), its delta
   rows archived to Parquet (governance/archive.py), and every event stream's events of the person that were
   sent (sent log), or are older than the log's pruning horizon;
3. asks each destination to forget them (`Destination.forget`, batched by `Capabilities.forget_batch_size`); an
   identifier done by an earlier run is not asked again, a failed one is asked again next run;
4. purges the archive (`purge_archived`: archived rows by key, archived outbox lines by identifier) of each person
   no destination failed for; it rewrites files, so it runs before, not inside, the transaction that follows;
5. in one warehouse transaction: purges the person from the ledger, delta, `sync_failures` and `sync_log` of each
   pair whose destination no longer fails for them (a failed one keeps its rows: they name whom to delete next
   time), from every audience snapshot and from the change journal (`key_changes`), blanks the destinations' reasons on their events in the stream sent
   logs (the rows stay: they keep an event from being sent twice), and writes the proof: one row per outcome and
   per table purged.

Nothing here keeps a raw identifier: the proof holds the request id, the key and an identifier's sha256, and
answers are scrubbed of the identifiers they echo (Iterable repeats the e-mail in "User does not exist").
That the person is never sent again is not done here but in every delta and stream (governance/consent.py).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..delta.changes import JOURNAL
from ..delta.snapshot import snapshot_table
from ..destinations import Destination, DestinationError, ForgetTarget, Forgotten
from ..destinations.base import FAILED, NOT_FOUND, PURGED
from ..project import MissingSecretError, Project, ProjectError, StreamSpec, parse_where
from ..project.keys import Delivery
from ..project.loader import PROJECT_FILE
from ..store import PairTables, StreamTables, ensure_store
from ..store.registry import SYNC_LOG
from ..streams.shape import StreamShape
from ..warehouse import Connection
from ..warehouse.base import insert_rows
from ..warehouse.sql import DIALECT, ident, table
from .archive import ArchiveLocation, archive_dataset, archived_paths, purge_archived
from .consent import member_key_column
from .deletion_log import (
    COLUMNS,
    NOBODY,
    deletion_log,
    done_identifiers,
    identifier_hash,
    request_states,
)
from .pii import scrub

# Bound values per `IN (...)` list: a bounded statement on every engine.
KEYS_PER_QUERY = 500
# Requests older than this and not done make the asset check `requests_honoured` warn (GDPR: "without undue delay").
HONOUR_WITHIN = dt.timedelta(days=3)
ARCHIVE = "(archive)"
# The destination column of the proof for a person purged from an audience snapshot.
SNAPSHOT = "(snapshot)"


class DeletionSetupError(ProjectError):
    """project.yaml `deletion_requests:` does not match the warehouse (missing table or column)."""


@dataclass(frozen=True)
class Request:
    request_id: str
    key: str
    requested_at: dt.datetime | None
    #: Whether an earlier run recorded outcomes for it (then it is pending because one of them failed).
    seen: bool = False


@dataclass(frozen=True)
class Recipient:
    """One identifier a destination got for a person, and through which delivery."""

    key: str
    destination: str
    #: The delivery that reached them, as stored in the deletion log: "audience <name>" or "stream <name>"
    #: (`str(Delivery)`; `Delivery.parse` reads it back).
    source: str
    identifier_type: str
    identifier: str


@dataclass(frozen=True)
class Outcome:
    """One proof row: a recipient's outcome at its destination, or a table purged (recipient None)."""

    key: str
    destination: str
    source: str | None
    place: str | None
    status: str
    response: str | None = None
    recipient: Recipient | None = None
    purged_rows: int | None = None


@dataclass
class DeletionReport:
    """What one run did: the requests it worked on, each outcome, and what could not be looked at."""

    requests: list[Request] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """destination -> status -> outcomes (a purge counts once per table and person, not per row)."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for o in self.outcomes:
            counts[o.destination][o.status] += 1
        return {d: dict(c) for d, c in sorted(counts.items())}

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.status == FAILED)


def process_deletion_requests(
    conn: Connection,
    project: Project,
    destinations: dict[str, Destination],
    warehouse: Any,
    *,
    run_id: str,
    now: dt.datetime,
    archive: ArchiveLocation | None = None,
) -> DeletionReport:
    """Work every request not yet done (see the module docstring); returns what was done."""
    schema = project.settings.schema_name
    ensure_store(conn, schema)
    report = DeletionReport(requests=pending_requests(conn, project))
    if not report.requests:
        return report
    keys = sorted({r.key for r in report.requests})
    recipients = find_recipients(conn, project, keys, report.warnings, archive)
    by_key: dict[str, list[Request]] = defaultdict(list)
    for request in report.requests:
        by_key[request.key].append(request)
    done = done_identifiers(conn, schema, [r.request_id for r in report.requests])

    def still_to_do(r: Recipient) -> bool:
        return any(
            (q.request_id, r.destination, r.source, r.identifier_type, identifier_hash(r.identifier)) not in done
            for q in by_key[r.key]
        )

    report.outcomes += forget_everywhere(
        [r for r in recipients if still_to_do(r)], project, destinations, warehouse, run_id
    )
    failing = {(o.key, o.destination, o.source) for o in report.outcomes if o.status == FAILED}
    if archive is not None:
        settled = [k for k in keys if not any(f[0] == k for f in failing)]
        report.outcomes += purge_archive(conn, archive, schema, settled, recipients, run_id)
    # A request nobody ever received: the proof that we looked.
    reached = {r.key for r in recipients}
    report.outcomes += [
        Outcome(key, NOBODY, None, None, NOT_FOUND, "no destination has received this person")
        for key, requests in by_key.items()
        if key not in reached and any(not q.seen for q in requests)
    ]
    # One transaction: the purge and its proof appear together; a crash before the commit redoes both next run.
    with conn.transaction():
        report.outcomes += purge_pairs(conn, project, keys, failing)
        report.outcomes += purge_snapshots(conn, project, keys)
        purge_change_journal(conn, project, keys)
        report.outcomes += blank_stream_reasons(conn, project, keys)
        insert_rows(conn, deletion_log(schema), COLUMNS, proof_rows(report, by_key, done, run_id, now))
    return report


def pending_requests(conn: Connection, project: Project) -> list[Request]:
    """Requests not yet done: from the requests table, and any the proof still shows failing."""
    spec = project.settings.deletion_requests
    if spec is None:
        return []
    settings_file = project.root / PROJECT_FILE
    columns = {name.lower() for name, _ in conn.table_columns(None, spec.table)}
    if not columns:
        raise DeletionSetupError(
            f"deletion_requests: table `{spec.table}` does not exist in the warehouse", settings_file, root=project.root
        )
    missing = [
        f"{setting}: `{column}`"
        for setting, column in (("key", spec.key), ("requested_at", spec.requested_at), ("id", spec.id))
        if column.lower() not in columns
    ]
    if missing:
        raise DeletionSetupError(
            f"deletion_requests: table `{spec.table}` has no column for {', '.join(missing)} "
            f"(its columns: {', '.join(sorted(columns))})",
            settings_file,
            root=project.root,
        )
    rows = conn.fetch_all(
        f"SELECT CAST({ident(spec.id)} AS VARCHAR), CAST({ident(spec.key)} AS VARCHAR), "
        f"CAST({ident(spec.requested_at)} AS TIMESTAMP) FROM {ident(spec.table)} "
        f"WHERE {ident(spec.id)} IS NOT NULL AND {ident(spec.key)} IS NOT NULL"
    )
    states = request_states(conn, project.settings.schema_name)
    requests = {
        request_id: Request(request_id, key, requested_at, seen=request_id in states)
        for request_id, key, requested_at in rows
        if not (request_id in states and states[request_id].done)
    }
    for state in states.values():
        if not state.done and state.request_id not in requests:
            requests[state.request_id] = Request(state.request_id, state.key, state.requested_at, seen=True)
    return sorted(requests.values(), key=lambda r: (r.requested_at or dt.datetime.min, r.request_id))


def find_recipients(
    conn: Connection, project: Project, keys: list[str], warnings: list[str], archive: ArchiveLocation | None = None
) -> list[Recipient]:
    """Every (destination, delivery, identifier) that reached one of these people; see the module docstring."""
    found: set[Recipient] = set()
    schema = project.settings.schema_name
    for audience in project.audiences.values():
        for sync in audience.syncs:
            tables = PairTables(schema, audience.name, sync.destination)
            if not conn.table_exists(schema, f"ledger__{audience.name}__{sync.destination}"):
                continue  # never synced
            pair = [audience.name, sync.destination]
            rows: list[tuple] = []
            for chunk, marks in _key_chunks(keys):
                rows += conn.fetch_all(_pair_identifiers_sql(tables, marks), [*chunk, *chunk, *pair, *pair])
            if archive is not None:
                rows += _archived_identifiers(
                    conn, archive, schema, f"delta__{audience.name}__{sync.destination}", keys
                )
            for key, identifier in rows:
                source = str(Delivery("audience", audience.name))
                found.add(Recipient(key, sync.destination, source, sync.identifier_type, identifier))
    for stream in project.streams.values():
        found |= _stream_recipients(conn, project, stream, keys, warnings)
    return sorted(found, key=lambda r: (r.key, r.destination, r.source, r.identifier_type, r.identifier))


def _key_chunks(keys: list[str]) -> Iterator[tuple[list[str], str]]:
    """(chunk of keys, its `?, ?, ...`): bounded `IN` lists on every engine."""
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        yield chunk, ", ".join(["?"] * len(chunk))


def _pair_identifiers_sql(tables: PairTables, marks: str) -> str:
    """(key, identifier) the pair's destination has or may have had: the ledger, and acknowledged or in-flight rows.

    Bound: the keys twice, then audience and destination twice.
    """
    delivered = (
        f"EXISTS (SELECT 1 FROM {tables.acks} AS a WHERE a.audience = ? AND a.destination = ? "
        "AND d._seq BETWEEN a.first_seq AND a.last_seq) "
        f"OR EXISTS (SELECT 1 FROM {tables.inflight} AS f WHERE f.audience = ? AND f.destination = ? "
        "AND d._seq BETWEEN f.first_seq AND f.last_seq)"
    )
    return (
        f"SELECT _key, _identifier FROM {tables.ledger} WHERE _identifier IS NOT NULL AND _key IN ({marks}) "
        f"UNION SELECT d._key, d._identifier FROM {tables.delta} AS d "
        f"WHERE d._identifier IS NOT NULL AND d._key IN ({marks}) AND ({delivered})"
    )


def _archived_identifiers(
    conn: Connection, archive: ArchiveLocation, schema: str, name: str, keys: list[str]
) -> list[tuple]:
    """(key, identifier) of a delta's archived rows about these people: all of them were sent, long ago."""
    paths = [archive.path(p) for p in archived_paths(conn, schema, name)]
    if not paths:
        return []
    import pyarrow.compute as pc  # here: the archive is read rarely, and pyarrow takes ~0.3 s to import

    # Read only two columns of the rows asked for (Parquet statistics skip most of the files' row groups).
    rows = archive_dataset(archive, paths).to_table(
        columns=["_key", "_identifier"], filter=pc.field("_key").isin(keys) & pc.field("_identifier").is_valid()
    )
    return list(zip(rows["_key"].to_pylist(), rows["_identifier"].to_pylist()))


def purge_archive(
    conn: Connection, archive: ArchiveLocation, schema: str, keys: list[str], recipients: list[Recipient], run_id: str
) -> list[Outcome]:
    """Each person's archived rows and archived outbox lines removed, one proof row per archived table touched."""
    outcomes: list[Outcome] = []
    for key in keys:
        identifiers = {r.identifier for r in recipients if r.key == key}
        removed = purge_archived(conn, archive, schema, keys=[key], identifiers=identifiers, run_id=run_id)
        outcomes += [
            Outcome(key, ARCHIVE, None, f"{archive.display}/{name}", PURGED, purged_rows=n)
            for name, n in sorted(removed.items())
            if n
        ]
    return outcomes


def _stream_recipients(
    conn: Connection, project: Project, stream: StreamSpec, keys: list[str], warnings: list[str]
) -> set[Recipient]:
    """Identifiers of the person's events a stream sent (or may have sent, behind its sent log's pruning horizon)."""
    key_column = member_key_column(project, stream)
    columns = {name.lower() for name, _ in conn.table_columns(None, stream.table)}
    schema = project.settings.schema_name
    if not columns and not any(
        conn.table_exists(schema, f"stream_sent__{stream.name}__{s.destination}") for s in stream.syncs
    ):
        return set()  # neither the table nor a sent log yet: the stream has never run, it sent nobody anything
    if not columns:
        warnings.append(
            f"stream {stream.name}: table `{stream.table}` is not in the warehouse; its events not searched"
        )
        return set()
    if key_column is None or key_column.lower() not in columns:
        warnings.append(f"stream {stream.name}: table `{stream.table}` has no key column `{key_column}`; not searched")
        return set()
    where = parse_where(stream.where, stream.path, None) if stream.where else None
    condition = f"({where.sql(DIALECT)}) AND " if where is not None else ""
    found: set[Recipient] = set()
    for sync in stream.syncs:
        tables = StreamTables(schema, stream.name, sync.destination)
        if sync.identifier_column.lower() not in columns or not conn.table_exists(
            schema, f"stream_sent__{stream.name}__{sync.destination}"
        ):
            continue  # never ran
        event_id = StreamShape.of(stream, sync).event_id_sql("e")
        cursor = f"CAST(e.{ident(stream.cursor)} AS TIMESTAMP)"
        for chunk, marks in _key_chunks(keys):
            sql = (
                f"SELECT DISTINCT CAST(e.{ident(key_column)} AS VARCHAR), "
                f"CAST(e.{ident(sync.identifier_column)} AS VARCHAR) "
                f"FROM {ident(stream.table)} AS e CROSS JOIN (SELECT floor_at, pruned_below FROM {tables.cursors} "
                "WHERE stream = ? AND destination = ?) AS c "
                f"WHERE {condition}e.{ident(sync.identifier_column)} IS NOT NULL "
                f"AND CAST(e.{ident(key_column)} AS VARCHAR) IN ({marks}) "
                f"AND (EXISTS (SELECT 1 FROM {tables.sent} AS s WHERE s.event_id = {event_id} "
                "AND s.status IN ('sent', 'in_doubt')) "
                # Behind the sent log's pruning horizon nothing tells what was sent: assume it was.
                f"OR ({cursor} >= c.floor_at AND {cursor} < c.pruned_below))"
            )
            for key, identifier in conn.fetch_all(sql, [*tables.pair, *chunk]):
                source = str(Delivery("stream", stream.name))
                found.add(Recipient(key, sync.destination, source, sync.identifier_type, identifier))
    return found


def forget_everywhere(
    recipients: list[Recipient], project: Project, destinations: dict[str, Destination], warehouse: Any, run_id: str
) -> list[Outcome]:
    """Ask each destination to forget its recipients, batch by batch; a destination that fails is not asked further."""
    groups: dict[tuple[str, str, str], list[Recipient]] = defaultdict(list)
    for r in recipients:
        groups[(r.destination, r.source, r.identifier_type)].append(r)
    outcomes: list[Outcome] = []
    broken: dict[str, str] = {}
    for (name, source, identifier_type), members in groups.items():
        destination = destinations[name]
        place = destination.type_name
        identifiers = list(dict.fromkeys(r.identifier for r in members))
        answers: dict[str, Forgotten] = {}
        size = destination.capabilities.forget_batch_size
        target = ForgetTarget(
            destination=name,
            identifier_type=identifier_type,
            run_id=run_id,
            source=Delivery.parse(source).name,
            options=_delivery_options(project, destination, Delivery.parse(source)),
            warehouse=warehouse,
            schema=project.settings.schema_name,
        )
        for start in range(0, len(identifiers), size or len(identifiers)):
            batch = identifiers[start : start + (size or len(identifiers))]
            if size is None:
                reason = f"destination type {destination.type_name} cannot delete people"
            elif name in broken:
                reason = f"not tried: an earlier request to {name} in this run failed ({broken[name]})"
            else:
                try:
                    answers.update((f.identifier, f) for f in destination.forget(target, batch))
                    continue
                except (DestinationError, MissingSecretError) as exc:
                    # The others are still asked: one destination down must not hold back the rest.
                    reason = broken[name] = str(exc)
            answers.update((i, Forgotten(i, FAILED, reason)) for i in batch)
        for r in members:
            answer = answers.get(r.identifier) or Forgotten(r.identifier, FAILED, "no answer for this identifier")
            outcomes.append(
                Outcome(r.key, name, source, place, answer.status, scrub(answer.response, identifiers), recipient=r)
            )
    return outcomes


def _delivery_options(project: Project, destination: Destination, delivery: Delivery) -> BaseModel:
    """The validated options of the sync (or stream sync) of `delivery` to this destination."""
    if delivery.kind == "audience":
        return destination.sync_options(project.audiences[delivery.name].sync_for(destination.name).options)
    return destination.event_options(project.streams[delivery.name].sync_for(destination.name).options)


def purge_pairs(
    conn: Connection, project: Project, keys: list[str], failing: set[tuple[str, str, str | None]]
) -> list[Outcome]:
    """Delete the people from each pair's ledger, delta, failures and sync log, except where their destination failed."""
    schema = project.settings.schema_name
    has_sync_log = conn.table_exists(schema, SYNC_LOG.name)
    outcomes: list[Outcome] = []
    for audience in project.audiences.values():
        for sync in audience.syncs:
            source = str(Delivery("audience", audience.name))
            if not conn.table_exists(schema, f"ledger__{audience.name}__{sync.destination}"):
                continue
            purgeable = [k for k in keys if (k, sync.destination, source) not in failing]
            tables = PairTables(schema, audience.name, sync.destination)
            pair = [audience.name, sync.destination]
            # (table, key column, bound values scoping shared tables to the pair)
            places = [(tables.ledger, "_key", []), (tables.delta, "_key", []), (tables.failures, "key", pair)]
            if has_sync_log:
                places.append((table(schema, SYNC_LOG.name), "key", pair))
            for name, column, scope in places:
                counted = _delete_keys(conn, name, column, purgeable, scope)
                place = name.replace('"', "")
                outcomes += [
                    Outcome(k, sync.destination, source, place, PURGED, purged_rows=n) for k, n in counted.items()
                ]
    return outcomes


def purge_snapshots(conn: Connection, project: Project, keys: list[str]) -> list[Outcome]:
    """Delete the people from every audience snapshot: whatever their destinations answered, they are no member.

    The next snapshot leaves them out too (its condition excludes deletion requests), so it does not take them back.
    """
    schema = project.settings.schema_name
    outcomes: list[Outcome] = []
    for audience in project.audiences.values():
        if not conn.table_exists(schema, f"audience__{audience.name}"):
            continue
        name = snapshot_table(schema, audience.name)
        place = name.replace('"', "")
        counted = _delete_keys(conn, name, "_key", keys, [])
        outcomes += [
            Outcome(k, SNAPSHOT, str(Delivery("audience", audience.name)), place, PURGED, purged_rows=n)
            for k, n in counted.items()
        ]
    return outcomes


def purge_change_journal(conn: Connection, project: Project, keys: list[str]) -> None:
    """Delete the people's keys from the change journal (delta/changes.py): the record that their rows changed.

    No reader misses them: the person's snapshot rows are gone and their member condition keeps them out.
    """
    journal = table(project.settings.schema_name, JOURNAL)
    if conn.table_exists(project.settings.schema_name, JOURNAL):
        for chunk, marks in _key_chunks(keys):
            conn.execute(f"DELETE FROM {journal} WHERE key IN ({marks})", chunk)


def blank_stream_reasons(conn: Connection, project: Project, keys: list[str]) -> list[Outcome]:
    """Blank the destination's reason on the people's events in every stream's sent log.

    The rows stay, holding the event id: they are what keeps an event from being sent twice. A reason is the
    destination's own words about a rejected event, which may name the person. The events are found through the
    stream's table, by its key column (as `_stream_recipients` finds them).
    """
    schema = project.settings.schema_name
    outcomes: list[Outcome] = []
    for stream in project.streams.values():
        key_column = member_key_column(project, stream)
        columns = {name.lower() for name, _ in conn.table_columns(None, stream.table)}
        if key_column is None or key_column.lower() not in columns:
            continue  # the search for recipients has warned about it
        person = f"CAST(e.{ident(key_column)} AS VARCHAR)"
        for sync in stream.syncs:
            if not conn.table_exists(schema, f"stream_sent__{stream.name}__{sync.destination}"):
                continue
            sent = StreamTables(schema, stream.name, sync.destination).sent
            event_id = StreamShape.of(stream, sync).event_id_sql("e")
            for chunk, marks in _key_chunks(keys):
                found = conn.fetch_all(
                    f"SELECT {person}, count(DISTINCT s.event_id) FROM {sent} AS s JOIN {ident(stream.table)} AS e "
                    f"ON s.event_id = {event_id} WHERE s.reason IS NOT NULL AND {person} IN ({marks}) GROUP BY {person}",
                    chunk,
                )
                if not found:
                    continue
                conn.execute(
                    f"UPDATE {sent} SET reason = NULL WHERE reason IS NOT NULL AND event_id IN "
                    f"(SELECT {event_id} FROM {ident(stream.table)} AS e WHERE {person} IN ({marks}))",
                    chunk,
                )
                place = sent.replace('"', "")
                outcomes += [
                    Outcome(
                        k, sync.destination, str(Delivery("stream", stream.name)), place, PURGED, purged_rows=int(n)
                    )
                    for k, n in found
                ]
    return outcomes


def _delete_keys(conn: Connection, name: str, column: str, keys: list[str], scope: list[str]) -> dict[str, int]:
    """Delete the rows of `keys` from table `name` (scoped to one pair's rows when `scope` is [audience, destination]).

    Returns key -> rows deleted.
    """
    within = " AND audience = ? AND destination = ?" if scope else ""
    counted: dict[str, int] = {}
    for chunk, marks in _key_chunks(keys):
        rows = f"FROM {name} WHERE {ident(column)} IN ({marks}){within}"
        found = conn.fetch_all(f"SELECT {ident(column)}, count(*) {rows} GROUP BY {ident(column)}", [*chunk, *scope])
        if found:
            conn.execute(f"DELETE {rows}", [*chunk, *scope])
            counted.update((k, int(n)) for k, n in found)
    return counted


def proof_rows(
    report: DeletionReport,
    by_key: dict[str, list[Request]],
    done: set[tuple],
    run_id: str,
    now: dt.datetime,
) -> list[tuple]:
    """The proof of this run, one row per request concerned, in `COLUMNS` order."""
    rows: list[tuple] = []
    for o in report.outcomes:
        r = o.recipient
        digest = identifier_hash(r.identifier) if r is not None else None
        for request in by_key[o.key]:
            if r is not None and (request.request_id, r.destination, r.source, r.identifier_type, digest) in done:
                continue  # this request had it done already; the outcome was for another request of the person
            if o.destination == NOBODY and request.seen:
                continue  # looked at before
            rows.append(
                (
                    request.request_id,
                    o.key,
                    o.destination,
                    o.source,
                    o.place,
                    r.identifier_type if r else None,
                    digest,
                    o.status,
                    o.purged_rows,
                    o.response,
                    request.requested_at,
                    now,
                    run_id,
                )
            )
    return rows


def overdue_requests(conn: Connection, project: Project, now: dt.datetime) -> list[Request]:
    """Requests older than HONOUR_WITHIN that are not done yet."""
    return [
        r
        for r in pending_requests(conn, project)
        if r.requested_at is not None and now - r.requested_at > HONOUR_WITHIN
    ]

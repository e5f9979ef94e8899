"""Every table the platform owns in the warehouse, declared once: name, columns, owner, archival and forget policy.

A name with `{audience}`, `{stream}` or `{destination}` is one table per such pair, created when the pair first
runs; the others are shared and created with the store (`store.migrations.ensure_store`). Columns are in table
order, each `name -> SQL type` in the DuckDB dialect (constraints included), rendered for each engine by the
connection. Tables a step rebuilds from a query each run (audience snapshots, model tables, scratch key tables)
have no fixed columns and are listed in `REBUILT` for the record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..warehouse import Connection
from ..warehouse.sql import ident, table


@dataclass(frozen=True)
class Archived:
    """How a table's old days leave the hot table for Parquet files (governance/archive.py)."""

    #: The column (or the rule) that gives a row's day: its folder `day=YYYY-MM-DD`.
    day: str
    #: The column holding a member's key, by which `purge_archived` forgets a person; None: no member data.
    key: str | None
    #: Which rows of a day leave the hot table, and why the others stay.
    rows: str


@dataclass(frozen=True)
class Table:
    """One table we own (or one per pair, when `name` has `{...}` parts)."""

    name: str
    columns: dict[str, str]
    #: The module that writes it.
    owner: str
    #: What `composable forget` does to it.
    forget: str
    #: How its old days are archived; None: never archived (kept whole).
    archival: Archived | None = None
    #: Columns read by range on engines with secondary indexes.
    indexes: tuple[str, ...] = ()
    #: Column names quoted in its DDL (tables whose columns are upper case or read through quoted names).
    quoted: bool = False
    #: Where it lives: "project" (the project's schema) or "destination" (a schema the destination's settings name).
    home: str = "project"
    parts: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(re.findall(r"\{(\w+)\}", self.name)))

    @property
    def per_pair(self) -> bool:
        return bool(self.parts)

    def named(self, **parts: str) -> str:
        """The table's name for one pair (`audience=..., destination=...`)."""
        return self.name.format(**parts)

    def matches(self, name: str) -> bool:
        """Whether a warehouse table's name is this table or one of its pairs."""
        return re.fullmatch(re.sub(r"\\\{\w+\\\}", "[a-z][a-z0-9_]*", re.escape(self.name)), name) is not None

    def create(self, conn: Connection, qualified: str) -> None:
        """CREATE TABLE IF NOT EXISTS at the current shape, plus its indexes (idempotent)."""
        columns = ", ".join(f"{ident(c) if self.quoted else c} {t}" for c, t in self.columns.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified} ({columns})")
        for column in self.indexes:
            conn.ensure_index(qualified, column)


# ---------------------------------------------------------------------------------------------------------------
# Audience deltas, per (audience, destination) pair

LEDGER = Table(
    "ledger__{audience}__{destination}",
    {
        "_key": "VARCHAR NOT NULL",
        "_identifier": "VARCHAR",
        "_hash": "VARCHAR NOT NULL",
        "_fields": "JSON",
        "_synced_at": "TIMESTAMP NOT NULL",
        "_run_id": "VARCHAR NOT NULL",
    },
    owner="delta/ledger.py",
    forget="the person's row deleted (the destination no longer holds them)",
)
DELTA = Table(
    "delta__{audience}__{destination}",
    {
        "_partition": "DATE NOT NULL",
        "_run_id": "VARCHAR NOT NULL",
        "_seq": "BIGINT NOT NULL",
        "_op": "VARCHAR NOT NULL",
        "_key": "VARCHAR NOT NULL",
        "_identifier": "VARCHAR",
        "_hash": "VARCHAR",
        "_fields": "JSON",
        "_previous": "JSON",
        "_computed_at": "TIMESTAMP NOT NULL",
    },
    owner="delta/diff.py",
    forget="the person's rows deleted",
    archival=Archived(
        "_partition",
        "_key",
        "rows of archived delta runs, except the pair's highest `_seq` (the next delta numbers on from it)",
    ),
    # Delta rows are read, and acks joined to them, by `_seq` range.
    indexes=("_seq",),
)

# Shared logs, one table each for every audience and destination.
DELTA_RUNS = Table(
    "delta_runs",
    {
        "audience": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "partition_date": "DATE NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "computed_at": "TIMESTAMP NOT NULL",
        "mode": "VARCHAR NOT NULL",
        "first_seq": "BIGINT NOT NULL",
        "last_seq": "BIGINT NOT NULL",
        "added": "BIGINT NOT NULL",
        "updated": "BIGINT NOT NULL",
        "removed": "BIGINT NOT NULL",
        "audience_size": "BIGINT NOT NULL",
    },
    owner="delta/diff.py",
    forget="nothing (counts only)",
    archival=Archived(
        "partition_date",
        None,
        "archived delta runs: not the newest run nor the newest the send gates let through (the gates' baseline), "
        "nor any computed after it; no unfolded ack or in-flight window over their rows",
    ),
)
SYNC_ACKS = Table(
    "sync_acks",
    {
        "audience": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "first_seq": "BIGINT NOT NULL",
        "last_seq": "BIGINT NOT NULL",
        "acked_at": "TIMESTAMP NOT NULL",
        "folded": "BOOLEAN NOT NULL DEFAULT false",
    },
    owner="delivery/audience.py",
    forget="nothing (seq ranges only)",
    archival=Archived("partition_date of its delta run", None, "folded acks of archived delta runs"),
)
SYNC_FAILURES = Table(
    "sync_failures",
    {
        "audience": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "partition_date": "DATE NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "seq": "BIGINT NOT NULL",
        "key": "VARCHAR NOT NULL",
        "op": "VARCHAR NOT NULL",
        "reason": "VARCHAR NOT NULL",
        "failed_at": "TIMESTAMP NOT NULL",
    },
    owner="delivery/audience.py",
    forget="the person's rows deleted",
    archival=Archived("partition_date", "key", "rejections of rows of archived delta runs"),
)
GATE_RESULTS = Table(
    "gate_results",
    {
        "audience": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "gate": "VARCHAR NOT NULL",
        "passed": "BOOLEAN NOT NULL",
        "overridden": "BOOLEAN NOT NULL",
        "detail": "VARCHAR NOT NULL",
        "checked_at": "TIMESTAMP NOT NULL",
    },
    owner="governance/gates.py",
    forget="nothing (verdicts only)",
    archival=Archived("partition_date of its delta run", None, "verdicts on archived delta runs"),
)
SYNC_INFLIGHT = Table(
    "sync_inflight",
    {
        "audience": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "first_seq": "BIGINT NOT NULL",
        "last_seq": "BIGINT NOT NULL",
        "started_at": "TIMESTAMP NOT NULL",
    },
    owner="delivery/audience.py",
    forget="nothing (seq ranges only)",
)
# Provenance (governance/provenance.py): one row per delivered or rejected row, one per sync run of a pair. The
# payload stays in the delta's `_fields` (member data is not copied twice).
SYNC_LOG = Table(
    "sync_log",
    {
        "partition_date": "DATE",
        "sync_run_id": "VARCHAR",
        "audience": "VARCHAR",
        "destination": "VARCHAR",
        "key": "VARCHAR",
        "identifier": "VARCHAR",
        "op": "VARCHAR",
        "row_hash": "VARCHAR",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "delta_run_id": "VARCHAR",
        "seq": "BIGINT",
        "recorded_at": "TIMESTAMP",
    },
    owner="governance/provenance.py",
    forget="the person's rows deleted",
    archival=Archived("partition_date", "key", "delivered rows of archived delta runs (provenance)"),
)
SYNC_RUNS = Table(
    "sync_runs",
    {
        "run_id": "VARCHAR",
        "partition_date": "DATE",
        "audience": "VARCHAR",
        "destination": "VARCHAR",
        "delta_run_id": "VARCHAR",
        "code_version": "VARCHAR",
        "package_version": "VARCHAR",
        "audience_sha256": "VARCHAR",
        "model_sha256": "VARCHAR",
        "upstream_versions": "VARCHAR",
        "status": "VARCHAR",
        "added": "BIGINT",
        "updated": "BIGINT",
        "removed": "BIGINT",
        "failed": "BIGINT",
        "unsent": "BIGINT",
        "started_at": "TIMESTAMP",
        "finished_at": "TIMESTAMP",
    },
    owner="governance/provenance.py",
    forget="nothing (counts and versions only)",
    archival=Archived("partition_date", None, "sync runs of archived delta runs (provenance)"),
)

# ---------------------------------------------------------------------------------------------------------------
# Event streams, per (stream, destination) pair and shared

STREAM_SENT = Table(
    "stream_sent__{stream}__{destination}",
    {
        "event_id": "VARCHAR NOT NULL",
        "cursor_value": "TIMESTAMP NOT NULL",
        "status": "VARCHAR NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "recorded_at": "TIMESTAMP NOT NULL",
        "partition_date": "DATE NOT NULL",
        "reason": "VARCHAR",
    },
    owner="delivery/stream.py",
    forget="nothing here (event ids only); the person's events are skipped by the member condition",
    archival=Archived(
        "partition_date",
        None,
        "events behind the pair's `pruned_below` (the stream never looks there again) and not in stream_intents",
    ),
)
STREAM_CURSORS = Table(
    "stream_cursors",
    {
        "stream": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "high_water": "TIMESTAMP NOT NULL",
        "floor_at": "TIMESTAMP NOT NULL",
        "pruned_below": "TIMESTAMP",
        "started_at": "TIMESTAMP NOT NULL",
        "updated_at": "TIMESTAMP NOT NULL",
        "run_id": "VARCHAR NOT NULL",
    },
    owner="streams/high_water.py",
    forget="nothing (cursors only)",
)
STREAM_INTENTS = Table(
    "stream_intents",
    {
        "stream": "VARCHAR NOT NULL",
        "destination": "VARCHAR NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "event_id": "VARCHAR NOT NULL",
        "cursor_value": "TIMESTAMP NOT NULL",
        "recorded_at": "TIMESTAMP NOT NULL",
    },
    owner="streams/intents.py",
    forget="nothing (event ids only)",
)

# ---------------------------------------------------------------------------------------------------------------
# Governance, loading and the change journal

DELETION_LOG = Table(
    "deletion_log",
    {
        "request_id": "VARCHAR",
        "key": "VARCHAR",
        # The destination acted on, or "(none)" when no destination ever received the person.
        "destination": "VARCHAR",
        # Through which delivery the destination got the person: "audience <name>" or "stream <name>".
        "source": "VARCHAR",
        # What was acted on: the API call, or the table or folder purged.
        "place": "VARCHAR",
        # No raw identifier: its sha256 tells identifiers apart without keeping an e-mail.
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
    },
    owner="governance/deletion.py",
    forget="kept: the proof of each request (the key, never a raw identifier)",
    quoted=True,
)
ARCHIVE_FILES = Table(
    "archive_files",
    {
        "table_name": "VARCHAR NOT NULL",
        "day": "DATE NOT NULL",
        "path": "VARCHAR NOT NULL",
        "row_count": "BIGINT NOT NULL",
        "byte_count": "BIGINT NOT NULL",
        "run_id": "VARCHAR NOT NULL",
        "archived_at": "TIMESTAMP NOT NULL",
    },
    owner="governance/archive.py",
    forget="nothing here; the files are rewritten without the person (purge_archived)",
    quoted=True,
)
LANDING_FILES = Table(
    "landing_files",
    {
        "source_table": "VARCHAR",
        "file_name": "VARCHAR",
        "rows": "BIGINT",
        "loaded_at": "TIMESTAMP",
        "run_id": "VARCHAR",
    },
    owner="landing/load.py",
    forget="nothing (file names and counts only)",
)
KEY_CHANGES = Table(
    "key_changes",
    {"relation": "VARCHAR NOT NULL", "key": "VARCHAR", "seq": "BIGINT NOT NULL", "recorded_at": "TIMESTAMP NOT NULL"},
    owner="delta/changes.py",
    forget="the person's rows deleted once every reader has passed them",
)
REFRESH_STATE = Table(
    "refresh_state",
    {
        "reader": "VARCHAR NOT NULL",
        "seq": "BIGINT NOT NULL",
        "pinned": "VARCHAR",
        "guards": "VARCHAR",
        "reads": "VARCHAR",
        "updated_at": "TIMESTAMP NOT NULL",
    },
    owner="delta/changes.py",
    forget="nothing (cursors only)",
)

# ---------------------------------------------------------------------------------------------------------------
# In the destination's schema: Braze Cloud Data Ingestion's tables, shaped as Braze documents them

CDI_ATTRIBUTES = Table(
    "{stem}_USERS_ATTRIBUTES_SYNC",
    {
        "UPDATED_AT": "TIMESTAMP NOT NULL",
        "EXTERNAL_ID": "VARCHAR",
        "ALIAS_NAME": "VARCHAR",
        "ALIAS_LABEL": "VARCHAR",
        "EMAIL": "VARCHAR",
        "PHONE": "VARCHAR",
        "PAYLOAD": "VARCHAR NOT NULL",
    },
    owner="destinations/braze_cdi.py",
    forget="the person's staged rows deleted",
    quoted=True,
    home="destination",
)
CDI_DELETE = Table(
    "{stem}_USERS_DELETE_SYNC",
    {name: CDI_ATTRIBUTES.columns[name] for name in ("UPDATED_AT", "EXTERNAL_ID", "ALIAS_NAME", "ALIAS_LABEL")},
    owner="destinations/braze_cdi.py",
    forget="a delete row written for Braze to pull",
    quoted=True,
    home="destination",
)

#: Every table with a fixed shape, in the order the store creates them.
TABLES: tuple[Table, ...] = (
    DELETION_LOG,
    DELTA_RUNS,
    SYNC_ACKS,
    SYNC_FAILURES,
    GATE_RESULTS,
    SYNC_INFLIGHT,
    SYNC_LOG,
    SYNC_RUNS,
    STREAM_CURSORS,
    STREAM_INTENTS,
    LANDING_FILES,
    KEY_CHANGES,
    REFRESH_STATE,
    ARCHIVE_FILES,
    LEDGER,
    DELTA,
    STREAM_SENT,
    CDI_ATTRIBUTES,
    CDI_DELETE,
)
#: The shared tables of the project's schema, created with the store.
SHARED: tuple[Table, ...] = tuple(t for t in TABLES if not t.per_pair and t.home == "project")

#: Tables rebuilt from a query by their owner (`CREATE OR REPLACE TABLE ... AS`): their shape follows the project.
REBUILT = {
    "audience__{audience}": "delta/snapshot.py: the audience's members, hash and payload, as of the run",
    "changed_keys__{reader}": "delta/refresh.py: the keys one incremental step recomputes (scratch)",
    "differences__{reader}": "delta/refresh.py: the nightly run's comparison of incremental and full (scratch)",
}


def archived_tables() -> dict[str, Archived]:
    """Table name (or pattern) -> how it is archived, for every table the archive takes days of."""
    return {t.name: t.archival for t in TABLES if t.archival is not None}


def archival_of(table_name: str) -> Archived | None:
    """How a hot table (by its name in the warehouse) is archived, or None if it never is."""
    for entry in TABLES:
        if entry.archival is not None and entry.matches(table_name):
            return entry.archival
    return None


def qualified(schema: str, entry: Table, **parts: str) -> str:
    """The quoted, schema-qualified name of a table (of one pair's table, given its parts)."""
    return table(schema, entry.named(**parts) if entry.per_pair else entry.name)

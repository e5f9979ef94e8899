"""Braze Cloud Data Ingestion (CDI): writes the tables Braze pulls from the warehouse; no API calls.

destinations.yaml:

    braze_warehouse:
      type: braze_cdi
      schema: braze_cdi      # where the CDI tables go (default braze_cdi)
      table_prefix: crm_     # optional, put in front of the table names

Sync options (audience file):

    options:
      membership_attribute: in_vip        # true on members, cleared from leavers (default in_<audience>)
      on_remove: delete | clear_attribute # what a mirror-mode leaver becomes (default below)
      alias_label: crm                    # required with `identifier: {user_alias: column}`

Per (audience, destination), in `<schema>`, table names upper-cased, one CDI integration each:

    <PREFIX><AUDIENCE>_USERS_ATTRIBUTES_SYNC (UPDATED_AT TIMESTAMP NOT NULL, EXTERNAL_ID VARCHAR,
        ALIAS_NAME VARCHAR, ALIAS_LABEL VARCHAR, EMAIL VARCHAR, PHONE VARCHAR, PAYLOAD VARCHAR NOT NULL)
    <PREFIX><AUDIENCE>_USERS_DELETE_SYNC (UPDATED_AT TIMESTAMP NOT NULL, EXTERNAL_ID VARCHAR,
        ALIAS_NAME VARCHAR, ALIAS_LABEL VARCHAR)                  -- no PAYLOAD: Braze refuses one

Two braze_cdi destinations syncing the same audience need different schemas or prefixes.

Rows:
- Every row fills exactly one identifier, as the sync's identifier type says: EXTERNAL_ID
  (external_id), ALIAS_NAME with ALIAS_LABEL = options.alias_label (user_alias), EMAIL (email)
  or PHONE (phone). The identifier is never repeated inside PAYLOAD: a field named like the
  identifier type (e.g. `email` in a sync identified by email) is left out.
- PAYLOAD is a JSON object of the attributes that changed: for an add, every non-null field; for
  an update, the fields whose value differs from what Braze last acknowledged (a field that became
  null is sent as null, which clears it in Braze). An update whose identifier changed sends every
  non-null field, since the new identifier may name a profile that has none of them; an update
  with nothing left to send writes no row.
- The membership attribute: with `on_remove: clear_attribute` in a mirror, members carry
  `"in_<audience>": true` (or `membership_attribute`, which is carried in any mode when given). It is
  one of the sync's fields, as for Braze REST (braze.py): an add's PAYLOAD has it, an update's only
  when the ledger lacks it, and a sync that gains it updates every member once with just it.
- Removes (mirror mode only). `on_remove: delete` (the default for external_id and user_alias)
  writes a delete row: Braze deletes the whole user profile. `on_remove: clear_attribute` (the
  default for email and phone, which CDI cannot delete by) writes an attributes row
  `{"<membership attribute>": null}`. `on_remove: delete` with email or phone is refused when the
  project loads.
- A row whose PAYLOAD is over 1 MB or has more than 250 attributes is rejected (Braze would).

UPDATED_AT (naive UTC) strictly increases per table: a batch's rows get max(now, the table's
latest UPDATED_AT + 1 µs), then 1 µs more per row. Braze's watermark is inclusive, so no two rows
share a timestamp, and a clock that steps back cannot hide rows behind the watermark. A batch is
written in one transaction; written rows count as acknowledged (Braze picks them up on its next
scheduled sync, which this destination neither triggers nor watches).

Deletion requests (governance/deletion.py): a person to forget gets a row in the audience's
USERS_DELETE_SYNC table (external id or alias; Braze deletes the profile on its next sync), and their
rows still staged in USERS_ATTRIBUTES_SYNC are deleted, in one transaction. CDI cannot delete by
email or phone: such a person's staged rows are purged and the deletion is recorded as failed, to be
done through the REST API.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from ..store import PairTables
from ..store.registry import CDI_ATTRIBUTES, CDI_DELETE
from ..warehouse import Connection
from ..warehouse.base import insert_rows
from ..warehouse.sql import ident, table
from .base import (
    DELETED,
    FAILED,
    BatchResult,
    Capabilities,
    Destination,
    ForgetTarget,
    Forgotten,
    Limits,
    Record,
    Session,
    Target,
    TerminalError,
)
from .changes import changed_fields

BATCH_SIZE = 10_000
# Braze's CDI limits per row.
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_ATTRIBUTES = 250
ONE_MICROSECOND = dt.timedelta(microseconds=1)
# Keys per `IN (...)` lookup of the ledger: a bounded number of bound values per statement on every engine.
LOOKUP_CHUNK = 1_000

# Column -> type with constraints, as Braze documents the tables (declared in the store's registry).
ATTRIBUTES_COLUMNS = CDI_ATTRIBUTES.columns
DELETE_COLUMNS = CDI_DELETE.columns
IDENTIFIER_TYPES = ("external_id", "user_alias", "email", "phone")
# CDI deletes users by external id or alias only.
DELETABLE_BY = ("external_id", "user_alias")


def utc_now() -> dt.datetime:
    """Naive UTC, as UPDATED_AT holds it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BrazeCdiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_name: str = Field(default="braze_cdi", alias="schema", min_length=1)
    table_prefix: str = ""


class BrazeCdiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_remove: Literal["delete", "clear_attribute"] | None = None
    membership_attribute: str | None = Field(default=None, min_length=1)
    alias_label: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _leavers_can_be_removed(self, info: ValidationInfo) -> BrazeCdiOptions:
        identifier_type = (info.context or {}).get("identifier_type")  # known when the project loads
        if self.on_remove == "delete" and identifier_type in IDENTIFIER_TYPES and identifier_type not in DELETABLE_BY:
            raise ValueError(
                f"Braze CDI cannot delete users by {identifier_type}; use on_remove: clear_attribute (the default "
                "for it: members carry a membership attribute, leavers lose it)"
            )
        return self

    def removal(self, identifier_type: str) -> str:
        """What a mirror's leaver becomes: `on_remove`, or by default delete where CDI can, clear_attribute elsewhere."""
        return self.on_remove or ("delete" if identifier_type in DELETABLE_BY else "clear_attribute")


def membership_attribute(options: BrazeCdiOptions, audience: str, mode: str, identifier_type: str) -> str | None:
    """The attribute members carry (true) and leavers lose (cleared); None when membership shows otherwise."""
    if options.membership_attribute:
        return options.membership_attribute
    if mode == "mirror" and options.removal(identifier_type) == "clear_attribute":
        return f"in_{audience}"
    return None


@dataclass(frozen=True)
class CdiRow:
    """One row for a CDI table: `payload` None means the delete table."""

    seq: int
    #: ALIAS_LABEL is None only when the options lack one, which the options validator refuses for user_alias.
    identifier: dict[str, str | None]
    payload: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        """The row as previews and metadata samples show it."""
        kind = "USERS_DELETE_SYNC" if self.payload is None else "USERS_ATTRIBUTES_SYNC"
        shown: dict[str, Any] = {"table": kind, **self.identifier}
        if self.payload is not None:
            shown["PAYLOAD"] = self.payload
        return shown


@dataclass(frozen=True)
class CdiTables:
    """The quoted names of one audience's attributes and delete tables."""

    attributes: str
    delete: str

    @classmethod
    def of(cls, settings: BrazeCdiSettings, audience: str) -> CdiTables:
        stem = f"{settings.table_prefix}{audience}".upper()
        return cls(
            table(settings.schema_name, CDI_ATTRIBUTES.named(stem=stem)),
            table(settings.schema_name, CDI_DELETE.named(stem=stem)),
        )


def plan_rows(batch: Sequence[Record], target: Target, moved: set[str]) -> tuple[list[CdiRow], dict[int, str]]:
    """The CDI rows for a batch, and {seq: reason} of rows Braze cannot take; `moved`: keys whose identifier changed."""
    options = cast(BrazeCdiOptions, target.options)  # validated with SyncOptions when the project loads
    identifier_type = target.identifier_type
    on_remove = options.removal(identifier_type)
    membership = membership_attribute(options, target.audience, target.mode, identifier_type)
    rows: list[CdiRow] = []
    rejected: dict[int, str] = {}
    for record in batch:
        identifier: dict[str, str | None] = (
            {"ALIAS_NAME": record.identifier, "ALIAS_LABEL": options.alias_label}
            if identifier_type == "user_alias"
            else {identifier_type.upper(): record.identifier}
        )
        if record.change == "remove":
            if on_remove == "delete":
                rows.append(CdiRow(record.seq, identifier, None))
            else:  # only a mirror removes
                cleared = membership_attribute(options, target.audience, "mirror", identifier_type)
                # A removal that is not a delete is clear_attribute, and a mirror under it always names the attribute.
                assert cleared is not None
                rows.append(CdiRow(record.seq, identifier, {cleared: None}))
            continue
        if record.key in moved:
            # The new identifier may name a profile that has none of the values yet.
            payload = {k: v for k, v in (record.fields or {}).items() if v is not None}
        else:
            # The membership attribute is one of the fields: sent on add, and on update only if new to the ledger.
            payload = changed_fields(record)
        if record.change == "add" and membership is not None:
            payload.setdefault(membership, True)  # an add computed before the attribute was among the fields
        # Braze takes the identifier from its column only, never from PAYLOAD.
        payload.pop(identifier_type, None)
        if not payload and record.change == "update":
            continue  # nothing Braze does not already have
        problem = _payload_problem(payload)
        if problem:
            rejected[record.seq] = problem
        else:
            rows.append(CdiRow(record.seq, identifier, payload))
    return rows, rejected


def _payload_problem(payload: dict[str, Any]) -> str | None:
    if len(payload) > MAX_ATTRIBUTES:
        return f"PAYLOAD has {len(payload)} attributes; Braze CDI takes at most {MAX_ATTRIBUTES} per row"
    if len(_json(payload).encode()) > MAX_PAYLOAD_BYTES:
        return "PAYLOAD is over 1 MB; Braze CDI rejects the row"
    return None


def _json(payload: dict[str, Any] | None) -> str:  # None: a delete-table row, which has no PAYLOAD column
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def moved_keys(conn: Connection, target: Target, batch: Sequence[Record]) -> set[str]:
    """Keys of updates whose identifier differs from the one Braze last acknowledged (the ledger's)."""
    updates = {r.key: r.identifier for r in batch if r.change == "update"}
    if not updates:
        return set()
    ledger = PairTables(target.schema, target.audience, target.destination).ledger
    keys = list(updates)
    known: list[tuple] = []
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        known += conn.fetch_all(
            f"SELECT _key, _identifier FROM {ledger} WHERE _key IN ({', '.join(['?'] * len(chunk))})", chunk
        )
    return {key for key, identifier in known if identifier != updates[key]}


def _insert(conn: Connection, name: str, columns: dict[str, str], rows: list[CdiRow]) -> None:
    """Append rows (see insert_rows), UPDATED_AT continuing strictly after the table's latest."""
    if not rows:
        return
    # Quoted: the columns are upper-case names, which PostgreSQL would fold to lower case unquoted.
    (latest,) = conn.fetch_row(f"SELECT max({ident('UPDATED_AT')}) FROM {name}")
    now = utc_now()
    start = now if latest is None else max(now, latest + ONE_MICROSECOND)
    values: list[tuple] = []
    for i, row in enumerate(rows):
        values.append(
            tuple(
                start + i * ONE_MICROSECOND
                if column == "UPDATED_AT"
                else _json(row.payload)
                if column == "PAYLOAD"
                else row.identifier.get(column)
                for column in columns
            )
        )
    types = {column: spec.removesuffix(" NOT NULL") for column, spec in columns.items()}
    insert_rows(conn, name, types, values)


class BrazeCdiSession(Session[Record]):
    def __init__(self, target: Target, tables: CdiTables):
        self.target = target
        self.tables = tables

    def send(self, batch: Sequence[Record]) -> BatchResult:
        # A connection of this sender thread's own: DuckDB connections are not shared across threads.
        with self.target.warehouse.connect() as conn:
            rows, rejected = plan_rows(batch, self.target, moved_keys(conn, self.target, batch))
            with conn.transaction():
                _insert(conn, self.tables.attributes, ATTRIBUTES_COLUMNS, [r for r in rows if r.payload is not None])
                _insert(conn, self.tables.delete, DELETE_COLUMNS, [r for r in rows if r.payload is None])
        return BatchResult(
            acknowledged=[r.seq for r in batch if r.seq not in rejected],
            rejected=rejected,
            payloads=[row.describe() for row in rows],
        )


class BrazeCdi(Destination):
    """Writes Braze CDI attribute and delete tables in the warehouse; see the module docstring."""

    type_name = "braze_cdi"
    kind = "braze"
    Settings = BrazeCdiSettings
    SyncOptions = BrazeCdiOptions

    @property
    def capabilities(self) -> Capabilities:
        # One writer at a time keeps each table's UPDATED_AT sequence strictly increasing.
        return Capabilities.of(Limits(BATCH_SIZE), concurrency=1, forget_batch_size=LOOKUP_CHUNK)

    def open(self, target: Target) -> Session:
        options = cast(BrazeCdiOptions, target.options)  # validated with SyncOptions when the project loads
        identifier_type = target.identifier_type
        if identifier_type not in IDENTIFIER_TYPES:
            raise TerminalError(
                f"destination {self.name}: Braze CDI identifies users by {', '.join(IDENTIFIER_TYPES)}, "
                f"not {identifier_type}"
            )
        if identifier_type == "user_alias" and options.alias_label is None:
            raise TerminalError(f"destination {self.name}: identifier user_alias needs options.alias_label")
        if identifier_type not in DELETABLE_BY and options.removal(identifier_type) == "delete":
            raise TerminalError(
                f"destination {self.name}: Braze CDI cannot delete users by {identifier_type}; "
                "use on_remove: clear_attribute"
            )
        with target.warehouse.connect() as conn:
            tables = self._tables(conn, target.audience)
        return BrazeCdiSession(target, tables)

    @classmethod
    def membership_fields(cls, options: BaseModel, audience: str, mode: str, identifier_type: str) -> dict[str, Any]:
        name = membership_attribute(
            cast(BrazeCdiOptions, options), audience, mode, identifier_type
        )  # validated with SyncOptions when the project loads
        return {name: True} if name else {}

    def _tables(self, conn: Connection, audience: str) -> CdiTables:
        """The audience's CDI tables, created if missing."""
        settings = BrazeCdiSettings.model_validate(self.settings)
        tables = CdiTables.of(settings, audience)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(settings.schema_name)}")
        CDI_ATTRIBUTES.create(conn, tables.attributes)
        CDI_DELETE.create(conn, tables.delete)
        return tables

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        """Delete rows for Braze to pull, and the person's staged attribute rows purged (see the module docstring)."""
        kind = target.identifier_type
        label = getattr(target.options, "alias_label", None)
        if kind == "user_alias":
            columns = {"ALIAS_NAME": None, "ALIAS_LABEL": label}
        elif kind in IDENTIFIER_TYPES:
            columns = {kind.upper(): None}
        else:
            raise TerminalError(f"destination {self.name}: Braze CDI identifies users by {', '.join(IDENTIFIER_TYPES)}")
        identifier_column = next(iter(columns))
        staged_by = " AND ".join(
            f"{ident(c)} = ?" if value is not None else f"{ident(c)} IN ({', '.join(['?'] * len(identifiers))})"
            for c, value in columns.items()
        )
        params = [v for c, value in columns.items() for v in ([value] if value is not None else identifiers)]
        with target.warehouse.connect() as conn:
            tables = self._tables(conn, target.source)
            with conn.transaction():
                staged = dict(
                    conn.fetch_all(
                        f"SELECT {ident(identifier_column)}, count(*) FROM {tables.attributes} WHERE {staged_by} "
                        f"GROUP BY {ident(identifier_column)}",
                        params,
                    )
                )
                conn.execute(f"DELETE FROM {tables.attributes} WHERE {staged_by}", params)
                if kind in DELETABLE_BY:
                    rows = [CdiRow(0, {**columns, identifier_column: i}, None) for i in identifiers]
                    _insert(conn, tables.delete, DELETE_COLUMNS, rows)
        if kind in DELETABLE_BY:
            return [
                Forgotten(
                    i,
                    DELETED,
                    f"delete row written to {tables.delete} for Braze's next CDI sync; "
                    f"{staged.get(i, 0)} staged attribute rows purged",
                )
                for i in identifiers
            ]
        return [
            Forgotten(
                i,
                FAILED,
                f"Braze CDI cannot delete users by {kind}; {staged.get(i, 0)} staged attribute "
                "rows purged; delete the profile through the Braze REST API",
            )
            for i in identifiers
        ]

    def payloads(self, batch: Sequence[Record], target: Target) -> list[dict[str, Any]]:
        with target.warehouse.connect() as conn:
            moved = moved_keys(conn, target, batch)
        return [row.describe() for row in plan_rows(batch, target, moved)[0]]

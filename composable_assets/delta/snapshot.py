"""The audience snapshot: the members of a model that meet a condition, with one row hash per sync."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlglot import exp

from ..store import PairTables
from ..warehouse import Connection
from ..warehouse.sql import DIALECT, among_keys, ident, json_object, row_hash, table


class AudienceDataError(Exception):
    """The audience's rows cannot be synced as they are (null or duplicate keys); nothing was changed."""


@dataclass(frozen=True)
class SyncShape:
    """What one sync of an audience sends: the identifier column and destination field -> column."""

    destination: str
    identifier_column: str
    fields: dict[str, str]
    # Who may be sent at all: a condition on the snapshot's `_key` (the destination's consent purpose), or None.
    allowed: str | None = None
    # Fields every member carries whatever its row holds, destination field -> JSON value: the destination's
    # membership attribute (Destination.membership_fields), sent and recorded like a mapped field.
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def hash_column(self) -> str:
        return f"_hash__{self.destination}"

    def hash_sql(self) -> str:
        described: dict[str, Any] = {"identifier": self.identifier_column, "fields": self.fields}
        if self.constants:
            # Only when there are some, so the hash of every other sync stays what earlier releases computed.
            described["constants"] = self.constants
        return row_hash([self.identifier_column, *self.fields.values()], salt=json.dumps(described, sort_keys=True))

    def fields_sql(self, alias: str) -> str:
        """The JSON object of a member's fields as sent and recorded in the ledger: mapped columns, then constants."""
        return json_object(self.fields, alias=alias, constants=self.constants)


@dataclass(frozen=True)
class SnapshotResult:
    size: int
    columns: list[tuple[str, str]]


def snapshot_table(schema: str, audience: str) -> str:
    return PairTables(schema, audience, "").snapshot


def build_snapshot(
    conn: Connection,
    *,
    schema: str,
    audience: str,
    audience_file: Path,
    model: str,
    primary_key: str,
    columns: list[str],
    where: exp.Expr | None,
    syncs: list[SyncShape],
    members: str | None = None,
    show_keys: bool = False,
    on_swap: Callable[[str, str], None] | None = None,
) -> SnapshotResult:
    """Materialize the snapshot in a staging table, check its keys, then swap it in.

    `members`: a condition on the model's rows every member must meet besides `where` (no deletion request: a person
    who asked to be forgotten is not kept here either). `show_keys`: errors name the offending keys (member data).
    `on_swap(staging, target)`: runs just before the swap (to compare the two).
    """
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    staging_name = f"audience__{audience}__staging"
    staging = table(schema, staging_name)
    select, condition = snapshot_select(model, primary_key, columns, where, syncs, members)
    with conn.bulk_writes():
        conn.execute(f"CREATE OR REPLACE TABLE {staging} AS {select}")
    try:
        # The rows as the audience file selects them: where to look for the keys an error does not name.
        rows = ident(model) + (f" WHERE {condition}" if condition else "")
        _check_keys(conn, staging, audience_file, primary_key, show_keys, rows)
    except AudienceDataError:
        conn.execute(f"DROP TABLE IF EXISTS {staging}")
        raise
    target = snapshot_table(schema, audience)
    if on_swap is not None:
        on_swap(staging, target)
    with conn.transaction():
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(f"ALTER TABLE {staging} RENAME TO {ident(f'audience__{audience}')}")
    size = conn.fetch_row(f"SELECT count(*) FROM {target}")[0]
    return SnapshotResult(size=size, columns=conn.table_columns(schema, f"audience__{audience}"))


def snapshot_select(
    model: str,
    primary_key: str,
    columns: list[str],
    where: exp.Expr | None,
    syncs: list[SyncShape],
    members: str | None,
    keys: str | None = None,
) -> tuple[str, str | None]:
    """The SELECT of the snapshot's rows (only those whose key `keys` holds, if given), and the file's condition."""
    select_list = [f"CAST({ident(primary_key)} AS VARCHAR) AS _key"]
    select_list += [ident(c) for c in columns]
    select_list += [f"{s.hash_sql()} AS {ident(s.hash_column)}" for s in syncs]
    # The condition was parsed as one expression; rendering the tree back cannot smuggle in a statement.
    condition = where.sql(DIALECT) if where is not None else None
    # A NULL key is let through `members` (its NOT IN would drop it quietly), for the key check to stop the audience.
    allowed = f"{ident(primary_key)} IS NULL OR ({members})" if members else None
    conditions = " AND ".join(f"({c})" for c in (condition, allowed, keys) if c)
    select = f"SELECT {', '.join(select_list)} FROM {ident(model)}" + (f" WHERE {conditions}" if conditions else "")
    return select, condition


def update_snapshot(
    conn: Connection,
    *,
    schema: str,
    audience: str,
    audience_file: Path,
    model: str,
    primary_key: str,
    columns: list[str],
    where: exp.Expr | None,
    syncs: list[SyncShape],
    members: str | None,
    keys_table: str,
    key_type: str,
    show_keys: bool = False,
) -> int:
    """Recompute the snapshot rows of the keys in `keys_table` (column `key`, text), inside the caller's transaction."""
    target = snapshot_table(schema, audience)
    # The members' keys as `members` writes them (the key column as text), whatever text the keys table holds.
    checked = f"SELECT CAST(CAST(key AS {key_type}) AS VARCHAR) FROM {keys_table}"
    select, condition = snapshot_select(
        model,
        primary_key,
        columns,
        where,
        syncs,
        among_keys(members, checked) if members else None,
        keys=f"{ident(primary_key)} IN (SELECT CAST(key AS {key_type}) FROM {keys_table})",
    )
    conn.execute(f"DELETE FROM {target} WHERE _key IN (SELECT key FROM {keys_table})")
    conn.execute(f"INSERT INTO {target} {select}")
    rows = ident(model) + (f" WHERE {condition}" if condition else "")
    _check_keys(conn, target, audience_file, primary_key, show_keys, rows, f"_key IN (SELECT key FROM {keys_table})")
    return conn.fetch_row(f"SELECT count(*) FROM {target}")[0]


def _check_keys(
    conn: Connection,
    staging: str,
    audience_file: Path,
    primary_key: str,
    show_keys: bool,
    source: str,
    among: str | None = None,
) -> None:
    """NULL or duplicate keys stop the audience; the keys are named only if `show_keys` (else how to list them).

    `among`: a condition on `_key` limiting the check to the rows just recomputed (the others were checked before).
    """
    if among:
        staging = f"(SELECT * FROM {staging} WHERE {among}) AS recomputed"
    nulls = conn.fetch_row(f"SELECT count(*) FROM {staging} WHERE _key IS NULL")[0]
    if nulls:
        raise AudienceDataError(
            f"{audience_file}: primary key {primary_key!r} is NULL in {nulls} row(s) of the audience; "
            "every member needs a key. Nothing was sent."
        )
    (count,) = conn.fetch_row(
        f"SELECT count(*) FROM (SELECT _key FROM {staging} GROUP BY _key HAVING count(*) > 1) AS d"
    )
    if not count:
        return
    if show_keys:
        dupes = conn.fetch_all(
            f"SELECT _key, count(*) AS n FROM {staging} GROUP BY _key HAVING count(*) > 1 ORDER BY n DESC, _key LIMIT 10"
        )
        shown = ", ".join(f"{k!r} ({n} rows)" for k, n in dupes) + (" and more" if count > 10 else "")
    else:
        column = ident(primary_key)
        shown = (
            f"{count} keys have more than one row (which ones is member data, kept out of Dagster unless project.yaml "
            f"says payload_samples: true); list them with: SELECT {column}, count(*) FROM {source} "
            f"GROUP BY {column} HAVING count(*) > 1"
        )
    raise AudienceDataError(
        f"{audience_file}: primary key {primary_key!r} is not unique in the audience: {shown}. Nothing was sent."
    )

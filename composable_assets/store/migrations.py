"""The store's schema version, kept in the warehouse, and the ordered steps that bring an install up to it.

`ensure_store` runs before anything reads or writes our tables: one cheap query when the install is current. An
install made by an earlier release (which has no version table, or an older version) is upgraded in place, one
step at a time in version order, each step's version row written when it is done, so a step that fails leaves the
install at the last version that completed, and the next start tries again from there. Where DDL is transactional
(DuckDB, PostgreSQL, Redshift) a step and its version row commit together; Snowflake, BigQuery and Databricks
commit each CREATE or ALTER on its own, so every step is written to be run again safely (create if missing, add a
column only where it lacks). Steps only add (tables, columns, rows derived from existing ones); nothing a release
wrote is dropped.

A new column on a table we own is a new step at the end of `MIGRATIONS` plus the column in `registry.py`: new
installs get it from the registry, existing ones from the step.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as installed_version

from ..warehouse import Connection
from ..warehouse.sql import ident, table
from .registry import SHARED, TABLES, Table, qualified

VERSION_TABLE = "store_versions"
VERSION_COLUMNS = {
    "version": "BIGINT NOT NULL",
    "description": "VARCHAR NOT NULL",
    "package_version": "VARCHAR",
    "applied_at": "TIMESTAMP NOT NULL",
}


@dataclass(frozen=True)
class Migration:
    """One step: what it does, for the version table and the docs, and how (given a connection and the schema).

    `apply` must be safe to run again on an install it already changed (see the module docstring).
    """

    version: int
    description: str
    apply: Callable[[Connection, str], None]


def existing(conn: Connection, schema: str, entry: Table) -> list[str]:
    """The names of the tables of `entry` that exist in `schema` (every pair's, for a per-pair table)."""
    if not entry.per_pair:
        return [entry.name] if conn.table_exists(schema, entry.name) else []
    return sorted(name for name in conn.table_names(schema) if entry.matches(name))


def add_missing_columns(conn: Connection, schema: str, entry: Table) -> list[str]:
    """Give every existing table of `entry` the registry's columns it lacks; returns `table.column` added.

    An added column is nullable whatever the registry says (existing rows have no value), unless it has a DEFAULT.
    """
    added = []
    for name in existing(conn, schema, entry):
        have = {c.lower() for c, _ in conn.table_columns(schema, name)}
        for column, type_ in entry.columns.items():
            if column.lower() in have:
                continue
            spec = type_ if " DEFAULT " in type_.upper() else type_.replace(" NOT NULL", "")
            column_sql = ident(column) if entry.quoted else column
            conn.execute(f"ALTER TABLE {table(schema, name)} ADD COLUMN {column_sql} {spec}")
            added.append(f"{name}.{column}")
    return added


def _adopt(conn: Connection, schema: str) -> None:
    """Releases before the store kept no version: create the shared tables they may lack, complete the columns."""
    for entry in SHARED:
        entry.create(conn, qualified(schema, entry))
    for entry in TABLES:
        if entry.home == "project":
            add_missing_columns(conn, schema, entry)


#: In version order; a step is never edited once released (an install may have applied it), only appended.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "adopt an install made before the store kept a version: every shared table, every registry column", _adopt
    ),
)
CURRENT = MIGRATIONS[-1].version
# An upgrade that failed is looked at again this many times in all (see ensure_store).
UPGRADE_TRIES = 3


def current_version(conn: Connection, schema: str) -> int:
    """The version the install is at: 0 for one made before the store kept a version (or a new one)."""
    if not conn.table_exists(schema, VERSION_TABLE):
        return 0
    (found,) = conn.fetch_row(f"SELECT coalesce(max(version), 0) FROM {table(schema, VERSION_TABLE)}")
    return int(found)


def upgrade(conn: Connection, schema: str, now: dt.datetime | None = None) -> list[int]:
    """Apply every step past the install's version, in order, each in its own transaction; returns the versions."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    columns = ", ".join(f"{c} {t}" for c, t in VERSION_COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table(schema, VERSION_TABLE)} ({columns})")
    applied = []
    for step in MIGRATIONS:
        if step.version <= current_version(conn, schema):
            continue
        with conn.transaction() if conn.transactional_ddl else nullcontext():
            step.apply(conn, schema)
            conn.execute(
                f"INSERT INTO {table(schema, VERSION_TABLE)} VALUES (?, ?, ?, ?)",
                [
                    step.version,
                    step.description,
                    _package_version(),
                    now or dt.datetime.now(dt.UTC).replace(tzinfo=None),
                ],
            )
        applied.append(step.version)
    return applied


def ensure_store(conn: Connection, schema: str) -> None:
    """Make sure the store in `schema` is at the current version (upgrading it if not); cheap when it is."""
    for attempt in range(UPGRADE_TRIES):
        if current_version(conn, schema) >= CURRENT:
            return
        try:
            # One upgrade at a time where the engine can lock (PostgreSQL); the others find it done.
            with conn.exclusive(f"composable store {schema}"):
                if current_version(conn, schema) < CURRENT:
                    upgrade(conn, schema)
            return
        except Exception:
            # Where nothing can lock, processes starting together on one install create the same tables at the same
            # moment and all but one may fail on the catalog. The next look finds the winner's work done.
            if attempt == UPGRADE_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _package_version() -> str | None:
    try:
        return installed_version("composable_assets")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return None

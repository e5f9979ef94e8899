"""Loading a landing folder's files into their source table, each file exactly once.

DuckDB reads Parquet and JSON Lines itself; other warehouses have their own loaders (Snowpipe, BigQuery external
tables) and need none of this. Each file is loaded in its own transaction together with a row in the
`landing_files` log, so a crash between the commit and the move to `_loaded/` never loads a file twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..delta.changes import journal, journal_everything, relation
from ..store import ensure_store
from ..store.registry import LANDING_FILES
from ..warehouse import Connection
from ..warehouse.base import require_duckdb
from ..warehouse.sql import ident, table
from .folder import LandingFolder

LOG_TABLE = LANDING_FILES.name
# In a file for an upsert folder, a row with this column true deletes the stored row of its key.
DELETED = "_deleted"
# One run loads at most this many files; the rest wait for the next run (the sensor sees them still pending).
MAX_FILES_PER_RUN = 2_000


@dataclass
class LoadReport:
    """What one load did to one table."""

    table: str
    files: int = 0
    rows: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    already_loaded: int = 0


def load_landing(
    conn: Connection,
    folder: LandingFolder,
    schema: str,
    run_id: str,
    now: dt.datetime | None = None,
    journal_columns: Sequence[str] = (),
) -> LoadReport:
    """Load every pending file of `folder` into its table; refused files move to `_rejected/` with the reason.

    `journal_columns`: columns whose values in the loaded rows (and, for an upsert, in the rows they replace) go to
    the change journal with the load, for the models kept by those keys (delta/changes.py).
    """
    require_duckdb(conn, f"Loading the landing folder of {folder.table!r}")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = LoadReport(folder.table)
    files = folder.pending()[:MAX_FILES_PER_RUN]
    if not files:
        return report
    ensure_store(conn, schema)
    if not conn.table_exists(None, folder.table):
        raise ValueError(
            f"landing folder {folder.path} feeds table {folder.table!r}, which does not exist in the warehouse; "
            "create it (with the columns the files carry) before files land"
        )
    logged = {
        name
        for (name,) in conn.fetch_all(
            f"SELECT file_name FROM {table(schema, LOG_TABLE)} WHERE source_table = ? AND file_name IN "
            f"(SELECT unnest(?::VARCHAR[]))",
            [folder.table, [f.name for f in files]],
        )
    }
    for file in files:
        if file.name in logged:
            # Loaded by a run that stopped before moving it.
            report.already_loaded += 1
            folder.archive(file, now.date())
            continue
        try:
            rows = _load_file(conn, folder, file, schema, run_id, now, journal_columns)
        except duckdb.Error as exc:
            reason = f"{file.name}: {str(exc).splitlines()[0]}"
            folder.reject(file, reason)
            report.rejected.append((file.name, reason))
            continue
        folder.archive(file, now.date())
        report.files += 1
        report.rows += rows
    return report


#: What `read_file` reads, by suffix (a landing folder takes the binary and JSON ones, `composable seed` all of them).
READABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson", ".csv")


def read_file(file: Path, *, csv_options: str = "") -> str:
    """The DuckDB table function reading one file (its path bound as the first `?`), chosen by the file's suffix.

    `csv_options`: more named arguments of `read_csv` (`composable seed` fixes the delimiter and collects bad rows).
    """
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return "read_parquet(?)"
    if suffix == ".csv":
        # The first line names the columns; types are inferred from the values (DuckDB's sniffer).
        return f"read_csv(?, header = true{csv_options})"
    return "read_json(?, format = 'newline_delimited')"


def _reader(file: Path) -> str:
    """A DuckDB table function reading one file, with its row order as `_row` (later rows win an upsert)."""
    if file.suffix == ".parquet":
        return (
            "(SELECT * EXCLUDE (file_row_number), file_row_number AS _row FROM read_parquet(?, file_row_number = true))"
        )
    return f"(SELECT *, row_number() OVER () AS _row FROM {read_file(file)})"


def _load_file(
    conn: Connection,
    folder: LandingFolder,
    file: Path,
    schema: str,
    run_id: str,
    now: dt.datetime,
    journal_columns: Sequence[str],
) -> int:
    source = _reader(file)
    target = ident(folder.table)
    with conn.transaction():
        (rows,) = conn.fetch_row(f"SELECT count(*) FROM {source}", [str(file)])
        if journal_columns:
            _journal(conn, folder, file, source, target, schema, now, journal_columns)
        if folder.key is None:
            conn.execute(f"INSERT INTO {target} BY NAME SELECT * EXCLUDE (_row) FROM {source}", [str(file)])
        else:
            _upsert(conn, folder, file, source, target)
        conn.execute(
            f"INSERT INTO {table(schema, LOG_TABLE)} VALUES (?, ?, ?, ?, ?)",
            [folder.table, file.name, rows, now, run_id],
        )
    return rows


def _journal(
    conn: Connection,
    folder: LandingFolder,
    file: Path,
    source: str,
    target: str,
    schema: str,
    now: dt.datetime,
    columns: Sequence[str],
) -> None:
    """Record the keys the file's rows change: their values in the file, and in the rows an upsert replaces."""
    present = {name for name, *_ in conn.fetch_all(f"DESCRIBE SELECT * FROM {source}", [str(file)])}
    for column in columns:
        name = relation(folder.table, column)
        if column not in present:
            # Rows without the key column: no key tells what they change.
            journal_everything(conn, schema, name, now=now)
            continue
        keys = f"SELECT {ident(column)} AS key FROM {source}"
        params = [str(file)]
        if folder.key is not None and folder.key != column and folder.key in present:
            keys += (
                f" UNION ALL SELECT t.{ident(column)} FROM {target} AS t "
                f"WHERE t.{ident(folder.key)} IN (SELECT {ident(folder.key)} FROM {source})"
            )
            params.append(str(file))
        journal(conn, schema, name, keys, params, now=now)


def _upsert(conn: Connection, folder: LandingFolder, file: Path, source: str, target: str) -> None:
    """Rows replace the stored row with the same key, only in the columns the file carries; new keys insert.

    A row whose `_deleted` is true deletes the stored row of its key instead (how change-data-capture feeds mark
    a deletion); the last row of a key in the file wins either way.
    """
    columns = [name for name, *_ in conn.fetch_all(f"DESCRIBE SELECT * EXCLUDE (_row) FROM {source}", [str(file)])]
    if folder.key is None or folder.key not in columns:
        raise duckdb.BinderException(f"the file has no {folder.key!r} column, the key of {folder.table!r}")
    key = ident(folder.key)
    latest = (
        f"(SELECT * EXCLUDE (_row) FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _row DESC) = 1)"
    )
    kept = latest
    if DELETED in columns:
        conn.execute(
            f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM {latest} AS l WHERE l.{DELETED})", [str(file)]
        )
        kept = f"(SELECT * EXCLUDE ({DELETED}) FROM {latest} AS l WHERE NOT coalesce(l.{DELETED}, false))"
        columns.remove(DELETED)
    updates = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in columns if c != folder.key)
    matched = f"WHEN MATCHED THEN UPDATE SET {updates}" if updates else ""
    conn.execute(
        f"MERGE INTO {target} AS t USING {kept} AS s "
        f"ON t.{key} = s.{key} {matched} WHEN NOT MATCHED THEN INSERT BY NAME",
        [str(file)],
    )

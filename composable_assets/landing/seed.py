"""`composable seed`: one CSV, Parquet or JSON Lines file into a warehouse table, all of it or nothing.

The file is read by DuckDB (the landing folders' `read_file`): CSV types are inferred from every value, so a column
holding one non-number further down becomes text rather than failing. It is staged first, in a temporary table, where
bad rows (a ragged CSV line) are found and reported by line before anything is written. The table is then replaced
(or appended to) in one transaction: a seed that fails leaves the table as it was.

On DuckDB the file is staged in the warehouse's own session; on any other warehouse in a local in-memory DuckDB, and
the rows are sent to the warehouse in batches of bound values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..warehouse import Connection
from ..warehouse.base import insert_rows
from ..warehouse.duckdb_engine import DuckDBConnection
from ..warehouse.sql import ident
from .load import READABLE_SUFFIXES, read_file

#: Where the file's rows wait (a temporary table of the DuckDB session that reads the file), and its bad rows.
STAGE, REJECTS, SCANS = "composable_seed_rows", "composable_seed_rejects", "composable_seed_scans"
#: A table a model can read by its bare name: models' SQL names tables unquoted, which PostgreSQL and Snowflake fold.
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
#: Rows per statement sent to a warehouse other than DuckDB.
BATCH_ROWS = 10_000
#: Bad rows named in the error (the first ones, by line).
REJECTS_SHOWN = 3
# Column types DuckDB infers or a Parquet file carries that every warehouse has; anything else (lists, structs,
# maps, unions) stays on DuckDB, where the file's own types are kept.
PORTABLE_TYPE = re.compile(
    r"BOOLEAN|SMALLINT|INTEGER|BIGINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|VARCHAR|DATE|TIME|TIMESTAMP|"
    r"TIMESTAMP WITH TIME ZONE|BLOB"
)
# Parquet types other warehouses lack, sent as the nearest one that holds every value: pandas writes int8 columns
# and nanosecond timestamps (PostgreSQL keeps microseconds, so the nanoseconds go).
WIDER = {
    "TINYINT": "SMALLINT",
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20,0)",
    "HUGEINT": "DECIMAL(38,0)",
    "TIMESTAMP_S": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_NS": "TIMESTAMP",
    "UUID": "VARCHAR",
}


class SeedError(ValueError):
    """The file cannot be seeded; the message names the file (and the line, for a bad row). Nothing was written."""


@dataclass(frozen=True)
class SeedReport:
    """What one seed did."""

    file: Path
    table: str
    rows: int
    columns: list[tuple[str, str]]
    #: Whether the rows were added to a table that existed (else the table was created or replaced).
    appended: bool


def check_table_name(table: str) -> None:
    if not TABLE_NAME.fullmatch(table):
        raise SeedError(
            f"table name {table!r}: use lower-case letters, digits and _ (starting with a letter or _), "
            "the name models read it by"
        )


def seed_file(
    conn: Connection,
    file: Path,
    table: str,
    *,
    append: bool = False,
    delimiter: str = ",",
    text: Sequence[str] = (),
) -> SeedReport:
    """Load `file` into `table` in the warehouse's default schema (where models read sources and are created).

    The table is replaced, or with `append` the rows are added to it by column name (it is created if missing).
    A CSV's columns named in `text` stay text whatever their values look like (an id that looks numeric).
    """
    file = Path(file)
    check_table_name(table)
    if file.suffix.lower() not in READABLE_SUFFIXES:
        raise SeedError(f"{file}: expected a .csv, .parquet or .jsonl file")
    if not file.is_file():
        raise SeedError(f"{file}: no such file")
    if len(delimiter) != 1:
        raise SeedError(f"--delimiter must be one character, got {delimiter!r}")
    if text and file.suffix.lower() != ".csv":
        raise SeedError(f"{file}: --text applies to CSV files; a {file.suffix} file carries its own types")
    if conn.dialect == "duckdb":
        with conn.transaction():
            columns, rows = _stage(conn, file, delimiter, text)
            appended = append and conn.table_exists(None, table)
            try:
                if appended:
                    conn.execute(f"INSERT INTO {ident(table)} BY NAME SELECT * FROM temp.{ident(STAGE)}")
                else:
                    conn.execute(f"CREATE OR REPLACE TABLE {ident(table)} AS SELECT * FROM temp.{ident(STAGE)}")
            except duckdb.Error as exc:  # e.g. appending a column the table does not have
                raise SeedError(f"{file}: {_reason(exc)}; nothing was loaded, the table is as it was") from None
            conn.execute(f"DROP TABLE temp.{ident(STAGE)}")
        return SeedReport(file, table, rows, columns, appended)
    if not conn.transactional_ddl:
        # Their CREATE and DROP commit on their own: a failed load could not give the old table back.
        raise SeedError(
            f"composable seed runs on DuckDB, PostgreSQL and Redshift; this warehouse ({conn.dialect}) has its own "
            "loader (COPY INTO, LOAD DATA): load the file with it"
        )
    with _local() as local:
        columns, rows = _stage(local, file, delimiter, text)
        columns = [(name, WIDER.get(type_, type_)) for name, type_ in columns]
        odd = [f"{name} {type_}" for name, type_ in columns if not PORTABLE_TYPE.fullmatch(type_)]
        if odd:
            raise SeedError(f"{file}: column types this warehouse ({conn.dialect}) cannot take: {', '.join(odd)}")
        types = dict(columns)
        read = ", ".join(f"CAST({ident(name)} AS {type_}) AS {ident(name)}" for name, type_ in columns)
        try:
            with conn.transaction():
                appended = append and conn.table_exists(None, table)
                if not appended:
                    conn.execute(f"DROP TABLE IF EXISTS {ident(table)}")
                    listed = ", ".join(f"{ident(name)} {type_}" for name, type_ in columns)
                    conn.execute(f"CREATE TABLE {ident(table)} ({listed})")
                # On this session itself: a temporary table is not seen by another cursor (`stream_arrow` opens one).
                for batch in local.raw.sql(f"SELECT {read} FROM temp.{ident(STAGE)}").to_arrow_reader(BATCH_ROWS):
                    values = [column.to_pylist() for column in batch.columns]
                    insert_rows(conn, ident(table), types, list(zip(*values)))
        except Exception as exc:  # each driver has its own errors; what matters is the file, and that nothing changed
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SeedError(f"{file}: the warehouse refused the rows: {reason}; the table is as it was") from exc
    return SeedReport(file, table, rows, columns, appended)


@contextmanager
def _local() -> Iterator[DuckDBConnection]:
    """An in-memory DuckDB session that reads the file for a warehouse that cannot."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass  # no ICU extension: timestamps with time zone are then read in UTC anyway
    try:
        yield DuckDBConnection(con)
    finally:
        con.close()


def _stage(conn: Connection, file: Path, delimiter: str, text: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """Read the whole file into the temporary STAGE table; (column, DuckDB type) of each column and the row count.

    A CSV's bad rows (too few or too many fields, a quote left open) are collected as DuckDB reads, then reported
    by line: the seed stops before writing anything.
    """
    csv_options = (
        ", delim = ?, quote = '\"', escape = '\"', sample_size = -1, "
        f"store_rejects = true, rejects_table = '{REJECTS}', rejects_scan = '{SCANS}'"
    )
    csv = file.suffix.lower() == ".csv"
    params: list = [str(file), delimiter] if csv else [str(file)]
    if text:
        # A struct of column name -> type, bound like any value.
        csv_options += ", types = ?"
        params.append(dict.fromkeys(text, "VARCHAR"))
    reader = read_file(file, csv_options=csv_options)
    try:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {ident(STAGE)} AS SELECT * FROM {reader}", params)
    except duckdb.Error as exc:
        raise SeedError(f"{file}: {_reason(exc)}") from None
    if csv:
        bad = conn.fetch_all(
            f"SELECT DISTINCT line, error_message FROM temp.{ident(REJECTS)} ORDER BY line LIMIT {REJECTS_SHOWN + 1}"
        )
        conn.execute(f"DROP TABLE temp.{ident(REJECTS)}")
        conn.execute(f"DROP TABLE temp.{ident(SCANS)}")
        if bad:
            lines = "; ".join(f"line {line}: {message}" for line, message in bad[:REJECTS_SHOWN])
            more = " (and more)" if len(bad) > REJECTS_SHOWN else ""
            raise SeedError(f"{file}: {lines}{more}; nothing was loaded, the table is as it was")
    columns = [(name, type_) for name, type_, *_ in conn.fetch_all(f"DESCRIBE temp.{ident(STAGE)}")]
    missing = [name for name in text if name not in dict(columns)]
    if missing:  # DuckDB passes over a type for a column the file does not have
        have = ", ".join(name for name, _ in columns)
        raise SeedError(f"{file}: --text names no column of the file: {', '.join(missing)} (it has: {have})")
    (rows,) = conn.fetch_row(f"SELECT count(*) FROM temp.{ident(STAGE)}")
    return columns, rows


def _reason(exc: duckdb.Error) -> str:
    """DuckDB's first line, without its "Invalid Input Error:" prefix; the rest is DuckDB's list of its own options."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^[A-Za-z ]+Error: ", "", text)

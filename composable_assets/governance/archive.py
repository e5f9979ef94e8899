"""Archival: days older than the retention leave the hot tables for Parquet files, and stay queryable.

What is archived is listed once, in the store's registry (`store/registry.py`): the per-pair delta tables and the shared logs of the delta runs no
current run reads any more, the stream sent logs' rows the stream engine no longer reads, and the outboxes' files.
Never the ledgers (the truth of what destinations hold), unfolded acks, in-flight intents, or the current day.

Layout under the archive root (project.yaml `archive.url`, default `<data dir>/archive`):
- `<table>/day=YYYY-MM-DD/<archive run id>.parquet`, hive style, so DuckDB's
  `read_parquet('<root>/<table>/*/*.parquet', hive_partitioning = true)` reads a table's archive;
- `outbox/<destination>/<audience>/day=YYYY-MM-DD/<run id>.jsonl.gz` (and `.../streams/<stream>/...`): the outbox
  files as they were, gzip-compressed. They are already the record of what was sent, line by line; turning lines of
  varying shape into Parquet columns would reshape that record, so they stay JSON Lines (DuckDB's `read_json` reads
  them, and `archived_outbox` returns their lines).

Exactly once, whatever crashes: a day's files are written under a temporary name, renamed, read back and counted;
then one transaction deletes the day's rows from the hot tables (after checking they are still exactly the rows
written) and enters the files in the catalog table `archive_files`. A file that is not in the catalog belongs to a
run that died before its transaction committed, so its rows are still hot: readers here ignore it and the next
archive run deletes it. Archive runs must not overlap (the asset runs in the `warehouse` pool).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from ..project.specs import ArchiveSpec
from ..store import archival_of, ensure_store, types_of
from ..warehouse.deferred import Deferred

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
else:
    # Imported when the archive is first read or written, not when the definitions load (every command loads them).
    pa, pc, pafs, pq = (Deferred(f"pyarrow{part}") for part in ("", ".compute", ".fs", ".parquet"))

from ..store.registry import (
    ARCHIVE_FILES,
    DELTA_RUNS,
    GATE_RESULTS,
    STREAM_CURSORS,
    STREAM_INTENTS,
    SYNC_ACKS,
    SYNC_FAILURES,
    SYNC_INFLIGHT,
    SYNC_LOG,
    SYNC_RUNS,
)
from ..warehouse import Connection
from ..warehouse.base import WarehouseError, insert_rows
from ..warehouse.sql import ident, table

#: The catalog: one row per archived file. A file is archived once it is here (see the module docstring).
OUTBOX = "outbox"
TEMPORARY = ".tmp"


class ArchiveError(WarehouseError):
    """Archiving could not be completed; nothing was deleted that is not in a verified file."""


# ---------------------------------------------------------------------------------------------------------------
# Where the files go


@dataclass(frozen=True)
class ArchiveLocation:
    """The archive root: a pyarrow filesystem and the base path in it."""

    base: str
    #: The folder or URL, for humans (checked at load to carry no credentials).
    display: str
    #: An object store's URL (None: the local folder `base`).
    url: str | None = None

    @cached_property
    def fs(self) -> pafs.FileSystem:
        """Made when first used, so that loading the definitions does not import pyarrow."""
        return pafs.LocalFileSystem() if self.url is None else pafs.FileSystem.from_uri(self.url)[0]

    def path(self, relative: str) -> str:
        return f"{self.base.rstrip('/')}/{relative}"

    def relative(self, path: str) -> str:
        return path[len(self.base.rstrip("/")) + 1 :]


def archive_location(spec: ArchiveSpec, data_dir: Path) -> ArchiveLocation:
    """`<data dir>/archive` by default; an object store's credentials come from its client's environment variables."""
    if spec.url is None:
        folder = str(Path(data_dir).absolute() / "archive")
        return ArchiveLocation(folder, folder)
    _, base = pafs.FileSystem.from_uri(spec.url)
    return ArchiveLocation(base, spec.url, spec.url)


def archive_cutoff(
    spec: ArchiveSpec, timezone: str, before: dt.date | None = None, now: dt.datetime | None = None
) -> dt.date:
    """The first day that stays hot: `before`, or today minus the retention; never later than today."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(zoneinfo.ZoneInfo(timezone)).date()
    cutoff = before if before is not None else today - dt.timedelta(days=spec.retention_days)
    return min(cutoff, today)


# ---------------------------------------------------------------------------------------------------------------
# What one day takes


@dataclass(frozen=True)
class Part:
    """The rows of one hot table that one day's archive takes: `where` over the alias `x`, with bound values."""

    table: str
    where: str
    params: tuple = ()
    rows: int = 0


@dataclass(frozen=True)
class _PairDay:
    """The archivable delta runs of one (audience, destination) on one day."""

    audience: str
    destination: str
    day: dt.date
    run_ids: tuple[str, ...]


def _archivable_runs(conn: Connection, schema: str, cutoff: dt.date) -> list[_PairDay]:
    """Delta runs of days before `cutoff` that nothing current reads, by pair and day.

    Kept hot, per pair: every run computed at or after the newest run the send gates let through. That run is the
    gates' size baseline (governance/gates.py); the newest run is what `latest_delta_run` answers and a sync
    delivers. Also kept: runs whose rows an unfolded ack covers (the next ledger fold reads them) or an in-flight
    window covers (a killed sync's recovery reads them).
    """
    if not conn.table_exists(schema, DELTA_RUNS.name):
        return []
    runs, gates = table(schema, DELTA_RUNS.name), table(schema, GATE_RESULTS.name)
    acks, inflight = table(schema, SYNC_ACKS.name), table(schema, SYNC_INFLIGHT.name)
    newest = {
        (a, d): t
        for a, d, t in conn.fetch_all(
            f"SELECT audience, destination, max(computed_at) FROM {runs} GROUP BY audience, destination"
        )
    }
    passed = {
        (a, d): t
        for a, d, t in conn.fetch_all(
            f"SELECT audience, destination, max(computed_at) FROM {runs} AS r WHERE NOT EXISTS (SELECT 1 FROM {gates} AS g "
            "WHERE g.audience = r.audience AND g.destination = r.destination AND g.run_id = r.run_id "
            "AND NOT g.passed AND NOT g.overridden) GROUP BY audience, destination"
        )
    }
    keep_from = {pair: passed.get(pair, at) for pair, at in newest.items()}
    if not keep_from:
        return []
    # A run id with any kept row stays whole (a delta step runs once per Dagster run, so this is belt and braces).
    kept = {
        (a, d, run_id)
        for a, d, run_id, at in conn.fetch_all(
            f"SELECT audience, destination, run_id, computed_at FROM {runs} WHERE computed_at >= ?",
            [min(keep_from.values())],
        )
        if at >= keep_from[(a, d)]
    }
    candidates = conn.fetch_all(
        f"SELECT audience, destination, run_id, partition_date, computed_at FROM {runs} AS r WHERE partition_date < ? "
        f"AND NOT EXISTS (SELECT 1 FROM {acks} AS a WHERE a.audience = r.audience AND a.destination = r.destination "
        "AND NOT a.folded AND a.first_seq <= r.last_seq AND a.last_seq >= r.first_seq) "
        f"AND NOT EXISTS (SELECT 1 FROM {inflight} AS i WHERE i.audience = r.audience "
        "AND i.destination = r.destination AND i.first_seq <= r.last_seq AND i.last_seq >= r.first_seq) "
        "ORDER BY partition_date, audience, destination, computed_at",
        [cutoff],
    )
    grouped: dict[tuple, list[str]] = defaultdict(list)
    for a, d, run_id, day, at in candidates:
        if at < keep_from[(a, d)] and (a, d, run_id) not in kept and run_id not in grouped[(a, d, day)]:
            grouped[(a, d, day)].append(run_id)
    return [_PairDay(a, d, day, tuple(ids)) for (a, d, day), ids in grouped.items() if ids]


def _pair_parts(conn: Connection, schema: str, pd: _PairDay, max_seq: dict, present: set[str]) -> list[Part]:
    """The rows of one pair's archivable runs of one day, per table."""
    ids = ", ".join(["?"] * len(pd.run_ids))
    pair = "x.audience = ? AND x.destination = ?"
    key = (pd.audience, pd.destination)
    runs = table(schema, DELTA_RUNS.name)

    def in_runs(column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {runs} AS r WHERE r.audience = x.audience AND r.destination = x.destination "
            f"AND r.run_id IN ({ids}) AND x.{column} BETWEEN r.first_seq AND r.last_seq)"
        )

    parts = []
    delta = f"delta__{pd.audience}__{pd.destination}"
    if max_seq.get(key) is not None:
        parts.append(
            Part(
                delta, f"x._partition = ? AND x._run_id IN ({ids}) AND x._seq < ?", (pd.day, *pd.run_ids, max_seq[key])
            )
        )
    parts += [
        Part(SYNC_ACKS.name, f"{pair} AND x.folded AND {in_runs('first_seq')}", (*key, *pd.run_ids)),
        Part(SYNC_FAILURES.name, f"{pair} AND x.partition_date = ? AND {in_runs('seq')}", (*key, pd.day, *pd.run_ids)),
        Part(GATE_RESULTS.name, f"{pair} AND x.run_id IN ({ids})", (*key, *pd.run_ids)),
    ]
    parts += [
        Part(name, f"{pair} AND x.delta_run_id IN ({ids})", (*key, *pd.run_ids))
        for name in (SYNC_LOG.name, SYNC_RUNS.name)
        if name in present
    ]
    # Last: the other tables' conditions read delta_runs, inside the same transaction.
    parts.append(Part(DELTA_RUNS.name, f"{pair} AND x.run_id IN ({ids})", (*key, *pd.run_ids)))
    return parts


@dataclass(frozen=True)
class _StreamPair:
    stream: str
    destination: str
    pruned_below: dt.datetime

    @property
    def sent(self) -> str:
        return f"stream_sent__{self.stream}__{self.destination}"


def _stream_parts(conn: Connection, schema: str, cutoff: dt.date) -> dict[dt.date, list[Part]]:
    """Sent-log rows the stream engine no longer reads: behind `pruned_below`, and not among the pair's intents.

    The engine itself deletes rows behind `high_water - 2 x lookback` after every run (streams/high_water.py), so
    these are rare: rows a run left before it could prune.
    """
    if not conn.table_exists(schema, STREAM_CURSORS.name):
        return {}
    pairs = [
        _StreamPair(*row)
        for row in conn.fetch_all(
            f"SELECT stream, destination, pruned_below FROM {table(schema, STREAM_CURSORS.name)} WHERE pruned_below IS NOT NULL"
        )
    ]
    intents = table(schema, STREAM_INTENTS.name)
    by_day: dict[dt.date, list[Part]] = defaultdict(list)
    for p in pairs:
        if not conn.table_exists(schema, p.sent):
            continue
        days = conn.fetch_all(
            f"SELECT DISTINCT partition_date FROM {table(schema, p.sent)} WHERE partition_date < ? AND cursor_value < ?",
            [cutoff, p.pruned_below],
        )
        for (day,) in days:
            by_day[day].append(
                Part(
                    p.sent,
                    "x.partition_date = ? AND x.cursor_value < ? "
                    f"AND x.event_id NOT IN (SELECT event_id FROM {intents} WHERE stream = ? AND destination = ?)",
                    (day, p.pruned_below, p.stream, p.destination),
                )
            )
    return by_day


def plan(conn: Connection, schema: str, cutoff: dt.date) -> dict[dt.date, list[Part]]:
    """Per day before `cutoff`, the rows each hot table would give up (counted), shared tables in one part each."""
    present = {
        name for name in (SYNC_LOG.name, SYNC_RUNS.name) if "delta_run_id" in dict(conn.table_columns(schema, name))
    }
    pair_days = _archivable_runs(conn, schema, cutoff)
    max_seq = {}
    for a, d in {(p.audience, p.destination) for p in pair_days}:
        name = f"delta__{a}__{d}"
        max_seq[(a, d)] = (
            conn.fetch_row(f"SELECT max(_seq) FROM {table(schema, name)}")[0]
            if conn.table_exists(schema, name)
            else None
        )
    raw: dict[dt.date, list[Part]] = defaultdict(list)
    for pd in pair_days:
        raw[pd.day] += _pair_parts(conn, schema, pd, max_seq, present)
    for day, parts in _stream_parts(conn, schema, cutoff).items():
        raw[day] += parts
    planned: dict[dt.date, list[Part]] = {}
    for day, parts in sorted(raw.items()):
        merged = _merge(parts)
        counted = [_counted(conn, schema, p) for p in merged]
        planned[day] = [p for p in counted if p.rows]
    return planned


def _merge(parts: list[Part]) -> list[Part]:
    """One part per table (the pairs' conditions joined by OR), in first-seen order, delta_runs last."""
    by_table: dict[str, list[Part]] = {}
    for p in parts:
        by_table.setdefault(p.table, []).append(p)
    merged = [
        ps[0]
        if len(ps) == 1
        else Part(name, " OR ".join(f"({p.where})" for p in ps), tuple(v for p in ps for v in p.params))
        for name, ps in by_table.items()
    ]
    return sorted(merged, key=lambda p: p.table == DELTA_RUNS.name)


def _counted(conn: Connection, schema: str, part: Part) -> Part:
    (rows,) = conn.fetch_row(
        f"SELECT count(*) FROM {table(schema, part.table)} AS x WHERE {part.where}", list(part.params)
    )
    return Part(part.table, part.where, part.params, rows)


# ---------------------------------------------------------------------------------------------------------------
# Writing, verifying, committing


@dataclass(frozen=True)
class _Written:
    part: Part
    path: str  # relative to the archive root
    rows: int
    bytes: int


class _Changed(Exception):
    """The hot rows a file was written from changed before the delete; the day is left for the next run."""


# Column types kept as such in Parquet (lower-cased type names of DuckDB, PostgreSQL, Snowflake, BigQuery); any other
# type (JSON, DECIMAL, ...) is archived as its text, which is what the engines print and hash.
@cache
def _arrow_types() -> dict[str, pa.DataType]:
    return {
        **dict.fromkeys(("bigint", "integer", "int", "int4", "int8", "int64", "smallint"), pa.int64()),
        **dict.fromkeys(("boolean", "bool"), pa.bool_()),
        "date": pa.date32(),
        **dict.fromkeys(("timestamp", "timestamp without time zone", "timestamp_ntz", "datetime"), pa.timestamp("us")),
        **dict.fromkeys(("timestamp with time zone", "timestamptz", "timestamp_tz"), pa.timestamp("us", tz="UTC")),
        **dict.fromkeys(("double", "double precision", "float", "float8", "float64", "real"), pa.float64()),
    }


def _columns(conn: Connection, schema: str, name: str) -> tuple[pa.Schema, str]:
    """The Arrow schema of a hot table's archive files, and the SELECT list producing it."""
    fields, select = [], []
    for column, sql_type in conn.table_columns(schema, name):
        arrow_type = _arrow_types().get(str(sql_type).lower())
        fields.append(pa.field(column, arrow_type or pa.string()))
        select.append(f"x.{ident(column)}" if arrow_type else f"CAST(x.{ident(column)} AS VARCHAR) AS {ident(column)}")
    return pa.schema(fields), ", ".join(select)


def _write_part(
    conn: Connection, location: ArchiveLocation, schema: str, part: Part, day: dt.date, run_id: str
) -> _Written:
    """Export a part to `<table>/day=<day>/<run id>.parquet` (temporary name, then renamed), read back and counted."""
    arrow_schema, select = _columns(conn, schema, part.table)
    relative = f"{part.table}/day={day.isoformat()}/{run_id}.parquet"
    final, temporary = location.path(relative), location.path(relative + TEMPORARY)
    location.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
    rows = 0
    sql = f"SELECT {select} FROM {table(schema, part.table)} AS x WHERE {part.where}"
    with (
        location.fs.open_output_stream(temporary) as out,
        pq.ParquetWriter(out, arrow_schema, compression="zstd") as writer,
    ):
        for batch in conn.stream_arrow(sql, list(part.params)):
            writer.write_table(pa.Table.from_batches([batch]).cast(arrow_schema))
            rows += batch.num_rows
    location.fs.move(temporary, final)
    # Read every page back, not only the footer: a file that cannot be read in full is not an archive.
    with location.fs.open_input_file(final) as handle:
        read = sum(batch.num_rows for batch in pq.ParquetFile(handle).iter_batches())
    if read != rows:
        raise ArchiveError(f"archive file {location.display}/{relative} holds {read} rows, {rows} were written")
    return _Written(part, relative, rows, location.fs.get_file_info(final).size)


def _commit_day(
    conn: Connection, schema: str, day: dt.date, written: list[_Written], run_id: str, now: dt.datetime
) -> None:
    """Delete the archived rows from the hot tables and enter their files in the catalog, in one transaction."""
    with conn.transaction():
        for w in written:
            where, params = w.part.where, list(w.part.params)
            (hot,) = conn.fetch_row(f"SELECT count(*) FROM {table(schema, w.part.table)} AS x WHERE {where}", params)
            if hot != w.rows:
                raise _Changed(f"{w.part.table} on {day}: {hot} rows now, {w.rows} archived")
            conn.execute(f"DELETE FROM {table(schema, w.part.table)} AS x WHERE {where}", params)
        insert_rows(
            conn,
            table(schema, ARCHIVE_FILES.name),
            types_of(ARCHIVE_FILES),
            [(w.part.table, day, w.path, w.rows, w.bytes, run_id, now) for w in written],
        )


_TABLE_FILE = re.compile(r"[a-z][a-z0-9_]*/day=\d{4}-\d{2}-\d{2}/[^/]+\.parquet(\.tmp)?")


def remove_orphans(conn: Connection, location: ArchiveLocation, schema: str) -> int:
    """Delete archive files no committed run owns (left by a run that died, or replaced by a purge); returns how many."""
    known = {path for (path,) in conn.fetch_all(f"SELECT path FROM {table(schema, ARCHIVE_FILES.name)}")}
    removed = 0
    for info in location.fs.get_file_info(pafs.FileSelector(location.base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        relative = location.relative(info.path)
        orphan = _TABLE_FILE.fullmatch(relative) and relative not in known
        if orphan or (relative.startswith(f"{OUTBOX}/") and relative.endswith(TEMPORARY)):
            location.fs.delete_file(info.path)
            removed += 1
    return removed


def _delete_quietly(location: ArchiveLocation, written: Iterable[_Written]) -> None:
    for w in written:
        try:
            location.fs.delete_file(location.path(w.path))
        except OSError:
            pass  # the next run's sweep removes it


# ---------------------------------------------------------------------------------------------------------------
# Outboxes


def _outbox_files(outboxes: Mapping[str, Path], cutoff: dt.date) -> Iterable[tuple[Path, str, dt.date]]:
    """(file, archive path, day) of each outbox file of a day before `cutoff` (layout: destinations/outbox.py)."""
    for name, folder in sorted(outboxes.items()):
        base = Path(folder) / name
        if not base.is_dir():
            continue
        # <name>/<audience>/<day>/ and <name>/streams/<stream>/<day>/
        owners = [(f"{name}/{d.name}", d) for d in base.iterdir() if d.is_dir() and d.name != "streams"]
        streams = base / "streams"
        if streams.is_dir():
            owners += [(f"{name}/streams/{d.name}", d) for d in streams.iterdir() if d.is_dir()]
        for prefix, owner in sorted(owners):
            for day_dir in sorted(owner.iterdir()):
                try:
                    day = dt.date.fromisoformat(day_dir.name)
                except ValueError:
                    continue
                if day < cutoff:
                    for file in sorted(day_dir.glob("*.jsonl")):
                        yield file, f"{OUTBOX}/{prefix}/day={day.isoformat()}/{file.name}.gz", day


def _archive_outbox_file(location: ArchiveLocation, source: Path, relative: str) -> tuple[int, int]:
    """Gzip one outbox file into the archive (same name: a rerun overwrites it), verify it, delete the original.

    Returns (lines, bytes written)."""
    final, temporary = location.path(relative), location.path(relative + TEMPORARY)
    location.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
    digest, lines = hashlib.sha256(), 0
    with source.open("rb") as src, location.fs.open_output_stream(temporary, compression="gzip") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            out.write(chunk)
    location.fs.move(temporary, final)
    check = hashlib.sha256()
    with location.fs.open_input_stream(final, compression="gzip") as back:
        while chunk := back.read(1 << 20):
            check.update(chunk)
    if check.digest() != digest.digest():
        raise ArchiveError(f"archive file {location.display}/{relative} does not read back as {source.name}")
    size = location.fs.get_file_info(final).size
    source.unlink()
    for folder in (source.parent, source.parent.parent):  # the day's folder, then its owner's, once empty
        if not any(folder.iterdir()):
            folder.rmdir()
    return lines, size


# ---------------------------------------------------------------------------------------------------------------
# The archive run


@dataclass
class TableArchived:
    rows: int = 0
    files: int = 0
    bytes: int = 0
    days: set[dt.date] = field(default_factory=set)


@dataclass
class ArchiveReport:
    """What one archive run took (or, in a dry run, would take), per table; counts only, no member data."""

    cutoff: dt.date
    dry_run: bool = False
    tables: dict[str, TableArchived] = field(default_factory=dict)
    orphans_removed: int = 0
    #: Days whose hot rows changed while being archived: left hot, for the next run.
    skipped_days: list[dt.date] = field(default_factory=list)

    def add(self, name: str, day: dt.date, rows: int, size: int = 0) -> None:
        entry = self.tables.setdefault(name, TableArchived())
        entry.rows += rows
        entry.files += 1
        entry.bytes += size
        entry.days.add(day)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def files(self) -> int:
        return sum(t.files for t in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    @property
    def days(self) -> list[dt.date]:
        return sorted({d for t in self.tables.values() for d in t.days})

    def table_rows(self) -> list[dict[str, Any]]:
        """One dict per table: name, rows (outbox: lines), files, bytes, first and last day."""
        return [
            {
                "table": name,
                "rows": t.rows,
                "files": t.files,
                "bytes": t.bytes,
                "days": f"{min(t.days)}..{max(t.days)}" if len(t.days) > 1 else str(min(t.days)),
            }
            for name, t in sorted(self.tables.items())
        ]


def archive(
    conn: Connection,
    location: ArchiveLocation,
    schema: str,
    *,
    cutoff: dt.date,
    run_id: str,
    outboxes: Mapping[str, Path] | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    log: Callable[[str], None] | None = None,
) -> ArchiveReport:
    """Archive every day before `cutoff`: hot rows to Parquet (a transaction per day), outbox files gzipped."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = ArchiveReport(cutoff, dry_run)
    if not dry_run:
        ensure_store(conn, schema)
        report.orphans_removed = remove_orphans(conn, location, schema)
    for day, parts in plan(conn, schema, cutoff).items():
        if dry_run:
            for p in parts:
                report.add(p.table, day, p.rows)
            continue
        written: list[_Written] = []
        try:
            for p in parts:
                written.append(_write_part(conn, location, schema, p, day, run_id))
            _commit_day(conn, schema, day, written, run_id, now)
        except _Changed as exc:
            _delete_quietly(location, written)
            report.skipped_days.append(day)
            if log:
                log(f"archive: {exc}; the day stays hot until the next run")
            continue
        except BaseException:
            _delete_quietly(location, written)
            raise
        for w in written:
            report.add(w.part.table, day, w.rows, w.bytes)
        if log:
            log(f"archived {day}: " + ", ".join(f"{w.part.table} {w.rows}" for w in written))
    for source, relative, day in list(_outbox_files(outboxes or {}, cutoff)):
        name = "/".join(relative.split("/")[:-2])  # outbox/<destination>/<audience> or .../streams/<stream>
        if dry_run:
            report.add(name, day, source.read_bytes().count(b"\n"))
            continue
        report.add(name, day, *_archive_outbox_file(location, source, relative))
    return report


# ---------------------------------------------------------------------------------------------------------------
# Reading archived rows back


def archived_paths(conn: Connection, schema: str, table_name: str) -> list[str]:
    """The catalog's files of one table, relative to the archive root, oldest day first."""
    if not conn.table_exists(schema, ARCHIVE_FILES.name):
        return []
    rows = conn.fetch_all(
        f"SELECT path FROM {table(schema, ARCHIVE_FILES.name)} WHERE table_name = ? ORDER BY day, path", [table_name]
    )
    return [path for (path,) in rows]


def archived(conn: Connection, location: ArchiveLocation, schema: str, table_name: str) -> pa.Table | None:
    """Every archived row of a table, read back from its Parquet files (None when nothing of it is archived)."""
    paths = [location.path(p) for p in archived_paths(conn, schema, table_name)]
    if not paths:
        return None
    # Files written before a column was added lack it: read them all under the union of their schemas.
    unified = pa.unify_schemas([pq.read_schema(p, filesystem=location.fs) for p in paths])
    return archive_dataset(location, paths, schema=unified).to_table()


def archive_dataset(location: ArchiveLocation, paths: list[str], schema: pa.Schema | None = None):
    """The archived Parquet files at `paths` as one pyarrow dataset (read lazily, filtered by the reader)."""
    # Imported here: pyarrow.dataset imports pandas (~0.4 s), which every run process would otherwise pay at start.
    import pyarrow.dataset as pads

    return pads.dataset(paths, schema=schema, format="parquet", filesystem=location.fs)


def archived_outbox(location: ArchiveLocation) -> pa.Table:
    """Archived outbox lines: destination, owner (audience, or `streams/<stream>`), day, file and the JSON line."""
    columns: dict[str, list] = {"destination": [], "owner": [], "day": [], "file": [], "line": []}
    selector = pafs.FileSelector(location.path(OUTBOX), recursive=True, allow_not_found=True)
    for info in sorted(location.fs.get_file_info(selector), key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.path.endswith(".jsonl.gz"):
            continue
        parts = location.relative(info.path).split("/")  # outbox, destination, owner..., day=D, file
        with location.fs.open_input_stream(info.path, compression="gzip") as stream:
            lines = stream.read().decode("utf-8").splitlines()
        for line in lines:
            columns["destination"].append(parts[1])
            columns["owner"].append("/".join(parts[2:-2]))
            columns["day"].append(dt.date.fromisoformat(parts[-2].removeprefix("day=")))
            columns["file"].append(parts[-1])
            columns["line"].append(line)
    return pa.table(
        columns,
        schema=pa.schema(
            [
                ("destination", pa.string()),
                ("owner", pa.string()),
                ("day", pa.date32()),
                ("file", pa.string()),
                ("line", pa.string()),
            ]
        ),
    )


OUTBOX_VIEW = "outbox_archive"


def query(conn: Connection, location: ArchiveLocation, schema: str, sql: str) -> pa.Table:
    """Run one DuckDB query in which each archived table's name reads its hot and archived rows together.

    `outbox_archive` holds the archived outbox lines. On a DuckDB warehouse the query runs in the warehouse's own
    connection (hot rows are read in place); on other engines in an in-memory DuckDB, with the hot rows of the tables
    the query names fetched as Arrow.
    """
    import duckdb

    from ..warehouse.duckdb_engine import DuckDBConnection

    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise ArchiveError(f"the archive query does not parse: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ArchiveError("the archive query must be one SELECT statement")
    named = {t.name for t in statements[0].find_all(exp.Table)}
    # On DuckDB (the only engine whose connection has `raw`) the query runs in the warehouse itself.
    in_place = isinstance(conn, DuckDBConnection)
    duck = conn.raw if isinstance(conn, DuckDBConnection) else duckdb.connect()
    registered: list[str] = []
    try:
        for name in sorted(named):
            old = archived_outbox(location) if name == OUTBOX_VIEW else archived(conn, location, schema, name)
            sources = []
            if name != OUTBOX_VIEW and conn.table_exists(schema, name):
                if in_place:
                    sources.append(table(schema, name))
                else:
                    duck.register(f"__hot_{name}", conn.fetch_arrow(f"SELECT * FROM {table(schema, name)}"))
                    sources.append(ident(f"__hot_{name}"))
            if old is not None:
                duck.register(f"__archived_{name}", old)
                sources.append(ident(f"__archived_{name}"))
            if not sources:
                continue  # not ours: DuckDB resolves it as it would anyway
            registered.append(name)
            duck.execute(
                f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS "
                + " UNION ALL BY NAME ".join(f"SELECT * FROM {source}" for source in sources)
            )
        return duck.sql(sql).to_arrow_table()
    finally:
        if in_place:
            for name in registered:
                duck.execute(f"DROP VIEW IF EXISTS temp.{ident(name)}")
                for prefix in ("__archived_", "__hot_"):
                    try:
                        duck.unregister(f"{prefix}{name}")
                    except Exception:  # noqa: BLE001 - never registered
                        pass
        else:
            duck.close()


# ---------------------------------------------------------------------------------------------------------------
# Forgetting a person in the archive


def purge_archived(
    conn: Connection,
    location: ArchiveLocation,
    schema: str,
    *,
    keys: Iterable[Any],
    identifiers: Iterable[Any] = (),
    run_id: str,
) -> dict[str, int]:
    """Remove a person from the archive: rows whose key column (the store's registry) holds one of `keys`, and outbox lines
    whose identifier is one of `identifiers`; returns rows (or lines) removed per table.

    Each file holding them is rewritten without them (new name, then the catalog is switched in one transaction,
    then the old file is deleted; a crash in between leaves an orphan the next run deletes).
    """
    wanted = pa.array(sorted({str(k) for k in keys}), pa.string())
    removed: dict[str, int] = defaultdict(int)
    if conn.table_exists(schema, ARCHIVE_FILES.name):
        remove_orphans(conn, location, schema)
        files = conn.fetch_all(f"SELECT table_name, day, path FROM {table(schema, ARCHIVE_FILES.name)} ORDER BY path")
    else:
        files = []
    for name, day, path in files:
        entry = archival_of(name)
        if entry is None or entry.key is None or not len(wanted):
            continue
        data = pq.read_table(location.path(path), filesystem=location.fs)
        if entry.key not in data.column_names:
            continue
        hit = pc.fill_null(pc.is_in(pc.cast(data[entry.key], pa.string()), value_set=wanted), False)
        count = pc.sum(hit).as_py() or 0
        if not count:
            continue
        _rewrite(
            conn,
            location,
            schema,
            path,
            data.filter(pc.invert(hit)),
            f"{name}/day={day}/{run_id}-{uuid.uuid4().hex[:8]}.parquet",
        )
        removed[name] += count
    lines = _purge_outbox(location, {str(i) for i in identifiers})
    for name, count in lines.items():
        removed[name] += count
    return dict(removed)


def _rewrite(conn: Connection, location: ArchiveLocation, schema: str, old: str, kept: pa.Table, new: str) -> None:
    """Replace archive file `old` by `new` holding `kept` (none: the file is dropped from the catalog)."""
    catalog = table(schema, ARCHIVE_FILES.name)
    if kept.num_rows:
        final, temporary = location.path(new), location.path(new + TEMPORARY)
        with location.fs.open_output_stream(temporary) as out:
            pq.write_table(kept, out, compression="zstd")
        location.fs.move(temporary, final)
        with location.fs.open_input_file(final) as handle:
            if sum(b.num_rows for b in pq.ParquetFile(handle).iter_batches()) != kept.num_rows:
                raise ArchiveError(f"rewritten archive file {location.display}/{new} does not read back in full")
        size = location.fs.get_file_info(final).size
        conn.execute(
            f"UPDATE {catalog} SET path = ?, row_count = ?, byte_count = ? WHERE path = ?",
            [new, kept.num_rows, size, old],
        )
    else:
        conn.execute(f"DELETE FROM {catalog} WHERE path = ?", [old])
    location.fs.delete_file(location.path(old))


def _purge_outbox(location: ArchiveLocation, identifiers: set[str]) -> dict[str, int]:
    """Rewrite each archived outbox file without the lines whose identifier value is one of `identifiers`."""
    removed: dict[str, int] = defaultdict(int)
    if not identifiers:
        return removed
    selector = pafs.FileSelector(location.path(OUTBOX), recursive=True, allow_not_found=True)
    for info in location.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.path.endswith(".jsonl.gz"):
            continue
        with location.fs.open_input_stream(info.path, compression="gzip") as stream:
            lines = stream.read().decode("utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not _identifies(line, identifiers)]
        if len(kept) == len(lines):
            continue
        temporary = info.path + TEMPORARY
        with location.fs.open_output_stream(temporary, compression="gzip") as out:
            out.write("".join(kept).encode("utf-8"))
        location.fs.move(temporary, info.path)  # same name: a crash before this leaves only a .tmp, swept later
        removed["/".join(location.relative(info.path).split("/")[:-2])] += len(lines) - len(kept)
    return removed


def _identifies(line: str, identifiers: set[str]) -> bool:
    identifier = json.loads(line).get("identifier") or {}
    return any(str(value) in identifiers for value in identifier.values())

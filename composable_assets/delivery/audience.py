"""Audience deltas as a delivery source: rows of one delta run from the pair's tables, acks into the ledger."""

from __future__ import annotations

import datetime as dt
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Any, cast, overload

from ..delta.diff import DeltaRun
from ..delta.ledger import clear_intents, fold_acks, record_acks, record_intent, record_rejections
from ..destinations import BatchResult, PreparedBatch, Record, Session
from ..store import PairTables
from .loop import SAMPLE_SIZE, DeliveryReport, run as run_loop

# Rows read from the warehouse per query; split into destination-sized batches in memory.
READ_CHUNK_ROWS = 10_000
# An intent window covers 8 x concurrency batches (600 rows a slot at Braze's 75): one commit per that many batches
# for the answers and the next intent together. A DuckDB commit of those two small rows cost ~3 ms of CPU, more than
# the 75 rows of a batch; windows of 2 x concurrency batches were a fifth of a 100,000-row sync's CPU. The price: a
# killed sync leaves up to that many rows in doubt, confirmed with the destination or sent again by the next run.
WINDOW_BATCHES_PER_SLOT = 8

# Engines whose rendering of a session's `object_sql` is tested to give the objects Python builds.
PREPARED_DIALECTS = frozenset({"duckdb", "postgres"})

# Answers are checkpointed at least this often, however long a window takes to go out.
CHECKPOINT_SECONDS = 1.0

ROW_COLUMNS = "d._seq, d._op, d._key, d._identifier, d._fields, d._previous"
# A delta row is done when the ledger already holds it: a removed key is gone, anything else has the row's hash.
DONE = "CASE WHEN d._op = 'remove' THEN l._key IS NULL ELSE l._hash IS NOT DISTINCT FROM d._hash END"


@dataclass
class SyncReport(DeliveryReport):
    """What one sync did, for metadata and the command line."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    failed: int = 0
    #: Rows the ledger already held (a re-run after a crash).
    skipped: int = 0
    #: Rows of the delta run, for progress.
    total: int = 0

    @property
    def delivered(self) -> int:
        return self.added + self.updated + self.removed

    @property
    def left(self) -> int:
        return max(0, self.total - self.skipped - self.delivered - self.failed - self.unsent)


def records_from_rows(rows: list[dict[str, Any]]) -> list[Record]:
    """Delta rows as read from the warehouse (JSON columns as text) -> Records; numbered if unsequenced."""
    return [
        Record.from_json(r.get("_seq", i), r["_key"], r["_op"], r["_identifier"], r["_fields"], r["_previous"])
        for i, r in enumerate(rows)
    ]


class Rows(Sequence[Record]):
    """A chunk of delta rows as columns, sliced into batches by the loop: a batch whose every row has the object
    the warehouse wrote for it (and an identifier) is a `PreparedBatch`, any other a list of Records."""

    def __init__(self, columns: list[list[Any]]):
        self.seqs, self.changes, self.keys, self.identifiers, self.fields, self.previous = columns[:6]
        self.objects: list[str | None] | None = columns[6] if len(columns) > 6 else None

    def __len__(self) -> int:
        return len(self.seqs)

    @overload
    def __getitem__(self, rows: int) -> Record: ...

    @overload
    def __getitem__(self, rows: slice) -> PreparedBatch | list[Record]: ...

    def __getitem__(self, rows: int | slice) -> Record | PreparedBatch | list[Record]:
        if not isinstance(rows, slice):
            return self[rows : rows + 1 or None][0]
        identifiers = self.identifiers[rows]
        objects = self.objects[rows] if self.objects is not None else None
        if objects is not None and None not in objects and None not in identifiers:
            return PreparedBatch(
                self.seqs[rows], self.keys[rows], self.changes[rows], identifiers, self.fields[rows],
                self.previous[rows], cast(list[str], objects),  # no None among them: checked just above
            )  # fmt: skip
        return list(
            map(
                Record.from_json, self.seqs[rows], self.keys[rows], self.changes[rows], identifiers,
                self.fields[rows], self.previous[rows],
            )
        )  # fmt: skip


def _chunks(
    conn, tables: PairTables, run: DeltaRun, batch_size: int, object_sql: str | None = None
) -> Iterator[tuple[Rows, int]]:
    """Delta rows in seq order, a chunk at a time, minus rows the ledger already holds (a re-run after a crash).

    `object_sql`: the session's SQL for each row's request object, written by the warehouse beside the row.
    """
    selected = (
        f"SELECT {ROW_COLUMNS}{f', {object_sql} AS _object' if object_sql else ''} "
        f"FROM {tables.delta} AS d WHERE d._seq BETWEEN ? AND ?"
    )
    whole = f"{selected} ORDER BY d._seq"
    # A row whose object the warehouse wrote needs neither its fields nor its previous values (a Record built for
    # it, for a rejection, reads its key and change): left out, they are not carried to Python at all (PostgreSQL:
    # 0.27 -> 0.16 s of client CPU for 100,000 rows). A chunk mixing rows with and without an object is read again
    # whole, as a batch holding both is built in Python from every row's fields.
    lean = (
        "SELECT _seq, _op, _key, _identifier, CASE WHEN _object IS NULL THEN _fields END AS _fields, "
        f"CASE WHEN _object IS NULL THEN _previous END AS _previous, _object FROM ({selected}) AS r ORDER BY _seq"
        if object_sql
        else whole
    )
    done = _done_ranges(conn, tables, run)
    # A whole number of batches per chunk, so no chunk ends in a short batch (a wasted request).
    chunk_rows = max(batch_size, READ_CHUNK_ROWS // batch_size * batch_size)
    for lo in range(run.first_seq, run.last_seq + 1, chunk_rows):
        hi = min(lo + chunk_rows - 1, run.last_seq)
        # Column by column, and batch by batch from the columns: no Python object per row unless a batch needs
        # Records, and the fields stay JSON text until a destination needs them as values.
        columns = conn.fetch_columns(lean, [lo, hi])
        if object_sql and None in columns[6] and any(o is not None for o in columns[6]):
            columns = conn.fetch_columns(whole, [lo, hi])
        read = len(columns[0])
        overlapping = [(first, last) for first, last in done if first <= hi and last >= lo]
        if overlapping:
            seqs, todo = columns[0], [True] * read
            for first, last in overlapping:  # seqs are in order: each done range is one slice of the chunk
                start, end = bisect_left(seqs, first), bisect_right(seqs, last)
                todo[start:end] = [False] * (end - start)
            columns = [list(compress(column, todo)) for column in columns]
        rows = Rows(columns)
        yield rows, read - len(rows)


def _done_ranges(conn, tables: PairTables, run: DeltaRun) -> list[tuple[int, int]]:
    """The run's rows the ledger already holds (a re-run after a crash), as runs of consecutive seqs, oldest first.

    One join of the run with the ledger, not one per chunk: each chunk's join scanned the whole ledger, which at 10M
    members and a day's 200,000 changed rows cost 2.8 s of CPU against 1.0 s for the one (none done: no row comes).
    """
    return conn.fetch_all(
        "SELECT min(_seq), max(_seq) FROM ("
        "SELECT d._seq, d._seq - row_number() OVER (ORDER BY d._seq) AS island "
        f"FROM {tables.delta} AS d LEFT JOIN {tables.ledger} AS l ON l._key = d._key "
        f"WHERE d._seq BETWEEN ? AND ? AND {DONE}) AS done GROUP BY island ORDER BY 1",
        [run.first_seq, run.last_seq],
    )


def _confirm_leftovers(conn, tables: PairTables, session: Session, *, sync_run_id: str) -> None:
    """After a kill, acknowledge the rows it left in flight that the destination already holds as we would send them."""
    # Intent rows are written before their rows are sent and deleted on every orderly exit, so any found here were
    # left by a killed process: the caller holds the pair's lease, so no other sync of the pair is alive. Unconfirmed
    # rows stay pending and are sent as usual.
    pair = [tables.audience, tables.destination]
    # A window starts at the oldest batch still unsettled, so a run's newest window covers all it left in flight.
    newest = (
        f"SELECT first_seq, last_seq FROM {tables.inflight} WHERE audience = ? AND destination = ? "
        "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY last_seq DESC) = 1"
    )
    windows = conn.fetch_all(newest, pair)
    if not windows:
        return
    rows = conn.fetch_arrow(
        f"SELECT {ROW_COLUMNS} FROM {tables.delta} AS d LEFT JOIN {tables.ledger} AS l ON l._key = d._key "
        f"WHERE d._seq BETWEEN ? AND ? AND d._identifier IS NOT NULL AND NOT ({DONE}) "
        f"AND EXISTS (SELECT 1 FROM ({newest}) AS w WHERE d._seq BETWEEN w.first_seq AND w.last_seq) ORDER BY d._seq",
        [min(first for first, _ in windows), max(last for _, last in windows), *pair],
    ).to_pylist()
    records = records_from_rows(rows)
    # Only rows we asked about may be acknowledged, whatever the session answers.
    confirmed = set(session.confirm(records)) & {r.seq for r in records} if records else set()
    if confirmed:
        record_acks(conn, tables, sync_run_id, _acked_ranges(list(confirmed)), _now())
        fold_acks(conn, tables)  # so the loop below finds them done and skips them
    clear_intents(conn, tables)


def _acked_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sequence numbers: one small checkpoint row each."""
    ordered = sorted(seqs)
    if not ordered:
        return []
    if ordered[-1] - ordered[0] + 1 == len(ordered):  # the usual case: every row of consecutive batches
        return [(ordered[0], ordered[-1])]
    ranges: list[tuple[int, int]] = []
    for s in ordered:
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


class AudienceSource:
    """One delta run of a pair: acks as sequence ranges in `sync_acks`, intents as windows of sequence numbers."""

    def __init__(
        self,
        conn,
        tables: PairTables,
        run: DeltaRun,
        *,
        batch_size: int,
        concurrency: int,
        sync_run_id: str,
        partition: dt.date,
        object_sql: str | None = None,
    ):
        self.conn, self.tables, self.run = conn, tables, run
        self.object_sql = object_sql
        self.batch_size = batch_size
        self.window_seqs = WINDOW_BATCHES_PER_SLOT * max(1, concurrency) * batch_size
        self.sync_run_id, self.partition = sync_run_id, partition
        self.report = SyncReport(total=run.size)
        self.declared = run.first_seq - 1  # the last seq this run has declared in flight
        self.answers: list[tuple[Sequence[Record], BatchResult]] = []
        self.checkpointed = time.monotonic()

    def chunks(self) -> Iterator[Rows]:
        for rows, skipped in _chunks(self.conn, self.tables, self.run, self.batch_size, self.object_sql):
            self.report.skipped += skipped
            yield rows

    def going_out(self, batches: list[Sequence[Record]], oldest: Record | None) -> None:
        new_window = bool(batches) and batches[-1][-1].seq > self.declared
        # Group commit: every batch answered since the last checkpoint, in one statement, written before a new
        # intent window is declared, at the end (no batches), or after CHECKPOINT_SECONDS. Each statement is a
        # warehouse commit that cost about a millisecond of CPU, more than the rows of a batch: once a window
        # rather than once a batch. In between, answered rows stay inside the newest intent window (it runs from
        # the oldest batch unsettled when it was written to past every batch sent since), so a kill leaves them
        # where the next run looks for them, as it does the batches in flight.
        write = bool(self.answers) and (
            new_window or not batches or time.monotonic() - self.checkpointed >= CHECKPOINT_SECONDS
        )
        # The answers and the next window in one commit when both are due (a commit costs more than the rows).
        with self.conn.transaction() if write and new_window else nullcontext():
            if write:
                self._write_answers()
            if new_window:
                # One intent row per window of sequence numbers: the window starts at the first batch not yet
                # declared (however the batches going out together fall), and the row covers it from the oldest
                # batch unsettled.
                fresh = next(b[0].seq for b in batches if b[-1].seq > self.declared)
                end = max(fresh, self.declared + 1) + self.window_seqs - 1
                self.declared = min(max(batches[-1][-1].seq, end), self.run.last_seq)
                start = oldest.seq if oldest is not None else batches[0][0].seq
                record_intent(self.conn, self.tables, self.sync_run_id, start, self.declared, _now())

    def _write_answers(self) -> None:
        _checkpoint(
            self.conn, self.tables, self.answers, self.report, sync_run_id=self.sync_run_id, partition=self.partition
        )
        self.answers = []
        self.checkpointed = time.monotonic()

    def answered(self, batch: Sequence[Record], result: BatchResult) -> None:
        self.answers.append((batch, result))

    def unanswered(self, batch: Sequence[Record], exc: BaseException) -> BatchResult | None:
        return None  # its rows are still different from the ledger: the next run sends them

    def close(self, drained: bool) -> None:
        # On any way out but a killed process; after a kill, the next reader folds the checkpoints. Nothing is in
        # flight here (the pool has joined its threads), so intent rows left behind always mean a killed process.
        if self.answers:  # answers a stop left unwritten (an orderly end wrote them with its last going_out)
            self._write_answers()
        clear_intents(self.conn, self.tables, self.sync_run_id)
        fold_acks(self.conn, self.tables)


def deliver(
    conn,
    tables: PairTables,
    run: DeltaRun,
    session: Session,
    *,
    batch_size: int,
    concurrency: int = 1,
    sync_run_id: str,
    partition: dt.date,
    on_progress: Callable[[SyncReport], None] | None = None,
    keep_going: Callable[[], None] | None = None,
) -> SyncReport:
    """Send the delta batch by batch, up to `concurrency` batches in flight; checkpoint each acknowledged batch."""
    fold_acks(conn, tables)
    _confirm_leftovers(conn, tables, session, sync_run_id=sync_run_id)
    # Request objects written by the warehouse only where the SQL is known to render alike (DuckDB, PostgreSQL):
    # elsewhere the session builds them, as it does for any row its SQL leaves NULL.
    object_sql = (
        session.object_sql("d._op", "d._identifier", "CAST(d._fields AS VARCHAR)")
        if conn.dialect in PREPARED_DIALECTS
        else None
    )
    source = AudienceSource(
        conn,
        tables,
        run,
        batch_size=batch_size,
        concurrency=concurrency,
        sync_run_id=sync_run_id,
        partition=partition,
        object_sql=object_sql,
    )
    run_loop(
        source,
        session.send,
        batch_size=batch_size,
        concurrency=concurrency,
        keep_going=keep_going,
        on_progress=on_progress,
        stats=session.stats,
        senders=session.concurrent(concurrency),
    )
    return source.report


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _checkpoint(
    conn, tables, answered: list[tuple[Sequence[Record], BatchResult]], report: SyncReport, *, sync_run_id, partition
) -> None:
    """Record what the answered batches acknowledged (one statement) and rejected; count both."""
    now = _now()
    acked: list[int] = []
    failures: list = []
    changes: Counter[str] = Counter()
    for batch, result in answered:
        acked += result.acknowledged
        if len(result.acknowledged) == len(batch):  # every row acknowledged: no row to look up
            changes.update(batch.changes if isinstance(batch, PreparedBatch) else map(attrgetter("change"), batch))
        else:
            by_seq = {r.seq: r for r in batch}
            changes.update(by_seq[seq].change for seq in result.acknowledged)
            for seq, reason in result.rejected.items():
                rec = by_seq[seq]
                failures.append(
                    [tables.audience, tables.destination, partition, sync_run_id, seq, rec.key, rec.change, reason, now]
                )
                if len(report.failures) < SAMPLE_SIZE:
                    report.failures.append((rec.key, reason))
        report.failed += len(result.rejected)
        report.unsent += len(batch) - len(result.acknowledged) - len(result.rejected)
        report.batches += 1
        report.keep_sample(result)
    report.added += changes["add"]
    report.updated += changes["update"]
    report.removed += changes["remove"]
    record_acks(conn, tables, sync_run_id, _acked_ranges(acked), now)
    record_rejections(conn, tables, failures)

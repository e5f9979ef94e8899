"""Delivering one delta run through a destination session, checkpointing every acknowledged batch."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..destinations import BatchResult, Record, Session, TransientError
from .diff import DeltaRun
from .ledger import clear_intents, fold_acks, record_acks, record_intent, record_rejections
from ..store import PairTables

# Rows read from the warehouse per query; split into destination-sized batches in memory.
READ_CHUNK_ROWS = 10_000
SAMPLE_SIZE = 5
# An intent window covers 2 x concurrency batches: one small write per that many batches, well ahead of the at
# most `concurrency` batches in flight.
WINDOW_BATCHES_PER_SLOT = 2

ROW_COLUMNS = "d._seq, d._op, d._key, d._identifier, d._fields, d._previous"
# A delta row is done when the ledger already holds it: a removed key is gone, anything else has the row's hash.
DONE = "CASE WHEN d._op = 'remove' THEN l._key IS NULL ELSE l._hash IS NOT DISTINCT FROM d._hash END"


@dataclass
class SyncReport:
    """What one sync did, for metadata and the command line."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    unsent: int = 0
    batches: int = 0
    seconds: float = 0.0
    sample: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped_by: str | None = None
    #: What the session measured: requests, retries, rate-limit waits.
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.added + self.updated + self.removed


def records_from_rows(rows: list[dict[str, Any]]) -> list[Record]:
    """Delta rows as read from the warehouse (JSON columns as text) -> Records; numbered if unsequenced."""
    return [
        Record(
            seq=r.get("_seq", i),
            key=r["_key"],
            change=r["_op"],
            identifier=r["_identifier"],
            fields=json.loads(r["_fields"]) if r["_fields"] is not None else None,
            previous=json.loads(r["_previous"]) if r["_previous"] is not None else None,
        )
        for i, r in enumerate(rows)
    ]


def _chunks(conn, tables: PairTables, run: DeltaRun, batch_size: int) -> Iterator[tuple[list[Record], int]]:
    """Delta rows in seq order, a chunk at a time, minus rows the ledger already holds (a re-run after a crash)."""
    query = (
        f"SELECT {ROW_COLUMNS}, {DONE} AS _done "
        f"FROM {tables.delta} AS d LEFT JOIN {tables.ledger} AS l ON l._key = d._key "
        "WHERE d._seq BETWEEN ? AND ? ORDER BY d._seq"
    )
    # A whole number of batches per chunk, so no chunk ends in a short batch (a wasted request).
    chunk_rows = max(batch_size, READ_CHUNK_ROWS // batch_size * batch_size)
    for lo in range(run.first_seq, run.last_seq + 1, chunk_rows):
        hi = min(lo + chunk_rows - 1, run.last_seq)
        rows = conn.fetch_arrow(query, [lo, hi]).to_pylist()
        todo = [r for r in rows if not r["_done"]]
        yield records_from_rows(todo), len(rows) - len(todo)


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
    ranges: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


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
    on_progress: Callable[[SyncReport, int], None] | None = None,
    keep_going: Callable[[], None] | None = None,
) -> SyncReport:
    """Send the delta batch by batch, up to `concurrency` batches in flight; checkpoint each acknowledged batch.

    Only this thread touches the warehouse connection; sender threads only talk to the destination. `keep_going` is
    asked before each batch leaves and raises to stop sending (the pair's lease ran out): batches already out are
    still checkpointed, then its error is raised.
    """
    started = time.monotonic()
    report = SyncReport()
    fold_acks(conn, tables)
    _confirm_leftovers(conn, tables, session, sync_run_id=sync_run_id)
    remaining = run.size
    window_rows = WINDOW_BATCHES_PER_SLOT * max(1, concurrency) * batch_size
    declared = run.first_seq - 1  # the last seq this run has declared in flight
    in_flight: deque[tuple[list[Record], dict[int, str], Future]] = deque()
    crash: BaseException | None = None

    last_progress = 0.0

    def settle(wait: bool) -> None:
        """Checkpoint the oldest batch (waiting for it if asked) and every later one already answered, together.

        Group commit: when several batches come back while a checkpoint is being written, the next
        checkpoint covers them all in one statement; no acknowledgement waits longer than one commit.
        """
        nonlocal remaining, crash, last_progress
        answered: list[tuple[list[Record], BatchResult]] = []
        while in_flight and ((wait and not answered) or in_flight[0][2].done()):
            batch, missing, future = in_flight.popleft()
            try:
                result = future.result()
            except TransientError as exc:
                report.stopped_by = report.stopped_by or str(exc)
                report.unsent += len(batch)
                continue
            except BaseException as exc:  # keep what other batches got acknowledged, then re-raise
                crash = crash or exc
                report.unsent += len(batch)
                continue
            result.rejected.update(missing)
            answered.append((batch, result))
        if not answered:
            return
        _checkpoint(conn, tables, answered, report, sync_run_id=sync_run_id, partition=partition)
        remaining -= sum(len(batch) for batch, _ in answered)
        # Progress at most once a second, and when the last row is answered: each message is an event in Dagster's
        # log (checking for "nothing in flight" instead fired after every batch at concurrency 1).
        if on_progress and (time.monotonic() - last_progress >= 1.0 or remaining <= 0):
            last_progress = time.monotonic()
            on_progress(report, remaining)

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="deliver") as pool:
            for records, skipped in _chunks(conn, tables, run, batch_size):
                report.skipped += skipped
                remaining -= skipped
                for i in range(0, len(records), batch_size):
                    batch = records[i : i + batch_size]
                    if keep_going is not None and crash is None:
                        try:
                            keep_going()
                        except Exception as exc:  # e.g. the pair's lease ran out: what is out is still settled
                            crash = exc
                    if report.stopped_by or crash:
                        report.unsent += len(batch)
                        continue
                    if batch[-1].seq > declared:
                        declared = records[min(i + window_rows, len(records)) - 1].seq
                        oldest = in_flight[0][0][0].seq if in_flight else batch[0].seq
                        record_intent(conn, tables, sync_run_id, oldest, declared, _now())
                    # A row without an identifier cannot be addressed at the destination: reject it here.
                    missing = {r.seq: "identifier is NULL" for r in batch if r.identifier is None}
                    sendable = [r for r in batch if r.identifier is not None]
                    in_flight.append((batch, missing, pool.submit(_send, session, sendable)))
                    while len(in_flight) >= max(1, concurrency):
                        settle(wait=True)
            while in_flight:
                settle(wait=True)
    finally:
        # On any way out but a killed process; after a kill, the next reader folds the checkpoints. Nothing is in
        # flight here (the pool has joined its threads), so intent rows left behind always mean a killed process.
        clear_intents(conn, tables, sync_run_id)
        fold_acks(conn, tables)
    report.seconds = time.monotonic() - started
    report.stats = session.stats()
    if crash is not None:
        raise crash
    return report


def _send(session: Session, batch: list[Record]) -> BatchResult:
    return session.send(batch) if batch else BatchResult()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _checkpoint(conn, tables, answered: list[tuple[list[Record], BatchResult]], report: SyncReport, *, sync_run_id, partition) -> None:
    """Record what the answered batches acknowledged (one statement) and rejected; count both."""
    now = _now()
    ranges: list[tuple[int, int]] = []
    failures: list = []
    for batch, result in answered:
        by_seq = {r.seq: r for r in batch}
        ranges += _acked_ranges(result.acknowledged)
        for seq in result.acknowledged:
            change = by_seq[seq].change
            report.added += change == "add"
            report.updated += change == "update"
            report.removed += change == "remove"
        for seq, reason in result.rejected.items():
            rec = by_seq[seq]
            failures.append([tables.audience, tables.destination, partition, sync_run_id, seq, rec.key, rec.change, reason, now])
            if len(report.failures) < SAMPLE_SIZE:
                report.failures.append((rec.key, reason))
        report.failed += len(result.rejected)
        report.unsent += len(batch) - len(result.acknowledged) - len(result.rejected)
        report.batches += 1
        if len(report.sample) < SAMPLE_SIZE:
            report.sample += result.payloads[: SAMPLE_SIZE - len(report.sample)]
    record_acks(conn, tables, sync_run_id, ranges, now)
    record_rejections(conn, tables, failures)

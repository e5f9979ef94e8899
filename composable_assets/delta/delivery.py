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
from .ledger import fold_acks, record_ack
from .tables import PairTables

# Rows read from the warehouse per query; split into destination-sized batches in memory.
READ_CHUNK_ROWS = 10_000
SAMPLE_SIZE = 5


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


def _chunks(conn, tables: PairTables, run: DeltaRun) -> Iterator[tuple[list[Record], int]]:
    """Delta rows in seq order, a chunk at a time, minus rows the ledger already holds (a re-run after a crash)."""
    query = (
        "SELECT d._seq, d._op, d._key, d._identifier, d._fields, d._previous, "
        "CASE WHEN d._op = 'remove' THEN l._key IS NULL ELSE l._hash IS NOT DISTINCT FROM d._hash END AS _done "
        f"FROM {tables.delta} AS d LEFT JOIN {tables.ledger} AS l ON l._key = d._key "
        "WHERE d._seq BETWEEN ? AND ? ORDER BY d._seq"
    )
    for lo in range(run.first_seq, run.last_seq + 1, READ_CHUNK_ROWS):
        hi = min(lo + READ_CHUNK_ROWS - 1, run.last_seq)
        rows = conn.fetch_arrow(query, [lo, hi]).to_pylist()
        todo = [r for r in rows if not r["_done"]]
        yield records_from_rows(todo), len(rows) - len(todo)


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
) -> SyncReport:
    """Send the delta batch by batch, up to `concurrency` batches in flight; checkpoint each acknowledged batch.

    Only this thread touches the warehouse connection; sender threads only talk to the destination.
    """
    started = time.monotonic()
    report = SyncReport()
    fold_acks(conn, tables)
    remaining = run.size
    in_flight: deque[tuple[list[Record], dict[int, str], Future]] = deque()
    crash: BaseException | None = None

    def settle_oldest() -> None:
        nonlocal remaining, crash
        batch, missing, future = in_flight.popleft()
        try:
            result = future.result()
        except TransientError as exc:
            report.stopped_by = report.stopped_by or str(exc)
            report.unsent += len(batch)
            return
        except BaseException as exc:  # keep what other batches got acknowledged, then re-raise
            crash = crash or exc
            report.unsent += len(batch)
            return
        result.rejected.update(missing)
        _checkpoint(conn, tables, batch, result, report, sync_run_id=sync_run_id, partition=partition)
        remaining -= len(batch)
        if on_progress:
            on_progress(report, remaining)

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="deliver") as pool:
            for records, skipped in _chunks(conn, tables, run):
                report.skipped += skipped
                remaining -= skipped
                for i in range(0, len(records), batch_size):
                    batch = records[i : i + batch_size]
                    if report.stopped_by or crash:
                        report.unsent += len(batch)
                        continue
                    # A row without an identifier cannot be addressed at the destination: reject it here.
                    missing = {r.seq: "identifier is NULL" for r in batch if r.identifier is None}
                    sendable = [r for r in batch if r.identifier is not None]
                    in_flight.append((batch, missing, pool.submit(_send, session, sendable)))
                    while len(in_flight) >= max(1, concurrency):
                        settle_oldest()
            while in_flight:
                settle_oldest()
    finally:
        # On any way out but a killed process; after a kill, the next reader folds the checkpoints.
        fold_acks(conn, tables)
    report.seconds = time.monotonic() - started
    report.stats = session.stats()
    if crash is not None:
        raise crash
    return report


def _send(session: Session, batch: list[Record]) -> BatchResult:
    return session.send(batch) if batch else BatchResult()


def _checkpoint(conn, tables, batch, result: BatchResult, report: SyncReport, *, sync_run_id, partition) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    by_seq = {r.seq: r for r in batch}
    for first, last in _acked_ranges(result.acknowledged):
        record_ack(conn, tables, sync_run_id, first, last, now)
    for seq in result.acknowledged:
        change = by_seq[seq].change
        report.added += change == "add"
        report.updated += change == "update"
        report.removed += change == "remove"
    for seq, reason in result.rejected.items():
        rec = by_seq[seq]
        conn.execute(
            f"INSERT INTO {tables.failures} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [tables.audience, tables.destination, partition, sync_run_id, seq, rec.key, rec.change, reason, now],
        )
        report.failed += 1
        if len(report.failures) < SAMPLE_SIZE:
            report.failures.append((rec.key, reason))
    report.unsent += len(batch) - len(result.acknowledged) - len(result.rejected)
    report.batches += 1
    if len(report.sample) < SAMPLE_SIZE:
        report.sample += result.payloads[: SAMPLE_SIZE - len(report.sample)]

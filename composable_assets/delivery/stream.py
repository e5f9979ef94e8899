"""Event streams as a delivery source: pending events by cursor, the sent log and high-water mark as checkpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..destinations import BatchResult, Capabilities, Event, OutcomeUnknown, Session, TransientError
from ..store import StreamTables
from ..streams.candidates import pending_events, record_late
from ..streams.checkpoint import Settled, checkpoint
from ..streams.high_water import current, prune, read_or_start
from ..streams.intents import clear_intents, resolve_leftovers
from ..streams.shape import StreamShape
from .loop import SAMPLE_SIZE, DeliveryReport, run as run_loop


@dataclass
class StreamReport(DeliveryReport):
    """What one stream delivery did, for metadata and logs."""

    sent: int = 0
    rejected: int = 0
    #: In flight when an earlier run was killed, at a destination that does not deduplicate: never resent.
    in_doubt: int = 0
    #: Left in flight by a killed run and sent again (destinations that deduplicate by event id).
    resent: int = 0
    #: Rows that landed more than `lookback` behind the mark: recorded, never sent.
    late_skipped: int = 0
    pruned: int = 0
    window_start: dt.datetime | None = None
    high_water: dt.datetime | None = None
    first_run: bool = False

    @property
    def events_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class StreamSource:
    """Pending events of one (stream, destination); answers and the next intents written in one transaction."""

    def __init__(
        self,
        conn,
        shape: StreamShape,
        tables: StreamTables,
        report: StreamReport,
        *,
        idempotent: bool,
        run_id: str,
        partition: dt.date,
        now: dt.datetime,
    ):
        self.conn, self.shape, self.tables, self.report = conn, shape, tables, report
        self.idempotent = idempotent
        self.run_id, self.partition, self.now = run_id, partition, now
        self.settled = Settled.empty()
        self.advance_to: dt.datetime | None = None
        # Batches are settled in send order. The mark advances over a batch only if it and every batch before it
        # settled completely; once one did not (a transient failure, an event left unanswered), it stays put, so
        # the next run's window still covers everything unsettled.
        self.frozen = False

    def chunks(self) -> Iterator[list[Event]]:
        start = self.report.window_start
        if start is None:  # `deliver_events` sets it from the high-water mark before the loop runs
            raise ValueError("a stream delivery's window has no start")
        return pending_events(self.conn, self.shape, self.tables, window_start=start, now=self.now)

    def going_out(self, batches: list[Sequence[Event]], oldest: Event | None) -> None:
        checkpoint(
            self.conn,
            self.tables,
            self.settled,
            self.advance_to,
            run_id=self.run_id,
            partition=self.partition,
            now=_utc_now(),
            intents=[e for batch in batches for e in batch],
        )
        self.settled, self.advance_to = Settled.empty(), None

    def answered(self, batch: Sequence[Event], result: BatchResult) -> None:
        if not _settle_batch(batch, result, self.settled, self.report):
            self.frozen = True
        elif not self.frozen:
            last = batch[-1].time
            self.advance_to = last if self.advance_to is None else max(self.advance_to, last)

    def unanswered(self, batch: Sequence[Event], exc: BaseException) -> BatchResult:
        if isinstance(exc, TransientError) and not isinstance(exc, OutcomeUnknown):
            return BatchResult()  # refused before it was applied: unsent, sent again next run
        # It may have arrived: a destination that deduplicates gets it again next run; any other must not.
        reason = str(exc) if isinstance(exc, OutcomeUnknown) else f"delivery failed mid-request ({type(exc).__name__})"
        return BatchResult() if self.idempotent else BatchResult(in_doubt={e.seq: reason for e in batch})

    def close(self, drained: bool) -> None:
        # Every batch sent was settled: nothing can be in flight. Otherwise (a warehouse error escaped while batches
        # were out; the pool has waited for them but their answers were never recorded) the intents stay, and the
        # next run treats those events as a killed run's.
        if drained:
            clear_intents(self.conn, self.tables, self.run_id)
            self.report.pruned = prune(self.conn, self.tables, self.shape.lookback)
            self.report.high_water = current(self.conn, self.tables)


def deliver_events(
    conn,
    shape: StreamShape,
    tables: StreamTables,
    session: Session,
    capabilities: Capabilities,
    *,
    run_id: str,
    partition: dt.date,
    timezone: str = "UTC",
    now: dt.datetime | None = None,
    on_progress: Callable[[StreamReport], None] | None = None,
    keep_going: Callable[[], None] | None = None,
) -> StreamReport:
    """Send every pending event of the pair once; checkpoint the answers of each round before more batches go out."""
    now = now or _utc_now()
    report = StreamReport()
    tables.ensure(conn)
    mark = read_or_start(conn, tables, shape.start, shape.lookback, now=now, timezone=timezone, run_id=run_id)
    report.first_run = mark.new
    idempotent = capabilities.idempotent_events
    report.in_doubt, report.resent = resolve_leftovers(
        conn, tables, idempotent=idempotent, now=now, partition=partition
    )
    report.late_skipped = record_late(
        conn, shape, tables, band=mark.late_band(shape.lookback), run_id=run_id, partition=partition, now=now
    )
    report.window_start = mark.window_start(shape.lookback)
    source = StreamSource(
        conn, shape, tables, report, idempotent=idempotent, run_id=run_id, partition=partition, now=now
    )
    run_loop(
        source,
        session.send,
        batch_size=capabilities.limits_for("event").batch_size,
        concurrency=capabilities.concurrency,
        keep_going=keep_going,
        on_progress=on_progress,
        stats=session.stats,
    )
    return report


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _settle_batch(batch: Sequence[Event], result: BatchResult, settled: Settled, report: StreamReport) -> bool:
    """Add a batch's answered events to `settled` (sent, rejected, in doubt); False if any was left unanswered."""
    seqs = {e.seq for e in batch}
    rejected = {seq: reason for seq, reason in result.rejected.items() if seq in seqs}
    in_doubt = {seq: reason for seq, reason in result.in_doubt.items() if seq in seqs and seq not in rejected}
    acknowledged = seqs & set(result.acknowledged) - rejected.keys() - in_doubt.keys()
    for event in batch:
        if event.seq in rejected:
            settled.add(event.event_id, event.time, "rejected", rejected[event.seq])
            if len(report.failures) < SAMPLE_SIZE:
                report.failures.append((event.event_id, rejected[event.seq]))
        elif event.seq in in_doubt:
            settled.add(event.event_id, event.time, "in_doubt", in_doubt[event.seq])
        elif event.seq in acknowledged:
            settled.add(event.event_id, event.time, "sent")
    report.sent += len(acknowledged)
    report.rejected += len(rejected)
    report.in_doubt += len(in_doubt)
    unanswered = len(batch) - len(acknowledged) - len(rejected) - len(in_doubt)
    report.unsent += unanswered
    report.batches += 1
    report.keep_sample(result)
    return unanswered == 0

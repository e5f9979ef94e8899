"""Delivering one (stream, destination): pending events in batches, up to `concurrency` in flight, checkpointed."""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..destinations import BatchResult, Capabilities, Event, OutcomeUnknown, Session, TransientError
from .candidates import pending_events, record_late
from .checkpoint import Settled, checkpoint
from .high_water import current, prune, read_or_start
from .intents import clear_intents, resolve_leftovers
from .shape import StreamShape
from ..store import StreamTables

SAMPLE_SIZE = 5


@dataclass
class StreamReport:
    """What one stream delivery did, for metadata and logs."""

    sent: int = 0
    rejected: int = 0
    #: In flight when an earlier run was killed, at a destination that does not deduplicate: never resent.
    in_doubt: int = 0
    #: Left in flight by a killed run and sent again (destinations that deduplicate by event id).
    resent: int = 0
    #: Rows that landed more than `lookback` behind the mark: recorded, never sent.
    late_skipped: int = 0
    unsent: int = 0
    batches: int = 0
    pruned: int = 0
    seconds: float = 0.0
    window_start: dt.datetime | None = None
    high_water: dt.datetime | None = None
    first_run: bool = False
    sample: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped_by: str | None = None
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


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
    """Send every pending event of the pair once; checkpoint the answers of each round before more batches go out.

    Only this thread touches the warehouse; sender threads only talk to the destination. `keep_going` is asked
    before each batch leaves and raises to stop sending (the pair's lease ran out); its error is raised at the end.
    """
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = StreamReport()
    tables.ensure(conn)
    mark = read_or_start(conn, tables, shape.start, shape.lookback, now=now, timezone=timezone, run_id=run_id)
    report.first_run = mark.new
    report.in_doubt, report.resent = resolve_leftovers(
        conn, tables, idempotent=capabilities.events_idempotent, now=now, partition=partition
    )
    report.late_skipped = record_late(
        conn, shape, tables, band=mark.late_band(shape.lookback), run_id=run_id, partition=partition, now=now
    )
    report.window_start = mark.window_start(shape.lookback)
    batch_size = capabilities.event_batch_size or capabilities.batch_size
    concurrency = max(1, capabilities.concurrency)
    in_flight: deque[tuple[list[Event], dict[int, str], Future]] = deque()
    state = {"frozen": False, "last_progress": 0.0}
    crash: BaseException | None = None
    idempotent = capabilities.events_idempotent
    drained = False

    # Answers collected but not yet written: they go into the warehouse with the intents of the next batches to
    # go out, in one transaction (one commit per round of answers, however many batches it covers).
    pending = {"settled": Settled.empty(), "advance_to": None}

    def collect(wait: bool) -> None:
        """Take the oldest batch's answer (waiting for it if asked) and every later one already there.

        Batches are settled in send order. The mark advances over a batch only if it and every batch before it
        settled completely; once one did not (a transient failure, an event left unanswered), it stays put, so
        the next run's window still covers everything unsettled.
        """
        nonlocal crash
        answered = 0
        while in_flight and ((wait and not answered) or in_flight[0][2].done()):
            batch, missing, future = in_flight.popleft()
            answered += 1
            try:
                result = future.result()
            except OutcomeUnknown as exc:
                report.stopped_by = report.stopped_by or str(exc)
                # It may have arrived: a destination that deduplicates gets it again next run; any other must not.
                result = BatchResult() if idempotent else BatchResult(in_doubt={e.seq: str(exc) for e in batch})
            except TransientError as exc:
                report.stopped_by = report.stopped_by or str(exc)
                result = BatchResult()
            except BaseException as exc:  # keep what other batches got acknowledged, then re-raise
                crash = crash or exc
                reason = f"delivery failed mid-request ({type(exc).__name__})"
                result = BatchResult() if idempotent else BatchResult(in_doubt={e.seq: reason for e in batch})
            result.rejected.update(missing)
            if not _settle_batch(batch, result, pending["settled"], report):
                state["frozen"] = True
            elif not state["frozen"]:
                previous = pending["advance_to"]
                pending["advance_to"] = batch[-1].time if previous is None else max(previous, batch[-1].time)

    def commit(going_out: list[Event]) -> None:
        """Checkpoint the answers collected and declare `going_out` as in flight, in one transaction."""
        checkpoint(
            conn, tables, pending["settled"], pending["advance_to"],
            run_id=run_id, partition=partition, now=_utc_now(), intents=going_out,
        )
        pending.update(settled=Settled.empty(), advance_to=None)
        if on_progress and (time.monotonic() - state["last_progress"] >= 1.0 or not in_flight):
            state["last_progress"] = time.monotonic()
            on_progress(report)

    def submit(waiting: list[list[Event]]) -> None:
        """Declare the batches about to go out (durably, before any leaves), then hand them to the senders."""
        commit([e for batch in waiting for e in batch])
        for batch in waiting:
            # An event without an identifier cannot be addressed at the destination: reject it here.
            missing = {e.seq: "identifier is NULL" for e in batch if e.identifier is None}
            sendable = [e for e in batch if e.identifier is not None]
            in_flight.append((batch, missing, pool.submit(_send, session, sendable)))
        waiting.clear()

    events_source = pending_events(conn, shape, tables, window_start=report.window_start, now=now)
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stream") as pool:
            # Intents cover exactly the batches sent (at most `concurrency` unsettled at any time), declared together
            # whenever slots free up: a kill leaves at most `concurrency` batches in doubt.
            waiting: list[list[Event]] = []
            for events in events_source:
                for i in range(0, len(events), batch_size):
                    batch = events[i : i + batch_size]
                    if keep_going is not None and crash is None:
                        try:
                            keep_going()
                        except Exception as exc:  # e.g. the pair's lease ran out: what is out is still settled
                            crash = exc
                    if report.stopped_by or crash:
                        report.unsent += len(batch)
                        continue
                    waiting.append(batch)
                    if len(in_flight) + len(waiting) >= concurrency:
                        submit(waiting)
                        while len(in_flight) >= concurrency:
                            collect(wait=True)
            if waiting and not (report.stopped_by or crash):
                submit(waiting)
            report.unsent += sum(len(batch) for batch in waiting)
            while in_flight:
                collect(wait=True)
            commit([])
        drained = True
    finally:
        events_source.close()
        # Every batch sent was settled: nothing can be in flight. Otherwise (a warehouse error escaped while batches
        # were out; the pool has waited for them but their answers were never recorded) the intents stay, and the
        # next run treats those events as a killed run's.
        if drained:
            clear_intents(conn, tables, run_id)
    report.pruned = prune(conn, tables, shape.lookback)
    report.high_water = current(conn, tables)
    report.seconds = time.monotonic() - started
    report.stats = session.stats()
    if crash is not None:
        raise crash
    return report


def _settle_batch(batch: list[Event], result: BatchResult, settled: Settled, report: StreamReport) -> bool:
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
    if len(report.sample) < SAMPLE_SIZE:
        report.sample += result.payloads[: SAMPLE_SIZE - len(report.sample)]
    return unanswered == 0


def _send(session: Session, batch: list[Event]) -> BatchResult:
    return session.send_events(batch) if batch else BatchResult()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)

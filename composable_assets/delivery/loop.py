"""The one delivery loop: rows in batches, up to `concurrency` in flight, every answer checkpointed by its source.

Audience deltas and event streams are both "rows to deliver with a checkpoint". What differs (where rows come
from, how intents and acknowledgements are written, what a batch that got no answer means) is a `Source`; the
loop owns the rest: batching, the thread pool, stop conditions (a transient error, a crash, the lease running
out), and the common counts of the report.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..destinations import BatchResult, PreparedBatch, Senders, TransientError

SAMPLE_SIZE = 5


@dataclass
class DeliveryReport:
    """What one delivery did, for metadata and logs; each kind's own counters live in its subclass."""

    #: Rows neither acknowledged nor rejected (a transient failure, a stop): still pending for the next run.
    unsent: int = 0
    batches: int = 0
    seconds: float = 0.0
    sample: list[dict[str, Any]] = field(default_factory=list)
    #: (row key, reason) of the first rejected rows.
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped_by: str | None = None
    #: What the session measured: requests, retries, rate-limit waits.
    stats: dict[str, float] = field(default_factory=dict)

    def keep_sample(self, result: BatchResult) -> None:
        if len(self.sample) < SAMPLE_SIZE:
            # A destination that sent JSON text hands that text over: only the few kept are parsed.
            self.sample += [
                json.loads(p) if isinstance(p, str) else p for p in result.payloads[: SAMPLE_SIZE - len(self.sample)]
            ]


class Addressed(Protocol):
    """What the loop reads of a row of either kind (Record, Event): its number and whom it is for."""

    @property
    def seq(self) -> int: ...

    @property
    def identifier(self) -> str | None: ...


#: A row of one kind (Record, Event) and the report of that kind (SyncReport, StreamReport).
Row = TypeVar("Row", bound=Addressed)
Report = TypeVar("Report", bound="DeliveryReport")


class Source(Protocol, Generic[Row, Report]):
    """One kind of delivery, as the loop sees it. Only the loop's thread calls it (it alone touches the warehouse)."""

    report: Report

    def chunks(self) -> Iterator[Sequence[Row]]:
        """Rows to deliver in order, a chunk at a time (rows carry `seq` and `identifier`)."""

    def going_out(self, batches: list[Sequence[Row]], oldest: Row | None) -> None:
        """Checkpoint the answers collected so far and declare `batches` as in flight, before any is sent.

        `oldest` is the first row of the oldest batch still in flight (None: nothing is).
        """

    def answered(self, batch: Sequence[Row], result: BatchResult) -> None:
        """Take one batch's answer (in send order); written at the next `going_out`."""

    def unanswered(self, batch: Sequence[Row], exc: BaseException) -> BatchResult | None:
        """What a batch whose request raised counts as: a result to take, or None: its rows stay unsent."""

    def close(self, drained: bool) -> None:
        """On every way out; `drained`: every batch sent was answered and checkpointed."""


def run(
    source: Source[Row, Report],
    send: Callable[[Sequence[Row]], BatchResult],
    *,
    batch_size: int,
    concurrency: int,
    keep_going: Callable[[], None] | None = None,
    on_progress: Callable[[Report], None] | None = None,
    stats: Callable[[], dict[str, float]] | None = None,
    senders: Senders | None = None,
) -> Report:
    """Deliver every row of `source` through `send`; raise what crashed a sender once the rest is checkpointed.

    `senders`: where batches go out from, if not from a thread each through `send` (a session's `concurrent`).

    Batches are declared (`going_out`) whenever slots free up, together: at most `concurrency` are unsettled at
    any time, so a kill leaves at most that many in doubt. `keep_going` is asked before each batch leaves and
    raises to stop sending (the pair's lease ran out): batches already out are still checkpointed.
    """
    started = time.monotonic()
    report = source.report
    concurrency = max(1, concurrency)
    in_flight: deque[tuple[Sequence[Row], dict[int, str], Future]] = deque()
    crash: BaseException | None = None
    last_progress = started
    drained = False

    def collect(wait: bool) -> None:
        """Take the oldest batch's answer (waiting for it if asked) and every later one already there, in order."""
        nonlocal crash
        answered = 0
        while in_flight and ((wait and not answered) or in_flight[0][2].done()):
            batch, missing, future = in_flight.popleft()
            answered += 1
            try:
                result = future.result()
            except BaseException as exc:  # keep what other batches got acknowledged; a crash is re-raised at the end
                if isinstance(exc, TransientError):
                    report.stopped_by = report.stopped_by or str(exc)
                else:
                    crash = crash or exc
                result = source.unanswered(batch, exc)
                if result is None:
                    report.unsent += len(batch)
                    continue
            result.rejected.update(missing)
            source.answered(batch, result)

    def commit(going: list[Sequence[Row]], last: bool = False) -> None:
        nonlocal last_progress
        source.going_out(going, in_flight[0][0][0] if in_flight else None)
        # At most once a second, and at the end: each message is an event in Dagster's log, and a delivery done
        # within a second shows only in the summary.
        if on_progress and (last or time.monotonic() - last_progress >= 1.0):
            last_progress = time.monotonic()
            on_progress(report)

    def submit(waiting: list[Sequence[Row]]) -> None:
        commit(waiting)
        for batch in waiting:
            # A row without an identifier cannot be addressed at the destination: reject it here.
            missing = (
                {}
                if isinstance(batch, PreparedBatch)
                else {r.seq: "identifier is NULL" for r in batch if r.identifier is None}
            )
            sendable = [r for r in batch if r.identifier is not None] if missing else batch
            in_flight.append((batch, missing, pool.submit(sendable)))
        waiting.clear()

    chunks = source.chunks()
    try:
        with senders or _Threads(send, concurrency) as pool:
            waiting: list[Sequence[Row]] = []
            for rows in chunks:
                for i in range(0, len(rows), batch_size):
                    batch = rows[i : i + batch_size]
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
            commit([], last=True)
        drained = True
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        source.close(drained)
    report.seconds = time.monotonic() - started
    report.stats = stats() if stats else {}
    if crash is not None:
        raise crash
    return report


class _Threads:
    """A thread per batch in flight, each sending through `send`."""

    def __init__(self, send: Callable[[Sequence[Any]], BatchResult], concurrency: int):
        self._send = send
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deliver")

    def submit(self, batch: Sequence[Any]) -> Future[BatchResult]:
        return self._pool.submit(_send, self._send, batch)

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)


def _send(send: Callable[[Sequence[Any]], BatchResult], batch: Sequence[Any]) -> BatchResult:
    return send(batch) if batch else BatchResult()

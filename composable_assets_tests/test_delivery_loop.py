"""The one delivery loop, for both kinds of rows: per-row answers, transient stops, crashes, intents before sends."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field

import pytest

from composable_assets.delivery.loop import DeliveryReport, run
from composable_assets.destinations import BatchResult, Event, Record, TransientError

T0 = dt.datetime(2026, 3, 2, 10, 0)


def records(n: int) -> list[Record]:
    return [Record(i, f"k{i}", "add", None if i == 5 else f"id{i}", {"v": i}, None) for i in range(1, n + 1)]


def events(n: int) -> list[Event]:
    return [
        Event(i, f"s:{i}", None if i == 5 else f"id{i}", "purchase", T0 + dt.timedelta(seconds=i), {}) for i in range(1, n + 1)
    ]


@dataclass
class Memory:
    """A source that keeps its checkpoints in memory: what was declared, acknowledged and rejected, in order."""

    rows: list
    chunk: int = 7
    report: DeliveryReport = field(default_factory=DeliveryReport)
    log: list = field(default_factory=list)
    declared: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    rejected: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    closed: bool | None = None

    def chunks(self):
        for i in range(0, len(self.rows), self.chunk):
            yield self.rows[i : i + self.chunk]

    def going_out(self, batches, oldest):
        for batch, result in self.pending:
            self.acked |= set(result.acknowledged)
            self.rejected.update(result.rejected)
            self.report.batches += 1
        self.pending = []
        for batch in batches:
            self.declared |= {r.seq for r in batch}
            self.log.append(("declared", [r.seq for r in batch]))

    def answered(self, batch, result):
        self.pending.append((batch, result))
        self.report.unsent += len(batch) - len(result.acknowledged) - len(result.rejected)

    def unanswered(self, batch, exc):
        return None

    def close(self, drained):
        self.closed = drained


class Session:
    """Rejects seq 3, raises `fail` on the batch numbered `fail_on`; records sends and the most ever in flight."""

    def __init__(self, source: Memory, fail_on: int | None = None, fail: BaseException | None = None):
        self.source, self.fail_on, self.fail = source, fail_on, fail
        self.sent: list[list[int]] = []
        self.lock = threading.Lock()
        self.busy = self.most_busy = 0
        self.calls = 0

    def send(self, batch) -> BatchResult:
        with self.lock:
            self.calls += 1
            call = self.calls
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
            seqs = [r.seq for r in batch]
            # Every row sent was declared before it left.
            assert set(seqs) <= self.source.declared
        try:
            if call == self.fail_on:
                raise self.fail
            with self.lock:
                self.sent.append(seqs)
            result = BatchResult()
            for r in batch:
                if r.seq == 3:
                    result.rejected[r.seq] = "invalid"
                else:
                    result.acknowledged.append(r.seq)
            return result
        finally:
            with self.lock:
                self.busy -= 1


@pytest.mark.parametrize("rows", [records(20), events(20)], ids=["audience", "stream"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_both_kinds_are_acknowledged_rejected_and_checkpointed_the_same_way(rows, concurrency):
    source = Memory(rows)
    session = Session(source)
    report = run(source, session.send, batch_size=3, concurrency=concurrency)
    assert source.acked == set(range(1, 21)) - {3, 5}
    assert source.rejected == {3: "invalid", 5: "identifier is NULL"}  # no identifier: rejected, never sent
    assert 5 not in {s for batch in session.sent for s in batch}
    assert report.unsent == 0 and report.stopped_by is None
    assert source.closed is True
    assert session.most_busy <= concurrency
    # Batches never span chunks: 7-row chunks in batches of 3 give 3 + 3 + 1.
    assert [len(b) for _, b in source.log][:3] == [3, 3, 1]


@pytest.mark.parametrize("rows", [records(30), events(30)], ids=["audience", "stream"])
def test_a_transient_error_stops_sending_and_leaves_the_rest_unsent(rows):
    source = Memory(rows, chunk=30)
    session = Session(source, fail_on=2, fail=TransientError("429 after retries"))
    report = run(source, session.send, batch_size=3, concurrency=1)
    assert report.stopped_by == "429 after retries"
    # Batch 1 answered (seq 3 rejected); batch 2 failed and everything after it stays for the next run.
    assert source.acked == {1, 2}
    assert source.rejected == {3: "invalid"}
    assert report.unsent == 27
    assert source.closed is True


def test_a_crashing_sender_is_raised_after_the_batches_already_out_are_checkpointed():
    rows = records(30)
    source = Memory(rows, chunk=30)
    session = Session(source, fail_on=4, fail=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        run(source, session.send, batch_size=3, concurrency=3)
    answered = {s for batch in session.sent for s in batch}
    # Whatever the destination answered is in the checkpoint, even though the run fails.
    assert source.acked == answered - {3, 5}
    assert len(session.sent) <= 5  # the crash stopped new batches; at most those in flight still finished
    assert source.closed is True


def test_keep_going_stops_new_batches_and_its_error_is_raised():
    rows = events(30)
    source = Memory(rows, chunk=30)
    session = Session(source)
    calls = {"n": 0}

    def keep_going():
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        run(source, session.send, batch_size=3, concurrency=1, keep_going=keep_going)
    assert len(session.sent) == 2
    assert source.acked == {1, 2, 4, 6}
    assert source.report.unsent == 24


def test_limits_are_per_operation_and_an_audience_or_a_stream_plans_by_its_own():
    from composable_assets.destinations import Capabilities, Limits, TerminalError

    capabilities = Capabilities.of(Limits(75, 3000, 3), events=Limits(10, 5, 1), remove=False)
    assert capabilities.operations == {"upsert", "event"}
    assert capabilities.limits_for("audience") == Limits(75, 3000, 3)
    assert capabilities.limits_for("stream").describe() == "5 requests / 1 s"
    with pytest.raises(TerminalError):
        capabilities.limits_for("remove")
    with pytest.raises(ValueError):
        Capabilities(limits={"upsrt": Limits(1)})


@pytest.mark.parametrize("groups", [[2] * 10, [2, 1, 2, 2, 1, 2, 2, 2, 2, 2, 2], [1, 3, 1, 3, 1, 3, 1, 3, 1, 3]])
def test_audience_intent_windows_do_not_depend_on_how_batches_go_out_together(monkeypatch, groups):
    from types import SimpleNamespace

    import composable_assets.delivery.audience as audience

    written: list[tuple[int, int]] = []
    monkeypatch.setattr(audience, "WINDOW_BATCHES_PER_SLOT", 2)  # windows of 4 batches here: 5 for 20 batches
    monkeypatch.setattr(audience, "record_intent", lambda conn, tables, run_id, first, last, now: written.append((first, last)))
    run_ = SimpleNamespace(first_seq=1, last_seq=200, size=200)
    source = audience.AudienceSource(None, None, run_, batch_size=10, concurrency=2, sync_run_id="r", partition=None)
    batches = [records(200)[i : i + 10] for i in range(0, 200, 10)]
    position = 0
    for size in groups:
        going = batches[position : position + size]
        source.going_out(going, going[0][0])
        # Every batch is declared before it leaves.
        first, last = written[-1]
        assert all(first <= b[0].seq and b[-1].seq <= last for b in going)
        position += size
    assert position == 20
    assert len(written) == 5  # one window per 2 x concurrency batches, however they were grouped

"""A stream killed with SIGKILL mid-batch, then run again: Iterable holds every event once (by id), Braze none twice."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from .stream_project import StreamProject, ids, order, utc_now

COMPOSABLE = str(Path(sys.executable).with_name("composable"))
EVENTS, BATCH, CONCURRENCY = 600, 20, 2  # 30 requests, at most 2 in flight
PATHS = {"braze": "/users/track", "iterable": "/api/events/trackBulk"}


def settle(fake) -> None:
    """Wait until no request arrives any more and each has been answered (or dropped: unanswered for a second)."""
    deadline = time.monotonic() + 15
    while True:
        count = len(fake.requests)
        time.sleep(0.3)
        waiting = [r for r in fake.requests if r.status is None and time.time() - r.time < 1.0]
        if count == len(fake.requests) and not waiting:
            return
        assert time.monotonic() < deadline


@pytest.mark.parametrize(
    "destination, kill_after, lost",
    [  # kill once this many requests (of 30) have arrived; lost: the requests in flight are dropped unprocessed
        ("braze", 2, False),
        ("braze", 15, False),
        ("braze", 15, True),
        ("iterable", 2, False),
        ("iterable", 15, True),
    ],
)
def test_a_stream_killed_mid_batch_and_run_again_delivers_every_event_once(tmp_path, fakes, destination, kill_after, lost):
    fake = fakes[destination]
    t = utc_now() - dt.timedelta(hours=10)
    # A lookback of a minute over five hours of events: the window logic, not a wide lookback, must find the rest.
    project = StreamProject(
        tmp_path, lookback="1m", start=(t - dt.timedelta(days=1)).date().isoformat(), batch=BATCH, concurrency=CONCURRENCY
    )
    project.add_orders([order(i, t + dt.timedelta(seconds=30 * i)) for i in range(1, EVENTS + 1)])
    everything = ids(*range(1, EVENTS + 1))

    # The last request to arrive is still in the fake's latency when the kill lands: applied after the sender died
    # (it had left the machine), or dropped unprocessed if `lost`.
    fake.faults.latency_seconds = 0.3 if lost else 0.05
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        COMPOSABLE_PROJECT_DIR=str(project.settings.project_dir),
        COMPOSABLE_WAREHOUSE=project.settings.warehouse_url,
        COMPOSABLE_DATA_DIR=str(project.settings.data_dir),
    )
    day = utc_now().date().isoformat()
    proc = subprocess.Popen(
        [COMPOSABLE, "stream", "orders", "--destination", destination, "--date", day],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while sum(1 for r in fake.requests if r.path == PATHS[destination]) < kill_after:
        assert proc.poll() is None, "the stream finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    if lost:
        fake.faults.drop_next = CONCURRENCY  # requests still in the fake's latency are dropped unprocessed
    proc.wait(timeout=30)
    fake.faults.latency_seconds = 0.0
    settle(fake)  # otherwise, requests the killed process had sent are applied, as the vendor would
    fake.faults.drop_next = 0
    # What the kill left unsettled: intents without a sent-log row (read now: the sent log is pruned behind the mark),
    # and what the killed run itself recorded in doubt (a request dropped just before the kill).
    doubted = {e for e, s in project.statuses(destination).items() if s == "in_doubt"}
    left = {
        event_id
        for (event_id,) in project.query(
            "SELECT DISTINCT event_id FROM composable.stream_intents WHERE destination = ? "
            f"AND event_id NOT IN (SELECT event_id FROM composable.stream_sent__orders__{destination})",
            [destination],
        )
    }
    assert 0 < len(left) <= BATCH * CONCURRENCY, "a kill leaves at most `concurrency` batches unsettled"

    outcome = project.run(destination, date=day)
    assert outcome.success, outcome.errors
    [stream] = outcome.streams
    assert project.query("SELECT count(*) FROM composable.stream_intents") == [(0,)]
    assert project.high_water(destination) == t + dt.timedelta(seconds=30 * EVENTS)
    if destination == "iterable":
        # Iterable upserts by id: the final state holds each event exactly once; only those in flight came twice.
        assert set(fake.events) == everything
        twice = {event_id for event_id, n in fake.event_receipts.items() if n > 1}
        assert twice <= left and max(fake.event_receipts.values()) <= 2
        assert (stream.count("resent_after_crash"), stream.count("in_doubt")) == (len(left), 0)
        assert fake.spec_violations == []
        print(
            f"iterable, kill after {kill_after}{' (in-flight requests lost)' if lost else ''}: {len(left)} in flight "
            f"at the kill, {len(twice)} received twice, {len(fake.events)} held once each"
        )
    else:
        # Braze keeps every event it gets: none may arrive twice. What never arrived is exactly among those in doubt.
        received = fake.received_event_ids()
        assert max(received.values()) == 1, sorted(e for e, n in received.items() if n > 1)
        never_got = everything - set(received)
        assert stream.count("in_doubt") == len(left)
        assert never_got <= left | doubted  # every event that never arrived is recorded in doubt, none lost silently
        if lost:
            assert never_got, "the requests in flight were dropped: their events never reached Braze"
        print(
            f"braze, kill after {kill_after}{' (in-flight requests lost)' if lost else ''}: "
            f"{len(left | doubted)} in doubt, of which {len(never_got)} never reached Braze and "
            f"{len((left | doubted) - never_got)} did; no event twice"
        )

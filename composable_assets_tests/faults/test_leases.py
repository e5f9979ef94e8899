"""Leases on every coordination store: one holder at a time across processes, taken over when the holder dies."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from composable_assets.coordination import Coordination, Holder, Lease, LeaseHeld

from .test_shared_budget import redis_url  # noqa: F401  (fixture)

STORES = ["sqlite", "postgres", "redis"]


@pytest.fixture(params=STORES)
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordination.sqlite'}"
    return request.getfixturevalue(f"{request.param}_url")


def _name() -> str:
    return f"sync:test:{uuid.uuid4().hex[:8]}:braze"  # Redis is shared between tests: a name of our own


def test_one_holder_at_a_time_and_release_frees_it(store_url: str) -> None:
    coordination = Coordination(url=store_url, lease_seconds=30)
    name = _name()
    first = coordination.lease(name, "sync a -> b", "run-1")
    first.acquire(0)
    second = coordination.lease(name, "sync a -> b", "run-2")
    seen: list[Holder | None] = []
    with pytest.raises(LeaseHeld, match="run run-1"):
        second.acquire(0.3, on_wait=lambda holder, left: seen.append(holder))
    assert seen and seen[0].run_id == "run-1" and seen[0].pid == os.getpid()
    first.release()
    second.acquire(0)
    second.check()
    second.release()


def test_a_lease_not_renewed_is_taken_over_after_its_time(store_url: str) -> None:
    coordination = Coordination(url=store_url, lease_seconds=1.5)
    name = _name()
    # A holder on another machine that stopped renewing: nothing here can tell it died, so its time must run out.
    gone = Lease(coordination.store, name, Holder(run_id="run-elsewhere", what="sync", host="another-host"), 1.5)
    taken, _, _ = coordination.store.take(name, gone.holder.token, gone.holder.dumps(), 1.5)
    assert taken
    started = time.monotonic()
    waits: list[float] = []
    coordination.lease(name, "sync", "run-2").acquire(10, on_wait=lambda holder, left: waits.append(left))
    waited = time.monotonic() - started
    assert 1.0 <= waited <= 3.0, waited
    assert waits and 0 < waits[0] <= 1.5


def test_a_live_holder_keeps_its_lease_past_the_ttl_by_renewing(store_url: str) -> None:
    coordination = Coordination(url=store_url, lease_seconds=0.9)
    name = _name()
    holder = coordination.lease(name, "sync", "run-1")
    holder.acquire(0)
    try:
        with pytest.raises(LeaseHeld):
            coordination.lease(name, "sync", "run-2").acquire(2.5)  # almost 3 TTLs
        holder.check()
    finally:
        holder.release()


def _hold_forever(url: str, name: str) -> None:
    Coordination(url=url, lease_seconds=60).lease(name, "sync", "run-killed").acquire(0)
    print("held", flush=True)
    time.sleep(600)


def test_a_holder_killed_on_this_machine_is_replaced_at_once(store_url: str) -> None:
    name = _name()
    code = f"from {__name__} import _hold_forever; _hold_forever({store_url!r}, {name!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    assert proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    broken: list[Holder] = []
    started = time.monotonic()
    Coordination(url=store_url, lease_seconds=60).lease(name, "sync", "run-next").acquire(5, on_break=broken.append)
    assert time.monotonic() - started < 2, "a dead holder on this machine must not make us wait for its 60 s"
    assert [h.run_id for h in broken] == ["run-killed"]


def _contend(url: str, name: str, marker: str, rounds: int, log: str) -> None:
    coordination = Coordination(url=url, lease_seconds=10)
    for i in range(rounds):
        lease = coordination.lease(name, "sync", f"run-{os.getpid()}-{i}")
        lease.acquire(60)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside
            os.close(fd)
            time.sleep(0.01)
            os.unlink(marker)
            with open(log, "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "round": i}) + "\n")
        finally:
            lease.release()


def test_processes_contending_for_a_lease_never_hold_it_together(store_url: str, tmp_path: Path) -> None:
    name, marker, log = _name(), str(tmp_path / "inside"), str(tmp_path / "log.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_contend, args=(store_url, name, marker, 15, log)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert len(Path(log).read_text().splitlines()) == 45


def test_a_lease_time_that_is_not_a_number_is_named() -> None:
    from composable_assets.settings import Settings

    assert Settings.from_env({"COMPOSABLE_PROJECT_DIR": "p", "COMPOSABLE_LEASE_SECONDS": "45"}).lease_seconds == 45.0
    with pytest.raises(ValueError, match="COMPOSABLE_LEASE_SECONDS must be a positive number of seconds, got 'abc'"):
        Settings.from_env({"COMPOSABLE_PROJECT_DIR": "p", "COMPOSABLE_LEASE_SECONDS": "abc"})

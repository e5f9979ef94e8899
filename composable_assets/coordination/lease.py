"""A lease: one holder at a time for a named piece of work, across processes and machines, that expires if its
holder dies.

A holder renews its lease every third of its time-to-live from a background thread; a holder that stops (killed,
frozen, cut off) loses it when the time runs out, and the next one takes it over. A waiter on the same machine as a
holder whose process is gone does not wait for that: it breaks the lease at once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores import Store

#: How often a waiting holder says what it waits for.
WAIT_REPORT_SECONDS = 5.0


class LeaseHeld(Exception):
    """Another live holder kept the lease for longer than we would wait."""


class LeaseLost(Exception):
    """Our lease ran out before we renewed it (this process stalled or lost the store): stop working."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as stored with it: enough to name the holder to a human and to tell if it died."""

    run_id: str
    what: str
    host: str = field(default_factory=lambda: this_machine())
    pid: int = field(default_factory=os.getpid)
    since: float = field(default_factory=time.time)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> Holder | None:
        try:
            return cls(**json.loads(text)) if text else None
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"run {self.run_id} (pid {self.pid} on {self.host.split('#')[0]}, since {started})"

    def died_here(self) -> bool:
        """True when the holder ran on this machine and its process is gone (a killed run worker)."""
        return process_gone(f"{self.host}:{self.pid}")


def this_machine() -> str:
    """Where process ids mean the same thing: the host name, plus the PID namespace where Linux has one.

    Containers can share a host name (host networking) while each numbers its processes from 1: a pid seen in one
    says nothing about another.
    """
    try:
        return f"{socket.gethostname()}#{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def this_process() -> str:
    """`machine:pid` of this process: where a lease holder or a Dagster run worker runs."""
    return f"{this_machine()}:{os.getpid()}"


def process_gone(process: str) -> bool:
    """True when `machine:pid` names a process here (see `this_machine`) that no longer runs; False elsewhere."""
    host, _, pid_text = process.rpartition(":")
    if host != this_machine() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers kill(pid, 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Lease:
    """One holder's claim on `name` in a store; use `acquire`, `check` while working, `release` when done."""

    def __init__(self, store: Store, name: str, holder: Holder, ttl_seconds: float):
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl_seconds
        self._value = holder.dumps()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(
        self,
        wait_seconds: float,
        *,
        on_wait: Callable[[Holder | None, float], None] = lambda holder, seconds_left: None,
        on_break: Callable[[Holder], None] = lambda holder: None,
    ) -> None:
        """Take the lease, waiting up to `wait_seconds` for a live holder to finish; raises LeaseHeld after that.

        `on_wait(holder, seconds its lease has left)` is called every few seconds while waiting; `on_break(holder)`
        when a dead holder's lease on this machine is broken.
        """
        deadline = time.monotonic() + wait_seconds
        next_report = time.monotonic()
        while True:
            taken, current, left = self.store.take(self.name, self.holder.token, self._value, self.ttl)
            if taken:
                break
            other = Holder.loads(current)
            if other is not None and current is not None and other.died_here():
                if self.store.drop(self.name, other.token, current):
                    on_break(other)
                continue
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"{self.name} is held by {other.describe() if other else 'another holder'}; "
                    f"waited {wait_seconds:g} s. If that run is dead its lease runs out in {max(left, 0):.0f} s."
                )
            if time.monotonic() >= next_report:
                on_wait(other, left)
                next_report = time.monotonic() + WAIT_REPORT_SECONDS
            time.sleep(min(0.5, max(0.05, left)))
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.name}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew(self.name, self.holder.token, self._value, self.ttl):
                    self._lost.set()
                    return
                renewed = time.monotonic()
            except Exception:  # the store is unreachable: the lease holds until its time runs out, then it is lost
                if time.monotonic() - renewed >= self.ttl:
                    self._lost.set()
                    return

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise LeaseLost if the lease ran out: someone else may hold it now."""
        if self._lost.is_set():
            raise LeaseLost(
                f"the lease on {self.name} ran out before it was renewed (this process stalled or lost the "
                "coordination store); stopping so that two runs never work on it at once"
            )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
            if not self._lost.is_set():
                self.store.drop(self.name, self.holder.token, self._value)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

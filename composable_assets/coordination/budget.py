"""A vendor's request budget shared by every thread, process and machine that sends to one account."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from inspect import isawaitable

from pyrate_limiter import AbstractBucket, Decision, RateItem

# The most requests one store write takes for this process (see RateBudget.reserve).
RESERVE_MAX = 32


@dataclass(frozen=True)
class Limit:
    """A request budget: `requests` per `window_seconds`, as a vendor documents it."""

    requests: int
    window_seconds: float


class RateBudget:
    """A fixed-window request budget over a shared pyrate-limiter bucket (SQLite, PostgreSQL or Redis).

    Windows are aligned to multiples of the window length since the epoch, as the vendors' own reset headers are
    (pyrate-limiter's FixedWindow does the same); two syncs of one account, wherever they run, draw on the same
    count and together stay within it. No request starts in the last `guard` of a window: one taken just before
    the boundary could reach the vendor just after it and count against the next window.
    """

    def __init__(self, bucket: AbstractBucket, key: str, limit: Limit, *, owns_bucket: bool = False):
        self.key = key
        self.limit = limit
        self.guard = min(0.1, limit.window_seconds / 10)
        self._bucket = bucket
        self._owns_bucket = owns_bucket
        # One put at a time from this process: the store then only arbitrates between processes (PostgreSQL's
        # bucket refuses at once when another writer holds its table lock, which threads of one sync would cause).
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._leaked_window = -1
        # Requests taken from the store together, for this process to spend within the same window: one store
        # write per `reserve` requests instead of one each (the store's write was a third of a sending thread's
        # CPU against Braze's 3,000 / 3 s; 30 at a time rather than 16 took another ~40 µs off each request's CPU
        # with SQLite). Spare requests die with their window, so the budget is never exceeded; at most
        # reserve - 1 per window and process go unused, 1% of the budget at most.
        self.reserve = max(1, min(RESERVE_MAX, limit.requests // 100))
        self._spare = 0
        self._spare_window = -1

    def pause_until(self, epoch_seconds: float) -> None:
        """The vendor said the budget is spent until then (e.g. a 429 or remaining=0 with a reset time)."""
        with self._lock:
            self._paused_until = max(self._paused_until, epoch_seconds)

    def acquire(self) -> float:
        """Take one request from the budget, waiting for the next window if needed; returns seconds waited."""
        waited = 0.0
        while (wait := self.try_take()) > 0:
            time.sleep(wait)
            waited += wait
        return waited

    def try_take(self) -> float:
        """Take one request if the budget has it now (0.0), else the seconds to wait before asking again.

        For a caller that must not block while waiting (one thread running many requests: a request that took its
        slot and is not yet sent would go out in a later window, against that window's count).
        """
        now = time.time()
        pause = self._paused_until - now
        if pause > 0:
            return pause
        window = math.floor(now / self.limit.window_seconds)
        window_end = (window + 1) * self.limit.window_seconds
        if now < window_end - self.guard:
            admitted, full = self._take(now, window)
            if admitted:
                return 0.0
            # Contention (another process was taking a request this instant): try again at once, nearly.
            delay = window_end - now if full else random.uniform(0.001, 0.005)
        else:
            delay = window_end - now
        # Plus a little jitter so processes waiting for the next window do not stampede.
        return delay + random.uniform(0, 0.01)

    def _take(self, now: float, window: int) -> tuple[bool, bool]:
        """(admitted, window full) for one request at `now`."""
        # Every request of a window is stamped with the window's last millisecond: a store that counts up to the
        # item's own time (Redis: ZCOUNT start..now) then sees every request of the window, however the clocks of
        # the processes taking them are ordered.
        stamp = round((window + 1) * self.limit.window_seconds * 1000) - 1
        with self._lock:
            if self._spare and self._spare_window == window:
                self._spare -= 1
                return True, False
            # A reserve when the window has room for it, else the single request.
            weight = self.reserve
            decision = self._put(stamp, weight)
            if not decision.allowed and weight > 1:
                weight = 1
                decision = self._put(stamp, weight)
            if decision.allowed:
                self._spare, self._spare_window = weight - 1, window
            if decision.allowed and window != self._leaked_window:
                # First request of a window from this process: drop the entries of windows gone by.
                self._leaked_window = window
                self._bucket.leak(stamp)
            return decision.allowed, decision.retry_after_ms is not None

    def _put(self, stamp: int, weight: int) -> Decision:
        decision = self._bucket.put_decision(RateItem(self.key, stamp, weight=weight))
        if isawaitable(decision):  # only an async bucket answers later; ours are all synchronous
            raise TypeError(f"rate budget {self.key}: the bucket answered asynchronously")
        return decision

    def close(self) -> None:
        if self._owns_bucket:
            self._bucket.close()

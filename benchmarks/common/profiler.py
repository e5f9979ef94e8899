"""Where the delivery loop's time goes: timers patched around its steps, and a stack sampler.

Used by the delivery benchmark's child processes (`delivery_benchmark.py --child`) only: `Probe.install` patches
module attributes of composable_assets, which no production process may see.
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common.timing import cpu_seconds


def _threads_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process by native id, ours and the warehouse's own (Linux)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _threads_by_kind(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU each kind of thread spent between two `_threads_cpu` readings: main, senders, the rest (DuckDB's)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    kinds: dict[str, float] = collections.defaultdict(float)
    for tid, seconds in after.items():
        name = names.get(tid, "")
        kind = "main" if tid == threading.main_thread().native_id else "senders" if name.startswith("deliver") else (
            f"python: {name.split('_')[0]}" if name else "other (not Python: the warehouse's threads)")
        kinds[kind] += seconds - before.get(tid, 0.0)
    return dict(kinds)


class Probe:
    """Timers wrapped around the delivery loop's steps (module attributes patched in the child only).

    Overhead is two perf_counter calls per wrapped call (about 10,000 calls per 100,000 rows).
    `whatif` replaces the per-batch checkpoint INSERT, to measure what a change would buy; never the default.
    """

    def __init__(self, whatif: str | None = None, flush_every: int = 8, cprofile: bool = False):
        self.lock = threading.Lock()
        self.samples: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self.delivering = False
        self.whatif = whatif
        self.flush_every = flush_every
        # cProfile with each thread's CPU clock as its timer: function-level CPU of the main thread and the senders.
        self.cprofile = cprofile
        self.profiles: list = []
        self.local = threading.local()

    def profiled(self, fn: Callable) -> Callable:
        """fn run under this thread's cProfile (one Profile per thread, CPU-time timer)."""
        import cProfile

        probe = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            profile = getattr(probe.local, "profile", None)
            if profile is None:
                profile = probe.local.profile = cProfile.Profile(time.thread_time)
                with probe.lock:
                    probe.profiles.append(profile)
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()

        return wrapper

    def add(self, name: str, wall: float, cpu: float = 0.0) -> None:
        with self.lock:
            self.samples[name].append((wall, cpu))

    def timed(self, name: str, fn: Callable, cpu: bool = False) -> Callable:
        probe = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, used = time.perf_counter(), time.thread_time() if cpu else 0.0
            try:
                return fn(*args, **kwargs)
            finally:
                probe.add(name, time.perf_counter() - wall, (time.thread_time() - used) if cpu else 0.0)

        return wrapper

    def reset(self) -> None:
        with self.lock:
            self.samples.clear()

    def install(self) -> None:
        import composable_assets.assets.deliveries as syncs_module
        import composable_assets.delivery.audience as delivery
        import composable_assets.delivery.loop as loop
        import composable_assets.destinations.http as http

        probe = self
        whatifs = set(self.whatif.split("+")) if self.whatif else set()
        original_deliver = syncs_module.deliver

        def deliver(*args: Any, **kwargs: Any) -> Any:
            # The sync asset passes a progress callback that logs one Dagster debug message per settled batch.
            progress = kwargs.get("on_progress")
            if progress is not None:
                progress = probe.timed("progress_log", progress, cpu=True)
                if "quiet_progress" in whatifs:  # what-if only: at most one progress message a second
                    last = [time.monotonic()]

                    def throttled(report: Any, timed: Callable = progress) -> None:
                        if report.left == 0 or time.monotonic() - last[0] >= 1.0:
                            last[0] = time.monotonic()
                            timed(report)

                    kwargs["on_progress"] = throttled
                else:
                    kwargs["on_progress"] = progress
            probe.delivering = True
            before = _threads_cpu()
            wall, used, process = time.perf_counter(), time.thread_time(), cpu_seconds()
            try:
                return original_deliver(*args, **kwargs)
            finally:
                probe.delivering = False
                probe.threads_cpu = _threads_by_kind(before, _threads_cpu())
                probe.add("deliver", time.perf_counter() - wall, time.thread_time() - used)
                probe.add("deliver_process_cpu", cpu_seconds() - process)

        syncs_module.deliver = self.profiled(deliver) if self.cprofile else deliver
        # The whole sync step as its asset runs it: session opened, delta read, sent, checkpointed, run recorded.
        original_plan_run = syncs_module._AudiencePlan.run

        def plan_run(*args: Any, **kwargs: Any) -> Any:
            wall, process = time.perf_counter(), cpu_seconds()
            try:
                return original_plan_run(*args, **kwargs)
            finally:
                probe.add("sync_step_process_cpu", cpu_seconds() - process)
                probe.add("sync_step_wall", time.perf_counter() - wall)

        syncs_module._AudiencePlan.run = plan_run
        delivery.records_from_rows = self.timed("records_from_rows", delivery.records_from_rows, cpu=True)
        delivery._checkpoint = self.timed("checkpoint", delivery._checkpoint, cpu=True)
        loop._send = self.timed("send_batch", loop._send, cpu=True)
        for name in ("record_intent", "clear_intents", "_confirm_leftovers"):  # newer delivery loops only
            if hasattr(delivery, name):
                setattr(delivery, name, self.timed(name, getattr(delivery, name), cpu=True))
        if self.cprofile:
            loop._send = self.profiled(loop._send)
        original_chunks = delivery._chunks

        def chunks(*args: Any, **kwargs: Any) -> Any:
            iterator = original_chunks(*args, **kwargs)
            while True:
                wall, used = time.perf_counter(), time.thread_time()
                try:
                    item = next(iterator)
                except StopIteration:
                    probe.add("read_chunk", time.perf_counter() - wall, time.thread_time() - used)
                    return
                probe.add("read_chunk", time.perf_counter() - wall, time.thread_time() - used)
                yield item

        delivery._chunks = chunks

        class TimedFuture:
            __slots__ = ("future",)

            def __init__(self, future: Any):
                self.future = future

            def done(self) -> bool:
                return self.future.done()

            def result(self, timeout: float | None = None) -> Any:
                wall = time.perf_counter()
                try:
                    return self.future.result(timeout)
                finally:
                    probe.add("wait_for_batch", time.perf_counter() - wall)

        class TimedPool(loop.ThreadPoolExecutor):
            def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
                wall = time.perf_counter()
                future = super().submit(fn, *args, **kwargs)
                probe.add("submit", time.perf_counter() - wall)
                return TimedFuture(future)

        loop.ThreadPoolExecutor = TimedPool
        if hasattr(http, "Transfers"):  # sessions that send from the loop's own thread: its waits run the transfers
            http.Transfers.pump = self.timed("run_transfers", http.Transfers.pump, cpu=True)
        http.HttpClient.request = self.timed("http_request", http.HttpClient.request)
        http.RateBudget.acquire = self.timed("budget_acquire", http.RateBudget.acquire)
        # Each try goes out through HttpClient._send (one curl perform: send, wait, read and parse the answer).
        http.HttpClient._send = self.timed("curl_send", http.HttpClient._send)

        original_fold = self.timed("fold_acks", delivery.fold_acks, cpu=True)
        if not whatifs & {"group_commit", "no_checkpoint"}:
            # The loop checkpoints answered batches together through record_acks (one INSERT per call).
            delivery.record_acks = self.timed("record_ack", delivery.record_acks, cpu=True)
            delivery.fold_acks = original_fold
            return

        # What-if only: the same ack rows, written `flush_every` ranges per INSERT ("group_commit") or all at
        # the end ("no_checkpoint", the upper bound of what removing checkpoint cost can buy).
        pending: list[tuple] = []

        def flush() -> None:
            if not pending:
                return
            conn, tables = pending[-1][0], pending[-1][1]
            params = [
                value
                for (_, t, run, first, last, now) in pending
                for value in (t.audience, t.destination, run, first, last, now)
            ]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, false)"] * len(pending))
            conn.execute(f"INSERT INTO {tables.acks} VALUES {values}", params)
            pending.clear()

        def record_ack(conn: Any, tables: Any, run_id: str, first_seq: int, last_seq: int, now: Any) -> None:
            wall, used = time.perf_counter(), time.thread_time()
            pending.append((conn, tables, run_id, first_seq, last_seq, now))
            if "group_commit" in whatifs and len(pending) >= probe.flush_every:
                flush()
            probe.add("record_ack", time.perf_counter() - wall, time.thread_time() - used)

        def fold_acks(conn: Any, tables: Any) -> int:
            flush()
            return original_fold(conn, tables)

        delivery.record_ack = record_ack
        delivery.fold_acks = fold_acks

    def cprofile_report(self) -> dict:
        """Thread CPU per step (cumulative, subcalls included) and the functions that spend most of it."""
        import pstats

        if not self.profiles:
            return {}
        stats = pstats.Stats(*self.profiles).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}

        def cumulative(file_part: str, name: str) -> float:
            # Recursion is not an issue here; summing covers same-named functions in one file.
            return sum(v[3] for (f, _, n), v in stats.items() if n == name and file_part in f)

        steps = {
            "main: whole delivery loop (deliver)": cumulative("delivery/loop.py", "run"),
            "main: checkpoint INSERT (record_ack)": cumulative("delta/ledger.py", "record_acks"),
            "main: fold acks (fold_acks)": cumulative("delta/ledger.py", "fold_acks"),
            "main: read + decode delta chunks (_chunks)": cumulative("delivery/audience.py", "_chunks"),
            "main: submit batches to the pool": cumulative("concurrent/futures/thread.py", "submit"),
            "senders: whole send (_send)": cumulative("delivery/loop.py", "_send"),
            "senders: build payloads": cumulative("destinations/braze.py", "attribute_object")
            + cumulative("destinations/webhook.py", "webhook_rows"),
            "senders: rate budget (RateBudget.acquire, SQLite)": cumulative("destinations/http.py", "acquire"),
            "senders: HttpClient._send, one curl perform (all HTTP work: send + wait + parse)":
                cumulative("destinations/http.py", "_send"),
            "senders: JSON encoding (json.dumps)": cumulative("json/__init__.py", "dumps"),
            "senders: read response JSON (json.loads)": cumulative("json/__init__.py", "loads"),
        }
        top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:15]
        inclusive = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:40]
        return {
            "top_cumtime": [
                {"function": f"{Path(f).parent.name}/{Path(f).name}:{n}" if f != "~" else n, "calls": v[1],
                 "tottime_s": v[2], "cumtime_s": v[3]}
                for (f, _, n), v in inclusive
            ],
            "steps_cpu_s": steps,
            "top_tottime": [
                {"function": f"{Path(f).parent.name}/{Path(f).name}:{n}" if f != "~" else n, "calls": v[1],
                 "tottime_s": v[2], "cumtime_s": v[3]}
                for (f, _, n), v in top
            ],
        }

    def summary(self) -> dict:
        out: dict = {"threads_cpu": getattr(self, "threads_cpu", None)}
        with self.lock:
            items = {name: list(values) for name, values in self.samples.items()}
        for name, values in items.items():
            walls = sorted(w for w, _ in values)
            out[name] = {
                "n": len(walls),
                "total_s": sum(walls),
                "cpu_s": sum(c for _, c in values),
                "mean_ms": 1000 * statistics.fmean(walls),
                "p50_ms": 1000 * walls[len(walls) // 2],
                "p95_ms": 1000 * walls[min(len(walls) - 1, int(len(walls) * 0.95))],
                "max_ms": 1000 * walls[-1],
            }
        return out


# Wall-clock stack sampling of every thread while deliver() runs: which step each thread is in.
# Rules are checked in order; a rule matches when any frame of the stack has that function (and file part).
SAMPLE_RULES = {
    "main": [
        ("checkpoint INSERT (record_ack)", ("record_ack", "")),
        ("fold acks into the ledger", ("fold_acks", "")),
        ("decode delta rows (json.loads)", ("records_from_rows", "")),
        ("read delta chunk (DuckDB)", ("_chunks", "")),
        ("waiting for the oldest batch", ("result", "concurrent/futures")),
        ("checkpoint bookkeeping", ("_checkpoint", "")),
        ("submit next batch", ("submit", "")),
        ("progress log (Dagster event log)", ("<lambda>", "assets/deliveries.py")),
    ],
    "senders": [
        ("rate budget (SQLite window)", ("acquire", "destinations/http.py")),
        ("build payload", ("attribute_object", "")),
        ("build payload", ("webhook_rows", "")),
        ("HMAC signature", ("signature", "destinations/webhook.py")),
        ("JSON encode/decode", ("", "/json/")),
        ("socket wait (send/receive)", ("", "/socket.py")),
        # A curl perform (socket waits included: they happen inside libcurl) shows as HttpClient._send.
        ("HTTP client (curl)", ("_send", "destinations/http.py")),
        ("idle (no batch queued)", ("_worker", "concurrent/futures/thread.py")),
    ],
    "fake server (in process)": [
        ("Braze fake: /users/track logic", ("_track", "fakes/braze.py")),
        ("JSON encode/decode", ("", "/json/")),
        ("socket wait (request/keep-alive)", ("", "/socket.py")),
        ("http.server parsing/writing", ("", "/http/server.py")),
        ("http.server parsing/writing", ("", "/email/")),
    ],
}


class Sampler(threading.Thread):
    """Samples every thread's stack every `interval` s while the probe says deliver() runs; thread CPU too."""

    def __init__(self, probe: Probe, interval: float = 0.004):
        super().__init__(name="bench-sampler", daemon=True)
        self.probe = probe
        self.interval = interval
        self.halt = threading.Event()
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.leaves: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.cpu_first: dict[int, tuple[str, float]] = {}
        self.cpu_last: dict[int, float] = {}
        self.ticks = 0

    @staticmethod
    def role(thread: threading.Thread | None) -> str:
        if thread is threading.main_thread():
            return "main"
        name = thread.name if thread else "?"
        if name.startswith("deliver"):
            return "senders"
        if name.startswith("BrazeFake") or "process_request_thread" in name:
            return "fake server (in process)"
        return "other"

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            if not self.probe.delivering:
                continue
            self.ticks += 1
            threads = {t.ident: t for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == self.ident:
                    continue
                role = self.role(threads.get(ident))
                stack = []
                f = frame
                while f is not None:
                    stack.append((f.f_code.co_name, f.f_code.co_filename))
                    f = f.f_back
                bucket = "other"
                for label, (func, path) in SAMPLE_RULES.get(role, []):
                    if any((not func or name == func) and path in file for name, file in stack):
                        bucket = label
                        break
                self.counts[role][bucket] += 1
                leaf_name, leaf_file = stack[0]
                self.leaves[role][f"{Path(leaf_file).parent.name}/{Path(leaf_file).name}:{leaf_name}"] += 1
                try:
                    used = time.clock_gettime(time.pthread_getcpuclockid(ident))
                except (OSError, OverflowError):
                    continue
                self.cpu_first.setdefault(ident, (role, used))
                self.cpu_last[ident] = used

    def report(self) -> dict:
        self.halt.set()
        self.join()
        cpu: dict[str, float] = collections.defaultdict(float)
        threads: dict[str, int] = collections.Counter()
        for ident, (role, first) in self.cpu_first.items():
            cpu[role] += self.cpu_last[ident] - first
            threads[role] += 1
        return {
            "interval_s": self.interval,
            "ticks": self.ticks,
            "roles": {
                role: {
                    "threads": threads.get(role, 0),
                    "cpu_s": cpu.get(role, 0.0),
                    "samples": sum(counter.values()),
                    "buckets": dict(counter.most_common()),
                    "top_leaves": dict(self.leaves[role].most_common(8)),
                }
                for role, counter in self.counts.items()
            },
        }

"""Timing helpers: interleaved rounds, median with min and max, CPU beside wall time, peak RSS, machine load."""

from __future__ import annotations

import os
import resource
import statistics
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def rounds(count: int, sides: Iterable[T]) -> Iterator[tuple[int, T]]:
    """(round, side) for `count` rounds of every side in turn: A, B, A, B rather than A, A, B, B.

    Interleaving keeps drift in the machine's load (another process starting, a cache warming) from landing on
    every run of one side.
    """
    sides = list(sides)
    for round_no in range(1, count + 1):
        for side in sides:
            yield round_no, side


def summary(values: Iterable[float]) -> dict[str, float]:
    """The median with the minimum and maximum: the spread says how much to trust the median."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def span(s: dict | None, unit: str = " s", spec: str = ".2f") -> str:
    """A `summary` as "median unit (min-max)", each number formatted with `spec`; "-" when there is none."""
    return "-" if s is None else f"{s['median']:{spec}}{unit} ({s['min']:{spec}}-{s['max']:{spec}})"


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all threads) or, with RUSAGE_CHILDREN, of its waited-for children.

    CPU time moves far less than wall time when something else runs on the machine.
    """
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def timed(into: dict, name: str) -> Iterator[None]:
    """Record a block's wall seconds as `name` and this process's CPU seconds (all threads) as `name_cpu`."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into[name] = time.perf_counter() - wall
    into[f"{name}_cpu"] = time.process_time() - cpu


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB); a DuckDB in the process allocates inside it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident set now (psutil, imported here so that processes not sampling RSS skip it)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load_average() -> list[float]:
    """The 1/5/15-minute load averages, rounded: figures taken on a busy machine are not comparable with quiet ones."""
    return [round(x, 2) for x in os.getloadavg()]


def load_text() -> str:
    """The load averages as one string, "0.42 0.51 0.60", as the reports print them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def busy(threshold: float = 0.5) -> bool:
    """Whether the 1-minute load says other work shares the CPUs (worth a warning before measuring)."""
    return os.getloadavg()[0] > threshold

"""What a shared rate budget costs: requests per second it grants, per coordination store, on 127.0.0.1.

Several processes (each with several sender threads, as syncs have) take requests from one budget
(`composable_assets.coordination`) for a few seconds:

- **unbounded**: a limit no one reaches, so the figure is the store's own ceiling (how many requests per second the
  budget can hand out at all; Braze's workspace budget is 1,000/s);
- **bounded**: Braze's documented 3,000 requests per 3 s, so the figure says how much of a real budget is used.

Stores run in interleaved rounds (sqlite, postgres, redis, sqlite, ...), each round a fresh budget; the table shows
the median with min and max, and the load average before and after.

    .venv/bin/python benchmarks/budget_benchmark.py                 # 3 rounds x 3 stores x 2 shapes, ~4 minutes
    .venv/bin/python benchmarks/budget_benchmark.py --rounds 1 --seconds 3 --results /tmp/budget
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2

from composable_assets.coordination import Coordination, Limit, RateBudget

from common.report import write_results
from common.timing import load_average, rounds, span, summary

PG = "postgresql://postgres@127.0.0.1:5432/"
REDIS = "redis://127.0.0.1:6379/0"
PYRATE = "pyrate+"
SHAPES = {"unbounded": Limit(10_000_000, 3.0), "bounded": Limit(3000, 3.0)}


def _budget(url: str, key: str, limit: Limit) -> RateBudget:
    if not url.startswith(PYRATE):
        return Coordination(url=url).budget(key, limit)
    # For comparison: pyrate-limiter's own PostgresBucket (a row per request, its table locked for each).
    from psycopg_pool import ConnectionPool
    from pyrate_limiter import FixedWindow, PostgresBucket, Rate

    pool = ConnectionPool(url.removeprefix(PYRATE), min_size=0, max_size=4, open=True,
                          kwargs={"options": "-c synchronous_commit=off"})
    bucket = PostgresBucket(pool, key.replace(":", "_"), [Rate(limit.requests, int(limit.window_seconds * 1000))],
                            algorithm=FixedWindow())
    return RateBudget(bucket, key, limit)


def _taker(url: str, key: str, limit: Limit, threads: int, start: float, until: float, counts) -> None:
    budget = _budget(url, key, limit)
    taken = [0] * threads
    time.sleep(max(0.0, start - time.time()))

    def take(i: int) -> None:
        while True:
            budget.acquire()
            if time.time() >= until:  # granted after the end (waited for the next window): not counted
                return
            taken[i] += 1

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts.put(sum(taken))


def measure(url: str, limit: Limit, processes: int, threads: int, seconds: float) -> float:
    """Requests per second granted in all, by `processes` x `threads` takers on one fresh budget."""
    context = multiprocessing.get_context("spawn")
    counts = context.Queue()
    key = f"bench:{uuid.uuid4().hex[:8]}:track"
    # Every process is up before the clock starts, at a window boundary: whole windows are measured.
    start = math.ceil((time.time() + 3.0) / limit.window_seconds) * limit.window_seconds
    procs = [context.Process(target=_taker, args=(url, key, limit, threads, start, start + seconds, counts))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    total = sum(counts.get(timeout=seconds + 60) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def _postgres_database() -> str:
    name = f"composable_budget_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(PG + "postgres")
    con.autocommit = True
    con.cursor().execute(f'CREATE DATABASE "{name}"')
    con.close()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=9.0, help="a multiple of 3: whole Braze windows")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="budget-"))
    database = _postgres_database()
    stores = {
        "sqlite": f"sqlite:///{work / 'coordination.sqlite'}",
        "postgres": PG + database,
        "redis": REDIS,
        "postgres, pyrate-limiter's PostgresBucket": PYRATE + PG + database,
    }
    load_before = load_average()
    runs: dict[str, dict[str, list[float]]] = {shape: {store: [] for store in stores} for shape in SHAPES}
    for _, (shape, store) in rounds(args.rounds, [(shape, store) for shape in SHAPES for store in stores]):
        rate = measure(stores[store], SHAPES[shape], args.processes, args.threads, args.seconds)
        runs[shape][store].append(rate)
        print(f"{shape:9} {store:42} {rate:9,.0f} requests/s", flush=True)
    load_after = load_average()

    lines = [
        f"# Shared rate budget: requests per second granted ({args.processes} processes x {args.threads} threads, "
        f"{args.seconds:g} s each from a window boundary, {args.rounds} interleaved rounds)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| store | unbounded: median (min-max) | Braze's 3,000 / 3 s: median (min-max) | of that budget |",
        "|---|---:|---:|---:|",
    ]
    for store in stores:
        free, bound = summary(runs["unbounded"][store]), summary(runs["bounded"][store])
        lines.append(
            f"| {store} | {span(free, '', ',.0f')} | {span(bound, '', ',.0f')} | {bound['median'] / 1000:.0%} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    write_results(Path(args.results), "budget", markdown=report,
                  data={"args": vars(args), "runs": runs, "load": [load_before, load_after]})
    con = psycopg2.connect(PG + "postgres")
    con.autocommit = True
    con.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()

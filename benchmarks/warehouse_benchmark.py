"""Warehouse benchmark: the diff on DuckDB, PostgreSQL and Snowflake (fakesnow) side by side, and memory while streaming.

One run reports:

- A. per engine, the real delta step for N members (default 1M): the first diff (everyone is an add), the ack
  fold that records it in the ledger, then a change (5% updated, 1% removed, 1% added), its diff and its fold.
  Members are generated in each warehouse by SQL, so loading is not what is measured. Times side by side, with
  ratios to DuckDB.
- B. the real delivery path (`delivery.audience.deliver`: pages delta rows by `_seq` range, checkpoints every
  batch, folds the acks at the end) streaming a 1M-row and a 5M-row delta to a destination that only counts
  records, each in a fresh process; peak RSS per size and the ratio 5M / 1M.

This script reports numbers; it fails only when a step finds other counts than it must.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import composable_assets
from composable_assets.delivery.audience import READ_CHUNK_ROWS, deliver
from composable_assets.delta.diff import DeltaRun, compute_delta, latest_delta_run
from composable_assets.delta.ledger import fold_acks, record_acks
from composable_assets.delta.snapshot import SyncShape, build_snapshot
from composable_assets.warehouse.sql import ident
from composable_assets.store import PairTables
from composable_assets.destinations import BatchResult, Record, Session
from composable_assets.settings import DEFAULT_DUCKDB_MEMORY_LIMIT
from composable_assets.warehouse import Connection, engine_from_url

HERE = Path(__file__).resolve().parent
# `python benchmarks/warehouse_benchmark.py` puts benchmarks/ on sys.path for `common`; the smoke test loads this
# file by its path, which does not.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common.code import code_env, copy_code  # noqa: E402
from common.members import people_sql  # noqa: E402
from common.report import RESULTS, machine_info, md_table, versions, write_results  # noqa: E402
# `timed` records this process's CPU seconds beside wall seconds; on PostgreSQL the work is in the server
# process, so there the CPU time is not the step's cost.
from common.timing import current_rss_mb, load_text, peak_rss_mb, timed  # noqa: E402

REPO = HERE.parent
# A folder of its own inside the git-ignored .work/, which other benchmarks share: only this one is ever deleted.
WORK = HERE / ".work" / "warehouse"
# A copy of composable_assets/ taken at the start (or of --code-rev): every process of one run imports the same code.
CODE = WORK / "code"

ENGINES = ("duckdb", "postgres", "snowflake")
LABELS = {
    "duckdb": "DuckDB",
    "duckdb_limited": f"DuckDB, memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}",
    "postgres": "PostgreSQL",
    "snowflake": "Snowflake (fakesnow)",
}
# What a delta is streamed out of: engine and URL query. DuckDB twice: with its own defaults (memory_limit 80% of
# RAM) and with the memory_limit of the default warehouse URL (settings.DEFAULT_DUCKDB_MEMORY_LIMIT).
STREAM_TARGETS = {
    "duckdb": ("duckdb", ""),
    "duckdb_limited": ("duckdb", f"memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}"),
    "postgres": ("postgres", ""),
    "snowflake": ("snowflake", ""),
}
DIFF_SIZE = 1_000_000
STREAM_SIZES = (1_000_000, 5_000_000)
QUICK_DIFF_SIZE = 20_000
QUICK_STREAM_SIZES = (20_000, 100_000)
# A diff run over this many seconds is stopped and retried at a quarter of the size (fakesnow can be slow).
DIFF_TIMEOUT_S = 600
# A stream over this many seconds is stopped; the report shows how far it got and its memory until then.
STREAM_TIMEOUT_S = 600

PG_HOST = os.environ.get("WAREHOUSE_BENCHMARK_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("WAREHOUSE_BENCHMARK_PG_PORT", "5432"))
PG_USER = os.environ.get("WAREHOUSE_BENCHMARK_PG_USER", "postgres")
SNOWFLAKE_URL = "snowflake://bench@fake_account/bench/public?warehouse=wh"

SCHEMA = "cdp"
MODEL = "customers"
COLUMNS = ["customer_id", "email", "first_name", "ltv", "country"]
SHAPE = SyncShape(
    destination="crm",
    identifier_column="customer_id",
    fields={"email": "email", "first_name": "first_name", "ltv": "ltv", "country": "country"},
)
TABLES = PairTables(SCHEMA, "members", SHAPE.destination)
DAY1, DAY2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)

# The change between the two diffs, by customer_id % 100: 0-4 get another ltv (5% updates), 5 leave the model
# (1% removes, mirror mode), and 1% new customers arrive after the highest id (adds).
UPDATE_REMAINDERS = 5
REMOVE_REMAINDER = 5

# Delivery of the streaming part: the outbox's batch size, a few batches in flight as the HTTP destinations have.
STREAM_BATCH_SIZE = 1000
STREAM_CONCURRENCY = 4


class BenchmarkError(Exception):
    """A step found other counts than it must: the numbers would mean nothing."""


# --- The members, generated in the warehouse (DuckDB SQL, rendered for each engine). -------------------------


def build_audience(conn: Connection) -> int:
    """The audience snapshot through the engine's own `build_snapshot` (everyone in the model, one sync)."""
    return build_snapshot(
        conn,
        schema=SCHEMA,
        audience=TABLES.audience,
        audience_file=Path("benchmarks/members.yaml"),
        model=MODEL,
        primary_key="customer_id",
        columns=COLUMNS,
        where=None,
        syncs=[SHAPE],
    ).size


def expected_change(size: int) -> dict[str, int]:
    """What the second diff must find for `size` members (a multiple of 100)."""
    per_remainder = size // 100
    return {"add": per_remainder, "update": per_remainder * UPDATE_REMAINDERS, "remove": per_remainder}


def counts(run: DeltaRun) -> dict[str, int]:
    return {"add": run.added, "update": run.updated, "remove": run.removed}


def check(what: str, found: object, expected: object) -> None:
    if found != expected:
        raise BenchmarkError(f"{what}: found {found}, expected {expected}")


def ack_everything(conn: Connection, run: DeltaRun, now: dt.datetime) -> None:
    """What a sync whose destination acknowledged every row leaves: one checkpoint for the run, then the fold."""
    record_acks(conn, TABLES, f"sync-{run.run_id}", [(run.first_seq, run.last_seq)], now)
    fold_acks(conn, TABLES)


def ledger_size(conn: Connection) -> int:
    return conn.fetch_one(f"SELECT count(*) FROM {TABLES.ledger}")[0]


# --- A. The diff on one engine. ------------------------------------------------------------------------------


def run_diffs(url: str, size: int, log: Callable[[str], None] = lambda _: None) -> dict:
    """The whole sequence on one (empty) warehouse: generate, snapshot, diff, fold, change, snapshot, diff, fold.

    Every step goes through the engine the URL names and the production functions; counts are checked after
    each diff and fold (BenchmarkError otherwise). Returns wall (and client CPU) seconds per step and the counts.
    """
    if size < 100 or size % 100:
        raise ValueError("size must be a positive multiple of 100")
    result: dict = {"size": size}
    with engine_from_url(url).connect() as conn:
        log("generate")
        with timed(result, "generate_s"):
            conn.execute(f"CREATE TABLE {ident(MODEL)} AS {people_sql(1, size)}")
        log("snapshot")
        with timed(result, "snapshot_s"):
            check("first snapshot", build_audience(conn), size)
        log("first diff")
        with timed(result, "diff1_s"):
            first = compute_delta(
                conn, TABLES, SHAPE, "mirror", run_id="day1", partition=DAY1, now=dt.datetime(2026, 3, 2, 6)
            )
        result["diff1"] = counts(first)
        check("first diff", result["diff1"], {"add": size, "update": 0, "remove": 0})
        log("first fold")
        with timed(result, "fold1_s"):
            ack_everything(conn, first, dt.datetime(2026, 3, 2, 6, 30))
        check("ledger after the first fold", ledger_size(conn), size)

        log("change")
        with timed(result, "change_s"):
            model = ident(MODEL)
            conn.execute(
                f"UPDATE {model} SET ltv = ltv + 1 WHERE customer_id % 100 < {UPDATE_REMAINDERS}"
            )
            conn.execute(f"DELETE FROM {model} WHERE customer_id % 100 = {REMOVE_REMAINDER}")
            conn.execute(f"INSERT INTO {model} {people_sql(size + 1, size // 100)}")
        log("second snapshot")
        with timed(result, "snapshot2_s"):
            check("second snapshot", build_audience(conn), size)
        log("second diff")
        with timed(result, "diff2_s"):
            second = compute_delta(
                conn, TABLES, SHAPE, "mirror", run_id="day2", partition=DAY2, now=dt.datetime(2026, 3, 3, 6)
            )
        result["diff2"] = counts(second)
        check("second diff", result["diff2"], expected_change(size))
        log("second fold")
        with timed(result, "fold2_s"):
            ack_everything(conn, second, dt.datetime(2026, 3, 3, 6, 30))
        check("ledger after the second fold", ledger_size(conn), size)
        result["ledger_fold"] = "MERGE" if conn.has_merge else "delete-then-insert"
    return result


# --- B. Streaming a delta out through the delivery path. -----------------------------------------------------


def prepare_delta(url: str, size: int) -> DeltaRun:
    """A warehouse holding a delta of `size` rows (a first sync: everyone is an add), computed for real."""
    with engine_from_url(url).connect() as conn:
        conn.execute(f"CREATE TABLE {ident(MODEL)} AS {people_sql(1, size)}")
        build_audience(conn)
        run = compute_delta(conn, TABLES, SHAPE, "mirror", run_id="day1", partition=DAY1, now=dt.datetime(2026, 3, 2, 6))
    check("delta to stream", counts(run), {"add": size, "update": 0, "remove": 0})
    return run


class CountingSession(Session):
    """A destination that acknowledges every row and keeps only counts; samples this process's RSS at every batch.

    With `progress`, it also writes what it has seen so far to that file (at most every 2 s), so a run stopped
    for taking too long still reports how far it got and its memory up to then.
    """

    def __init__(self, expected_rows: int, progress: Path | None = None) -> None:
        self.records = 0
        self.batches = 0
        self.started = time.perf_counter()
        self.base_rss_mb = self.peak_rss_mb = current_rss_mb()
        # (rows delivered, RSS MB, seconds) every 10% of the rows, to see whether memory grows along the way.
        self.trace: list[tuple[int, float, float]] = []
        self._step = max(1, expected_rows // 10)
        self._progress = progress
        self._written = 0.0
        self._lock = threading.Lock()  # `deliver` calls send from up to `concurrency` threads

    def send(self, batch: Sequence[Record]) -> BatchResult:
        rss = current_rss_mb()
        with self._lock:
            before = self.records
            self.records += len(batch)
            self.batches += 1
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            traced = self.records // self._step > before // self._step
            if traced:
                self.trace.append((self.records, round(rss), round(time.perf_counter() - self.started, 1)))
            if self._progress and (traced or time.perf_counter() - self._written >= 2.0):
                self._written = time.perf_counter()
                self._progress.write_text(json.dumps(self.snapshot()))
        return BatchResult(acknowledged=[r.seq for r in batch])

    def snapshot(self) -> dict:
        return {
            "base_rss_mb": self.base_rss_mb,
            "delivered": self.records,
            "batches": self.batches,
            "streaming_peak_rss_mb": self.peak_rss_mb,
            "trace": self.trace,
            "seconds": time.perf_counter() - self.started,
        }


def stream_delta(
    url: str,
    batch_size: int = STREAM_BATCH_SIZE,
    concurrency: int = STREAM_CONCURRENCY,
    progress: Path | None = None,
) -> dict:
    """Deliver the warehouse's newest delta with `deliver`, as a sync asset does, to a CountingSession.

    Reports the RSS before, the highest RSS seen while batches were going out (sampled at every batch), the
    process's peak including the final ack fold (`ru_maxrss`), and the seconds, in all and for the final fold.
    """
    with engine_from_url(url).connect() as conn:
        run = latest_delta_run(conn, TABLES)
        if run is None:
            raise BenchmarkError("no delta to stream")
        session = CountingSession(run.size, progress)
        started = time.perf_counter()
        report = deliver(
            conn, TABLES, run, session, batch_size=batch_size, concurrency=concurrency,
            sync_run_id="stream-bench", partition=run.partition,
        )
        seconds = time.perf_counter() - started
        ledger_rows = ledger_size(conn)
    result = {
        **session.snapshot(),
        "seconds": seconds,
        # After the last batch, deliver() only waits for the answers in flight and folds every ack into the ledger.
        "final_fold_s": seconds - (session.trace[-1][2] if session.trace else 0.0),
        "rows": run.size,
        "acknowledged": report.delivered,
        "ledger_rows": ledger_rows,
        "peak_rss_mb": peak_rss_mb(),
    }
    check("rows the destination received", session.records, run.size)
    check("rows acknowledged and folded", (report.delivered, ledger_rows), (run.size, run.size))
    return result


# --- C. Folding acknowledged rows into the ledger. ------------------------------------------------------------

# Rows per checkpoint row of the synthetic acks: one delivered batch each (a group commit would make fewer).
FOLD_ACK_ROWS = STREAM_BATCH_SIZE
FOLD_SIZES = (1_000_000, 5_000_000)
QUICK_FOLD_SIZES = (20_000,)


def prepare_fold(url: str, size: int) -> dict:
    """A pair whose delta holds `size` adds, every one acknowledged and none folded yet: what a first sync leaves
    just before its final fold. Rows and acks are generated in SQL in the product's own tables (store/registry.py),
    so the fold reads exactly what `deliver` would have left, without delivering it."""
    with engine_from_url(url).connect() as conn:
        TABLES.ensure(conn)
        fields = "json_object('email', email, 'first_name', first_name, 'ltv', ltv, 'country', country)"
        conn.execute(
            f"INSERT INTO {TABLES.delta} "
            f"SELECT DATE '{DAY1}', 'day1', customer_id, 'add', CAST(customer_id AS VARCHAR), "
            f"CAST(customer_id AS VARCHAR), md5(CAST({fields} AS VARCHAR)), {fields}, NULL, TIMESTAMP '{DAY1} 06:00:00' "
            f"FROM ({people_sql(1, size)}) AS p"
        )
        conn.execute(
            f"INSERT INTO {TABLES.acks} "
            f"SELECT ?, ?, 'stream-bench', i * {FOLD_ACK_ROWS} + 1, least((i + 1) * {FOLD_ACK_ROWS}, {size}), "
            f"TIMESTAMP '{DAY1} 06:30:00', false FROM range(0, {-(-size // FOLD_ACK_ROWS)}) AS r(i)",
            [TABLES.audience, TABLES.destination],
        )
        acks = conn.fetch_one(f"SELECT count(*) FROM {TABLES.acks}")[0]
    return {"rows": size, "ack_rows": acks}


def fold_step(url: str) -> dict:
    """`fold_acks` alone, on what `prepare_fold` left: its seconds, and this process's peak RSS (`ru_maxrss`)."""
    result: dict = {"base_rss_mb": peak_rss_mb()}
    with engine_from_url(url).connect() as conn:
        result["connected_rss_mb"] = peak_rss_mb()
        with timed(result, "fold_s"):
            result["ranges"] = fold_acks(conn, TABLES)
        result["ledger_rows"] = ledger_size(conn)
        result["sync_log_rows"] = conn.fetch_one(f"SELECT count(*) FROM {TABLES.sync_log}")[0]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def bench_fold(sizes: Sequence[int], timeout: float) -> list[dict]:
    """Per size: prepare the acknowledged delta (one process), then fold it (a fresh one), on DuckDB with the
    memory_limit of the default warehouse URL, as the product opens it."""
    results = []
    for size in sizes:
        print(f"[C] fold of {size:,} acknowledged rows", flush=True)
        folder = WORK / f"fold_{size}"
        with new_warehouse("duckdb", folder, f"memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}") as url:
            started = time.perf_counter()
            prepared = spawn("prepare_fold", url, size, None)
            prepare_s = time.perf_counter() - started
            result = spawn("fold", url, size, None, timeout)
        if result is None:
            result = {"timed_out": timeout}
        else:
            check("ledger rows after the fold", result["ledger_rows"], size)
            check("sync log rows after the fold", result["sync_log_rows"], size)
        result.update(size=size, prepare_s=prepare_s, ack_rows=prepared["ack_rows"])
        print(f"    {json.dumps({k: v for k, v in result.items() if k != 'module'})}", flush=True)
        results.append(result)
    return results


# --- Warehouses for one run: a DuckDB file, a PostgreSQL database, a fakesnow folder. ------------------------


def _pg_admin():
    import psycopg2

    con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    con.autocommit = True
    return con


@contextmanager
def new_warehouse(engine: str, folder: Path, query: str = "") -> Iterator[str]:
    """An empty warehouse of `engine` for one measurement, removed afterwards; yields its URL.

    For Snowflake the URL only works in a process where `fakesnow_patched(folder)` is active.
    """
    if engine == "duckdb":
        folder.mkdir(parents=True, exist_ok=True)
        yield f"duckdb:///{folder / 'warehouse.duckdb'}" + (f"?{query}" if query else "")
        shutil.rmtree(folder, ignore_errors=True)
    elif engine == "postgres":
        name = f"warehouse_bench_{uuid.uuid4().hex[:10]}"
        admin = _pg_admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    elif engine == "snowflake":
        folder.mkdir(parents=True, exist_ok=True)
        yield SNOWFLAKE_URL
        shutil.rmtree(folder, ignore_errors=True)
    else:
        raise ValueError(f"unknown engine {engine!r}")


@contextmanager
def fakesnow_patched(folder: Path | None) -> Iterator[None]:
    """The real Snowflake connector answered by fakesnow, its databases kept under `folder` (None: no patch)."""
    if folder is None:
        yield
        return
    import fakesnow

    with fakesnow.patch(db_path=folder):
        yield


# --- Subprocesses: every measurement in a fresh interpreter. -------------------------------------------------


def run_child(args: argparse.Namespace) -> None:
    """Entry point of a step subprocess: one JSON line on stdout."""
    fakesnow_dir = Path(args.fakesnow_dir) if args.fakesnow_dir else None
    # fakesnow warns on every Arrow result built from rows; the connection builds them from rows on purpose.
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    with fakesnow_patched(fakesnow_dir):
        if args.step == "diff":
            result = run_diffs(args.url, args.size, log=lambda step: print(f"  {step}", file=sys.stderr, flush=True))
        elif args.step == "prepare":
            run = prepare_delta(args.url, args.size)
            result = {"rows": run.size}
        elif args.step == "prepare_fold":
            result = prepare_fold(args.url, args.size)
        elif args.step == "fold":
            result = fold_step(args.url)
        else:
            result = stream_delta(args.url, progress=Path(args.progress) if args.progress else None)
    result["module"] = composable_assets.__file__
    print(json.dumps(result))


def snapshot_code(rev: str | None) -> dict:
    """Copy composable_assets/ (of the working tree, or of git revision `rev`) for this run's processes."""
    return {"code": copy_code(CODE, rev)}


def child_env() -> dict[str, str]:
    """The children import the code snapshot: PYTHONPATH comes ahead of the editable install's finder."""
    return code_env(CODE) if CODE.is_dir() else dict(os.environ)


def spawn(
    step: str, url: str, size: int, fakesnow_dir: Path | None, timeout: float | None = None, *extra: str
) -> dict | None:
    """Run one step in a fresh interpreter; None if it ran over `timeout`; a failed step stops the benchmark."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--url", url, "--size", str(size), *extra]
    if fakesnow_dir is not None:
        cmd += ["--fakesnow-dir", str(fakesnow_dir)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=child_env(), check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        sys.exit(f"step {step} at {size:,} rows on {url} failed (exit {proc.returncode}); see above")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if CODE.is_dir() and not result["module"].startswith(str(CODE)):
        sys.exit(f"step {step} imported {result['module']}, not the code snapshot in {CODE}")
    return result


def bench_diffs(engines: Sequence[str], size: int, timeout: float) -> dict[str, dict]:
    """Each engine's diff sequence at `size`, one after the other, each in a process and a warehouse of its own.

    An engine that runs over `timeout` is stopped and tried again at a quarter of the size (its result then
    carries `timed_out_at`).
    """
    results: dict[str, dict] = {}
    for engine in engines:
        attempt, timed_out_at = size, None
        while True:
            print(f"[A] {LABELS[engine]}: {attempt:,} members", flush=True)
            folder = WORK / f"diff_{engine}_{attempt}"
            with new_warehouse(engine, folder) as url:
                started = time.perf_counter()
                result = spawn("diff", url, attempt, folder if engine == "snowflake" else None, timeout)
            if result is not None:
                result["total_s"] = time.perf_counter() - started
                print(f"    {json.dumps({k: v for k, v in result.items() if k != 'module'})}", flush=True)
                if timed_out_at:
                    result["timed_out_at"] = timed_out_at
                results[engine] = result
                break
            smaller = attempt // 4 // 100 * 100
            print(f"    over {timeout:.0f} s at {attempt:,}: retrying at {smaller:,}", flush=True)
            if smaller < 100:
                sys.exit(f"{engine}: the diff did not finish within {timeout:.0f} s even at {attempt:,} members")
            timed_out_at = attempt
            attempt = smaller
    return results


def bench_stream(targets: Sequence[str], sizes: Sequence[int], timeout: float) -> dict[str, list[dict]]:
    """Per target and size: prepare a delta, then stream it out in a fresh process (stopped after `timeout` s)."""
    results: dict[str, list[dict]] = {}
    for target in targets:
        engine, query = STREAM_TARGETS[target]
        for size in sizes:
            print(f"[B] {LABELS[target]}: a delta of {size:,} rows", flush=True)
            folder = WORK / f"stream_{target}_{size}"
            fakesnow_dir = folder if engine == "snowflake" else None
            progress = WORK / f"stream_{target}_{size}.progress.json"
            with new_warehouse(engine, folder, query) as url:
                started = time.perf_counter()
                spawn("prepare", url, size, fakesnow_dir)
                prepare_s = time.perf_counter() - started
                print(f"    prepared in {prepare_s:.0f} s; streaming ...", flush=True)
                result = spawn("stream", url, size, fakesnow_dir, timeout, "--progress", str(progress))
            if result is None:
                result = json.loads(progress.read_text()) if progress.exists() else {"delivered": 0, "trace": []}
                result.update(timed_out=timeout)
            result.update(size=size, prepare_s=prepare_s)
            print(f"    {json.dumps({k: v for k, v in result.items() if k != 'module'})}", flush=True)
            results.setdefault(target, []).append(result)
    return results


# --- Report. -------------------------------------------------------------------------------------------------

DIFF_STEPS = (
    ("generate_s", "generate the members (SQL, not the product)"),
    ("snapshot_s", "audience snapshot"),
    ("diff1_s", "first diff (everyone added)"),
    ("fold1_s", "ack fold of the first diff"),
    ("change_s", "change the model (5% upd., 1% rem., 1% add)"),
    ("snapshot2_s", "audience snapshot again"),
    ("diff2_s", "second diff (5% / 1% / 1%)"),
    ("fold2_s", "ack fold of the second diff"),
)


def diff_table(diffs: dict[str, dict]) -> list[str]:
    engines = [e for e in ENGINES if e in diffs]
    header = ["step"]
    for engine in engines:
        size = f"{diffs[engine]['size']:,}"
        header.append(f"{LABELS[engine]} s ({size})")
        if engine != "duckdb" and "duckdb" in diffs:
            header.append("× DuckDB")
    rows = []
    for key, label in DIFF_STEPS:
        row = [label]
        for engine in engines:
            seconds = diffs[engine][key]
            row.append(f"{seconds:.2f}")
            if engine != "duckdb" and "duckdb" in diffs:
                base = diffs["duckdb"][key]
                same_size = diffs[engine]["size"] == diffs["duckdb"]["size"]
                row.append(f"{seconds / base:.1f}×" if same_size and base > 0 else "n/a")
        rows.append(row)
    total = ["whole sequence, incl. connect"]
    for engine in engines:
        total.append(f"{diffs[engine]['total_s']:.1f}")
        if engine != "duckdb" and "duckdb" in diffs:
            same_size = diffs[engine]["size"] == diffs["duckdb"]["size"]
            total.append(f"{diffs[engine]['total_s'] / diffs['duckdb']['total_s']:.1f}×" if same_size else "n/a")
    rows.append(total)
    return md_table(header, rows, left=1, left_mark=":---")


def stream_table(streams: dict[str, list[dict]]) -> list[str]:
    header = [
        "engine", "delta rows", "delivered", "seconds", "of which final fold s", "RSS before MB",
        "peak while streaming MB", "peak incl. final fold MB",
    ]
    rows = []
    for engine in STREAM_TARGETS:
        for r in streams.get(engine, []):
            if "timed_out" in r:
                # Stopped after the last batch went out: the final fold was running.
                all_sent = r["delivered"] == r["size"] and r.get("trace")
                rows.append([
                    LABELS[engine], f"{r['size']:,}", f"{r['delivered']:,}",
                    f"stopped at {r['timed_out']:.0f}" + (f" (last batch at {r['trace'][-1][2]:.0f})" if all_sent else ""),
                    f"still running after ~{r['timed_out'] - r['trace'][-1][2]:.0f}" if all_sent else "n/a",
                    f"{r.get('base_rss_mb', 0):.0f}",
                    f"{r.get('streaming_peak_rss_mb', 0):.0f}" + ("" if all_sent else " (so far)"), "n/a",
                ])
                continue
            rows.append([
                LABELS[engine], f"{r['size']:,}", f"{r['delivered']:,}", f"{r['seconds']:.1f}",
                f"{r['final_fold_s']:.1f}", f"{r['base_rss_mb']:.0f}", f"{r['streaming_peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb']:.0f}",
            ])
    return md_table(header, rows, left=1, left_mark=":---")


def stream_traces(streams: dict[str, list[dict]]) -> list[str]:
    """RSS at every 10% of the rows delivered, per run: whether memory grows along the way."""
    lines = []
    for engine in STREAM_TARGETS:
        for r in streams.get(engine, []):
            points = ", ".join(f"{rows / r['size']:.0%} {rss} MB" for rows, rss, _ in r.get("trace", []))
            lines.append(f"- {LABELS[engine]}, {r['size']:,} rows: {points or 'less than 10% delivered'}")
    return lines


def stream_ratios(streams: dict[str, list[dict]]) -> list[str]:
    """Largest size against smallest, per target; a run stopped after its last batch still has its streaming peak."""
    lines = []
    for target, runs in streams.items():
        sent = [r for r in runs if r["delivered"] == r["size"]]
        if len(sent) < 2:
            continue
        small, large = sent[0], sent[-1]
        if "timed_out" in small or "timed_out" in large:
            fold = "process peak incl. the final fold: n/a (stopped during the fold)"
        else:
            fold = f"process peak incl. the final fold {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}×"
        lines.append(
            f"- {LABELS[target]}, {large['size']:,} / {small['size']:,} rows "
            f"({large['size'] / small['size']:.0f}× the rows): peak while streaming "
            f"{large['streaming_peak_rss_mb'] / small['streaming_peak_rss_mb']:.2f}×, {fold}; "
            f"growth over the RSS before streaming "
            f"{max(large['streaming_peak_rss_mb'] - large['base_rss_mb'], 0):.0f} MB vs "
            f"{max(small['streaming_peak_rss_mb'] - small['base_rss_mb'], 0):.0f} MB."
        )
    return lines


def fold_table(folds: list[dict]) -> list[str]:
    header = ["acknowledged rows", "ack rows", "fold s", "fold CPU s", "RSS before MB", "peak RSS MB"]
    rows = []
    for r in folds:
        if "timed_out" in r:
            rows.append([f"{r['size']:,}", f"{r['ack_rows']:,}", f"stopped at {r['timed_out']:.0f}", "n/a", "n/a", "n/a"])
            continue
        rows.append([
            f"{r['size']:,}", f"{r['ack_rows']:,}", f"{r['fold_s']:.1f}", f"{r['fold_s_cpu']:.1f}",
            f"{r['connected_rss_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
        ])
    return md_table(header, rows, left=1, left_mark=":---")


def machine() -> dict:
    """What the numbers were measured on: the machine, the engines' client versions and the PostgreSQL server's."""
    packages = ("duckdb", "psycopg2-binary", "snowflake-connector-python", "fakesnow", "sqlglot")
    info = {**machine_info(), **versions(packages, missing="not installed")}
    try:
        admin = _pg_admin()
        with admin.cursor() as cur:
            cur.execute("SHOW server_version")
            info["postgresql"] = cur.fetchone()[0]
        admin.close()
    except Exception:  # noqa: BLE001
        info["postgresql"] = "not reachable"
    return info


def markdown(report: dict) -> str:
    m = report["machine"]
    streams = report["streams"]
    lines = [
        "# Warehouse benchmark",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM · Python {m['python']} · "
        f"DuckDB {m['duckdb']} · PostgreSQL {m['postgresql']} (psycopg2 {m['psycopg2-binary']}) · "
        f"snowflake-connector-python {m['snowflake-connector-python']} against fakesnow {m['fakesnow']} · "
        f"sqlglot {m['sqlglot']} · code: {m['code']} · load average {report['load_before']} before, {report['load_after']} after · "
        f"whole run {report['run_s'] / 60:.1f} min",
        "",
        "## A. The diff, side by side",
        "",
        "Wall seconds of each step of the real delta flow (`build_snapshot`, `compute_delta` in mirror mode, "
        "`record_acks` + `fold_acks` for a sync that acknowledged everything), one engine after the other, each "
        "in a fresh process on an empty warehouse: a DuckDB file, a PostgreSQL database, the Snowflake connector "
        "against fakesnow. The members are generated in the warehouse by one SQL statement (not part of the "
        "product; shown for scale). The ratios divide by DuckDB's time for the same step at the same size.",
        "",
    ]
    for diffs in filter(None, report["diffs"]):
        lines += [*diff_table(diffs), ""]
        lines.append(
            "Ledger fold: " + ", ".join(f"{LABELS[e]} {diffs[e]['ledger_fold']}" for e in ENGINES if e in diffs) + "."
        )
        for engine in ENGINES:
            if engine in diffs and "timed_out_at" in diffs[engine]:
                lines.append(
                    f"{LABELS[engine]} did not finish the sequence at {diffs[engine]['timed_out_at']:,} members within "
                    f"{report['timeout_s']:.0f} s; its column is the largest size tried that finished "
                    f"({diffs[engine]['size']:,}), so it has no ratio to DuckDB."
                )
        lines.append("")
    lines += [
        "## B. Streaming a delta out",
        "",
        "The real delivery path (`delivery.audience.deliver`, as the sync asset calls it: delta rows read in "
        f"`_seq` ranges of {READ_CHUNK_ROWS:,}, batches of {STREAM_BATCH_SIZE:,}, {STREAM_CONCURRENCY} in flight, a "
        "checkpoint per batch, the ack fold at the end) to a destination that only counts records. Each delta is "
        "a first sync (every row an add, the ledger empty), computed by `compute_delta`; each size streams in a "
        "fresh process. DuckDB runs twice: with its own defaults (memory_limit 80% of RAM) and with the "
        f"memory_limit of the default warehouse URL ({DEFAULT_DUCKDB_MEMORY_LIMIT}). RSS is sampled at every batch "
        "(peak while streaming) and `ru_maxrss` at the end (peak incl. the final fold of every ack into the "
        "ledger, which `deliver` runs after the last batch). A stream over "
        f"{report['stream_timeout_s']:.0f} s is stopped and shown with how far it got.",
        "",
        *stream_table(streams),
        "",
        *stream_ratios(streams),
        "",
        "RSS while streaming, at every 10% of the rows:",
        "",
        *stream_traces(streams),
        "",
    ]
    if report.get("folds"):
        lines += [
            "## C. Folding acknowledged rows into the ledger",
            "",
            "`fold_acks` alone, in a fresh process, on DuckDB with the memory_limit of the default warehouse URL "
            f"({DEFAULT_DUCKDB_MEMORY_LIMIT}): what a first sync leaves before its final fold (every row an add, "
            f"acknowledged in checkpoints of {FOLD_ACK_ROWS:,} rows, the ledger empty), generated in SQL in the "
            "product's tables. Peak RSS is the process's `ru_maxrss` (the interpreter and the package imported "
            "are included: see RSS before).",
            "",
            *fold_table(report["folds"]),
            "",
        ]
    return "\n".join(lines)


def available(engine: str) -> bool:
    """Whether this machine can run `engine`; if not, say so and leave it out."""
    try:
        if engine == "postgres":
            _pg_admin().close()
        elif engine == "snowflake":
            import fakesnow  # noqa: F401
            import snowflake.connector  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any reason to skip is reported
        print(f"leaving out {LABELS[engine]}: {str(exc).strip()}", flush=True)
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help=f"members for the diff, multiples of 100 (default {DIFF_SIZE:,})"
    )
    parser.add_argument(
        "--stream-sizes", type=int, nargs="+", default=None,
        help="rows of the deltas to stream, multiples of 100 (default " + ", ".join(f"{n:,}" for n in STREAM_SIZES) + ")",
    )
    parser.add_argument(
        "--fold-sizes", type=int, nargs="*", default=None,
        help="acknowledged rows to fold into the ledger (none: skip it; default "
        + ", ".join(f"{n:,}" for n in FOLD_SIZES) + ")",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds (20k members; 20k and 100k rows)")
    parser.add_argument(
        "--engines", nargs="*", choices=ENGINES, default=list(ENGINES), help="engines for the diff (none: skip it)"
    )
    parser.add_argument(
        "--stream-engines", nargs="*", choices=list(STREAM_TARGETS), default=["duckdb", "duckdb_limited", "postgres"],
        help="what to stream from (none: skip it); duckdb_limited: DuckDB with the default URL's memory_limit",
    )
    parser.add_argument("--timeout", type=float, default=DIFF_TIMEOUT_S, help="seconds before a diff is retried smaller")
    parser.add_argument(
        "--stream-timeout", type=float, default=STREAM_TIMEOUT_S,
        help="seconds before a stream is stopped (reported with how far it got)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for warehouse.md")
    parser.add_argument(
        "--code-rev", help="measure composable_assets/ as committed in this git revision (default: the working tree)"
    )

    parser.add_argument("--step", choices=("diff", "prepare", "stream", "prepare_fold", "fold"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fakesnow-dir", help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_child(args)
        return
    sizes = args.sizes or [QUICK_DIFF_SIZE if args.quick else DIFF_SIZE]
    stream_sizes = args.stream_sizes or list(QUICK_STREAM_SIZES if args.quick else STREAM_SIZES)
    fold_sizes = list(QUICK_FOLD_SIZES if args.quick else FOLD_SIZES) if args.fold_sizes is None else args.fold_sizes
    if any(n < 100 or n % 100 for n in [*sizes, *stream_sizes, *fold_sizes]):
        parser.error("sizes must be positive multiples of 100")

    engines = [e for e in args.engines if available(e)]
    stream_engines = [t for t in args.stream_engines if available(STREAM_TARGETS[t][0])]

    # A stop (SIGTERM) unwinds like Ctrl-C, so the PostgreSQL databases and scratch folders are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    started = time.perf_counter()
    load_before = load_text()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        code = snapshot_code(args.code_rev)
        args.engines, args.stream_engines = engines, stream_engines
        diffs = [bench_diffs(args.engines, size, args.timeout) for size in sizes]
        streams = bench_stream(args.stream_engines, stream_sizes, args.stream_timeout)
        folds = bench_fold(fold_sizes, args.stream_timeout)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    report = {
        "machine": {**machine(), **code},
        "load_before": load_before,
        "load_after": load_text(),
        "timeout_s": args.timeout,
        "stream_timeout_s": args.stream_timeout,
        "run_s": time.perf_counter() - started,
        "diffs": diffs,
        "streams": streams,
        "folds": folds,
    }
    text = markdown(report)
    print(text)
    [written] = write_results(args.results, "warehouse", markdown=text)
    print(f"results in {written}")


if __name__ == "__main__":
    main()

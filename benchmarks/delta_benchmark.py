"""Delta benchmark: what a run pays from audience to delta (snapshot + delta) against the bare engine, on two shapes.

The shapes: a day with ~4% changes (yesterday's ledger) and a first sync (an empty ledger). Each is timed against the
bare engine doing the same row hash into a table and the same full outer join. The delta step alone is also timed
against the bare join and a pandas merge of the same tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
from rich.console import Console

from common import timing
from common.report import RESULTS, machine_info, md_table, rich_table, write_results
from common.timing import busy, load_text, peak_rss_mb, timed

from composable_assets.delta.diff import compute_delta
from composable_assets.delta.snapshot import SyncShape, build_snapshot
from composable_assets.warehouse.sql import ident, json_object
from composable_assets.store import PairTables
from composable_assets.settings import DEFAULT_DUCKDB_MEMORY_LIMIT
from composable_assets.warehouse import Warehouse

HERE = Path(__file__).resolve().parent
# A folder of its own inside the git-ignored .work/, which other benchmarks share: only this one is ever deleted.
WORK = HERE / ".work" / "delta"
SIZES = (1_000_000, 10_000_000)
# Passed from the parent to the step subprocesses, which inherit the environment.
MEMORY_LIMIT_ENV = "DELTA_BENCHMARK_MEMORY_LIMIT"

# The targets: snapshot + delta within 2x of the bare engine on both shapes, the delta step alone within 1.5x of the
# bare join, and every step under 2 GB peak memory with the shipped DuckDB settings.
MAX_RATIO = 2.0
MAX_DELTA_RATIO = 1.5
MAX_PEAK_MB = 2048

SCHEMA = "cdp"
MODEL = "customers"
COLUMNS = ["customer_id", "email", "first_name", "ltv", "country"]
SHAPE = SyncShape(
    destination="crm",
    identifier_column="customer_id",
    fields={"email": "email", "first_name": "first_name", "ltv": "ltv", "country": "country"},
)
TABLES = PairTables(SCHEMA, "members", SHAPE.destination)
STEPS = ("day", "bare_day", "first_sync", "bare_first_sync", "delta", "bare_join", "pandas_merge")
# What a run pays (the audience snapshot and the delta) on each shape, against the bare engine doing the same row
# hash and the same full outer join: (ours, bare) per shape.
SHAPES = {"day": ("day", "bare_day"), "first sync": ("first_sync", "bare_first_sync")}
FIRST_SYNC_STEPS = ("first_sync", "bare_first_sync")

# Yesterday's ledger differs from today's snapshot by design, so every step must find exactly these shares:
# customer_id % 100 == 0 was not synced yet (add), % 100 in (1, 2) had another ltv (update),
# and 1% more customers beyond the model were synced but have left (remove, mirror mode).
ADD_REMAINDERS = (0,)
UPDATE_REMAINDERS = (1, 2)


def people_sql(first_id: int, count: int) -> str:
    """Synthetic customers with ids first_id.., each a pure function of its id, so any range can be regenerated."""
    # hash(id, salt) rather than random(): reproducible whatever order DuckDB's threads produce rows in.
    return f"""
        SELECT
            i AS customer_id,
            'customer.' || i || '@example.com' AS email,
            CASE WHEN hash(i, 'no_name') % 20 <> 0
                THEN ['Anna', 'Ben', 'Chloe', 'David', 'Elena', 'Felix', 'Grace', 'Hugo'][1 + (hash(i, 'name') % 8)::INT]
            END AS first_name,
            CAST((hash(i, 'ltv') % 500000) / 100 AS DECIMAL(12, 2)) AS ltv,
            ['DE', 'FR', 'GB', 'US', 'NL', 'ES', 'IT', 'SE'][1 + (hash(i, 'country') % 8)::INT] AS country
        FROM range({first_id}, {first_id + count}) AS ids(i)
    """


def ledger_sql(size: int) -> str:
    """INSERT of yesterday's acknowledged state, hashed and serialized exactly as the engine does it."""
    adds = ", ".join(map(str, ADD_REMAINDERS))
    updates = ", ".join(map(str, UPDATE_REMAINDERS))
    yesterday = f"""
        SELECT customer_id, email, first_name,
            CASE WHEN customer_id % 100 IN ({updates}) THEN CAST(ltv + 1 AS DECIMAL(12, 2)) ELSE ltv END AS ltv,
            country
        FROM {ident(MODEL)} WHERE customer_id % 100 NOT IN ({adds})
        UNION ALL {people_sql(size + 1, size // 100)}
    """
    return (
        f"INSERT INTO {TABLES.ledger} "
        f"SELECT CAST(customer_id AS VARCHAR), CAST(customer_id AS VARCHAR), {SHAPE.hash_sql()}, "
        f"{json_object(SHAPE.fields)}, TIMESTAMP '2025-01-01 03:00:00', 'yesterday' FROM ({yesterday})"
    )


def expected_counts(size: int) -> dict[str, int]:
    """What every step must find for an audience of `size` (a multiple of 100)."""
    per_remainder = size // 100
    return {
        "add": per_remainder * len(ADD_REMAINDERS),
        "update": per_remainder * len(UPDATE_REMAINDERS),
        "remove": per_remainder,
    }


# --- Steps, each run in a fresh subprocess so its peak RSS is its own. ---------------------------------------


def step_prepare(db: Path, size: int) -> dict:
    """The model, the audience snapshot (via the engine) and yesterday's ledger, in one DuckDB file."""
    result: dict = {}
    with Warehouse(url=f"duckdb:///{db}").connect() as conn:
        with timed(result, "model_s"):
            conn.execute(f"CREATE TABLE {ident(MODEL)} AS {people_sql(1, size)}")
        with timed(result, "snapshot_s"):
            build_snapshot(
                conn,
                schema=SCHEMA,
                audience=TABLES.audience,
                audience_file=Path("benchmarks/members.yaml"),
                model=MODEL,
                primary_key="customer_id",
                columns=COLUMNS,
                where=None,
                syncs=[SHAPE],
            )
        with timed(result, "ledger_s"):
            TABLES.ensure(conn)
            conn.execute(ledger_sql(size))
        result["duckdb_threads"], result["duckdb_memory_limit"] = conn.fetch_one(
            "SELECT current_setting('threads'), current_setting('memory_limit')"
        )
    result["file_mb"] = db.stat().st_size / 2**20
    return result


def duckdb_settings() -> dict[str, str]:
    """DuckDB settings for the timed steps: the product's default memory limit unless --memory-limit says otherwise."""
    return {"memory_limit": os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_DUCKDB_MEMORY_LIMIT}


def step_delta(db: Path) -> dict:
    """The real delta step, mirror mode, through the warehouse URL a user would set; only `compute_delta` is timed."""
    result: dict = {}
    query = "".join(f"?{k}={v}" for k, v in duckdb_settings().items())
    with Warehouse(url=f"duckdb:///{db}{query}").connect() as conn:
        result["base_rss_mb"] = peak_rss_mb()
        with timed(result, "seconds"):
            run = compute_delta(
                conn,
                TABLES,
                SHAPE,
                "mirror",
                run_id="benchmark",
                partition=dt.date(2025, 1, 2),
                now=dt.datetime(2025, 1, 2, 3, 0),
            )
    result["counts"] = {"add": run.added, "update": run.updated, "remove": run.removed}
    return result


def _snapshot(conn) -> None:
    build_snapshot(
        conn, schema=SCHEMA, audience=TABLES.audience, audience_file=Path("benchmarks/members.yaml"),
        model=MODEL, primary_key="customer_id", columns=COLUMNS, where=None, syncs=[SHAPE],
    )


def _snapshot_and_delta(db: Path, run_id: str, first_sync: bool) -> dict:
    """What a run pays, through the warehouse URL a user would set: the audience snapshot, then the delta."""
    result: dict = {}
    query = "".join(f"?{k}={v}" for k, v in duckdb_settings().items())
    with Warehouse(url=f"duckdb:///{db}{query}").connect() as conn:
        if first_sync:  # untimed: a destination that has acknowledged nothing yet
            conn.execute(f"DELETE FROM {TABLES.ledger}")
            conn.execute(f"DROP TABLE {TABLES.snapshot}")
            conn.execute("CHECKPOINT")  # the untimed deletes written out now, not by the first commit of the timed work
        result["base_rss_mb"] = peak_rss_mb()
        with timed(result, "seconds"):
            _snapshot(conn)
            run = compute_delta(
                conn, TABLES, SHAPE, "mirror", run_id=run_id, partition=dt.date(2025, 1, 2),
                now=dt.datetime(2025, 1, 2, 3, 0),
            )
    result["counts"] = {"add": run.added, "update": run.updated, "remove": run.removed}
    return result


def step_day(db: Path) -> dict:
    """A day as a run pays for it: today's snapshot, then the delta against yesterday's ledger."""
    return _snapshot_and_delta(db, "day", first_sync=False)


def _bare(con, result: dict) -> None:
    """The same row hash of the model into a table, then the same full outer join with the ledger (key and op)."""
    with timed(result, "seconds"):
        con.execute(
            f"CREATE TABLE bare_hashes AS SELECT CAST(customer_id AS VARCHAR) AS _key, {SHAPE.hash_sql()} AS _hash "
            f"FROM {ident(MODEL)}"
        )
        con.execute(
            "CREATE TABLE bare_changes AS SELECT coalesce(a._key, l._key) AS _key, "
            "CASE WHEN l._key IS NULL THEN 'add' WHEN a._key IS NULL THEN 'remove' ELSE 'update' END AS _op "
            f"FROM bare_hashes AS a FULL OUTER JOIN {TABLES.ledger} AS l ON a._key = l._key "
            "WHERE a._hash IS DISTINCT FROM l._hash"
        )
    counts = dict(con.execute("SELECT _op, count(*) FROM bare_changes GROUP BY _op").fetchall())
    result["counts"] = {op: counts.get(op, 0) for op in ("add", "update", "remove")}


def step_bare_day(db: Path) -> dict:
    """The least work that tells a day's changes: the same row hash into a table, the same full outer join."""
    result: dict = {}
    con = duckdb.connect(str(db), config=duckdb_settings())
    try:
        result["base_rss_mb"] = peak_rss_mb()
        _bare(con, result)
    finally:
        con.close()
    return result


def step_bare_join(db: Path) -> dict:
    """The least work that tells what changed: the same full outer join, materializing key and op only."""
    result: dict = {}
    con = duckdb.connect(str(db), config=duckdb_settings())
    try:
        result["base_rss_mb"] = peak_rss_mb()
        with timed(result, "seconds"):
            con.execute(
                "CREATE TABLE bare_join AS SELECT coalesce(a._key, l._key) AS _key, "
                "CASE WHEN l._key IS NULL THEN 'add' WHEN a._key IS NULL THEN 'remove' ELSE 'update' END AS _op "
                f"FROM {TABLES.snapshot} AS a FULL OUTER JOIN {TABLES.ledger} AS l ON a._key = l._key "
                f"WHERE a.{ident(SHAPE.hash_column)} IS DISTINCT FROM l._hash"
            )
        result["counts"] = dict(con.execute("SELECT _op, count(*) FROM bare_join GROUP BY _op").fetchall())
    finally:
        con.close()
    return result


def step_pandas_merge(db: Path) -> dict:
    """(key, hash) of both tables loaded into pandas, then an outer merge keeping the changed rows."""
    result: dict = {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        result["base_rss_mb"] = peak_rss_mb()
        with timed(result, "load_s"):
            snapshot = con.sql(f"SELECT _key, {ident(SHAPE.hash_column)} AS _hash FROM {TABLES.snapshot}").df()
            ledger = con.sql(f"SELECT _key, _hash FROM {TABLES.ledger}").df()
    finally:
        con.close()
    with timed(result, "seconds"):
        merged = snapshot.merge(ledger, on="_key", how="outer", suffixes=("_now", "_acked"), indicator=True)
        changed = merged[(merged["_merge"] != "both") | (merged["_hash_now"] != merged["_hash_acked"])]
        ops = changed["_merge"].map({"left_only": "add", "right_only": "remove", "both": "update"})
    result["counts"] = {op: int(n) for op, n in ops.value_counts().items()}
    return result


def step_first_sync(db: Path) -> dict:
    """Snapshot + delta on an empty ledger (a new destination)."""
    return _snapshot_and_delta(db, "first", first_sync=True)


def step_bare_first_sync(db: Path) -> dict:
    """The least work that tells a first sync's changes: the same row hash into a table, the same full outer join."""
    result: dict = {}
    con = duckdb.connect(str(db), config=duckdb_settings())
    try:
        con.execute(f"DELETE FROM {TABLES.ledger}")
        con.execute("CHECKPOINT")  # as in the first sync: the untimed delete written out before the clock starts
        result["base_rss_mb"] = peak_rss_mb()
        _bare(con, result)
    finally:
        con.close()
    return result


def run_child(args: argparse.Namespace) -> None:
    """Entry point of a step subprocess: one JSON line on stdout, with the peak RSS once everything is closed."""
    db = Path(args.db)
    if args.step == "prepare":
        result = step_prepare(db, args.size)
    else:
        result = {
            "delta": step_delta, "bare_join": step_bare_join, "pandas_merge": step_pandas_merge,
            "day": step_day, "bare_day": step_bare_day,
            "first_sync": step_first_sync, "bare_first_sync": step_bare_first_sync,
        }[args.step](db)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


# --- Orchestration, in the parent process. -------------------------------------------------------------------


def spawn(step: str, db: Path, size: int) -> dict:
    """Run one step in a fresh interpreter and return what it measured; a failed step stops the benchmark."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--step", step, "--db", str(db), "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"step {step} at {size:,} members failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict]) -> dict:
    """Medians of the runs with their min and max beside them, the worst peak memory."""
    timed_keys = [key for key in runs[0] if key.endswith(("_s", "seconds", "_cpu"))]
    summary: dict = {key: timing.summary(run[key] for run in runs)["median"] for key in timed_keys}
    # The spread beside the median: a wide one says the machine was busy.
    summary["spread"] = {key: timing.summary(run[key] for run in runs) for key in timed_keys}
    summary["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    summary["base_rss_mb"] = runs[0]["base_rss_mb"]
    summary["counts"] = runs[0]["counts"]
    summary["runs"] = runs
    return summary


def paired_ratio(ours: list[dict], bare: list[dict]) -> dict:
    """Round by round (each pair ran side by side), ours / bare: the median with its min and max."""
    return timing.summary(a["seconds"] / b["seconds"] for a, b in zip(ours, bare, strict=True))


def bench_size(size: int, repeat: int, console: Console) -> dict:
    """Prepare one database for `size` members, then run every step `repeat` times, each on a fresh copy of it."""
    prepared = WORK / f"prepared_{size}.duckdb"
    console.print(f"[bold]{size:,} members[/]: preparing model, snapshot and ledger ...")
    result = {"size": size, "prepare": spawn("prepare", prepared, size)}
    expected = expected_counts(size)
    runs: dict[str, list[dict]] = {step: [] for step in STEPS}
    # Rounds rather than step after step, so a burst of load elsewhere does not land on every run of one step.
    for round_no, step in timing.rounds(repeat, STEPS):
        # A fresh copy per run: the delta and the bare join write into the file, and no run may see another's output.
        copy = WORK / f"{step}_{size}.duckdb"
        shutil.copyfile(prepared, copy)
        console.print(f"  round {round_no}/{repeat}: {step} ...")
        run = spawn(step, copy, size)
        copy.unlink()
        wanted = {"add": size, "update": 0, "remove": 0} if step in FIRST_SYNC_STEPS else expected
        if run["counts"] != wanted:
            sys.exit(f"{step} at {size:,} members found {run['counts']}, expected {wanted}")
        runs[step].append(run)
    prepared.unlink()
    for step in STEPS:
        result[step] = summarize(runs[step])
    result["ratios"] = {shape: paired_ratio(runs[a], runs[b]) for shape, (a, b) in SHAPES.items()}
    result["ratios"]["delta step"] = paired_ratio(runs["delta"], runs["bare_join"])
    result["ratio_delta_to_bare_cpu"] = result["delta"]["seconds_cpu"] / result["bare_join"]["seconds_cpu"]
    result["targets"] = {
        "shapes_ok": all(result["ratios"][shape]["median"] <= MAX_RATIO for shape in SHAPES),
        "delta_ok": result["ratios"]["delta step"]["median"] <= MAX_DELTA_RATIO,
        "memory_ok": all(result[step]["peak_rss_mb"] < MAX_PEAK_MB for step in STEPS if step != "pandas_merge"),
    }
    return result


def machine() -> dict:
    """What the numbers were measured on."""
    # Imported here, not at the top, so that pandas is not part of the DuckDB steps' peak RSS.
    import pandas as pd

    return {**machine_info(), "duckdb": duckdb.__version__, "pandas": pd.__version__}


# Each row: a shape, the step timed for ours and for the bare engine, and the paired ratio's name.
ROWS = (
    ("first sync: snapshot + delta", "first_sync", "bare_first_sync", "first sync", MAX_RATIO),
    ("day, ~4% changed: snapshot + delta", "day", "bare_day", "day", MAX_RATIO),
    ("delta step alone (day)", "delta", "bare_join", "delta step", MAX_DELTA_RATIO),
)


def table_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the side-by-side table, shared by the console and the Markdown report."""
    header = [
        "members", "work", "ours s", "ours CPU s", "bare s", "bare CPU s", "ours / bare", "target",
        "ours peak MB", "bare peak MB",
    ]
    rows = []
    for r in results:
        for label, ours, bare, ratio, target in ROWS:
            paired = r["ratios"][ratio]
            rows.append([
                f"{r['size']:,}",
                label,
                timing.span(r[ours]["spread"]["seconds"], unit=""),
                f"{r[ours]['seconds_cpu']:.2f}",
                timing.span(r[bare]["spread"]["seconds"], unit=""),
                f"{r[bare]['seconds_cpu']:.2f}",
                f"{paired['median']:.2f}× ({paired['min']:.2f}–{paired['max']:.2f})",
                f"≤ {target}×: {'yes' if paired['median'] <= target else 'NO'}",
                f"{r[ours]['peak_rss_mb']:.0f}",
                f"{r[bare]['peak_rss_mb']:.0f}",
            ])
    return header, rows


def pandas_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The delta step against a pandas merge of the same (key, hash) columns."""
    header = ["members", "delta s", "bare join s", "pandas load s", "pandas merge s", "delta peak MB", "pandas peak MB"]
    rows = [
        [
            f"{r['size']:,}",
            f"{r['delta']['seconds']:.2f}",
            f"{r['bare_join']['seconds']:.2f}",
            f"{r['pandas_merge']['load_s']:.2f}",
            f"{r['pandas_merge']['seconds']:.2f}",
            f"{r['delta']['peak_rss_mb']:.0f}",
            f"{r['pandas_merge']['peak_rss_mb']:.0f}",
        ]
        for r in results
    ]
    return header, rows


def markdown(report: dict) -> str:
    """The report as Markdown, for the results folder."""
    header, rows = table_rows(report["results"])
    pandas_header, pandas_cells = pandas_rows(report["results"])
    machine, first = report["machine"], report["results"][0]
    peaks = ", ".join(
        f"{max(r[step]['peak_rss_mb'] for step in STEPS if step != 'pandas_merge'):.0f} MB at {r['size']:,}"
        for r in report["results"]
    )
    return "\n".join([
        "# Delta benchmark",
        "",
        f"{machine['date']} · {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB RAM · "
        f"DuckDB {machine['duckdb']} (threads {first['prepare']['duckdb_threads']}, "
        f"memory_limit of the timed steps: {report['memory_limit']}) · pandas {machine['pandas']} · "
        f"Python {machine['python']} · {machine['platform']} · load average {report['load_before']} before, "
        f"{report['load_after']} after",
        "",
        *md_table(header, rows, left=2),
        "",
        f"Seconds are the median of {report['repeat']} interleaved rounds with (min–max); CPU seconds the median of "
        "this process's CPU (all DuckDB threads). Ours / bare is the median of the per-round ratios (each round ran "
        "ours and bare side by side) with its min and max. Every run was a fresh process on its own copy of the same "
        "prepared file. The ledger is the snapshot minus 1% (adds), with 2% changed ltv (updates), plus 1% keys not "
        "in the audience (removes, mirror mode). First sync: the same model with an empty ledger. Bare: the same row "
        "hash of the model into a table and the same full outer join with the ledger, keeping key and operation. "
        "Peak MB is the process's peak RSS, including the interpreter and imports "
        f"(about {first['delta']['base_rss_mb']:.0f} MB before the step); the worst step (pandas aside): {peaks}.",
        "",
        "## The delta step alone against a pandas merge",
        "",
        *md_table(pandas_header, pandas_cells, left=0),
        "",
    ])


def main() -> None:
    """Parse the command line, then act as the benchmark or as one of its step subprocesses."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="audience sizes (multiples of 100)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of every step per size")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for delta.json and delta.md")
    parser.add_argument(
        "--memory-limit",
        default=DEFAULT_DUCKDB_MEMORY_LIMIT,
        help="DuckDB memory_limit of the timed steps (default: the product's own, %(default)s)",
    )
    parser.add_argument("--step", choices=("prepare", *STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_child(args)
        return
    os.environ[MEMORY_LIMIT_ENV] = args.memory_limit
    if any(size < 100 or size % 100 for size in args.sizes):
        parser.error("--sizes must be multiples of 100")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    console = Console()
    if not console.is_terminal:
        # Piped into a log, the table would otherwise be squeezed into 80 columns.
        console.width = 140
    load_before = load_text()
    if busy():
        console.print(f"[yellow]load average {load_before} before starting: other work shares the CPUs, times will be noisy[/]")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        results = [bench_size(size, args.repeat, console) for size in args.sizes]
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    report = {
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_text(),
        "repeat": args.repeat,
        "memory_limit": os.environ[MEMORY_LIMIT_ENV],
        "targets": {"max_ratio": MAX_RATIO, "max_delta_ratio": MAX_DELTA_RATIO, "max_peak_mb": MAX_PEAK_MB},
        "results": results,
    }

    header, rows = table_rows(results)
    console.print(rich_table(f"Snapshot + delta vs the bare engine (mirror mode, median of {args.repeat} rounds)",
                             header, rows))

    written = write_results(args.results, "delta", data=report, markdown=markdown(report))
    console.print(f"results in {' and '.join(map(str, written))}")


if __name__ == "__main__":
    main()

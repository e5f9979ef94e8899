"""Pipeline benchmark: `composable sync` end to end, the code of a baseline revision against the current code.

For an audience of N members (default 1M) it times what a user runs, `composable sync members`, which
materializes the model, the audience snapshot, the delta and the delivery to the outbox destination (files: a sink
that answers at once), in three shapes:

- first: the first sync, everyone is an add (an empty ledger);
- day: a day later, ~2% of the members changed (1% updated, 0.5% left, 0.5% joined);
- quiet: a re-run with nothing changed (nothing to send).

A is the code at --baseline (default d7257c4, before issue 16), B the current working tree; each is a copy of
composable_assets/ (`common.code`) imported by every process of its side, with that revision's dagster.yaml as the
instance's. Both run the same command on the same project and the same data. Every measured run is a fresh process
on its own copy of a prepared state (warehouse file, outbox, Dagster instance), in interleaved rounds (A, B, A, B);
the report gives wall seconds, the child's CPU seconds (user + system, from wait4) and its peak RSS (ru_maxrss),
each as the median with min and max, and the load average around each run. Every run's sent rows are counted in
the outbox: a run that sends other counts than it must stops the benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common.code import code_env, copy_code, repo_file  # noqa: E402
from common.members import people_sql  # noqa: E402
from common.report import RESULTS, machine_info, md_table, versions, write_results  # noqa: E402
from common.timing import load_text, rounds, span, summary  # noqa: E402

# A folder of its own inside the git-ignored .work/: only this one is ever deleted.
WORK = HERE / ".work" / "pipeline"
BASELINE = "d7257c4"
SIZES = (1_000_000,)
ROUNDS = 3
SHAPES = ("first", "day", "quiet")
SHAPE_LABELS = {
    "first": "first sync (empty ledger)",
    "day": "a day with ~2% changes",
    "quiet": "quiet re-run (nothing changed)",
}
SIDES = ("A", "B")
DAY1, DAY2 = "2026-03-02", "2026-03-03"
# A measured run over this many seconds is stopped and the benchmark fails (something hangs).
RUN_TIMEOUT_S = 1800

PROJECT = {
    "project.yaml": 'name: pipeline_bench\nstart_date: "2026-01-01"\nschema: composable\ntimezone: UTC\n',
    "models/members.sql": (
        "-- The benchmark's members, one row each.\n-- owners: team:data\n"
        "SELECT customer_id, email, first_name, ltv, country FROM people\n"
    ),
    "audiences/members.yaml": (
        "description: Every member.\nowners: [team:crm]\nmodel: members\nprimary_key: customer_id\ncadence: daily\n"
        "syncs:\n  - destination: outbox\n    mode: mirror\n    identifier: {external_id: customer_id}\n"
        "    fields: {email: email, first_name: first_name, ltv: ltv, country: country}\n"
    ),
    "destinations.yaml": "outbox:\n  type: outbox\n",
}


def change_sql(size: int) -> list[str]:
    """The day between the first sync and the second: 1% get another ltv, 0.5% leave, 0.5% new ones join."""
    return [
        "UPDATE people SET ltv = ltv + 1 WHERE customer_id % 100 = 0",
        "DELETE FROM people WHERE customer_id % 200 = 1",
        f"INSERT INTO people {people_sql(size + 1, size // 200)}",
    ]


def expected_rows(shape: str, size: int) -> int:
    """Rows the outbox must receive in a run of `shape`."""
    return {"first": size, "day": size // 100 + 2 * (size // 200), "quiet": 0}[shape]


class BenchmarkError(Exception):
    """A run sent other counts than it must, or failed: its figures would mean nothing."""


# --- States: a data folder (warehouse, outbox, coordination) and a Dagster instance, copied for every run. -----


def sql(state: Path, statements: Sequence[str]) -> None:
    """Statements on a state's warehouse file, through DuckDB itself (preparation, not measured)."""
    import duckdb

    with duckdb.connect(str(state / "data" / "warehouse.duckdb")) as con:
        for statement in statements:
            con.execute(statement)


def outbox_rows(state: Path) -> int:
    """Lines in every outbox file of a state: one per row the destination received."""
    total = 0
    for path in (state / "data" / "outbox").rglob("*.jsonl"):
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total


def sync(side_dir: Path, state: Path, day: str, log: Path, timeout: float = RUN_TIMEOUT_S) -> dict:
    """`composable sync members --date day` in a fresh process on `state`, importing the side's code copy.

    Wall seconds around the process; its CPU seconds and peak RSS from wait4 (the child and any child it waited for).
    """
    env = code_env(side_dir / "code")
    env.update(
        COMPOSABLE_PROJECT_DIR=str(WORK / "project"),
        COMPOSABLE_DATA_DIR=str(state / "data"),
        DAGSTER_HOME=str(state / "home"),
    )
    for name in ("COMPOSABLE_WAREHOUSE", "COMPOSABLE_COORDINATION_URL"):
        env.pop(name, None)  # the product's defaults: the embedded DuckDB file and SQLite beside it
    cmd = [sys.executable, "-c", "from composable_assets.cli import main; main()", "sync", "members", "--date", day]
    load_before = load_text()
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=state, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                raise BenchmarkError(f"a sync ran over {timeout:.0f} s; see {log}")
            time.sleep(0.05)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchmarkError(f"a sync failed (exit {proc.returncode}); see {log}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": load_text(),
    }


def prepare(size: int, sides: Sequence[str], baseline: str, log: Path) -> dict:
    """The project, each side's code and instance, and per side the states every run starts from.

    `seed`: the members only (shared); per side `synced` (after a first sync on DAY1, by that side's code) and
    `changed` (synced, then the day's changes to the members). Returns which code each side is.
    """
    project = WORK / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    seed = WORK / f"{size}" / "seed"
    (seed / "data").mkdir(parents=True)
    (seed / "home").mkdir()
    sql(seed, [f"CREATE TABLE people AS {people_sql(1, size)}"])
    codes = {}
    for side in sides:
        side_dir = WORK / side
        if not (side_dir / "code").exists():
            rev = baseline if side == "A" else None
            codes[side] = copy_code(side_dir / "code", rev)
            (side_dir / "dagster.yaml").write_text(repo_file("dagster.yaml", rev))
        synced = WORK / f"{size}" / side / "synced"
        fresh_state(seed, side_dir, synced)
        print(f"  {side}: first sync of {size:,} members (preparation)", flush=True)
        first = sync(side_dir, synced, DAY1, log)
        check(f"{side} preparation: rows sent", outbox_rows(synced), size)
        print(f"    {first['wall_s']:.1f} s", flush=True)
        changed = WORK / f"{size}" / side / "changed"
        shutil.copytree(synced, changed)
        sql(changed, change_sql(size))
    return codes


def fresh_state(origin: Path, side_dir: Path, dest: Path) -> None:
    """A copy of `origin` with the side's dagster.yaml as its instance's."""
    shutil.copytree(origin, dest)
    shutil.copyfile(side_dir / "dagster.yaml", dest / "home" / "dagster.yaml")


def check(what: str, found: object, expected: object) -> None:
    if found != expected:
        raise BenchmarkError(f"{what}: found {found}, expected {expected}")


def measure(size: int, shape: str, side: str, log: Path) -> dict:
    """One measured run: a copy of the shape's starting state, the sync, the rows it sent checked."""
    origin = WORK / f"{size}" / ("seed" if shape == "first" else side) / {"first": "", "day": "changed", "quiet": "synced"}[shape]
    state = WORK / f"{size}" / "run"
    shutil.rmtree(state, ignore_errors=True)
    fresh_state(origin, WORK / side, state)
    before = outbox_rows(state)
    result = sync(WORK / side, state, DAY1 if shape == "first" else DAY2, log)
    result["rows_sent"] = outbox_rows(state) - before
    check(f"{side} {shape} at {size:,}: rows sent", result["rows_sent"], expected_rows(shape, size))
    shutil.rmtree(state, ignore_errors=True)
    return result


def bench(sizes: Sequence[int], round_count: int, baseline: str, sides: Sequence[str] = SIDES) -> dict:
    log = WORK / "sync.log"
    runs: list[dict] = []
    codes: dict[str, str] = {}
    for size in sizes:
        print(f"{size:,} members: preparing", flush=True)
        codes.update(prepare(size, sides, baseline, log))
        for round_no, side in rounds(round_count, sides):
            for shape in SHAPES:
                result = measure(size, shape, side, log)
                result.update(size=size, shape=shape, side=side, round=round_no)
                print(
                    f"  round {round_no} {side} {shape}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU, "
                    f"{result['peak_rss_mb']:.0f} MB, load {result['load_before']}",
                    flush=True,
                )
                runs.append(result)
        shutil.rmtree(WORK / f"{size}", ignore_errors=True)
    return {"codes": codes, "runs": runs}


# --- Report. -------------------------------------------------------------------------------------------------


def summaries(runs: list[dict]) -> dict:
    """(size, shape, side) -> median/min/max of wall, CPU and peak RSS."""
    out: dict = {}
    for r in runs:
        out.setdefault((r["size"], r["shape"], r["side"]), []).append(r)
    return {
        key: {m: summary(r[m] for r in rs) for m in ("wall_s", "cpu_s", "peak_rss_mb")} for key, rs in out.items()
    }


def table(runs: list[dict], sides: Sequence[str]) -> list[str]:
    stats = summaries(runs)
    header = ["members", "shape"]
    for side in sides:
        header += [f"{side} wall s", f"{side} CPU s", f"{side} peak RSS MB"]
    if len(sides) == 2:
        header.append("B / A wall (medians)")
    rows = []
    for size in sorted({r["size"] for r in runs}):
        for shape in SHAPES:
            row = [f"{size:,}", SHAPE_LABELS[shape]]
            for side in sides:
                s = stats.get((size, shape, side))
                row += [span(s and s["wall_s"], "", ".1f"), span(s and s["cpu_s"], "", ".1f"),
                        span(s and s["peak_rss_mb"], "", ",.0f")]
            if len(sides) == 2:
                a, b = stats.get((size, shape, "A")), stats.get((size, shape, "B"))
                row.append(f"{b['wall_s']['median'] / a['wall_s']['median']:.2f}×" if a and b else "-")
            rows.append(row)
    return md_table(header, rows, left=2, left_mark=":---")


def markdown(report: dict) -> str:
    m = report["machine"]
    codes = report["codes"]
    loads = ", ".join(r["load_before"] for r in report["runs"])
    return "\n".join([
        "# Pipeline benchmark",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM · Python {m['python']} · "
        f"DuckDB {m['duckdb']} · Dagster {m['dagster']} · {report['rounds']} rounds · load average "
        f"{report['load_before']} before, {report['load_after']} after · whole run {report['run_s'] / 60:.1f} min",
        "",
        "`composable sync members` (model, audience snapshot, delta, delivery to the outbox), each run a fresh "
        "process on its own copy of the starting state, rounds interleaved (A, B, A, B). "
        + " · ".join(f"{side}: {code}" for side, code in codes.items())
        + ". Each cell: median (min-max); CPU is the sync process's user + system seconds; peak RSS its "
        "`ru_maxrss`.",
        "",
        *table(report["runs"], report["sides"]),
        "",
        f"Load average (1, 5, 15 min) before each run, in order: {loads}.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=lambda s: [int(n) for n in s.split(",")], default=list(SIZES),
        help="members, comma-separated multiples of 200 (default " + ",".join(str(n) for n in SIZES) + ")",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of A and B (default {ROUNDS})")
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision of side A (default {BASELINE})")
    parser.add_argument("--sides", default="AB", help="which sides to run: AB (default), A or B")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for pipeline.json and pipeline.md")
    args = parser.parse_args()
    if any(n < 200 or n % 200 for n in args.sizes):
        parser.error("sizes must be positive multiples of 200")
    sides = [s for s in SIDES if s in args.sides.upper()]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    started = time.perf_counter()
    load_before = load_text()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        measured = bench(args.sizes, args.rounds, args.baseline, sides)
    except BenchmarkError as exc:
        log = WORK / "sync.log"
        if log.exists():  # the failed sync's own words, before the folder goes
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
        sys.exit(f"pipeline benchmark: {exc}")
    finally:
        if not os.environ.get("PIPELINE_BENCHMARK_KEEP"):
            shutil.rmtree(WORK, ignore_errors=True)
    report = {
        "machine": {**machine_info(), **versions(("duckdb", "dagster"))},
        "baseline": args.baseline,
        "sides": sides,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": load_text(),
        "run_s": time.perf_counter() - started,
        **measured,
    }
    text = markdown(report)
    print(text)
    written = write_results(args.results, "pipeline", markdown=text, data=report)
    print("results in " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()

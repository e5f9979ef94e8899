"""Warehouse work of one minute-level run: the incremental path against the full recompute, at several sizes.

For each size, the sample project is seeded into a fresh DuckDB file (as the latency benchmark prepares it: the
same project copy, data folder and DAGSTER_HOME), and the `minute_level` job (every minute-level audience and
stream of the sample, which is what the change sensor requests when orders land) runs once with a full recompute,
delivering everything to the Braze and Iterable fakes in this process. Then, in pairs A, B, A, B, ...:

- land a Parquet file in the `orders` landing folder with one completed order of 700 for each of `--changed`
  (100) customers no earlier run of this size touched, exactly what the latency benchmark's probes are (each
  becomes a VIP to send to Braze). At most 1% of the customers change per run: at 2,000 customers 100 new VIPs
  would more than double the audience, and the send gate `max_change_percent` (50%) rightly holds such a delta;
- run the job in this process (`execute_in_process`, the definitions' in-process executor, today's partition,
  the change sensor's tags), A with the run tag `composable/refresh=incremental`, B with `composable/refresh=full`.

Both runs of a pair do the same kind and amount of work (landing load of one file, every model, audience, delta,
sync and stream step of the job); only the refresh differs. Each step's time is its STEP_START to STEP_SUCCESS in
the run's event log; the warehouse work of a run is the sum of its landing load, model, audience and delta steps
(the sync and stream steps talk to the fakes and are reported apart), and the run is RUN_START to RUN_SUCCESS.
The materializations' metadata tells what each step did (`mode`, `affected_keys`) and, on full runs, whether the
incremental run before had left anything to repair (`repaired_rows`, which must be 0).

`--baseline-rev REV` also measures, on a fresh warehouse of the same size and with the same changes, the runs of
the code as committed in REV (a copy of its `composable_assets/`, imported by a child process): for a revision
before the incremental path, the full recompute as it was, without the comparison a full run now makes to tell
what it repaired.

This script reports numbers; it does not pass or fail on them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zoneinfo
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The latency benchmark's set-up: project copy, seeded warehouse, instance, landing files (it puts the repo on
# sys.path before importing the package).
from latency_benchmark import (  # noqa: E402
    CONFIGS,
    KEY,
    REPO,
    land_orders,
    parse_sizes,
    pick_customers,
    prepare,
)
from common.report import write_results  # noqa: E402
from common.timing import cpu_seconds, load_average, rounds, span, summary  # noqa: E402

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from composable_assets_tests.fakes.braze import BrazeFake  # noqa: E402
from composable_assets_tests.fakes.iterable import IterableFake  # noqa: E402
from composable_assets_tests.fakes.local import NEWSLETTER_LIST_ID  # noqa: E402

JOB = "minute_level"
REFRESH_TAG = "composable/refresh"
# The run tag's values; "untagged" runs without it (a full recompute, and all there was before the tag).
MODES = ("incremental", "full")
ALL_MODES = (*MODES, "untagged")
# Step key prefixes, grouped as the report shows them.
GROUPS = {
    "landing load": ("load_landing",),
    "models": ("model__",),
    "audiences": ("audience__",),
    "deltas": ("delta__",),
    "deliveries (sync, stream)": ("sync__", "stream__"),
}
WAREHOUSE_GROUPS = ("landing load", "models", "audiences", "deltas")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def group_of(step: str) -> str | None:
    return next((g for g, prefixes in GROUPS.items() if step.startswith(prefixes)), None)


def run_once(job: dg.JobDefinition, instance: dg.DagsterInstance, partition: str, mode: str) -> dict:
    """Run the minute-level job once; its step times, run time, CPU and what its materializations said."""
    tags = {"composable/trigger": "change", "composable/changed": "orders", "composable/benchmark": "incremental"}
    if mode != "untagged":
        tags[REFRESH_TAG] = mode
    cpu = cpu_seconds()
    began = time.perf_counter()
    result = job.execute_in_process(instance=instance, partition_key=partition, tags=tags, run_config=QUIET)
    wall = time.perf_counter() - began
    cpu = cpu_seconds() - cpu
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    run_start = run_end = None
    metadata: dict[str, dict] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif kind == dg.DagsterEventType.RUN_SUCCESS:
            run_end = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            steps[entry.step_key] = entry.timestamp - starts[entry.step_key]
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            wanted = {}
            for label in ("refresh", "mode", "affected_keys", "repaired_rows", "rows", "added", "updated", "removed"):
                if label in materialization.metadata:
                    wanted[label] = materialization.metadata[label].value
            metadata["/".join(materialization.asset_key.path)] = wanted
    groups = {g: sum(t for s, t in steps.items() if group_of(s) == g) for g in GROUPS}
    return {
        "mode": mode,
        "run_id": result.run_id,
        "success": result.success,
        "run": (run_end - run_start) if run_start and run_end else None,
        "wall": wall,
        "cpu": cpu,
        "warehouse": sum(groups[g] for g in WAREHOUSE_GROUPS),
        "groups": groups,
        "steps": steps,
        "metadata": metadata,
        "load": load_average(),
    }


def changed_customers(customers: int, wanted: int) -> int:
    """How many customers get a new order before each run: `wanted`, at most 1% of them (see the docstring)."""
    return max(1, min(wanted, customers // 100))


def measure(customers: int, pairs: int, changed: int, seed: int, modes: tuple[str, ...] = MODES) -> dict:
    """Seed, run the job once in full, then `pairs` rounds of one run per mode, each after its own change."""
    work = Path(tempfile.mkdtemp(prefix="incremental-", dir=REPO / "benchmarks" / ".work"))
    saved = dict(os.environ)
    try:
        home, env, facts = prepare(work, CONFIGS[0], customers)
        print(f"  seeded {customers:,} customers in {facts['seed_seconds']:.0f} s", flush=True)
        braze = BrazeFake(KEY).start()
        iterable = IterableFake(KEY, lists={NEWSLETTER_LIST_ID: "weekly newsletter"}).start()
        try:
            os.environ.update(env)
            os.environ.update({"BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": KEY,
                               "ITERABLE_BASE_URL": iterable.url, "ITERABLE_API_KEY": KEY,
                               "DAGSTER_HOME": str(home)})
            # Imported here: definitions load from the environment just set.
            from composable_assets.definitions import load_definitions
            from composable_assets.project import load_project

            defs = load_definitions()
            job = defs.resolve_job_def(JOB)
            timezone = load_project(Path(env["COMPOSABLE_PROJECT_DIR"])).settings.timezone
            partition = dt.datetime.now(zoneinfo.ZoneInfo(timezone)).date().isoformat()
            rng = random.Random(seed)
            used: set[int] = set()
            order_id = facts["max_order"]
            runs = []
            with dg.DagsterInstance.get() as instance:
                first = run_once(job, instance, partition, "untagged")
                print(f"  first full materialization (every VIP and the day's purchases sent): "
                      f"{first['wall']:.1f} s, warehouse steps {first['warehouse']:.1f} s", flush=True)
                for pair, mode in rounds(pairs, modes):
                    targets = pick_customers(facts, changed, rng, exclude=used)
                    used.update(targets)
                    orders = [(c, order_id + i + 1) for i, c in enumerate(targets)]
                    order_id += len(targets)
                    land_orders(facts["folders"]["orders"], orders)
                    run = run_once(job, instance, partition, mode)
                    run["pair"] = pair
                    runs.append(run)
                    affected = {k: v["affected_keys"] for k, v in run["metadata"].items() if "affected_keys" in v}
                    repaired = sum(v.get("repaired_rows") or 0 for v in run["metadata"].values())
                    print(f"  pair {pair} {mode:>11}: warehouse {run['warehouse']:6.2f} s, run {run['run']:6.2f} s"
                          f" (load {run['load'][0]:.1f}); affected keys {sorted(set(affected.values())) or '-'}"
                          + (f", repaired rows {repaired}" if mode == "full" else ""), flush=True)
        finally:
            braze.stop()
            iterable.stop()
        by_mode = {}
        for mode in modes:
            mine = [r for r in runs if r["mode"] == mode]
            steps = sorted({s for r in mine for s in r["steps"]})
            by_mode[mode] = {
                "warehouse": summary([r["warehouse"] for r in mine]),
                "run": summary([r["run"] for r in mine]),
                "cpu": summary([r["cpu"] for r in mine]),
                "groups": {g: summary([r["groups"][g] for r in mine]) for g in GROUPS},
                "steps": {s: summary([r["steps"][s] for r in mine if s in r["steps"]]) for s in steps},
                "modes": sorted({str(v.get("mode")) for r in mine for v in r["metadata"].values() if "mode" in v}),
                "affected_keys": sorted({v["affected_keys"] for r in mine for v in r["metadata"].values()
                                         if "affected_keys" in v}),
                "repaired_rows": sum(v.get("repaired_rows") or 0 for r in mine for v in r["metadata"].values()),
            }
        refresh = {k: v["refresh"] for k, v in runs[0]["metadata"].items() if "refresh" in v} if runs else {}
        return {
            "customers": customers,
            "orders": facts["max_order"],
            "pairs": pairs,
            "changed": changed,
            "seed_seconds": facts["seed_seconds"],
            "first_run": {k: first[k] for k in ("wall", "warehouse", "groups", "steps")},
            "refresh": refresh,
            "modes": by_mode,
            "runs": runs,
            "load": [r["load"] for r in runs],
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)


def snapshot_code(rev: str, into: Path) -> str:
    """Copy composable_assets/ as committed in `rev` under `into`; returns the short commit."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "composable_assets"],
                             capture_output=True, check=True)
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                          check=True).stdout.strip()


def measure_baseline(code: Path, customers: int, pairs: int, changed: int, seed: int) -> dict:
    """The same measurement, untagged runs only, in a child process importing the code copy at `code`."""
    out = code.parent / f"baseline-{customers}.json"
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--customers", str(customers), "--pairs", str(pairs),
         "--changed", str(changed), "--seed", str(seed), "--modes", "untagged", "--json-out", str(out)],
        env={**os.environ, "BENCHMARK_CODE_DIR": str(code)}, check=True,
    )
    return json.loads(out.read_text())


def ratio(a: dict | None, b: dict | None) -> str:
    return f"{100 * a['median'] / b['median']:.0f}%" if a and b and b["median"] else "-"


def report(results: list[dict], args, seconds: float) -> str:
    loads = [load[0] for r in results for load in r["load"] + (r["baseline"]["load"] if "baseline" in r else [])]
    rev = results[0]["baseline"]["rev"] if "baseline" in results[0] else None
    lines = [
        f"Warehouse work of one minute-level run after an order landed for each of up to {args.changed} customers "
        f"(at most 1% of the customers): incremental (A) against full recompute (B), {args.pairs} pairs A, B per "
        f"size; medians (min-max). {platform.node()}, {os.cpu_count()} cores, DuckDB {duckdb.__version__}, "
        f"{dt.date.today()}; 1-minute load average during the runs {min(loads):.1f}-{max(loads):.1f}; "
        f"{seconds / 60:.0f} minutes in all.",
        "",
    ]
    if rev:
        lines += [f"Before: the same runs (untagged) on a fresh warehouse with the code of commit {rev}.", ""]
    head = "| customers | orders | changed customers | incremental: warehouse steps | full: warehouse steps | incremental / full "
    rule = "|---:|---:|---:|---:|---:|---:|"
    if rev:
        head += f"| before ({rev}): warehouse steps | incremental / before "
        rule += "---:|---:|"
    lines += [head + "| incremental: run | full: run | repaired rows (full runs) |", rule + "---:|---:|---:|"]
    for r in results:
        inc, full = r["modes"]["incremental"], r["modes"]["full"]
        row = (f"| {r['customers']:,} | {r['orders']:,} | {r['changed']} | {span(inc['warehouse'])} "
               f"| {span(full['warehouse'])} | {100 * r['ratio']:.1f}% ")
        if rev:
            before = r["baseline"]["modes"]["untagged"]
            row += f"| {span(before['warehouse'])} | {100 * r['ratio_before']:.1f}% "
        lines.append(row + f"| {span(inc['run'])} | {span(full['run'])} | {full['repaired_rows']} |")
    lines += [
        "",
        "Warehouse steps: landing load + models + audiences + deltas (STEP_START to STEP_SUCCESS). Run: RUN_START to "
        "RUN_SUCCESS, which adds the sync and stream steps (deliveries to the fakes) and Dagster's own work between "
        "steps. A full run first catches up incrementally, then recomputes and compares the result with the "
        "table it replaces (the `repaired_rows` it reports).",
    ]
    for r in results:
        inc, full = r["modes"]["incremental"], r["modes"]["full"]
        before = r["baseline"]["modes"]["untagged"] if rev else None
        lines += [
            "",
            f"### {r['customers']:,} customers",
            "",
            f"Seeding {r['seed_seconds']:.0f} s; first full run {r['first_run']['wall']:.1f} s (warehouse steps "
            f"{r['first_run']['warehouse']:.1f} s); this size took {r['seconds'] / 60:.1f} minutes"
            + (f" (before: {r['baseline']['seconds'] / 60:.1f})" if rev else "")
            + f". Modes the incremental runs' materializations reported: {', '.join(inc['modes']) or '-'}; "
            f"affected keys: {', '.join(map(str, inc['affected_keys'])) or '-'}.",
            "",
            "| step | incremental | full | incremental / full |" + (f" before ({rev}) |" if rev else ""),
            "|---|---:|---:|---:|" + ("---:|" if rev else ""),
        ]
        for g in GROUPS:
            a, b = inc["groups"][g], full["groups"][g]
            lines.append(f"| **{g}** | {span(a)} | {span(b)} | {ratio(a, b)} |"
                         + (f" {span(before['groups'][g])} |" if rev else ""))
            for step in sorted(s for s in full["steps"] if group_of(s) == g):
                a, b = inc["steps"].get(step), full["steps"][step]
                lines.append(f"| {step} | {span(a)} | {span(b)} | {ratio(a, b)} |"
                             + (f" {span(before['steps'].get(step))} |" if rev else ""))
        lines.append(f"| **CPU seconds of the run (all threads)** | {span(inc['cpu'])} | {span(full['cpu'])} | "
                     f"{ratio(inc['cpu'], full['cpu'])} |" + (f" {span(before['cpu'])} |" if rev else ""))
        if r["refresh"]:
            lines += ["", "Refresh per asset (materialization metadata): "
                      + "; ".join(f"`{k}` {v}" for k, v in sorted(r["refresh"].items())) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=parse_sizes, default=[2000, 1_000_000],
                        help="comma-separated sizes, e.g. 2000,1000000,10000000 (or 2k,1m,10m); default 2000,1000000")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (incremental, full) per size")
    parser.add_argument("--changed", type=int, default=100, help="customers with a new order before each run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline-rev", help="also measure the runs of composable_assets/ as committed in this git "
                        "revision (e.g. one before the incremental path), on its own fresh warehouse")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    # For the baseline's child process: which runs to make, and where to put the one size's result.
    parser.add_argument("--modes", default=",".join(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = tuple(args.modes.split(","))
    assert set(modes) <= set(ALL_MODES), modes
    (REPO / "benchmarks" / ".work").mkdir(parents=True, exist_ok=True)
    if args.json_out:
        [customers] = args.customers
        began = time.time()
        result = measure(customers, args.pairs, changed_customers(customers, args.changed), args.seed, modes)
        result["seconds"] = time.time() - began
        args.json_out.write_text(json.dumps(result, default=str))
        return
    started = time.time()
    code = None
    if args.baseline_rev:
        code_root = Path(tempfile.mkdtemp(prefix="incremental-code-", dir=REPO / "benchmarks" / ".work"))
        rev = snapshot_code(args.baseline_rev, code_root / "code")
        code = code_root / "code"
    results = []
    try:
        for customers in args.customers:
            changed = changed_customers(customers, args.changed)
            print(f"[{customers:,} customers] {args.pairs} pairs of minute-level runs, {changed} customers with a new "
                  f"order before each ...", flush=True)
            began = time.time()
            result = measure(customers, args.pairs, changed, args.seed)
            result["seconds"] = time.time() - began
            result["ratio"] = (result["modes"]["incremental"]["warehouse"]["median"]
                               / result["modes"]["full"]["warehouse"]["median"])
            print(f"  incremental / full warehouse work: {100 * result['ratio']:.1f}% ({result['seconds']:.0f} s)",
                  flush=True)
            if code is not None:
                print(f"  before: the same with the code of {rev} ...", flush=True)
                baseline = measure_baseline(code, customers, args.pairs, changed, args.seed)
                baseline["rev"] = rev
                result["baseline"] = {k: baseline[k] for k in ("rev", "modes", "seconds", "load", "first_run")}
                result["ratio_before"] = (result["modes"]["incremental"]["warehouse"]["median"]
                                          / baseline["modes"]["untagged"]["warehouse"]["median"])
                print(f"  incremental / before: {100 * result['ratio_before']:.1f}%", flush=True)
            results.append(result)
    finally:
        if code is not None:
            shutil.rmtree(code.parent, ignore_errors=True)
    table = report(results, args, time.time() - started)
    print("\n" + table)
    machine = {"node": platform.node(), "cores": os.cpu_count(), "duckdb": duckdb.__version__,
               "date": dt.date.today().isoformat(), "pairs": args.pairs, "changed": args.changed,
               "baseline_rev": args.baseline_rev}
    write_results(args.results, "incremental", markdown=table + "\n", data={"machine": machine, "results": results})


if __name__ == "__main__":
    main()

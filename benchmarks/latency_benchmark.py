"""Latency benchmark: from an order landing in a source to its arrival at the Braze fake, under the real daemon.

For each configuration, one run starts a real `dagster-webserver` and `dagster-daemon` on a fresh DAGSTER_HOME
with the sample project seeded into a fresh DuckDB file, and the Braze and Iterable fakes in this process.
It then lands one probe every `--every` seconds: an order of 700 for a customer no other probe touches, as
a Parquet file in the `orders` landing folder (exactly what `composable simulate` does). Every such order
changes the customer's lifetime value and makes them a VIP, so the run the change sensor requests must
deliver that external_id's attributes to Braze's `/users/track`. The latency of a probe is the time from its
file appearing to the first accepted `/users/track` request carrying that external_id. If the sample has an
event stream to Braze (`purchases`), the arrival of the probe's purchase is measured too.

Each probe's latency is split along the run that delivered it, from the run records and step events:
- sensor: landing -> the run is created by the sensor (interval + waiting for a run in flight);
- queue + launch: created -> the run process starts (the queued run coordinator's dequeue, process start);
- upstream steps: run start -> the sync step starts (code loading, landing load, model, audience, delta);
- sync: the sync step's start -> the arrival at Braze.

The sensor part also names how much of it a run in flight caused: the sensor refuses to request a run while one
of its job is queued or starting (its tick is skipped with "run ... of minute_level is queued"), so from the first
such tick after the landing until the run is created the probe waited for the run before it, not for the interval.

Configurations, side by side in one run: the shipped defaults (sensor every 5 s, run queue checked every 1 s,
in-process executor); the queue at Dagster's default 5 s; no queue at all (the sensor daemon launches runs
itself); and Dagster's stock intervals (sensor 30 s, queue 5 s) for reference.
`--customers` takes several sizes (2000,1000000,10000000); by default every configuration runs at 2,000 customers
and the shipped defaults alone at the larger sizes.
This script reports numbers; it does not pass or fail on them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# A copy of composable_assets/ from another revision to measure instead of the working tree's (the incremental
# benchmark's --baseline-rev sets it for its child process); the test helpers still come from the working tree.
if os.environ.get("BENCHMARK_CODE_DIR"):
    sys.path.insert(0, os.environ["BENCHMARK_CODE_DIR"])

import dagster as dg  # noqa: E402
from dagster._core.scheduler.instigation import InstigatorType  # noqa: E402

from composable_assets.landing import landing_folders  # noqa: E402
from composable_assets.project import load_project  # noqa: E402
from composable_assets.warehouse import Warehouse  # noqa: E402
from composable_assets_tests.dagster_processes import DagsterProcesses  # noqa: E402
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator  # noqa: E402
from composable_assets_tests.demo.simulator import ORDER_SCHEMA  # noqa: E402
from composable_assets_tests.fakes.braze import BrazeFake  # noqa: E402
from composable_assets_tests.fakes.iterable import IterableFake  # noqa: E402
from composable_assets_tests.fakes.local import NEWSLETTER_LIST_ID  # noqa: E402

from common.report import write_results  # noqa: E402
from common.timing import load_average  # noqa: E402

KEY = "bench-key"
SYNC_STEP = "sync__vip_customers__braze"
SENSOR_NAME = "minute_level_on_change"
PARTS = ("sensor", "run in flight", "queue + launch", "upstream steps", "sync")
# Above this many customers only the shipped defaults run unless --configs says otherwise.
ALL_CONFIGS_UP_TO = 2000


@dataclass
class Config:
    name: str
    sensor_interval: str = "5s"
    dequeue_interval: int | None = None  # None: as the shipped dagster.yaml says (1 s)
    # The default run coordinator launches a requested run at once, from the sensor daemon, with no queue.
    direct_launch: bool = False


CONFIGS = [
    Config("shipped defaults (sensor 5 s, queue checked every 1 s)"),
    Config("queue checked every 5 s (Dagster's default)", dequeue_interval=5),
    Config("no run queue (runs launched by the sensor daemon)", direct_launch=True),
    Config("Dagster's stock intervals (sensor 30 s, queue 5 s)", sensor_interval="30s", dequeue_interval=5),
]


@dataclass
class Probe:
    customer_id: int
    order_id: int
    landed: float
    attributes_at: float | None = None
    purchase_at: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step of the run that delivered it


def parse_sizes(text: str) -> list[int]:
    """`2000,1000000` or `2k,1m,10m` -> [2000, 1000000, 10000000]."""
    sizes = []
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        sizes.append(int(float(item[:-1] if scale > 1 else item) * scale))
    return sizes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def prepare(work: Path, config: Config, customers: int) -> tuple[Path, dict[str, str], dict]:
    """A project copy, a DuckDB file seeded with `customers`, and a DAGSTER_HOME for `config`.

    Returns the home, the environment a Dagster process needs, and facts: the landing folders, the number of
    customers (their ids are 1..N), the ids with a deletion request (never sent), the largest order id and the
    seconds seeding took.
    """
    project = work / "project"
    shutil.copytree(SAMPLE_PROJECT_DIR, project)
    with (project / "project.yaml").open("a") as f:
        f.write(f"sensor_interval: {config.sensor_interval}\n")
    data = work / "data"
    warehouse = Warehouse(url=f"duckdb:///{data / 'warehouse.duckdb'}")
    started = time.perf_counter()
    with warehouse.connect() as conn:
        generator.seed(conn.raw, customers=customers)
        (count, low, high) = conn.fetch_one("SELECT count(*), min(customer_id), max(customer_id) FROM customers")
        assert (low, high) == (1, count), "the generator's customer ids are 1..N"
        forgotten = {r[0] for r in conn.fetch_all("SELECT customer_id FROM deletion_requests")}
        (max_order,) = conn.fetch_one("SELECT max(order_id) FROM orders")
    seeded = time.perf_counter() - started
    home = work / "home"
    home.mkdir()
    instance = yaml.safe_load((REPO / "dagster.yaml").read_text())
    if config.direct_launch:
        # Without a queue there is no run limit to enforce; pools still serialize warehouse steps.
        instance["concurrency"].pop("runs", None)
        instance["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    if config.dequeue_interval is not None:
        instance["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": config.dequeue_interval},
        }
    instance_yaml = yaml.safe_dump(instance)
    (home / "dagster.yaml").write_text(instance_yaml)
    env = {"COMPOSABLE_PROJECT_DIR": str(project), "COMPOSABLE_DATA_DIR": str(data)}
    folders = landing_folders(load_project(project).settings.landing, data)
    return home, env, {"folders": folders, "customers": count, "forgotten": forgotten, "max_order": max_order,
                       "seed_seconds": seeded}


def pick_customers(facts: dict, n: int, rng: random.Random, exclude: set[int] = frozenset()) -> list[int]:
    """`n` distinct customers, none with a deletion request (they are never sent) nor in `exclude`."""
    skip = facts["forgotten"] | set(exclude)
    if facts["customers"] - len(skip) < n:
        raise ValueError(f"only {facts['customers'] - len(skip)} customers to pick {n} from")
    picked: list[int] = []
    chosen: set[int] = set()
    while len(picked) < n:
        customer = rng.randint(1, facts["customers"])
        if customer not in skip and customer not in chosen:
            chosen.add(customer)
            picked.append(customer)
    return picked


def land_orders(folder, orders: list[tuple[int, int]]) -> float:
    """One Parquet file in the orders landing folder with a completed order of 700 per (customer_id, order_id)."""
    now = dt.datetime.now(dt.UTC)
    name = folder.new_file_name(".parquet", now=now)
    temp = folder.temp_path(name)
    rows = [{"order_id": order_id, "customer_id": customer_id, "amount": Decimal("700.00"), "currency": "EUR",
             "status": "completed", "category": "shoes", "ordered_at": now.replace(tzinfo=None)}
            for customer_id, order_id in orders]
    pq.write_table(pa.Table.from_pylist(rows, schema=ORDER_SCHEMA), temp)
    folder.publish(temp, name)
    return time.time()


def land_probe(folder, customer_id: int, order_id: int) -> float:
    return land_orders(folder, [(customer_id, order_id)])


def arrivals(braze: BrazeFake) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Times of accepted /users/track requests carrying attributes per external_id, and per purchased order id."""
    attributes: dict[str, list[float]] = {}
    purchases: dict[str, float] = {}
    for request in list(braze.requests):
        if request.path != "/users/track" or request.status != 201 or not isinstance(request.body, dict):
            continue
        for a in request.body.get("attributes", []):
            attributes.setdefault(str(a.get("external_id")), []).append(request.time)
        for p in request.body.get("purchases", []):
            order = (p.get("properties") or {}).get("order_id")
            if order is not None:
                purchases.setdefault(str(order), request.time)
    return attributes, purchases


def sensor_ticks(instance: dg.DagsterInstance) -> list:
    """The change sensor's ticks, oldest first (skipped ones carry the reason)."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == SENSOR_NAME:
            return sorted(instance.get_ticks(state.instigator_origin_id, state.selector_id), key=lambda t: t.timestamp)
    return []


def minute_runs_in_progress(dagster: DagsterProcesses) -> int:
    """How many minute-level runs are queued, starting or running."""
    data = dagster.graphql(
        '{ runsOrError(filter: {pipelineName: "minute_level", statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, '
        'CANCELING]}) { ... on Runs { results { runId } } } }'
    )
    return len(data["runsOrError"]["results"])


def in_flight(tick) -> bool:
    """Was this tick skipped because a minute-level run was queued or starting?"""
    return bool(tick.skip_reason) and " of minute_level is " in tick.skip_reason


def breakdown(instance: dg.DagsterInstance, probes: list[Probe]) -> None:
    """Split each probe's latency along the run that delivered it."""
    records = instance.get_run_records(dg.RunsFilter(job_name="minute_level"))
    runs = []
    for record in records:
        if record.start_time is None or record.end_time is None:
            continue
        starts, ends = {}, {}
        for entry in instance.all_logs(record.dagster_run.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                                           dg.DagsterEventType.STEP_SUCCESS}):
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                starts[entry.step_key] = entry.timestamp
            else:
                ends[entry.step_key] = entry.timestamp
        sync_start = starts.get(SYNC_STEP)
        steps = {key: ends[key] - starts[key] for key in starts if key in ends}
        if starts:
            steps["(run start to first step)"] = min(starts.values()) - record.start_time
        runs.append((record.create_timestamp.timestamp(), record.start_time, sync_start, record.end_time, steps))
    ticks = sensor_ticks(instance)
    for probe in probes:
        if probe.attributes_at is None:
            continue
        for created, started, sync_start, ended, steps in runs:
            if sync_start and started <= probe.attributes_at <= ended + 1:
                probe.steps = steps
                # From the first tick after the landing that refused because a run was in flight, to the creation.
                blocked = next((t.timestamp for t in ticks if probe.landed <= t.timestamp < created and in_flight(t)),
                               None)
                probe.parts = {
                    "sensor": max(0.0, created - probe.landed),
                    "run in flight": created - blocked if blocked is not None else 0.0,
                    "queue + launch": started - max(created, probe.landed),
                    "upstream steps": sync_start - started,
                    "sync": probe.attributes_at - sync_start,
                }
                break


def run_config(config: Config, probes_wanted: int, every: float, customers: int, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="latency-", dir=REPO / "benchmarks" / ".work"))
    millions = customers / 1e6
    try:
        home, env, facts = prepare(work, config, customers)
        print(f"  seeded {customers:,} customers in {facts['seed_seconds']:.0f} s", flush=True)
        braze = BrazeFake(KEY).start()
        iterable = IterableFake(KEY, lists={NEWSLETTER_LIST_ID: "weekly newsletter"}).start()
        env.update({"BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": KEY,
                    "ITERABLE_BASE_URL": iterable.url, "ITERABLE_API_KEY": KEY})
        rng = random.Random(seed)
        targets = pick_customers(facts, probes_wanted, rng)
        probes: list[Probe] = []
        load_before = load_average()
        try:
            with DagsterProcesses(home, REPO / "workspace.yaml", env, log_dir=work) as dagster:
                # The first run sends every VIP (about 4% of the customers); wait for it so probes measure
                # steady-state activation.
                up = time.time()
                dagster.wait_for(lambda: dagster.latest_materialization("sync/vip_customers/braze"),
                                 timeout=180 + 120 * millions, what="the first VIP sync")
                first_sync = time.time() - up
                print(f"  first VIP sync after {first_sync:.0f} s", flush=True)
                # Deliveries run first, so the first run goes on with the other audiences (minutes at 10M) and a
                # heartbeat run may queue behind it: probes measure the quiet state, once no run is left.
                dagster.wait_for(lambda: not minute_runs_in_progress(dagster), timeout=600 + 300 * millions,
                                 interval=2, what="the first minute-level runs to finish")
                time.sleep(2 * every)
                order_id = facts["max_order"]
                for customer in targets:
                    order_id += 1
                    probes.append(Probe(customer, order_id, land_probe(facts["folders"]["orders"], customer, order_id)))
                    time.sleep(every)

                def all_arrived() -> bool:
                    attributes, purchases = arrivals(braze)
                    for p in probes:
                        # The customer may have been sent before (the first sync): the probe's is the next one.
                        later = [t for t in attributes.get(str(p.customer_id), []) if t >= p.landed]
                        p.attributes_at = min(later) if later else None
                        p.purchase_at = purchases.get(str(p.order_id))
                    return all(p.attributes_at for p in probes)

                try:
                    dagster.wait_for(all_arrived, timeout=300 + 60 * millions, interval=1, what="every probe at Braze")
                except Exception as exc:  # report what arrived rather than nothing
                    print(f"  not every probe arrived: {str(exc).splitlines()[0]}")
                load_after = load_average()
                os.environ["DAGSTER_HOME"] = str(home)
                with dg.DagsterInstance.get() as instance:
                    breakdown(instance, probes)
        finally:
            braze.stop()
            iterable.stop()
        latencies = [p.attributes_at - p.landed for p in probes if p.attributes_at]
        purchase = [p.purchase_at - p.landed for p in probes if p.purchase_at]
        parts = {name: [p.parts[name] for p in probes if p.parts] for name in PARTS}
        step_names = sorted({name for p in probes for name in p.steps})
        steps = {name: statistics.median([p.steps[name] for p in probes if name in p.steps]) for name in step_names}
        return {
            "steps_median": steps,
            "customers": customers,
            "config": config.name,
            "probes": len(probes),
            "arrived": len(latencies),
            "p50": statistics.median(latencies) if latencies else None,
            "p95": percentile(latencies, 95) if latencies else None,
            "max": max(latencies) if latencies else None,
            "purchase_p50": statistics.median(purchase) if purchase else None,
            "purchase_p95": percentile(purchase, 95) if purchase else None,
            "parts_median": {k: statistics.median(v) if v else None for k, v in parts.items()},
            "parts_p95": {k: percentile(v, 95) if v else None for k, v in parts.items()},
            # Probes whose sensor wait was (partly) a run in flight, out of those with a breakdown.
            "blocked_by_run": sum(1 for v in parts["run in flight"] if v > 0),
            "seed_seconds": facts["seed_seconds"],
            "first_sync_seconds": first_sync,
            "load_before": load_before,
            "load_after": load_after,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def configs_for(customers: int, choice: str) -> list[Config]:
    if choice == "auto":
        return CONFIGS if customers <= ALL_CONFIGS_UP_TO else CONFIGS[:1]
    return CONFIGS if choice == "all" else [CONFIGS[int(i)] for i in choice.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=60, help="probes per configuration (at least 50 for a p95)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between probes")
    parser.add_argument("--customers", type=parse_sizes, default=[2000],
                        help="comma-separated sizes, e.g. 2000,1000000,10000000 (or 2k,1m,10m); default 2000")
    parser.add_argument("--configs", default="auto",
                        help="comma-separated indexes into the configurations, all, or auto (default: every "
                        f"configuration up to {ALL_CONFIGS_UP_TO:,} customers, the shipped defaults (0) above)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    (REPO / "benchmarks" / ".work").mkdir(parents=True, exist_ok=True)
    results = []
    started = time.time()
    for customers in args.customers:
        for i, config in enumerate(configs_for(customers, args.configs)):
            print(f"[{customers:,} customers, {config.name}] {args.probes} probes, one every {args.every:g} s ...",
                  flush=True)
            began = time.time()
            result = run_config(config, args.probes, args.every, customers, seed=i)
            result["seconds"] = time.time() - began
            print(f"  p50 {fmt(result['p50'])}, p95 {fmt(result['p95'])}, max {fmt(result['max'])}; "
                  f"medians: " + ", ".join(f"{k} {fmt(v)}" for k, v in result["parts_median"].items())
                  + f" ({result['seconds']:.0f} s)", flush=True)
            results.append(result)

    lines = [
        f"Latency from an order landing to its arrival at the Braze fake ({args.probes} probes per row, one every "
        f"{args.every:g} s; {platform.node()}, {os.cpu_count()} cores, {dt.date.today()}; "
        f"{(time.time() - started) / 60:.0f} minutes in all)",
        "",
        "| customers | configuration | arrived | p50 | p95 | max | sensor | of which a run in flight | queue + launch "
        "| upstream steps | sync | purchase p50 / p95 | load before / after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["parts_median"]
        lines.append(
            f"| {r['customers']:,} | {r['config']} | {r['arrived']}/{r['probes']} | {fmt(r['p50'])} | {fmt(r['p95'])} "
            f"| {fmt(r['max'])} | {fmt(m['sensor'])} | {fmt(m['run in flight'])} ({r['blocked_by_run']} probes) "
            f"| {fmt(m['queue + launch'])} | {fmt(m['upstream steps'])} | {fmt(m['sync'])} "
            f"| {fmt(r['purchase_p50'])} / {fmt(r['purchase_p95'])} "
            f"| {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    lines += [
        "",
        "Breakdown columns are medians over the probes of the run that delivered each probe. \"Of which a run in "
        "flight\": from the first sensor tick after the landing that was skipped because a minute-level run was "
        "queued or running, until the probe's run was created (0 when no tick refused); in brackets, how many "
        "probes waited so. Load: the 1-minute load average before the Dagster processes started and after the "
        "last probe arrived.",
        "",
        "| customers | configuration | seeding | first VIP sync (every VIP sent) | whole row |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['customers']:,} | {r['config']} | {r['seed_seconds']:.0f} s | "
                     f"{r['first_sync_seconds']:.0f} s | {r['seconds'] / 60:.1f} min |")
    lines += [
        "",
        "Where the upstream steps go: seconds per step of the run that delivered each probe (median over probes); "
        "\"(run start to first step)\" is the run process planning the run and starting its resources.",
        "",
    ]
    for r in results:
        lines.append(f"- {r['customers']:,}, {r['config']}: "
                     + ", ".join(f"{name} {fmt(value)}" for name, value in r["steps_median"].items()))
    table = "\n".join(lines)
    print("\n" + table)
    machine = {"node": platform.node(), "cores": os.cpu_count(), "date": dt.date.today().isoformat(),
               "probes": args.probes, "every": args.every}
    write_results(args.results, "latency", markdown=table + "\n", data={"machine": machine, "results": results})


if __name__ == "__main__":
    main()

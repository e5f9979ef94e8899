"""Event stream benchmark: N completed orders forwarded through the real stream assets to each destination.

Braze and Iterable are the local fakes, each in a process of its own (as a vendor would be), with their
documented limits or without any; the outbox writes JSON Lines. Reports events per second of the delivery step
(from the asset's metadata) and of the whole run with its CPU seconds, and a re-run with nothing new. Passes or
fails on nothing but a broken run.

    .venv/bin/python benchmarks/stream_benchmark.py --events 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb

from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.project import load_project
from composable_assets.runner import run_selection
from composable_assets.settings import Settings

from common.sinks import start_fake
from common.timing import cpu_seconds, load_text

KEY = "bench-stream-key-2f7a"

STREAM = """\
table: orders
event_id: order_id
cursor: ordered_at
where: status = 'completed'
start: {start}
syncs:
  - destination: braze
    identifier: {{external_id: customer_id}}
    event: purchase
    properties: {{order_id: order_id, category: category}}
    options:
      purchase: {{product_id: category, price: amount, currency: currency}}
  - destination: iterable
    identifier: {{email: email}}
    event: purchase
    properties: {{order_id: order_id, amount: amount, currency: currency, category: category}}
  - destination: box
    identifier: {{external_id: customer_id}}
    event: purchase
    properties: {{amount: amount, currency: currency, category: category}}
"""

DESTINATIONS = """\
braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}}
iterable: {type: iterable, base_url: {env: ITERABLE_BASE_URL}, api_key: {env: ITERABLE_API_KEY}}
box: {type: outbox}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--limited", action="store_true", help="the fakes enforce the vendors' documented limits")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    project_dir = root / "project"
    (project_dir / "models").mkdir(parents=True)
    (project_dir / "streams").mkdir()
    (project_dir / "models" / "order_facts.sql").write_text("-- Orders.\nSELECT * FROM orders\n")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    (project_dir / "streams" / "orders.yaml").write_text(STREAM.format(start=(now - dt.timedelta(days=2)).date()))
    (project_dir / "destinations.yaml").write_text(DESTINATIONS)
    db = root / "warehouse.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE orders AS SELECT i AS order_id, i % 5000 AS customer_id, 'c' || (i % 5000) || '@example.com' "
            "AS email, (5 + i % 200)::DECIMAL(12, 2) AS amount, 'EUR' AS currency, 'completed' AS status, "
            "['shoes', 'home', 'beauty'][1 + i % 3] AS category, "
            "?::TIMESTAMP - to_seconds(? - i) AS ordered_at FROM range(?) AS r(i)",
            [now - dt.timedelta(minutes=5), args.events, args.events],
        )
    fakes = {kind: start_fake(kind, KEY, args.limited) for kind in ("braze", "iterable")}
    os.environ.update(
        BRAZE_REST_ENDPOINT=fakes["braze"][1], BRAZE_API_KEY=KEY, ITERABLE_BASE_URL=fakes["iterable"][1], ITERABLE_API_KEY=KEY
    )
    try:
        settings = Settings(project_dir, f"duckdb:///{db}", root / "data")
        defs = load_definitions(settings)
        project = load_project(project_dir)
        instance = dg.DagsterInstance.ephemeral()
        print(f"{args.events} events, fakes {'with' if args.limited else 'without'} rate limits, {os.cpu_count()} cores, "
              f"load average {load_text()}")
        for label in ("first run", "re-run, nothing new"):
            for destination in ("braze", "iterable", "box"):
                started, cpu = time.monotonic(), cpu_seconds()
                outcome = run_selection(
                    defs, stream_selection(project, "orders", destination), now.date().isoformat(), instance, "WARNING"
                )
                wall, cpu = time.monotonic() - started, cpu_seconds() - cpu
                [stream] = outcome.streams
                assert outcome.success, outcome.errors
                sent, seconds = stream.count("sent"), stream.metadata["duration_seconds"].value
                print(
                    f"{label:20} {destination:9} sent {sent:6}  delivery {seconds:6.2f} s "
                    f"({sent / seconds if seconds else 0:8.0f} events/s)  whole run {wall:5.2f} s, CPU {cpu:5.2f} s"
                )
    finally:
        for process, _ in fakes.values():
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()

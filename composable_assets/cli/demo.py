"""The demo commands: demo (seed the retail sample, sync everything) and simulate (live traffic for it).

The demo project, its data generator, the simulator and the local Braze/Iterable stand-ins live apart from the
product, in composable_assets_tests (DESIGN.md, Layout): they are imported inside the commands that use them
(here and `composable ui`), never when composable_assets is imported, and an installation without them gets an
error that says so.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import click

from .common import UserError, failed, load, project_today, run_with_summary, warehouse_of
from .governance import honour_deletion_requests
from .render import console

# The rest of composable_assets (and dagster with it) is imported inside the commands: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


def demo_is_missing(exc: ModuleNotFoundError) -> bool:
    """Whether it is composable_assets_tests (the demo, the simulator, the stand-ins) that could not be imported."""
    return (exc.name or "").split(".")[0] == "composable_assets_tests"


def demo_missing(exc: ModuleNotFoundError, what: str) -> None:
    """A UserError saying so if `exc` is the demo (composable_assets_tests) missing; nothing for another module."""
    if not demo_is_missing(exc):
        return
    raise UserError(
        f"{what} needs composable_assets_tests (the demo project, its traffic simulator and the local Braze/Iterable "
        "stand-ins), which is not installed with this copy of composable_assets: install it from a checkout of its "
        "repository (`make setup`, or `pip install -e .` there)."
    ) from exc


def demo_project_dir(command: str) -> Path:
    """The demo's project folder (composable_assets_tests/demo/project), imported only when a demo command runs."""
    try:
        from composable_assets_tests.demo import SAMPLE_PROJECT_DIR
    except ModuleNotFoundError as exc:
        demo_missing(exc, f"`{command}`")
        raise
    return SAMPLE_PROJECT_DIR


@click.command()
@click.option("--customers", default=2000, show_default=True, help="Size of the generated sample.")
@click.option(
    "--changes/--no-changes",
    default=True,
    show_default=True,
    help="After the first sync, apply a day of changes and sync again.",
)
def demo(customers: int, changes: bool) -> None:
    """Seed the retail sample and run every sync once (then once more after a day of changes).

    Braze and Iterable are local stand-ins unless BRAZE_REST_ENDPOINT / ITERABLE_BASE_URL are set.
    """
    from ..landing import landing_folders

    try:
        from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator
        from composable_assets_tests.fakes.local import local_destinations
    except ModuleNotFoundError as exc:
        demo_missing(exc, "`composable demo`")
        raise

    # Always the demo project, whatever COMPOSABLE_PROJECT_DIR says: the demo seeds its own source tables.
    settings, project, defs = load(SAMPLE_PROJECT_DIR)
    today = dt.date.fromisoformat(project_today(project))
    warehouse = warehouse_of(defs)
    with warehouse.connect() as conn:
        if not hasattr(conn, "raw"):
            raise UserError("the demo seeds its sample into DuckDB; set COMPOSABLE_WAREHOUSE to a duckdb:/// URL.")
        counts = generator.seed(conn.raw, customers=customers, as_of=today)
    # Files still waiting from an earlier `composable simulate` belong to the data just replaced.
    for folder in landing_folders(project.settings.landing, settings.data_dir).values():
        for file in folder.pending():
            file.unlink()
    console.print(
        f"seeded the retail sample into {warehouse.engine.describe()}: "
        + ", ".join(f"{n} {t}" for t, n in counts.items()),
        highlight=False,
    )
    everything = _all_sync_work(defs)
    with local_destinations() as fakes:
        for name, fake in fakes.items():
            console.print(f"{name}: a local stand-in at {fake.url} (real HTTP)", highlight=False)
        _demo_deletions(defs, warehouse, project)
        outcome = run_with_summary(defs, everything, today.isoformat(), f"sync ({today})")
        if changes and outcome.success:
            with warehouse.connect() as conn:
                changed = generator.apply_day_of_changes(conn.raw, today)
            console.print(
                "applied a day of changes: " + ", ".join(f"{n} {k}" for k, n in changed.items()), highlight=False
            )
            _demo_deletions(defs, warehouse, project)
            outcome = run_with_summary(defs, everything, today.isoformat(), f"after a day of changes ({today})")
        for name, fake in fakes.items():
            ok = sum(1 for r in fake.requests if r.status is not None and r.status < 300)
            console.print(
                f"{name} stand-in received {len(fake.requests)} requests ({ok} accepted) "
                f"and holds {len(fake.users)} profiles",
                highlight=False,
            )
    console.print(
        f"\nOutbox files (what was sent): {settings.outbox_dir}\n"
        f"Warehouse: {warehouse.engine.describe()}\n"
        "See it in Dagster: make ui, then open http://127.0.0.1:3000",
        highlight=False,
    )
    if not outcome.success:
        raise failed(outcome, "the demo's run")


@click.command()
@click.option("--interval", default=3.0, show_default=True, help="Seconds between ticks.")
@click.option("--ticks", type=int, help="Stop after this many ticks (default: until Ctrl-C).")
@click.option("--orders", "orders_per_tick", default=3, show_default=True, help="New orders per tick.")
def simulate(interval: float, ticks: int | None, orders_per_tick: int) -> None:
    """Land live traffic for the sample (orders, cart events, profile edits) every few seconds."""
    # The project named by COMPOSABLE_PROJECT_DIR (or the current folder), else the demo's.
    settings, project, _ = load(fallback_project_dir=demo_project_dir("composable simulate"))
    stop = start_simulation(settings, project, interval, ticks, orders_per_tick, quiet=False)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    stop.set()


def start_simulation(settings, project, interval: float, ticks: int | None, orders_per_tick: int, quiet: bool):
    """Start the simulator in a thread; the returned event is set when it has stopped (or to stop it)."""
    from ..landing import landing_folders
    from ..warehouse import Warehouse, WarehouseError

    try:
        from composable_assets_tests.demo.simulator import Simulator
    except ModuleNotFoundError as exc:
        demo_missing(exc, "the traffic simulator")
        raise

    folders = landing_folders(project.settings.landing, settings.data_dir)
    try:
        simulator = Simulator(folders, Warehouse.from_url(settings.warehouse_url), orders_per_tick=orders_per_tick)
    except (ValueError, WarehouseError) as exc:
        raise UserError(f"cannot simulate traffic: {exc}") from exc
    stop = threading.Event()

    def report(counts) -> None:
        if not quiet:
            console.print(
                f"{dt.datetime.now():%H:%M:%S} landed {counts.orders} orders, {counts.cart_events} cart events, "
                f"{counts.profile_edits} profile edits",
                highlight=False,
            )

    def loop() -> None:
        try:
            simulator.run(interval, stop, ticks=ticks, on_tick=report)
        finally:
            stop.set()

    console.print(f"simulating traffic into {settings.data_dir / 'landing'} every {interval:g} s", highlight=False)
    threading.Thread(target=loop, name="simulator", daemon=True).start()
    return stop


def _all_sync_work(defs):
    import dagster as dg

    from ..assets.deletions import DELETION_REQUESTS

    # Deletion requests run on their own, first (`_demo_deletions`).
    return dg.AssetSelection.all() - dg.AssetSelection.groups("sources") - dg.AssetSelection.assets(DELETION_REQUESTS)


def _demo_deletions(defs, warehouse, project) -> None:
    """Honour the sample's deletion requests before its syncs, and say in one line what that did."""
    from ..governance.deletion_log import deletion_log
    from ..store import ensure_store

    run = honour_deletion_requests(defs)
    with warehouse.connect() as conn:
        ensure_store(conn, project.settings.schema_name)
        counts = dict(
            conn.fetch_all(
                f"SELECT status, count(*) FROM {deletion_log(project.settings.schema_name)} WHERE run_id = ? "
                "GROUP BY status ORDER BY status",
                [run.run_id],
            )
        )
    console.print(
        "deletion requests (before the syncs): "
        + (", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing new"),
        highlight=False,
    )

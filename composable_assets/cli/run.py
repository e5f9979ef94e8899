"""Commands that run a project's assets: sync, stream, preview, and the rejections of a sync."""

from __future__ import annotations

import datetime as dt
import time

import click
from rich.markup import escape
from rich.table import Table

from .common import UserError, debug, execute, failed, load, project_today, run_with_summary, warehouse_of
from .render import console, err_console

# The rest of composable_assets (and dagster with it) is imported inside the commands: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


@click.command()
@click.argument("audience")
@click.option("--destination", help="Only this destination (default: every destination of the audience).")
@click.option("--date", "date", help="Partition day YYYY-MM-DD (default: today in the project's timezone).")
@click.option(
    "--run-anyway",
    is_flag=True,
    help="Launch the Dagster run even when nothing changed since this day's last sync (default: no run then).",
)
def sync(audience: str, destination: str | None, date: str | None, run_anyway: bool) -> None:
    """Refresh an audience and deliver its delta; non-zero exit if anything failed or was rejected."""
    if not run_anyway and _quiet(audience, destination, date):
        return
    from ..definitions import audience_selection

    settings, project, defs = load()
    _check_target(project, audience, destination)
    partition = _partition(project, date)
    selection = audience_selection(project, audience, destination)
    outcome = run_with_summary(defs, selection, partition, f"sync {audience} ({partition})")
    if outcome.rejected:
        _print_rejections(defs, project, outcome)
    if not outcome.success:
        raise failed(outcome, f"the sync of {audience}")
    if outcome.rejected:
        raise UserError(f"{outcome.rejected} row(s) were rejected by the destination; they stay for the next run.")


def _quiet(audience: str, destination: str | None, date: str | None) -> bool:
    """Whether the sync would do nothing (checked before dagster is loaded, cli/quiet_check.py); says so if it would."""
    from .quiet_check import check_sync

    started = time.perf_counter()
    verdict = check_sync(audience, destination, lambda project: _partition(project, date))
    if not verdict.quiet:
        if debug():
            err_console.print(f"quiet check: a run is needed: {escape(verdict.why)}", highlight=False)
        return False
    seconds = time.perf_counter() - started
    runs = sorted(set(verdict.last_runs.values()))
    since = (
        f"sync run {runs[0][0]} of {runs[0][1]}"
        if len(runs) == 1
        else "sync runs " + ", ".join(f"{run} ({name})" for name, (run, _) in sorted(verdict.last_runs.items()))
    )
    console.print(
        f"{audience} -> {', '.join(sorted(verdict.last_runs))}: nothing changed since {since} "
        f"(checked in {seconds:.1f} s); no run launched",
        highlight=False,
    )
    return True


#: Rejected rows shown per destination after a sync; `composable rejections` lists them all.
REJECTIONS_SHOWN = 5


def _print_rejections(defs, project, outcome) -> None:
    """The first rejected rows of each sync in the run, with their reasons, and where to find the rest."""
    from ..governance.provenance import rejections
    from ..store import PairTables

    with warehouse_of(defs).connect() as conn:
        for s in sorted(outcome.syncs, key=lambda s: (s.audience, s.destination)):
            if not s.count("failed"):
                continue
            tables = PairTables(project.settings.schema_name, s.audience, s.destination)
            _, rows = rejections(conn, tables, run_id=outcome.run_id, limit=REJECTIONS_SHOWN)
            err_console.print(
                f"[red]rejected[/] by {s.destination}: {s.count('failed')} row(s) of {s.audience}"
                + (f", the first {len(rows)}:" if s.count("failed") > len(rows) else ":"),
                highlight=False,
            )
            for r in rows:
                err_console.print(
                    f"  key {escape(r.key)} ({escape(r.identifier or 'no identifier')}, {r.op}): "
                    f"{escape(r.reason or '')}",
                    highlight=False,
                )
            err_console.print(
                f"  all of them: composable rejections {s.audience} --destination {s.destination}", highlight=False
            )


@click.command()
@click.argument("audience")
@click.option("--destination", help="Only this destination (default: every destination of the audience).")
@click.option("--run", "run_id", help="A sync run id (default: each destination's latest sync run).")
def rejections(audience: str, destination: str | None, run_id: str | None) -> None:
    """The rows a destination rejected in a sync run, with the key, identifier and reason of each."""
    from ..governance.provenance import rejections as rejected_rows
    from ..store import PairTables

    settings, project, defs = load()
    _check_target(project, audience, destination)
    names = [s.destination for s in project.audiences[audience].syncs if destination in (None, s.destination)]
    with warehouse_of(defs).connect() as conn:
        for name in names:
            run, rows = rejected_rows(conn, PairTables(project.settings.schema_name, audience, name), run_id=run_id)
            if run is None:
                console.print(f"{audience} -> {name}: never synced", highlight=False)
                continue
            if not rows:
                console.print(f"{audience} -> {name}: nothing rejected in sync run {run}", highlight=False)
                continue
            table = Table(title=f"{audience} -> {name}: {len(rows)} rejected in sync run {run}", title_justify="left")
            for column in ("key", "identifier", "change", "reason", "when (UTC)"):
                table.add_column(column)
            for r in rows:
                table.add_row(r.key, r.identifier or "", r.op, r.reason or "", f"{r.at:%Y-%m-%d %H:%M:%S}")
            console.print(table)


@click.command()
@click.argument("stream")
@click.option("--destination", help="Only this destination (default: every destination of the stream).")
@click.option("--date", "date", help="Partition day YYYY-MM-DD (default: today in the project's timezone).")
def stream(stream: str, destination: str | None, date: str | None) -> None:
    """Forward an event stream's new rows; non-zero exit if anything failed or was rejected."""
    from ..definitions import stream_selection

    settings, project, defs = load()
    if stream not in project.streams:
        raise UserError(f"no stream {stream!r}; the project has: {', '.join(sorted(project.streams)) or 'none'}.")
    names = [s.destination for s in project.streams[stream].syncs]
    if destination is not None and destination not in names:
        raise UserError(f"stream {stream!r} does not go to {destination!r}; it goes to: {', '.join(names)}.")
    partition = _partition(project, date)
    selection = stream_selection(project, stream, destination)
    outcome = run_with_summary(defs, selection, partition, f"stream {stream} ({partition})")
    if not outcome.success:
        raise failed(outcome, f"the stream {stream}")
    rejected = sum(s.count("rejected") for s in outcome.streams)
    if rejected:
        raise UserError(
            f"{rejected} event(s) were rejected by the destination; they are recorded as rejected, not retried."
        )


@click.command()
@click.argument("audience")
@click.option("--destination", required=True, help="The destination to preview.")
@click.option("--limit", default=5, show_default=True, help="How many sample payloads to show.")
def preview(audience: str, destination: str, limit: int) -> None:
    """Show the delta and sample payloads for one destination: nothing is sent, the ledger is untouched."""
    from ..definitions import audience_selection, destinations_of
    from ..preview import preview_delta

    settings, project, defs = load()
    _check_target(project, audience, destination)
    # Refresh the models and the audience (no partition, no delta, no sync) so the preview is current.
    refresh = audience_selection(project, audience, destination) - _pair_keys(audience, destination)
    outcome = execute(defs, refresh)
    if not outcome.success:
        raise failed(outcome, f"refreshing {audience}")
    spec = project.audiences[audience]
    result = preview_delta(
        warehouse_of(defs),
        project,
        spec,
        spec.sync_for(destination),
        destinations_of(project, settings)[destination],
        limit,
    )
    console.print(
        f"{audience} -> {destination} ({spec.sync_for(destination).mode}): "
        f"[green]{result.added}[/] to add, [yellow]{result.updated}[/] to update, [red]{result.removed}[/] to remove "
        f"(audience of {result.audience_size}); nothing was sent.",
        highlight=False,
    )
    for payload in result.payloads:
        console.print_json(data=payload)


def _pair_keys(audience: str, destination: str):
    import dagster as dg

    from ..project.keys import delta_key, sync_key

    return dg.AssetSelection.assets(delta_key(audience, destination), sync_key(audience, destination))


def _check_target(project, audience: str, destination: str | None) -> None:
    if audience not in project.audiences:
        raise UserError(f"no audience {audience!r}; the project has: {', '.join(sorted(project.audiences)) or 'none'}.")
    names = [s.destination for s in project.audiences[audience].syncs]
    if destination is not None and destination not in names:
        raise UserError(f"audience {audience!r} does not sync to {destination!r}; it syncs to: {', '.join(names)}.")


def _partition(project, date: str | None) -> str:
    if date is None:
        return project_today(project)
    try:
        day = dt.date.fromisoformat(date)
    except ValueError as exc:
        raise UserError(f"--date {date!r} is not a date like 2026-01-31.") from exc
    # The daily partitions run from start_date through today in the project's timezone; Dagster knows no other day.
    today = project_today(project)
    if not project.settings.start_date <= day <= dt.date.fromisoformat(today):
        raise UserError(
            f"--date {day} is outside the project's days: {project.settings.start_date} .. {today} "
            f"(today in {project.settings.timezone}). Pick a day in that range; an earlier one needs an earlier "
            "start_date in project.yaml."
        )
    return day.isoformat()

"""The `composable` command: init, validate, demo, sync, stream, preview and more."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import traceback
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from .progress import SyncProgress
from .project import ProjectError

# Piped or captured output is not wrapped at 80 columns, so a message stays one greppable line.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH)


class UserError(click.ClickException):
    """An error the user can act on: printed as one paragraph, exit code 1."""

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.message)}", highlight=False)


def _debug() -> bool:
    """`composable --debug ...`: Dagster's whole log and the stack traces."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().obj or {}).get("debug"))


def _today(project) -> str:
    return dt.datetime.now(ZoneInfo(project.settings.timezone)).date().isoformat()


def _load(project_dir: str | None = None):
    """Settings, project and definitions; errors in the project folder become a UserError."""
    from .definitions import build_definitions
    from .destinations import DESTINATION_TYPES
    from .project import load_project
    from .settings import Settings

    settings = Settings.from_env()
    if project_dir:
        settings = Settings(Path(project_dir).absolute(), settings.warehouse_url, settings.data_dir)
    from .warehouse import WarehouseError

    try:
        project = load_project(settings.project_dir, known_destination_types=DESTINATION_TYPES)
        return settings, project, build_definitions(project, settings)
    except ProjectError as exc:
        raise UserError(f"the project folder {settings.project_dir} has errors:\n{exc}") from exc
    except WarehouseError as exc:  # COMPOSABLE_WAREHOUSE names no warehouse we can use
        raise UserError(str(exc)) from exc


def _summary(outcome, title: str) -> None:
    table = Table(title=title, title_justify="left")
    columns = ("audience", "destination", "added", "updated", "removed", "rejected", "skipped", "unsent", "seconds",
               "rows/s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("audience", "destination") else "right")
    for s in sorted(outcome.syncs, key=lambda s: (s.audience, s.destination)):
        seconds, rate = s.metadata.get("duration_seconds"), s.metadata.get("rows_per_second")
        table.add_row(
            s.audience,
            s.destination,
            *(str(s.count(n)) for n in ("added", "updated", "removed", "failed", "skipped", "unsent")),
            f"{getattr(seconds, 'value', seconds) or 0:.2f}",
            f"{getattr(rate, 'value', rate) or 0:,.0f}",
            style="red" if s.error or s.count("failed") else None,
        )
    # A run that failed before any sync has no table to show, only its failure (raised by the command).
    if outcome.syncs or (not outcome.streams and not outcome.errors):
        console.print(table)
    if outcome.streams:
        _stream_summary(outcome.streams)


def _stream_summary(streams) -> None:
    table = Table(title="event streams", title_justify="left")
    counts = ("sent", "rejected", "in_doubt", "late_skipped", "unsent")
    for column in ("stream", "destination", *counts, "high-water mark", "seconds"):
        table.add_column(column, justify="left" if column in ("stream", "destination", "high-water mark") else "right")
    for s in sorted(streams, key=lambda s: (s.stream, s.destination)):
        seconds, mark = s.metadata.get("duration_seconds"), s.metadata.get("high_water_mark")
        table.add_row(
            s.stream,
            s.destination,
            *(str(s.count(n)) for n in counts),
            str(getattr(mark, "value", mark) or ""),
            f"{getattr(seconds, 'value', seconds) or 0:.2f}",
            style="red" if s.error or s.count("rejected") else "yellow" if s.count("in_doubt") else None,
        )
    console.print(table)


def _execute(defs, selection, partition_key=None, **options):
    """Run the selection in this process, showing progress, warnings and errors as they come (not Dagster's log)."""
    from .runner import instance, run_selection

    # Dagster's own console lines only with --debug; the instance keeps every event either way.
    with _LiveRun() as live:
        return run_selection(defs, selection, partition_key, instance(), log_level="DEBUG" if _debug() else None,
                             watcher=live, **options)


def _run(defs, selection, partition_key, title: str):
    """`_execute`, then the summary table."""
    outcome = _execute(defs, selection, partition_key)
    _summary(outcome, title)
    return outcome


def _failed(outcome, doing: str) -> UserError:
    """One paragraph: what failed and why, step by step (the stack traces are in the run's log)."""
    if len(outcome.errors) == 1:
        detail = f": {outcome.errors[0]}"
    elif outcome.errors:
        detail = f" in {len(outcome.errors)} steps:\n" + "\n".join(f"  {error}" for error in outcome.errors)
    else:
        detail = f" (run {outcome.run_id})"
    hint = "" if _debug() else "\n(composable --debug ... prints Dagster's whole log, with stack traces)"
    return UserError(f"{doing} failed{detail}{hint}")


# A sync still delivering after this many seconds gets a progress bar (in a terminal) or progress lines;
# shorter ones only show in the summary table.
LONG_SYNC_SECONDS = 1.0
# Without a terminal (CI logs, pipes) a long sync prints a line this often, and one when it is done.
PROGRESS_LINE_SECONDS = 5.0


class _LiveRun:
    """The terminal's view of an in-process run (a runner.RunWatcher): long syncs' progress, warnings, errors."""

    def __init__(self) -> None:
        # Dagster redirects the process's stdout and stderr into its compute logs while steps run, and copies them
        # to the terminal through helper processes that a Ctrl-C stops too: write to the terminal itself.
        self.out, self.err = _terminal(sys.stdout, console), _terminal(sys.stderr, err_console)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TextColumn("{task.fields[seconds]:>6.1f} s"),
            console=self.out,
            # Drawn when progress comes (about once a second), not on a timer: nothing changes in between.
            auto_refresh=False,
        )
        self.tasks: dict[tuple[str, str], TaskID] = {}
        self.lines: dict[tuple[str, str], float] = {}  # when (seconds into the sync) each last printed a line

    def progress(self, progress: SyncProgress) -> None:
        pair = (progress.audience, progress.destination)
        seen = pair in self.tasks or pair in self.lines
        if not seen and (progress.finished or progress.seconds < LONG_SYNC_SECONDS):
            return
        if self.out.is_terminal:
            if not self.tasks:
                self.bar.start()
            fields = {"completed": progress.sent, "total": progress.total, "rate": progress.rows_per_second,
                      "seconds": progress.seconds}
            if pair in self.tasks:
                self.bar.update(self.tasks[pair], **fields)
            else:
                self.tasks[pair] = self.bar.add_task(f"{pair[0]} -> {pair[1]}", **fields)
            self.bar.refresh()
        elif not seen or progress.finished or progress.seconds - self.lines[pair] >= PROGRESS_LINE_SECONDS:
            self.lines[pair] = progress.seconds
            self.out.print(
                f"{pair[0]} -> {pair[1]}: {progress.sent:,} / {progress.total:,} rows sent, "
                f"{progress.rows_per_second:,.0f} rows/s, {progress.seconds:.1f} s",
                highlight=False,
            )

    def message(self, level: int, step: str | None, text: str) -> None:
        label = "[yellow]warning[/]" if level < logging.ERROR else "[red]error[/]"
        where = f" ({step})" if step else ""
        self.err.print(f"{label}{where}: {escape(text)}", highlight=False)

    def __enter__(self) -> "_LiveRun":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.bar.stop()
        for shown in (self.out, self.err):
            if shown.file not in (sys.stdout, sys.stderr):
                shown.file.close()


def _terminal(stream, like: Console) -> Console:
    """A console like `like` writing to a copy of `stream`'s file descriptor, which later redirections leave alone.

    A stream without one (a test's captured output) is used as it is.
    """
    try:
        copy = os.fdopen(os.dup(stream.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):
        return like
    return Console(file=copy, soft_wrap=True, width=_WIDTH, force_terminal=like.is_terminal)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Dagster's whole log and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """composable: warehouse audiences, delivered as Dagster assets."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("directory", type=click.Path(file_okay=True, path_type=Path))
@click.option("--force", is_flag=True, help="Write into a folder that is not empty (same-named files are replaced).")
def init(directory: Path, force: bool) -> None:
    """Create a new project folder that validates and syncs at once: a model, an audience, destinations, a README.

    It runs on the embedded DuckDB file and syncs to an outbox (JSON Lines files): no warehouse or credentials
    needed. Braze and Iterable are declared with {env: NAME} placeholders, unused until an audience names them.
    """
    from .scaffold import ScaffoldError, create_project

    try:
        written = create_project(directory, force=force)
    except ScaffoldError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise UserError(f"cannot write the project into {directory}: {exc.strerror or exc}") from exc
    folder = directory.absolute()
    console.print(f"[green]created[/] a project in {folder}: {', '.join(written)}", highlight=False)
    console.print(
        "Next (see its README.md):\n"
        f"  cd {directory}\n"
        '  export COMPOSABLE_PROJECT_DIR="$PWD"\n'
        "  composable validate\n"
        "  composable sync high_value_customers\n"
        "  composable ui",
        highlight=False, markup=False,
    )


@cli.command()
@click.option("--project", "project_dir", help="Project folder (default: COMPOSABLE_PROJECT_DIR or the sample).")
def validate(project_dir: str | None) -> None:
    """Check a project folder: files, fields, SQL, references."""
    settings, project, defs = _load(project_dir)
    defs.resolve_asset_graph()  # Dagster's own checks on keys, owners and dependencies
    console.print(
        f"[green]ok[/] {settings.project_dir}: {len(project.models)} models, {len(project.audiences)} audiences, "
        f"{sum(len(a.syncs) for a in project.audiences.values())} syncs, {len(project.destinations)} destinations, "
        f"{len(project.streams)} event streams, "
        f"sources: {', '.join(project.sources) or 'none'}",
        highlight=False,
    )
    # How minute-level runs keep each model and audience: by key where the SQL allows it, else in full (and why).
    from .assets.audiences import audience_refresh

    for name, refresh in sorted(project.refreshes.items()):
        console.print(f"  model {escape(name)}: {escape(refresh.describe())}", highlight=False)
    for name, audience in sorted(project.audiences.items()):
        if audience.cadence == "minutes" and audience.model in project.refreshes:
            text = audience_refresh(audience, project.refreshes[audience.model])
            console.print(f"  audience {escape(name)}: {escape(text)}", highlight=False)
    # Unset variables are no error (a destination nothing syncs to may keep placeholders), but a used one fails.
    from .project import MissingSecretError

    used = {s.destination for a in project.audiences.values() for s in a.syncs}
    used |= {s.destination for stream in project.streams.values() for s in stream.syncs}
    for name in sorted(used & set(project.destinations)):
        try:
            project.destinations[name].resolved_settings()
        except MissingSecretError as exc:
            err_console.print(f"[yellow]warning:[/] destination {name}: {escape(exc.message)}; "
                              "its syncs fail until it is set.", highlight=False)


@cli.command()
@click.argument("audience")
@click.option("--destination", help="Only this destination (default: every destination of the audience).")
@click.option("--date", "date", help="Partition day YYYY-MM-DD (default: today in the project's timezone).")
def sync(audience: str, destination: str | None, date: str | None) -> None:
    """Refresh an audience and deliver its delta; non-zero exit if anything failed or was rejected."""
    from .definitions import audience_selection

    settings, project, defs = _load()
    _check_target(project, audience, destination)
    partition = _partition(project, date)
    outcome = _run(defs, audience_selection(project, audience, destination), partition, f"sync {audience} ({partition})")
    if outcome.rejected:
        _print_rejections(settings, project, outcome)
    if not outcome.success:
        raise _failed(outcome, f"the sync of {audience}")
    if outcome.rejected:
        raise UserError(f"{outcome.rejected} row(s) were rejected by the destination; they stay for the next run.")


#: Rejected rows shown per destination after a sync; `composable rejections` lists them all.
REJECTIONS_SHOWN = 5


def _print_rejections(settings, project, outcome) -> None:
    """The first rejected rows of each sync in the run, with their reasons, and where to find the rest."""
    from .store import PairTables
    from .governance.provenance import rejections
    from .warehouse import Warehouse

    with Warehouse(url=settings.warehouse_url).connect() as conn:
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
                err_console.print(f"  key {escape(r.key)} ({escape(r.identifier or 'no identifier')}, {r.op}): "
                                  f"{escape(r.reason or '')}", highlight=False)
            err_console.print(f"  all of them: composable rejections {s.audience} --destination {s.destination}",
                              highlight=False)


@cli.command()
@click.argument("audience")
@click.option("--destination", help="Only this destination (default: every destination of the audience).")
@click.option("--run", "run_id", help="A sync run id (default: each destination's latest sync run).")
def rejections(audience: str, destination: str | None, run_id: str | None) -> None:
    """The rows a destination rejected in a sync run, with the key, identifier and reason of each."""
    from .store import PairTables
    from .governance.provenance import rejections as rejected_rows
    from .warehouse import Warehouse

    settings, project, _ = _load()
    _check_target(project, audience, destination)
    names = [s.destination for s in project.audiences[audience].syncs if destination in (None, s.destination)]
    with Warehouse(url=settings.warehouse_url).connect() as conn:
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


@cli.command()
@click.argument("stream")
@click.option("--destination", help="Only this destination (default: every destination of the stream).")
@click.option("--date", "date", help="Partition day YYYY-MM-DD (default: today in the project's timezone).")
def stream(stream: str, destination: str | None, date: str | None) -> None:
    """Forward an event stream's new rows; non-zero exit if anything failed or was rejected."""
    from .definitions import stream_selection

    settings, project, defs = _load()
    if stream not in project.streams:
        raise UserError(f"no stream {stream!r}; the project has: {', '.join(sorted(project.streams)) or 'none'}.")
    names = [s.destination for s in project.streams[stream].syncs]
    if destination is not None and destination not in names:
        raise UserError(f"stream {stream!r} does not go to {destination!r}; it goes to: {', '.join(names)}.")
    partition = _partition(project, date)
    outcome = _run(defs, stream_selection(project, stream, destination), partition, f"stream {stream} ({partition})")
    if not outcome.success:
        raise _failed(outcome, f"the stream {stream}")
    rejected = sum(s.count("rejected") for s in outcome.streams)
    if rejected:
        raise UserError(f"{rejected} event(s) were rejected by the destination; they are recorded as rejected, not retried.")


@cli.command()
@click.argument("audience")
@click.option("--destination", required=True, help="The destination to preview.")
@click.option("--limit", default=5, show_default=True, help="How many sample payloads to show.")
def preview(audience: str, destination: str, limit: int) -> None:
    """Show the delta and sample payloads for one destination: nothing is sent, the ledger is untouched."""
    from .definitions import audience_selection, destinations_of
    from .preview import preview_delta
    from .warehouse import Warehouse

    settings, project, defs = _load()
    _check_target(project, audience, destination)
    # Refresh the models and the audience (no partition, no delta, no sync) so the preview is current.
    refresh = audience_selection(project, audience, destination) - _pair_keys(audience, destination)
    outcome = _execute(defs, refresh)
    if not outcome.success:
        raise _failed(outcome, f"refreshing {audience}")
    spec = project.audiences[audience]
    result = preview_delta(
        Warehouse(url=settings.warehouse_url),
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


@cli.command()
@click.argument("column")
def lineage(column: str) -> None:
    """Where a column goes: TABLE.COLUMN -> every destination field it reaches; DESTINATION.FIELD -> its sources.

    TABLE is a source table, a model or an audience (a destination's name is read as DESTINATION); lineage is
    derived from the model SQL, never declared.
    """
    from rich.table import Table

    from .governance.lineage import column_lineage, destination_fields, source_columns

    _, project, _ = _load()
    name, _, field = column.rpartition(".")
    if not name or not field:
        raise UserError(f"expected TABLE.COLUMN or DESTINATION.FIELD, got {column!r}")
    deps = column_lineage(project)
    if name in project.destinations:
        sources = source_columns(deps, name, field)
        if sources is None:
            raise UserError(f"destination {name!r} is sent no field {field!r}")
        table = Table("source table", "column", title=f"{column} comes from")
        for key, col in sources:
            table.add_row(key.path[-1], col)
    else:
        reached = destination_fields(deps, name, field)
        if reached is None:
            raise UserError(f"no column {column!r} in the project's sources, models or audiences")
        table = Table("destination", "field", "via", title=f"{column} reaches")
        for key, col in reached:
            table.add_row(key.path[-1], col, key.to_user_string())
    console.print(table)


@cli.command()
@click.argument("customer_id")
@click.option("--audience", help="Only what this audience sent.")
@click.option("--destination", help="Only what was sent to this destination.")
@click.option("--since", help="Only what was sent on or after this day, YYYY-MM-DD.")
def explain(customer_id: str, audience: str | None, destination: str | None, since: str | None) -> None:
    """What was sent where for one person (an audience primary key), and why.

    Every change sent (or rejected) per destination with the run, code and data it came from, the events streams
    sent, what each destination holds now, audience membership, consent and deletion requests.
    """
    from .governance.provenance import explain as explain_person
    from .warehouse import Warehouse

    settings, project, _ = _load()
    try:
        day = dt.date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise UserError(f"--since {since!r} is not a date like 2026-01-31.") from exc
    with Warehouse(url=settings.warehouse_url).connect() as conn:
        found = explain_person(conn, project, customer_id, audience=audience, destination=destination, since=day)
    if not found.known:
        raise UserError(
            f"no record of {customer_id!r}: never sent to a destination, in no audience, no consent or deletion "
            "request (the key is an audience's primary key, e.g. a customer_id)."
        )
    _print_explanation(found)


def _print_explanation(found) -> None:
    consents = ", ".join(f"{p} {'granted' if g else 'not granted'}" for p, g in sorted(found.consents.items()))
    console.print(
        f"[bold]{found.customer_id}[/]: member of {', '.join(found.audiences) or 'no audience'} now; "
        f"consent: {consents or 'none recorded'}; deletion requests: {len(found.deletions) or 'none'}",
        highlight=False,
    )
    for row in found.deletions:
        details = ", ".join(f"{k}={v}" for k, v in row.items() if k != "table")
        console.print(f"  deletion ({row['table']}): {details}", highlight=False)
    for name in found.destinations:
        changes = [c for c in found.changes if c.destination == name]
        if changes:
            table = Table(title=f"sent to {name}", title_justify="left")
            for column in ("when (UTC)", "audience", "change", "fields sent", "status", "sync run", "code version",
                           "audience file", "upstream"):
                table.add_column(column)
            for c in changes:
                table.add_row(
                    f"{c.at:%Y-%m-%d %H:%M:%S}", c.audience, c.op, _fields_sent(c),
                    c.status + (f": {c.reason}" if c.reason else ""), c.sync_run_id[:8], c.code_version or "",
                    (c.audience_sha256 or "")[:12],
                    "\n".join(_upstream(name, version) for name, version in c.upstream.items()),
                    style="red" if c.status == "rejected" else None,
                )
            console.print(table)
        events = [e for e in found.events if e.destination == name]
        if events:
            table = Table("when (UTC)", "stream", "event", "event id", "properties", "status", "run",
                          title=f"events sent to {name}", title_justify="left")
            for e in events:
                table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.stream, e.event, e.event_id, _json(e.properties),
                              e.status + (f": {e.reason}" if e.reason else ""), e.run_id[:8])
            console.print(table)
        for entry in (e for e in found.ledger if e.destination == name):
            console.print(
                f"{name} holds now (audience {entry.audience}, since {entry.synced_at:%Y-%m-%d %H:%M:%S}, "
                f"run {entry.run_id[:8]}): {entry.identifier} {_json(entry.fields)}",
                highlight=False,
            )


def _upstream(name: str, version: dict) -> str:
    """An upstream asset as the delta saw it: its data version, and the run that materialized it (when known)."""
    run = f" (run {version['run_id'][:8]})" if version.get("run_id") else ""
    return f"{name} {version['data_version'][:8]}{run}"


def _fields_sent(change) -> str:
    """Add: every field; update: the changed fields, with what the destination had before; remove: nothing."""
    if change.fields is None:
        return "-" if change.op == "remove" else "(archived)"
    if change.op == "update":
        return ", ".join(f"{k}: {_json((change.previous or {}).get(k))} -> {_json(change.fields.get(k))}"
                         for k in change.changed)
    return _json(change.fields)


def _json(value) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False)


@cli.command()
@click.option("--request", "request_id", help="Only this request id.")
def forget(request_id: str | None) -> None:
    """Honour deletion requests now, then show per request and destination what happened.

    Exit 1 unless every request is done (a failed destination is tried again by the next run).
    """
    from .governance.deletion import pending_requests
    from .governance.deletion_log import outcomes
    from .store import ensure_store
    from .warehouse import Warehouse

    settings, project, defs = _load()
    if project.settings.deletion_requests is None:
        raise UserError("project.yaml declares no `deletion_requests:` table; there is nothing to honour.")
    run = _honour_deletion_requests(defs)
    with Warehouse(url=settings.warehouse_url).connect() as conn:
        ensure_store(conn, project.settings.schema_name)
        rows = outcomes(conn, project.settings.schema_name, None if request_id is None else [request_id])
        pending = {r.request_id for r in pending_requests(conn, project)}
    asked = {r["request_id"] for r in rows} | (pending if request_id is None else pending & {request_id})
    if request_id is not None and not asked:
        raise UserError(
            f"no deletion request `{request_id}`: it is neither in the `{project.settings.deletion_requests.table}` "
            "table nor in the proof of earlier runs (composable.deletion_log)."
        )
    table = Table("request", "key", "destination", "via", "status", "detail", title="deletion requests",
                  title_justify="left")
    for request, key, destination, via, status, detail in _newest_outcomes(rows):
        table.add_row(request, key, destination, via, status, detail, style="red" if status == "failed" else None)
    console.print(table)
    left = sorted(asked & pending)
    console.print(f"{len(asked) - len(left)} of {len(asked)} requests done"
                  + (f"; not yet: {', '.join(left)} (tried again on the next run)" if left else ""), highlight=False)
    if not run.success:
        raise _failed(run, "the deletion run")
    if left:
        raise UserError(f"{len(left)} request(s) are not done at every destination yet.")


def _honour_deletion_requests(defs):
    """Run the deletion requests asset in this process; print its errors."""
    import dagster as dg

    from .assets.deletions import DELETION_REQUESTS

    outcome = _execute(defs, dg.AssetSelection.assets(DELETION_REQUESTS))
    for error in outcome.errors:
        err_console.print(f"[red]failed[/] {escape(error)}", highlight=False)
    return outcome


def _newest_outcomes(rows: list[dict]) -> list[tuple[str, ...]]:
    """Per request and destination: the newest outcome of each delivery and identifier, purges in one line."""
    newest: dict[tuple, dict] = {}
    for row in rows:  # oldest first: later rows replace earlier ones
        newest[(row["request_id"], row["destination"], row["source"], row["place"], row["identifier_sha256"])] = row
    lines: dict[tuple, tuple[str, ...]] = {}
    purged: dict[tuple[str, str, str], dict[str, int]] = {}
    for row in newest.values():
        head = (row["request_id"], row["key"], row["destination"])
        if row["identifier_type"] is None and row["status"] == "purged":
            place = row["place"].rsplit(".", 1)[-1].rsplit("/", 1)[-1]  # the table's own name
            places = purged.setdefault(head, {})
            places[place] = places.get(place, 0) + (row["purged_rows"] or 0)
            continue
        via = row["source"] or "-"
        detail = f"{row['identifier_type']}: {row['response']}" if row["identifier_type"] else (row["response"] or "")
        lines[(*head, via, row["identifier_sha256"] or "")] = (*head, via, row["status"], detail)
    for head, places in purged.items():
        removed = ", ".join(f"{place} ({n})" for place, n in places.items())
        lines[(*head, "~", "")] = (*head, "-", "purged", f"rows removed: {removed}")
    return [lines[k] for k in sorted(lines)]


@cli.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Only show what would be archived; nothing is written or deleted.")
@click.option("--before", help="Archive the days before this one (YYYY-MM-DD) instead of those past the retention.")
@click.pass_context
def archive(ctx: click.Context, dry_run: bool, before: str | None) -> None:
    """Move delta logs, sync logs and outboxes older than the retention (project.yaml archive:) to Parquet files.

    `composable archive query "SQL"` reads archived days back.
    """
    if ctx.invoked_subcommand is not None:
        return
    import dagster as dg

    from .assets.archive import ARCHIVE_KEY, outbox_folders
    from .definitions import destinations_of
    from .governance.archive import archive as archive_days, archive_cutoff, archive_location
    from .warehouse import Warehouse

    settings, project, defs = _load()
    try:
        day = dt.date.fromisoformat(before) if before else None
    except ValueError as exc:
        raise UserError(f"--before {before!r} is not a date like 2026-01-31.") from exc
    spec = project.settings.archive
    location = archive_location(spec, settings.data_dir)
    cutoff = archive_cutoff(spec, project.settings.timezone, day)
    if dry_run:
        with Warehouse(url=settings.warehouse_url).connect() as conn:
            report = archive_days(
                conn, location, project.settings.schema_name, cutoff=cutoff, run_id="dry-run", dry_run=True,
                outboxes=outbox_folders(destinations_of(project, settings)),
            )
        _archive_summary(report.table_rows(), f"would archive the days before {cutoff} to {location.display} (dry run)")
        return
    # A real run is a materialization of the archive asset, recorded like any other.
    result = _execute(
        defs, dg.AssetSelection.assets(ARCHIVE_KEY),
        run_config={"ops": {ARCHIVE_KEY.to_python_identifier(): {"config": {"before": before}}}},
    )
    if not result.success:
        raise _failed(result, "archiving (nothing was deleted that is not in a verified archive file)")
    metadata = {k: getattr(v, "value", v) for k, v in result.materialized[ARCHIVE_KEY.to_user_string()].items()}
    _archive_summary(
        metadata["per_table"],
        f"archived {metadata['rows_archived']} rows in {metadata['files_written']} files "
        f"({metadata['bytes_written']} bytes) of the days before {cutoff} to {location.display}",
    )


def _archive_summary(rows: list[dict], title: str) -> None:
    """Rows (outbox: lines), files and bytes per table; a dry run has no bytes yet."""
    columns = ["table", "rows", "files", "bytes", "days"]
    if not any(row["bytes"] for row in rows):
        columns.remove("bytes")
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in ("rows", "files", "bytes") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table if rows else f"{title}: nothing to archive", highlight=False)


@archive.command("query")
@click.argument("sql")
@click.option("--limit", default=100, show_default=True, help="Rows to print at most.")
def archive_query(sql: str, limit: int) -> None:
    """Run one DuckDB SELECT over hot and archived rows: an archived table's name reads both.

    `outbox_archive` holds the archived outbox lines (destination, owner, day, file, line), e.g.
    composable archive query "SELECT day, count(*) FROM delta_runs GROUP BY day ORDER BY day"
    """
    from .governance.archive import ArchiveError, archive_location, query
    from .warehouse import Warehouse

    settings, project, _ = _load()
    location = archive_location(project.settings.archive, settings.data_dir)
    try:
        with Warehouse(url=settings.warehouse_url).connect() as conn:
            result = query(conn, location, project.settings.schema_name, sql)
    except ArchiveError as exc:
        raise UserError(str(exc)) from exc
    except Exception as exc:  # DuckDB's own message: an unknown table or column, a type error
        if type(exc).__module__.split(".")[0] != "duckdb":
            raise
        raise UserError(f"the query failed: {exc}") from exc
    table = Table(*result.column_names)
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)
    if result.num_rows > limit:
        console.print(f"{result.num_rows} rows; the first {limit} shown (--limit)", highlight=False)


@cli.command()
@click.option("--customers", default=2000, show_default=True, help="Size of the generated sample.")
@click.option("--changes/--no-changes", default=True, show_default=True,
              help="After the first sync, apply a day of changes and sync again.")
def demo(customers: int, changes: bool) -> None:
    """Seed the retail sample and run every sync once (then once more after a day of changes).

    Braze and Iterable are local stand-ins unless BRAZE_REST_ENDPOINT / ITERABLE_BASE_URL are set.
    """
    from .fakes.local import local_destinations
    from .landing import landing_folders
    from .sample import SAMPLE_PROJECT_DIR, generator
    from .warehouse import Warehouse

    settings, project, defs = _load(str(SAMPLE_PROJECT_DIR))
    today = dt.date.fromisoformat(_today(project))
    warehouse = Warehouse(url=settings.warehouse_url)
    with warehouse.connect() as conn:
        if not hasattr(conn, "raw"):
            raise UserError("the demo seeds its sample into DuckDB; set COMPOSABLE_WAREHOUSE to a duckdb:/// URL.")
        counts = generator.seed(conn.raw, customers=customers, as_of=today)
    # Files still waiting from an earlier `composable simulate` belong to the data just replaced.
    for folder in landing_folders(project.settings.landing, settings.data_dir).values():
        for file in folder.pending():
            file.unlink()
    console.print(f"seeded the retail sample into {warehouse.engine.describe()}: "
                  + ", ".join(f"{n} {t}" for t, n in counts.items()), highlight=False)
    everything = _all_sync_work(defs)
    with local_destinations() as fakes:
        for name, fake in fakes.items():
            console.print(f"{name}: a local stand-in at {fake.url} (real HTTP)", highlight=False)
        _demo_deletions(defs, warehouse, project)
        outcome = _run(defs, everything, today.isoformat(), f"sync ({today})")
        if changes and outcome.success:
            with warehouse.connect() as conn:
                changed = generator.apply_day_of_changes(conn.raw, today)
            console.print("applied a day of changes: " + ", ".join(f"{n} {k}" for k, n in changed.items()),
                          highlight=False)
            _demo_deletions(defs, warehouse, project)
            outcome = _run(defs, everything, today.isoformat(), f"after a day of changes ({today})")
        for name, fake in fakes.items():
            ok = sum(1 for r in fake.requests if r.status is not None and r.status < 300)
            console.print(f"{name} stand-in received {len(fake.requests)} requests ({ok} accepted) "
                          f"and holds {len(fake.users)} profiles", highlight=False)
    console.print(
        f"\nOutbox files (what was sent): {settings.outbox_dir}\n"
        f"Warehouse: {warehouse.engine.describe()}\n"
        "See it in Dagster: make ui, then open http://127.0.0.1:3000",
        highlight=False,
    )
    if not outcome.success:
        raise _failed(outcome, "the demo's run")


@cli.command()
@click.option("--interval", default=3.0, show_default=True, help="Seconds between ticks.")
@click.option("--ticks", type=int, help="Stop after this many ticks (default: until Ctrl-C).")
@click.option("--orders", "orders_per_tick", default=3, show_default=True, help="New orders per tick.")
def simulate(interval: float, ticks: int | None, orders_per_tick: int) -> None:
    """Land live traffic for the sample (orders, cart events, profile edits) every few seconds."""
    settings, project, _ = _load()
    stop = _simulation(settings, project, interval, ticks, orders_per_tick, quiet=False)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    stop.set()


def _simulation(settings, project, interval: float, ticks: int | None, orders_per_tick: int, quiet: bool):
    """Start the simulator in a thread; the returned event is set when it has stopped (or to stop it)."""
    import threading

    from .landing import landing_folders
    from .sample.simulator import Simulator
    from .warehouse import Warehouse, WarehouseError

    folders = landing_folders(project.settings.landing, settings.data_dir)
    try:
        simulator = Simulator(folders, Warehouse(url=settings.warehouse_url), orders_per_tick=orders_per_tick)
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


@cli.command()
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI on 127.0.0.1.")
@click.option("--simulate", is_flag=True, help="Also land live sample traffic every 3 s (see `composable simulate`).")
def ui(port: int, simulate: bool) -> None:
    """Start the Dagster UI and daemon (dagster dev) with local Braze/Iterable stand-ins unless real ones are set."""
    import os
    import signal
    import subprocess

    from .fakes.local import local_destinations

    settings, project, _ = _load()  # fail here, with a readable message, rather than inside the webserver
    if simulate:
        _simulation(settings, project, 3.0, None, 3, quiet=True)
    with local_destinations() as fakes:
        for name, fake in fakes.items():
            console.print(f"{name}: a local stand-in at {fake.url}", highlight=False)
        command = [
            str(Path(sys.executable).with_name("dagster")), "dev",
            "-m", "composable_assets.definitions", "-a", "defs", "-h", "127.0.0.1", "-p", str(port),
        ]
        console.print(f"Dagster UI: http://127.0.0.1:{port} (Ctrl-C stops it)", highlight=False)
        # Started from a script, a process may inherit SIGINT ignored: restore the defaults in dagster dev,
        # and pass our own SIGINT/SIGTERM on to it, so either stops the UI cleanly.
        process = subprocess.Popen(command, env=os.environ.copy(), preexec_fn=_default_signals)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: process.send_signal(signal.SIGINT))
        process.wait()


def _default_signals() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _all_sync_work(defs):
    import dagster as dg

    from .assets.deletions import DELETION_REQUESTS

    # Deletion requests run on their own, first (`_demo_deletions`).
    return dg.AssetSelection.all() - dg.AssetSelection.groups("sources") - dg.AssetSelection.assets(DELETION_REQUESTS)


def _demo_deletions(defs, warehouse, project) -> None:
    """Honour the sample's deletion requests before its syncs, and say in one line what that did."""
    from .governance.deletion_log import deletion_log
    from .store import ensure_store

    run = _honour_deletion_requests(defs)
    with warehouse.connect() as conn:
        ensure_store(conn, project.settings.schema_name)
        counts = dict(conn.fetch_all(
            f"SELECT status, count(*) FROM {deletion_log(project.settings.schema_name)} WHERE run_id = ? "
            "GROUP BY status ORDER BY status", [run.run_id],
        ))
    console.print("deletion requests (before the syncs): "
                  + (", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing new"), highlight=False)


def _pair_keys(audience: str, destination: str):
    import dagster as dg

    from .project.keys import delta_key, sync_key

    return dg.AssetSelection.assets(delta_key(audience, destination), sync_key(audience, destination))


def _check_target(project, audience: str, destination: str | None) -> None:
    if audience not in project.audiences:
        raise UserError(f"no audience {audience!r}; the project has: {', '.join(sorted(project.audiences)) or 'none'}.")
    names = [s.destination for s in project.audiences[audience].syncs]
    if destination is not None and destination not in names:
        raise UserError(f"audience {audience!r} does not sync to {destination!r}; it syncs to: {', '.join(names)}.")


def _partition(project, date: str | None) -> str:
    if date is None:
        return _today(project)
    try:
        day = dt.date.fromisoformat(date)
    except ValueError as exc:
        raise UserError(f"--date {date!r} is not a date like 2026-01-31.") from exc
    # The daily partitions run from start_date through today in the project's timezone; Dagster knows no other day.
    today = _today(project)
    if not project.settings.start_date <= day <= dt.date.fromisoformat(today):
        raise UserError(
            f"--date {day} is outside the project's days: {project.settings.start_date} .. {today} "
            f"(today in {project.settings.timezone}). Pick a day in that range; an earlier one needs an earlier "
            "start_date in project.yaml."
        )
    return day.isoformat()


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as exc:
        if debug and isinstance(exc, UserError):
            traceback.print_exc()
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except Exception as exc:  # anything unexpected: one paragraph, the traceback only on request
        if debug:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        if not debug:
            err_console.print("(run again with --debug for the traceback)")
        sys.exit(1)

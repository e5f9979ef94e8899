"""Governance commands: explain (provenance), forget (deletion requests), archive (and archive query)."""

from __future__ import annotations

import datetime as dt

import click
from rich.markup import escape
from rich.table import Table

from .common import UserError, execute, failed, load, warehouse_of
from .render import archive_summary, console, err_console, print_explanation

# The rest of composable_assets (and dagster with it) is imported inside the commands: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


@click.command()
@click.argument("customer_id")
@click.option("--audience", help="Only what this audience sent.")
@click.option("--destination", help="Only what was sent to this destination.")
@click.option("--since", help="Only what was sent on or after this day, YYYY-MM-DD.")
def explain(customer_id: str, audience: str | None, destination: str | None, since: str | None) -> None:
    """What was sent where for one person (an audience primary key), and why.

    Every change sent (or rejected) per destination with the run, code and data it came from, the events streams
    sent, what each destination holds now, audience membership, consent and deletion requests.
    """
    from ..governance.provenance import explain as explain_person

    settings, project, defs = load()
    try:
        day = dt.date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise UserError(f"--since {since!r} is not a date like 2026-01-31.") from exc
    with warehouse_of(defs).connect() as conn:
        found = explain_person(conn, project, customer_id, audience=audience, destination=destination, since=day)
    if not found.known:
        raise UserError(
            f"no record of {customer_id!r}: never sent to a destination, in no audience, no consent or deletion "
            "request (the key is an audience's primary key, e.g. a customer_id)."
        )
    print_explanation(found)


@click.command()
@click.option("--request", "request_id", help="Only this request id.")
def forget(request_id: str | None) -> None:
    """Honour deletion requests now, then show per request and destination what happened.

    Exit 1 unless every request is done (a failed destination is tried again by the next run).
    """
    from ..governance.deletion import pending_requests
    from ..governance.deletion_log import outcomes
    from ..store import ensure_store

    settings, project, defs = load()
    if project.settings.deletion_requests is None:
        raise UserError("project.yaml declares no `deletion_requests:` table; there is nothing to honour.")
    run = honour_deletion_requests(defs)
    with warehouse_of(defs).connect() as conn:
        ensure_store(conn, project.settings.schema_name)
        rows = outcomes(conn, project.settings.schema_name, None if request_id is None else [request_id])
        pending = {r.request_id for r in pending_requests(conn, project)}
    asked = {r["request_id"] for r in rows} | (pending if request_id is None else pending & {request_id})
    if request_id is not None and not asked:
        raise UserError(
            f"no deletion request `{request_id}`: it is neither in the `{project.settings.deletion_requests.table}` "
            "table nor in the proof of earlier runs (composable.deletion_log)."
        )
    table = Table(
        "request", "key", "destination", "via", "status", "detail", title="deletion requests", title_justify="left"
    )
    for request, key, destination, via, status, detail in _newest_outcomes(rows):
        table.add_row(request, key, destination, via, status, detail, style="red" if status == "failed" else None)
    console.print(table)
    left = sorted(asked & pending)
    console.print(
        f"{len(asked) - len(left)} of {len(asked)} requests done"
        + (f"; not yet: {', '.join(left)} (tried again on the next run)" if left else ""),
        highlight=False,
    )
    if not run.success:
        raise failed(run, "the deletion run")
    if left:
        raise UserError(f"{len(left)} request(s) are not done at every destination yet.")


def honour_deletion_requests(defs):
    """Run the deletion requests asset in this process; print its errors."""
    import dagster as dg

    from ..assets.deletions import DELETION_REQUESTS

    outcome = execute(defs, dg.AssetSelection.assets(DELETION_REQUESTS))
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


@click.group(invoke_without_command=True)
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

    from ..assets.archive import ARCHIVE_KEY, outbox_folders
    from ..definitions import destinations_of
    from ..governance.archive import archive as archive_days, archive_cutoff, archive_location

    settings, project, defs = load()
    try:
        day = dt.date.fromisoformat(before) if before else None
    except ValueError as exc:
        raise UserError(f"--before {before!r} is not a date like 2026-01-31.") from exc
    spec = project.settings.archive
    location = archive_location(spec, settings.data_dir)
    cutoff = archive_cutoff(spec, project.settings.timezone, day)
    if dry_run:
        with warehouse_of(defs).connect() as conn:
            report = archive_days(
                conn,
                location,
                project.settings.schema_name,
                cutoff=cutoff,
                run_id="dry-run",
                dry_run=True,
                outboxes=outbox_folders(destinations_of(project, settings)),
            )
        archive_summary(report.table_rows(), f"would archive the days before {cutoff} to {location.display} (dry run)")
        return
    # A real run is a materialization of the archive asset, recorded like any other.
    result = execute(
        defs,
        dg.AssetSelection.assets(ARCHIVE_KEY),
        run_config={"ops": {ARCHIVE_KEY.to_python_identifier(): {"config": {"before": before}}}},
    )
    if not result.success:
        raise failed(result, "archiving (nothing was deleted that is not in a verified archive file)")
    metadata = {k: getattr(v, "value", v) for k, v in result.materialized[ARCHIVE_KEY.to_user_string()].items()}
    archive_summary(
        metadata["per_table"],
        f"archived {metadata['rows_archived']} rows in {metadata['files_written']} files "
        f"({metadata['bytes_written']} bytes) of the days before {cutoff} to {location.display}",
    )


@archive.command("query")
@click.argument("sql")
@click.option("--limit", default=100, show_default=True, help="Rows to print at most.")
def archive_query(sql: str, limit: int) -> None:
    """Run one DuckDB SELECT over hot and archived rows: an archived table's name reads both.

    `outbox_archive` holds the archived outbox lines (destination, owner, day, file, line), e.g.
    composable archive query "SELECT day, count(*) FROM delta_runs GROUP BY day ORDER BY day"
    """
    from ..governance.archive import ArchiveError, archive_location, query

    settings, project, defs = load()
    location = archive_location(project.settings.archive, settings.data_dir)
    try:
        with warehouse_of(defs).connect() as conn:
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

"""What the command groups share: the error a user can act on, loading the project, running assets in this process."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.markup import escape

from ..settings import NoProjectError, Settings
from .render import LiveRun, err_console, summary

# The rest of composable_assets (and dagster with it) is imported inside the functions: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


class UserError(click.ClickException):
    """An error the user can act on: printed as one paragraph, exit code 1."""

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.message)}", highlight=False)


def debug() -> bool:
    """`composable --debug ...`: Dagster's whole log and the stack traces."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().obj or {}).get("debug"))


def project_today(project) -> str:
    return dt.datetime.now(ZoneInfo(project.settings.timezone)).date().isoformat()


def load(project_dir: str | Path | None = None, *, fallback_project_dir: Path | None = None, columns: bool = False):
    """Settings, project and definitions; errors in the project folder become a UserError.

    The project folder is `project_dir`, else the one the user named (COMPOSABLE_PROJECT_DIR, or the current folder
    if it holds a project.yaml), else `fallback_project_dir` (the demo commands pass the demo's), else an error.
    `columns`: read the source tables' columns from the warehouse (one query) and check every column against them
    (project/schema.py); what could not be checked is in `project.schema.skipped`. Only the commands that check or
    trace columns ask: every other command starts without that round-trip.
    """
    from ..definitions import build_definitions
    from ..destinations import DESTINATION_TYPES
    from ..project import ProjectError, load_project
    from ..project.schema import with_cached_columns
    from ..warehouse import WarehouseError

    try:
        settings = Settings.from_env(
            project_dir=Path(project_dir) if project_dir else None, fallback_project_dir=fallback_project_dir
        )
    except NoProjectError as exc:
        raise UserError(str(exc)) from exc
    try:
        lookup = None
        if columns:
            from ..project.schema import warehouse_lookup
            from ..warehouse import engine_from_url

            lookup = warehouse_lookup(engine_from_url(settings.warehouse_url))
        project = load_project(
            settings.project_dir,
            known_destination_types=DESTINATION_TYPES,
            columns=lookup,
            warehouse_url=settings.warehouse_url,
        )
        if project.schema is not None:
            from ..project.schema import SNAPSHOT_FILE, write_snapshot

            # The definitions loaded by Dagster derive columns from it without a warehouse round-trip.
            write_snapshot(settings.data_dir / SNAPSHOT_FILE, settings.warehouse_url, project.schema)
        else:
            project = with_cached_columns(project, settings.data_dir, settings.warehouse_url)
        return settings, project, build_definitions(project, settings)
    except ProjectError as exc:
        raise UserError(f"the project folder {settings.project_dir} has errors:\n{exc}") from exc
    except WarehouseError as exc:  # COMPOSABLE_WAREHOUSE names no warehouse we can use
        raise UserError(str(exc)) from exc


def warehouse_of(defs):
    """The warehouse resource the definitions' assets use: the commands read and write through the same one."""
    return defs.resources["warehouse"]


def execute(defs, selection, partition_key=None, **options):
    """Run the selection in this process, showing progress, warnings and errors as they come (not Dagster's log)."""
    from ..runner import instance, run_selection

    # Dagster's own console lines only with --debug; the instance keeps every event either way.
    with LiveRun() as live:
        return run_selection(
            defs, selection, partition_key, instance(), log_level="DEBUG" if debug() else None, watcher=live, **options
        )


def execute_job(defs, job_name: str, run_config: dict):
    """One of the definitions' op jobs, run in this process as `execute` runs assets."""
    from ..runner import instance, run_job

    with LiveRun() as live:
        return run_job(defs, job_name, instance(), run_config, log_level="DEBUG" if debug() else None, watcher=live)


def run_with_summary(defs, selection, partition_key, title: str):
    """`execute`, then the summary table."""
    outcome = execute(defs, selection, partition_key)
    summary(outcome, title)
    return outcome


def failed(outcome, doing: str) -> UserError:
    """One paragraph: what failed and why, step by step (the stack traces are in the run's log)."""
    if len(outcome.errors) == 1:
        detail = f": {outcome.errors[0]}"
    elif outcome.errors:
        detail = f" in {len(outcome.errors)} steps:\n" + "\n".join(f"  {error}" for error in outcome.errors)
    else:
        detail = f" (run {outcome.run_id})"
    hint = "" if debug() else "\n(composable --debug ... prints Dagster's whole log, with stack traces)"
    return UserError(f"{doing} failed{detail}{hint}")

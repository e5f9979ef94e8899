"""Commands on a project folder: init, validate, lineage."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .common import UserError, load
from .render import console, err_console

# The rest of composable_assets (and dagster with it) is imported inside the commands: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


@click.command()
@click.argument("directory", type=click.Path(file_okay=True, path_type=Path))
@click.option("--force", is_flag=True, help="Write into a folder that is not empty (same-named files are replaced).")
def init(directory: Path, force: bool) -> None:
    """Create a new project folder that validates and syncs at once: a model, an audience, destinations, a README.

    It runs on the embedded DuckDB file and syncs to an outbox (JSON Lines files): no warehouse or credentials
    needed. Braze and Iterable are declared with {env: NAME} placeholders, unused until an audience names them.
    """
    from ..scaffold import ScaffoldError, create_project

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
        highlight=False,
        markup=False,
    )


@click.command()
@click.option(
    "--project",
    "project_dir",
    help="Project folder (default: COMPOSABLE_PROJECT_DIR, or the current folder if it holds project.yaml).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Do not read the warehouse: columns are checked only where the model SQL lists them (no `select *`).",
)
def validate(project_dir: str | None, offline: bool) -> None:
    """Check a project folder: files, fields, SQL, references, and every column against the warehouse's tables.

    The source tables' columns are read from the warehouse in one query; each model's columns follow from its SQL,
    through `select *`. What could not be checked (no warehouse, a table not created yet) is listed, never an error.
    """
    settings, project, defs = load(project_dir, columns=not offline)
    defs.resolve_asset_graph()  # Dagster's own checks on keys, owners and dependencies
    # Python models were parsed when the project loaded; here their files are also imported (never run), so a
    # missing package is found now rather than by the first sync.
    from ..project.python_models import import_problem

    problems = [p for m in project.models.values() if m.is_python if (p := import_problem(m.path))]
    for problem in problems:
        problem.root = project.root
    if problems:
        listed = "\n".join(str(p) for p in problems)
        raise UserError(f"the project folder {settings.project_dir} has errors:\n{listed}")
    console.print(
        f"[green]ok[/] {settings.project_dir}: {len(project.models)} models, {len(project.audiences)} audiences, "
        f"{sum(len(a.syncs) for a in project.audiences.values())} syncs, {len(project.destinations)} destinations, "
        f"{len(project.streams)} event streams, "
        f"sources: {', '.join(project.sources) or 'none'}",
        highlight=False,
    )
    _print_column_checks(project, offline)
    # How minute-level runs keep each model and audience: by key where the SQL allows it, else in full (and why).
    from ..assets.audiences import audience_refresh

    for name, refresh in sorted(project.refreshes.items()):
        console.print(f"  model {escape(name)}: {escape(refresh.describe())}", highlight=False)
    for name, audience in sorted(project.audiences.items()):
        if audience.cadence == "minutes" and audience.model in project.refreshes:
            text = audience_refresh(audience, project.refreshes[audience.model])
            console.print(f"  audience {escape(name)}: {escape(text)}", highlight=False)
    # Unset variables are no error (a destination nothing syncs to may keep placeholders), but a used one fails.
    from ..project import MissingSecretError

    used = {s.destination for a in project.audiences.values() for s in a.syncs}
    used |= {s.destination for stream in project.streams.values() for s in stream.syncs}
    for name in sorted(used & set(project.destinations)):
        try:
            project.destinations[name].resolved_settings()
        except MissingSecretError as exc:
            err_console.print(
                f"[yellow]warning:[/] destination {name}: {escape(exc.message)}; its syncs fail until it is set.",
                highlight=False,
            )


def _print_column_checks(project, offline: bool) -> None:
    """Whether the columns were checked against the warehouse and, if not all, which checks did not run and why."""
    if offline or project.schema is None:
        console.print(
            "  columns not checked against the warehouse (--offline): only those of models whose SQL lists them",
            highlight=False,
        )
        return
    if not project.schema.reachable:
        for note in project.schema.skipped:
            console.print(f"  [yellow]{escape(note)}[/]", highlight=False)
        return
    known = sum(1 for m in project.models.values() if m.columns is not None)
    if not project.schema.skipped:
        against = " against the warehouse" if project.schema.looked_up else ""  # models over inline VALUES need none
        console.print(f"  columns: all checked{against} ({known} models)", highlight=False)
        return
    console.print(
        f"  columns checked against the warehouse for {known} of {len(project.models)} models; not checked:",
        highlight=False,
    )
    for note in project.schema.skipped:
        console.print(f"  [yellow]-[/] {escape(note)}", highlight=False)


@click.command()
@click.argument("column")
@click.option(
    "--offline",
    is_flag=True,
    help="Do not read the warehouse: use the columns the last validate read (without them, lineage stops at `*`).",
)
def lineage(column: str, offline: bool) -> None:
    """Where a column goes: TABLE.COLUMN -> every destination field it reaches; DESTINATION.FIELD -> its sources.

    TABLE is a source table, a model or an audience (a destination's name is read as DESTINATION); lineage is
    derived from the model SQL, never declared, with the source tables' columns read from the warehouse so that it
    goes through `select *`.
    """
    from ..governance.lineage import column_lineage, destination_fields, source_columns
    from ..project.schema import with_cached_columns

    settings, project, _ = load(columns=not offline)
    for note in project.schema.skipped if project.schema is not None else []:
        err_console.print(f"[yellow]lineage may be partial:[/] {escape(note)}", highlight=False)
    if project.schema is not None and not project.schema.reachable:
        # The columns the last validate read are better than none (--offline uses them too).
        project = with_cached_columns(project, settings.data_dir, settings.warehouse_url)
    name, _, field = column.rpartition(".")
    if not name or not field:
        raise UserError(f"expected TABLE.COLUMN or DESTINATION.FIELD, got {column!r}")
    from ..project.keys import model_key

    deps = column_lineage(project)
    if name in project.destinations:
        # A dbt seed is where data starts, as a source table is.
        seeds = frozenset(model_key(m.name) for m in project.models.values() if m.is_seed)
        sources = source_columns(deps, name, field, seeds)
        if sources is None:
            raise UserError(f"destination {name!r} is sent no field {field!r}")
        table = Table("source table", "column", title=f"{column} comes from")
        for key, col in sources:
            table.add_row(key.path[-1] + (" (dbt seed)" if key in seeds else ""), col)
    else:
        reached = destination_fields(deps, name, field)
        if reached is None:
            raise UserError(f"no column {column!r} in the project's sources, models or audiences")
        table = Table("destination", "field", "via", title=f"{column} reaches")
        for key, col in reached:
            table.add_row(key.path[-1], col, key.to_user_string())
    console.print(table)

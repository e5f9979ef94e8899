"""Getting data in and building it: seed (a file into a warehouse table) and build (materialize the models)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .common import UserError, execute, execute_job, failed, load, warehouse_of
from .render import console

# The rest of composable_assets (and dagster with it) is imported inside the commands: importing dagster alone
# takes ~2 s, which `composable --help` and `composable init` need not wait for.


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--table", required=True, help="The table to load into, in the warehouse's default schema.")
@click.option("--append", is_flag=True, help="Add the rows to the table (by column name) instead of replacing it.")
@click.option("--delimiter", default=",", show_default=True, help="A CSV file's field separator (e.g. ';', or a tab).")
@click.option(
    "--text",
    multiple=True,
    metavar="COLUMN",
    help="Keep this CSV column as text whatever its values look like (an id that looks numeric); repeatable.",
)
def seed(file: Path, table: str, append: bool, delimiter: str, text: tuple[str, ...]) -> None:
    """Load a CSV, Parquet or JSON Lines file into a warehouse table: replaced, or with --append added to.

    All or nothing: a bad row (named by its line) or any other error leaves the table as it was. Runs the `seed`
    job in this process, so the run and the table's new contents show in the Dagster UI.
    """
    from ..assets.seeds import SEED_JOB, refuse_model
    from ..landing.seed import SeedError, check_table_name

    settings, project, defs = load()
    try:
        check_table_name(table)
    except SeedError as exc:
        raise UserError(f"--table: {exc}") from exc
    if table in project.models:
        raise UserError(refuse_model(table))
    # \t typed in a shell arrives as two characters; a tab is what is meant.
    delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
    config = {
        "file": str(file.absolute()),
        "table": table,
        "append": append,
        "delimiter": delimiter,
        "text": list(text),
    }
    outcome = execute_job(defs, SEED_JOB, {"ops": {"seed_table": {"config": config}}})
    if not outcome.success:
        # The seed's own message names the file and the line; the run (its id) is in the instance.
        raise UserError("\n".join(outcome.errors) or f"the seed failed (run {outcome.run_id})")
    (metadata,) = outcome.materialized.values()
    schema = metadata["dagster/column_schema"].value
    columns = ", ".join(f"{c.name} {c.type.lower()}" for c in schema.columns)
    done = "appended" if metadata["appended"].value else "loaded"
    console.print(
        f"[green]{done}[/] {metadata['rows_loaded'].value} rows from {file} into table {table} of "
        f"{warehouse_of(defs).engine.describe()}: {columns}",
        highlight=False,
    )


@click.command()
@click.option(
    "--select",
    "selected",
    multiple=True,
    metavar="MODEL",
    help="Only this model (repeatable); +MODEL also builds the models it reads, MODEL+ the models reading it.",
)
def build(selected: tuple[str, ...]) -> None:
    """Materialize every model (or the selected ones) in the warehouse, then print a summary; exit 1 on a failure."""
    from ..definitions import models_selection

    settings, project, defs = load()
    models = _model_keys(defs)
    if not models:
        raise UserError(f"the project {settings.project_dir} has no models (models/*.sql, models/*.py) to build.")
    selection = _selection(project, selected, models) if selected else models_selection(project)
    outcome = execute(defs, selection)
    _summary(outcome, models)
    if not outcome.success:
        raise failed(outcome, "the build")


def _model_keys(defs) -> dict:
    """Model name -> asset key, for every asset in the models group, whatever made it (SQL, Python, ...)."""
    from ..project.keys import MODELS

    graph = defs.resolve_asset_graph()
    return {
        key.path[-1]: key
        for key in sorted(graph.get_all_asset_keys())
        if graph.get(key).is_materializable and graph.get(key).group_name == MODELS
    }


def _selection(project, selected: tuple[str, ...], models: dict):
    """dbt's --select, in short: NAME alone, +NAME with what it reads upstream, NAME+ with what reads it."""
    import dagster as dg

    from ..project.keys import MODELS, source_key

    group = dg.AssetSelection.groups(MODELS)
    # Landing loads run before the models upstream of a +NAME, as `composable sync` runs them.
    landed = dg.AssetSelection.assets(*(source_key(t) for t in project.settings.landing))
    chosen: dg.AssetSelection = dg.AssetSelection.assets()
    for text in selected:
        name = text.strip("+")
        if name not in models:
            raise UserError(f"--select {text}: no model {name!r}; the project has: {', '.join(models)}.")
        one: dg.AssetSelection = dg.AssetSelection.assets(models[name])
        if text.startswith("+"):
            one = one.upstream() & (group | landed)
        if text.endswith("+"):
            one |= dg.AssetSelection.assets(models[name]).downstream() & group
        chosen |= one
    return chosen


def _summary(outcome, models: dict) -> None:
    """One row per model the run materialized: rows, and whether it was recomputed or kept (nothing it reads changed)."""
    from ..assets.models import SKIPPED

    names = {key.to_user_string(): name for name, key in models.items()}
    table = Table(title="build", title_justify="left")
    for column in ("model", "rows", "refresh"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    built = kept = 0
    for key, metadata in sorted(outcome.materialized.items()):
        if key not in names:
            continue  # a landing load run first
        rows, mode = metadata.get("dagster/row_count"), metadata.get("mode")
        refresh = str(getattr(mode, "value", mode) or "full")  # a Python model always runs in full
        if refresh.startswith(SKIPPED):
            kept += 1
            refresh = "kept: nothing it reads changed"
        else:
            built += 1
        # A dbt view's materialization carries no row count (assets/dbt_models.py): unknown, not 0.
        count = getattr(rows, "value", rows)
        table.add_row(names[key], "?" if count is None else str(count), refresh)
    if built or kept:
        console.print(table)
    failures = f", {len(outcome.errors)} failed" if outcome.errors else ""
    console.print(f"{built} model(s) built, {kept} unchanged{failures}", highlight=False)

"""The `seed` job: a file into a warehouse table from the Dagster UI, as `composable seed` does from a terminal."""

# No `from __future__ import annotations`: Dagster reads the op's config annotation (SeedConfig) as a class.
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..landing.seed import SeedError, seed_file
from ..project.keys import WAREHOUSE_POOL, source_key
from ..warehouse import Warehouse

SEED_JOB = "seed"


class SeedConfig(dg.Config):
    """Which file goes into which table (the launchpad's run config)."""

    file: str = Field(description="A .csv, .parquet or .jsonl file on the machine the run runs on.")
    table: str = Field(description="The table to load it into, in the warehouse's default schema (where models read).")
    append: bool = Field(default=False, description="Add the rows to the table instead of replacing it.")
    delimiter: str = Field(default=",", description="A CSV file's field separator.")
    text: list[str] = Field(default=[], description="CSV columns kept as text (an id that looks numeric).")


def seed_job(models: frozenset[str] = frozenset()) -> dg.JobDefinition:
    """The job; `models`: the project's models, whose tables a seed must not overwrite."""

    @dg.op(name="seed_table", pool=WAREHOUSE_POOL, description="Load one file into one warehouse table.")
    def seed_table(context: dg.OpExecutionContext, config: SeedConfig, warehouse: Warehouse) -> None:
        if config.table in models:
            raise dg.Failure(description=refuse_model(config.table))
        try:
            with warehouse.connect() as conn:
                report = seed_file(
                    conn,
                    Path(config.file),
                    config.table,
                    append=config.append,
                    delimiter=config.delimiter,
                    text=config.text,
                )
        except SeedError as exc:
            raise dg.Failure(description=str(exc)) from exc
        # The table is a source the models read: its new contents show on that asset in the UI.
        context.log_event(
            dg.AssetMaterialization(
                asset_key=source_key(report.table),
                description=f"{'appended' if report.appended else 'replaced'} from {report.file.name}",
                metadata={
                    "file": str(report.file),
                    "rows_loaded": report.rows,
                    "appended": report.appended,
                    "dagster/column_schema": dg.TableSchema(
                        columns=[dg.TableColumn(name, type_) for name, type_ in report.columns]
                    ),
                },
            )
        )

    @dg.job(
        name=SEED_JOB, description="Load a CSV, Parquet or JSON Lines file into a warehouse table (replace or append)."
    )
    def _seed() -> None:
        seed_table()

    return _seed


def refuse_model(table: str) -> str:
    return (
        f"{table!r} is a model of this project, rebuilt from its file by every run; seed a source table the model "
        "reads instead (another name)"
    )

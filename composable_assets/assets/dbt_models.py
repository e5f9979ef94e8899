"""dbt models: the project's dbt project as one dagster-dbt multi-asset; its models and seeds are models, its tests
asset checks.

Keys follow the project's own: a dbt model or seed `customers` is `model/customers`, as a models/customers.sql file
would be, so an audience names it `model: customers` and depends on it; a dbt source table is `source/<table>`, the
key the source observer gives every table models read. A run builds the selected nodes with `dbt build` (tests
included, reported as asset checks: a failing test fails the step and stops the syncs downstream of it) in dbt's own
process, on the warehouse the generated profile names (project/dbt.py).

dagster-dbt and dbt are imported only when a project has a dbt project: `composable` commands on other projects do
not pay for them (~1 s).
"""

# No `from __future__ import annotations`: Dagster reads the compute function's annotations (context, resources)
# as objects.
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from ..delta.changes import journal_everything
from ..delta.refresh import utc_now
from ..project import ModelSpec
from ..project.dbt import INSTALL_HINT, DbtProject, dbt_executable
from ..project.keys import MODELS, SOURCES, WAREHOUSE_POOL, model_key, source_key
from ..store import ensure_store
from ..warehouse import Warehouse
from .metadata import LINEAGE, SCHEMA


@dataclass(frozen=True)
class DbtAssets:
    """What the dbt multi-asset is built from."""

    dbt: DbtProject
    #: The project's models read from the dbt project, by name.
    models: Mapping[str, ModelSpec]
    schema: str
    #: The project folder: the `file` metadata of each dbt model is relative to it, as a SQL model's is.
    project_root: Path


def _require_dagster_dbt(dbt: DbtProject) -> None:
    try:
        import dagster_dbt  # noqa: F401
    except ImportError:
        raise dbt.error(f"dbt: dagster-dbt is not installed; {INSTALL_HINT}") from None


def dbt_resource(dbt: DbtProject) -> dg.ConfigurableResource:
    """dagster-dbt's DbtCliResource on the project's dbt project, its profiles and target."""
    _require_dagster_dbt(dbt)
    from dagster_dbt import DbtCliResource

    executable = dbt_executable()
    if executable is None:
        raise dbt.error(f"dbt: the `dbt` command is not installed; {INSTALL_HINT}")
    return DbtCliResource(
        project_dir=str(dbt.project_dir),
        profiles_dir=str(dbt.profiles_dir),
        target=dbt.target,
        # Found beside this Python when the virtualenv is not activated (DbtCliResource looks on PATH only).
        dbt_executable=executable,
    )


def build_dbt_assets(spec: DbtAssets) -> dg.AssetsDefinition:
    """One asset per dbt model and seed (keys `model/<name>`), one asset check per dbt test, built by `dbt build`."""
    _require_dagster_dbt(spec.dbt)
    from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

    models, schema, root = spec.models, spec.schema, spec.project_root

    class Translator(DagsterDbtTranslator):
        """Keys, groups and owners as the project's own models and sources have them."""

        def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
            if dbt_resource_props["resource_type"] == "source":
                return source_key(str(dbt_resource_props.get("identifier") or dbt_resource_props["name"]))
            return model_key(dbt_resource_props["name"])

        def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
            return SOURCES if dbt_resource_props["resource_type"] == "source" else MODELS

        def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> Sequence[str] | None:
            model = models.get(dbt_resource_props["name"])
            return (model.owners if model is not None else None) or super().get_owners(dbt_resource_props)

        def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
            model = models.get(dbt_resource_props["name"])
            metadata = dict(super().get_metadata(dbt_resource_props))
            if model is not None:
                metadata["file"] = str(model.path.relative_to(root) if model.path.is_relative_to(root) else model.path)
            return metadata

    translator = Translator()

    @dbt_assets(
        manifest=spec.dbt.manifest_path,
        dagster_dbt_translator=translator,
        name=f"dbt_{spec.dbt.name}",
        pool=WAREHOUSE_POOL,
    )
    def _dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse) -> Iterator[Any]:
        """Build the selected dbt models and seeds with `dbt build`; each dbt test reports as an asset check."""
        built = [key.path[-1] for key in context.selected_asset_keys]
        # Readers downstream are told every row of these may change, before dbt replaces them (as for Python
        # models). The connection is closed before dbt starts: DuckDB admits one process on a file.
        with warehouse.connect() as conn:
            ensure_store(conn, schema)
            now = utc_now()
            for name in built:
                journal_everything(conn, schema, name, now=now)
        # Row counts of the tables (not views) through dbt's adapter here, as each is built: on DuckDB only because
        # the profile says keep_open: false and both processes wait for the file's lock (warehouse/duckdb_engine.py).
        for event in dbt.cli(["build"], context=context).stream().fetch_row_counts():
            yield _with_definition_columns(context, event)

    return _dbt


def _with_definition_columns(context: dg.AssetExecutionContext, event: Any) -> Any:
    """A dbt materialization with its model's column lineage and PII-tagged column schema, as other models have."""
    if not isinstance(event, dg.Output):
        return event
    key = context.asset_key_for_output(event.output_name)
    defined = context.assets_def.specs_by_key[key].metadata
    extra = {name: defined[name] for name in (LINEAGE, SCHEMA) if name in defined}
    return event.with_metadata({**event.metadata, **extra}) if extra else event

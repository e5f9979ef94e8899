"""A loaded project: everything in the folder, validated and cross-referenced."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from graphlib import TopologicalSorter
from pathlib import Path

from .dbt import DbtProject
from .incremental import DBT_REFRESH, Refresh, model_refreshes
from .schema import ResolvedSchema
from .specs import AudienceSpec, DestinationSpec, ModelSpec, ProjectSettings, StreamSpec


@dataclass
class Project:
    """A validated project folder."""

    root: Path
    settings: ProjectSettings
    models: dict[str, ModelSpec]
    audiences: dict[str, AudienceSpec]
    destinations: dict[str, DestinationSpec]
    # streams/*.yaml: append-only rows forwarded as events (composable_assets/streams).
    streams: dict[str, StreamSpec] = field(default_factory=dict)
    # project.yaml `dbt:`: the dbt project whose models and seeds are among `models` (project/dbt.py).
    dbt: DbtProject | None = None
    # The real schema, when the project was loaded with a column lookup (project/schema.py): the tables' columns
    # (lineage through `select *`) and the checks that could not run. None: loaded from the files alone.
    schema: ResolvedSchema | None = None

    @property
    def sources(self) -> list[str]:
        """Warehouse tables read by the models that are not models themselves, sorted."""
        return sorted({source for model in self.models.values() for source in model.source_deps})

    def sources_upstream_of(self, table: str) -> list[str]:
        """The source tables a model reads, directly or through other models; a source table is its own source."""
        if table not in self.models:
            return [table]
        models = (*self.models_upstream_of(table), table)
        return sorted({source for m in models for source in self.models[m].source_deps})

    def models_upstream_of(self, model_name: str) -> list[str]:
        """Every model `model_name` depends on, directly or not, dependencies first."""
        graph: dict[str, list[str]] = {}
        pending = [model_name]
        while pending:
            name = pending.pop()
            if name not in graph:
                graph[name] = self.models[name].model_deps
                pending.extend(graph[name])
        return [name for name in TopologicalSorter(graph).static_order() if name != model_name]

    @cached_property
    def refreshes(self) -> dict[str, Refresh]:
        """How a minute-level run refreshes each model: incremental by a key, or in full (and why)."""
        order = list(TopologicalSorter({n: m.model_deps for n, m in self.models.items()}).static_order())
        # A Python model has no SQL to analyse: None, refreshed in full; dbt rebuilds its models itself.
        sql: dict[str, str | Refresh | None] = {
            n: DBT_REFRESH if m.is_dbt else None if m.is_python else m.sql for n, m in self.models.items()
        }
        return model_refreshes(sql, set(self.sources), order)

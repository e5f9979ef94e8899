"""Column lineage, source column to destination field, derived from the model SQL with sqlglot (never declared).

A column is (asset key, column name). Models map each output column to the source or model columns it is computed
from; an audience keeps its model's columns; a sync sends destination fields from audience columns (its identifier
too, named by the identifier type); a stream sends event properties from its table's columns. Without the tables'
schemas, an unqualified column in a join of two tables cannot be placed and a `*` hides its columns: such lineage
is left out rather than guessed. A project loaded with the real schema (project/schema.py, as `composable lineage`
and `composable validate` load it) has every table's columns, and the lineage goes through `select *`. dbt models
read their `*` with the columns of the dbt models and seeds they read as well (known from the seeds' CSV headers and
the models' own queries), warehouse or not, as dbt projects write `SELECT *` in every staging model. A dbt seed is
where data starts, as a source table is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage

from ..project import Project
from ..project.keys import audience_key, model_key, source_key, stream_key, sync_key
from ..project.schema import CURRENT_SCHEMA

Column = tuple[dg.AssetKey, str]


def column_lineage(project: Project) -> dict[dg.AssetKey, dict[str, list[Column]]]:
    """Per asset, each of its columns and the upstream columns it comes from."""

    def table_key(name: str) -> dg.AssetKey:
        return model_key(name) if name in project.models else source_key(name)

    deps: dict[dg.AssetKey, dict[str, list[Column]]] = {}
    # The columns of dbt models and seeds, for the `*` of the dbt models reading them.
    dbt_schema = {
        m.name: {column.lower(): "unknown" for column in m.columns}
        for m in project.models.values()
        if m.is_dbt and m.columns is not None
    }
    for model in project.models.values():
        if model.is_seed and model.columns is not None:
            deps[model_key(model.name)] = {column: [] for column in model.columns}
        elif model.columns is not None:
            # With the real schema (project/schema.py) sqlglot places every column, through `select *` too.
            schema = project.schema.sqlglot_schema(model.name) if project.schema is not None else {}
            if model.is_dbt:
                # The dbt models and seeds it reads, where the warehouse (or its snapshot) has not told them.
                current = {**dbt_schema, **schema.get(CURRENT_SCHEMA, {})}
                schema = {**schema, CURRENT_SCHEMA: current}
            sources = _model_column_sources(model.sql, schema, lenient=model.is_dbt) if model.sql else {}
            deps[model_key(model.name)] = {
                column: [(table_key(table), name) for table, name in sources.get(column, [])]
                for column in model.columns
            }
    for audience in project.audiences.values():
        upstream = table_key(audience.model)
        deps[audience_key(audience.name)] = {c: [(upstream, c)] for c in audience.columns_needed()}
        for sync in audience.syncs:
            sent = {sync.identifier_type: sync.identifier_column, **sync.fields}
            deps[sync_key(audience.name, sync.destination)] = {
                field: [(audience_key(audience.name), column)] for field, column in sent.items()
            }
    for stream in project.streams.values():
        for stream_sync in stream.syncs:
            sent = {stream_sync.identifier_type: stream_sync.identifier_column, **stream_sync.properties}
            deps[stream_key(stream.name, stream_sync.destination)] = {
                field: [(table_key(stream.table), column)] for field, column in sent.items()
            }
    return deps


def _model_column_sources(
    sql: str, schema: Mapping[str, Any] | None = None, lenient: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """Output column of `sql` -> (table, column) of every table column it is computed from (one parse for all).

    `schema` is the tables' columns (`ResolvedSchema.sqlglot_schema`), under which unqualified names sit in the
    current schema's stand-in; without it (`{}`, what sqlglot makes of None) a `*` leaves its columns unknown.
    `lenient` (dbt models): a table outside `schema` (a source not looked up) leaves its own columns unknown, instead
    of the whole model's lineage.
    """
    try:
        extra = {"validate_qualify_columns": False} if lenient and schema else {}
        roots = lineage(None, sql, dict(schema or {}), dialect="duckdb", db=CURRENT_SCHEMA if schema else None, **extra)
    except SqlglotError:
        return {}  # e.g. SELECT * without a schema; the model still loads, its lineage is simply unknown
    sources = {}
    for column, root in roots.items():
        # A `*` in an upstream CTE names no column: that part of the lineage is unknown, not a column called "*".
        found = {
            (node.source.name, node.name.split(".")[-1])
            for node in root.walk()
            if not node.downstream and isinstance(node.source, exp.Table) and not node.name.endswith("*")
        }
        sources[column] = sorted(found)
    return sources


def as_metadata(deps: dict[str, list[Column]]) -> dg.TableColumnLineage:
    """One asset's column lineage as Dagster shows it (`dagster/column_lineage`)."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=key, column_name=name) for key, name in upstream]
            for column, upstream in deps.items()
        }
    )


def deps_columns(deps: dict[dg.AssetKey, dict[str, list[Column]]]) -> Iterator[Column]:
    """Every column the lineage knows: each asset's own columns and every column they come from."""
    for key, columns in deps.items():
        for column, upstream_columns in columns.items():
            yield (key, column)
            yield from upstream_columns


def downstream(deps: dict[dg.AssetKey, dict[str, list[Column]]], start: Column) -> Iterator[Column]:
    """Every column computed, directly or not, from `start`."""
    children: dict[Column, list[Column]] = defaultdict(list)
    for key, columns in deps.items():
        for column, upstream in columns.items():
            for parent in upstream:
                children[parent].append((key, column))
    yield from _walk(children, start)


def upstream(deps: dict[dg.AssetKey, dict[str, list[Column]]], start: Column) -> Iterator[Column]:
    """Every column `start` is computed from, directly or not."""
    parents = {(key, column): upstream for key, columns in deps.items() for column, upstream in columns.items()}
    yield from _walk(parents, start)


def _walk(edges: Mapping[Column, list[Column]], start: Column) -> Iterator[Column]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
                yield nxt


DELIVERED = ("sync", "stream")


def destination_fields(
    deps: dict[dg.AssetKey, dict[str, list[Column]]], table: str, column: str
) -> list[Column] | None:
    """Every (sync or stream asset, field) that `table.column` reaches (a source, model or audience), or None if unknown."""
    starts = [key for key in deps if key.path[0] in ("model", "audience") and key.path[-1] == table]
    starts = starts or [source_key(table)]
    known = set(deps_columns(deps))
    if not any((key, column) in known for key in starts):
        return None
    reached = {c for key in starts for c in downstream(deps, (key, column)) if c[0].path[0] in DELIVERED}
    return sorted(reached, key=lambda c: (c[0].path[-1], c[0].to_user_string(), c[1]))


def source_columns(
    deps: dict[dg.AssetKey, dict[str, list[Column]]],
    destination: str,
    field: str,
    origins: frozenset[dg.AssetKey] = frozenset(),
) -> list[Column] | None:
    """Every source (table, column) the destination's `field` comes from, or None if the destination is sent no such field.

    `origins`: other assets where data starts, as sources do (dbt seeds).
    """
    starts = [(k, field) for k in deps if k.path[0] in DELIVERED and k.path[-1] == destination and field in deps[k]]
    if not starts:
        return None
    found = {c for start in starts for c in upstream(deps, start) if c[0].path[0] == "source" or c[0] in origins}
    return sorted(found, key=lambda c: (c[0].to_user_string(), c[1]))

"""Model output columns resolved against the real schema, so column checks and lineage see through `select *`.

The tables the models read are looked up once (`ColumnLookup`: the warehouse's information_schema, or anything
else that knows a table's columns, such as a dbt catalog); then each model's output columns are derived in
dependency order with sqlglot's `qualify`, which expands `*` (also `select * from a_cte`) given those columns. A
model whose columns stay unknown (a source table not found, a Python model not yet run, SQL sqlglot cannot place)
is reported as not checked, with the reason, never as an error: only a column that is in none of the tables the
model reads, nor named anywhere in its SQL, is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from .errors import ProjectError
from .specs import ModelSpec
from .sql_parsing import DIALECT, output_columns

if TYPE_CHECKING:  # project.py imports this module for ResolvedSchema
    from .project import Project

#: A table as a model's SQL names it: (schema as written, or None for the session's current one; table name),
#: lower-cased. Models live unqualified in the current schema, so a model is (None, name).
TableRef = tuple[str | None, str]

#: Known columns of the tables asked for; tables it does not know are left out of the answer (not an error).
#: Raise `SchemaUnavailable` when the source of truth cannot be reached at all.
ColumnLookup = Callable[[Sequence[TableRef]], Mapping[TableRef, Sequence[str]]]

#: In the data folder: the source columns the last `composable validate` or `composable lineage` read.
SNAPSHOT_FILE = "warehouse_columns.json"

# sqlglot's schema needs one depth for every table: unqualified names go under this stand-in for the current schema.
CURRENT_SCHEMA = "__current_schema__"


class SchemaUnavailable(Exception):
    """The lookup cannot answer at all (the warehouse is unreachable); every column check is skipped."""


@dataclass
class ResolvedSchema:
    """What resolving the project's columns found."""

    #: Model name -> its output columns, for the models whose columns are now known.
    columns: dict[str, list[str]] = field(default_factory=dict)
    #: Every table's known columns (sources and models), as sqlglot's lineage takes them (`sqlglot_schema`).
    tables: dict[TableRef, list[str]] = field(default_factory=dict)
    #: Human sentences naming each check that could not run and why, e.g. a source table not found.
    skipped: list[str] = field(default_factory=list)
    #: A model SQL naming a column its tables do not have (file and line).
    errors: list[ProjectError] = field(default_factory=list)
    #: False when the lookup could not answer at all (`SchemaUnavailable`): nothing was checked.
    reachable: bool = True
    #: What the lookup answered (sources, tables of models without SQL): what `write_snapshot` keeps.
    looked_up: dict[TableRef, list[str]] = field(default_factory=dict)
    #: SQL model name -> the tables it reads.
    reads: dict[str, list[TableRef]] = field(default_factory=dict)

    def sqlglot_schema(self, model: str) -> dict[str, dict[str, dict[str, str]]]:
        """The known tables `model` reads as sqlglot's nested schema mapping (types are not needed to place columns).

        Only those: sqlglot normalizes the whole mapping on every call, which for every table of a 100-model project
        made the lineage of each model cost ~20 ms instead of ~1 ms.
        """
        return _mapping({ref: self.tables[ref] for ref in self.reads.get(model, []) if ref in self.tables})


def static_lookup(known: Mapping[TableRef | str, Sequence[str]]) -> ColumnLookup:
    """A lookup over columns known beforehand (a dbt catalog, a test): `name` or `(schema, name)` -> columns."""
    normalized = {_ref(key): list(columns) for key, columns in known.items()}

    def lookup(tables: Sequence[TableRef]) -> Mapping[TableRef, Sequence[str]]:
        return {table: normalized[table] for table in tables if table in normalized}

    return lookup


def chain_lookups(*lookups: ColumnLookup) -> ColumnLookup:
    """Ask each lookup in turn for the tables the ones before it did not know (e.g. a dbt catalog, then the warehouse)."""

    def lookup(tables: Sequence[TableRef]) -> Mapping[TableRef, Sequence[str]]:
        found: dict[TableRef, Sequence[str]] = {}
        for each in lookups:
            missing = [table for table in tables if table not in found]
            if not missing:
                break
            found.update({_ref(table): columns for table, columns in each(missing).items()})
        return found

    return lookup


def warehouse_lookup(engine: Any) -> ColumnLookup:
    """The warehouse's own columns, every table in one query where the engine can (`Engine.tables_columns`).

    Any failure to connect or query means the warehouse cannot be read from here (not configured yet, no network,
    a refused login, a DuckDB file in use by a run): the checks are then reported as skipped, not failed.
    """

    def lookup(tables: Sequence[TableRef]) -> Mapping[TableRef, Sequence[str]]:
        try:
            return engine.tables_columns(list(tables))
        except Exception as exc:  # each vendor's driver raises its own errors
            raise SchemaUnavailable(f"cannot read the warehouse ({engine.describe()}): {exc}") from exc

    return lookup


def write_snapshot(path: Path, warehouse_url: str, resolved: ResolvedSchema) -> None:
    """Keep what the warehouse said about the tables, so the definitions can derive columns without asking it.

    Written by the commands that read the warehouse (`composable validate`, `composable lineage`); a cache only, so
    a folder that cannot be written to is no error.
    """
    if not resolved.reachable or not resolved.looked_up:  # nothing learnt: leave no file behind
        return
    tables = [[schema, name, columns] for (schema, name), columns in sorted(resolved.looked_up.items(), key=_by_ref)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"warehouse": warehouse_url, "tables": tables}))
    except OSError:
        pass


def snapshot_lookup(path: Path, warehouse_url: str) -> ColumnLookup | None:
    """The columns `write_snapshot` kept for this warehouse, or None (none kept, another warehouse, unreadable)."""
    try:
        data = json.loads(path.read_text())
        if data.get("warehouse") != warehouse_url:
            return None
        known: dict[TableRef | str, Sequence[str]] = {
            (schema, name): list(columns) for schema, name, columns in data["tables"]
        }
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return static_lookup(known)


def with_columns(project: Project, lookup: ColumnLookup) -> Project:
    """The project with every model's columns derived it can, for lineage and column schemas only.

    Unlike `load_project(columns=...)` nothing is checked: the definitions load from a snapshot that may be older
    than the warehouse, and an old snapshot must not stop a code location from loading (validate checks).
    """
    resolved = resolve_columns(project.models, lookup)
    return replace(project, models=with_resolved(project.models, resolved), schema=resolved)


def with_resolved(models: Mapping[str, ModelSpec], resolved: ResolvedSchema) -> dict[str, ModelSpec]:
    """The models, each with its resolved columns where they are known (else as they were)."""
    return {
        name: replace(model, columns=resolved.columns[name]) if name in resolved.columns else model
        for name, model in models.items()
    }


def resolve_columns(models: Mapping[str, ModelSpec], lookup: ColumnLookup) -> ResolvedSchema:
    """Each model's output columns, from the looked-up tables' columns and the models before it (one lookup call)."""
    resolved = ResolvedSchema()
    parsed = {name: sqlglot.parse_one(m.sql, read=DIALECT) for name, m in models.items() if m.sql and not m.is_python}
    reads = {name: sorted(_tables(query), key=_sort_key) for name, query in parsed.items()}
    resolved.reads = reads
    # Sources, and models without SQL (Python models, models from elsewhere): their table, if it exists, says.
    wanted = {ref for refs in reads.values() for ref in refs if not _is_model(ref, models)}
    wanted |= {(None, name) for name in models if name not in parsed}
    try:
        # Nothing to ask (models over inline VALUES only): the warehouse need not exist yet.
        answer = lookup(sorted(wanted, key=_sort_key)) if wanted else {}
        found = {_ref(ref): list(columns) for ref, columns in answer.items()}
    except SchemaUnavailable as exc:
        resolved.skipped.append(f"columns not checked: {exc}")
        resolved.reachable = False
        return resolved
    resolved.tables.update(found)
    resolved.looked_up.update(found)
    order = TopologicalSorter({name: m.model_deps for name, m in models.items()}).static_order()
    for name in order:
        if name not in models:
            continue
        model = models[name]
        if name not in parsed:
            columns = found.get((None, name))
            if columns is not None:
                resolved.columns[name] = columns
            else:
                resolved.skipped.append(
                    f"columns of {name} not checked: its table is not in the warehouse yet "
                    f"({'a Python model has columns once it has run' if model.is_python else 'no SQL to derive them'})"
                )
            continue
        missing = [ref for ref in reads[name] if ref not in resolved.tables]
        if missing:
            # A model listing its columns keeps them (audiences are checked against those); what it reads is not.
            what = f"columns {name} reads" if model.columns is not None else f"columns of {name}"
            resolved.skipped.append(f"{what} not checked: {_missing_reason(missing[0], models)}")
            continue
        try:
            columns = _derive(model, parsed[name], reads[name], resolved.tables)
        except ProjectError as exc:
            resolved.errors.append(exc)
            continue
        except _NotDerived as exc:
            resolved.skipped.append(f"columns of {name} not checked: {exc}")
            continue
        resolved.columns[name] = columns
        resolved.tables[(None, name)] = columns
    return resolved


_PLACEHOLDER = re.compile(r"_col_\d+")
# Columns an engine gives every table without listing them in information_schema: naming one is no misspelling.
_PSEUDO_COLUMNS = frozenset({"rowid", "ctid", "oid", "xmin", "xmax", "tableoid", "_partitiontime", "_partitiondate"})


class _NotDerived(Exception):
    """sqlglot could not place the model's columns, though none is plainly unknown: not checked, not an error."""


def _derive(model: ModelSpec, query: exp.Expr, reads: list[TableRef], tables: dict[TableRef, list[str]]) -> list[str]:
    """The model's output columns with `*` expanded; ProjectError at the line of a column no table has."""
    # A table function (read_parquet(...), a DuckDB extension's scan) has columns no lookup knows.
    function = next((t for t in query.find_all(exp.Table) if not isinstance(t.this, exp.Identifier)), None)
    if function is not None:
        raise _NotDerived(f"it reads a table function ({function.this.sql(DIALECT)})")
    mapping: dict[str, object] = dict(_mapping({ref: tables[ref] for ref in reads}))
    schema = MappingSchema(mapping, dialect=DIALECT)
    failure: str | None = None
    try:
        qualified = qualify(
            query.copy(), dialect=DIALECT, db=CURRENT_SCHEMA, schema=schema, quote_identifiers=False, identify=False
        )
    except SqlglotError as exc:  # a column sqlglot could not place, or SQL its optimizer does not take
        failure = str(exc).splitlines()[0]
    else:
        columns = output_columns(qualified) if isinstance(qualified, exp.Query) else None
        # sqlglot names an expression it cannot name `_col_0`, ...; DuckDB would name it otherwise (`COLUMNS(...)`
        # is several columns), so such a model's columns are not known rather than wrong.
        named = {name.lower() for name in query.named_selects} if isinstance(query, exp.Query) else set()
        if columns is not None and not any(_PLACEHOLDER.fullmatch(c) and c not in named for c in columns):
            return columns
        failure = "an output column has no name"
    # Only a column named nowhere (in no table read, no alias of the query) is certainly wrong; sqlglot may fail to
    # place a real one (an ambiguous name in a join, a DuckDB construct it does not know), which is no user error.
    known = {column.lower() for ref in reads for column in tables[ref]} | _names_defined(query) | _PSEUDO_COLUMNS
    unknown = [
        column
        for column in query.find_all(exp.Column)
        if isinstance(column.this, exp.Identifier) and column.name.lower() not in known  # `c.*` is a Column too
    ]
    if unknown:
        first = min(unknown, key=lambda column: (column.this.meta.get("line") or 0, column.this.meta.get("col") or 0))
        read = ", ".join(_shown(ref) for ref in reads)
        raise ProjectError(
            f"column `{first.name}` is in none of the tables model `{model.name}` reads ({read}) nor defined in its SQL",
            model.path,
            first.this.meta.get("line"),
        )
    raise _NotDerived(f"sqlglot could not derive its columns ({failure})")


def _names_defined(query: exp.Expr) -> set[str]:
    """Every name the query itself defines that a column reference may use: aliases, CTE and lambda parameters."""
    names: set[str] = set()
    for node in query.walk():
        if isinstance(node, exp.Alias):
            names.add(node.alias.lower())
        elif isinstance(node, exp.TableAlias):
            names.add(node.name.lower())
            names |= {column.name.lower() for column in node.columns}
        elif isinstance(node, exp.Lambda):
            names |= {arg.name.lower() for arg in node.expressions}
        elif isinstance(node, exp.Table):
            names.add(node.name.lower())  # `t` in `SELECT t FROM t` is the whole row in DuckDB
    return names


def _tables(query: exp.Expr) -> set[TableRef]:
    """Tables the query reads as (schema or None, name), CTEs and table functions excluded."""
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    refs: set[TableRef] = set()
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        if table.db or table.name.lower() not in ctes:
            # Another database's table (`db.schema.table`) is looked up as the schema `db.schema`, which no current
            # database's information_schema has: reported as not found, never matched with a same-named table here.
            schema = f"{table.catalog}.{table.db}" if table.catalog else table.db or None
            refs.add(_ref((schema, table.name)))
    return refs


def _is_model(ref: TableRef, models: Mapping[str, ModelSpec]) -> bool:
    return ref[0] is None and ref[1] in models


def _missing_reason(ref: TableRef, models: Mapping[str, ModelSpec]) -> str:
    if _is_model(ref, models):
        return f"the columns of model {ref[1]} it reads are not known"
    return f"table {_shown(ref)} not found in the warehouse"


def _mapping(tables: Mapping[TableRef, Sequence[str]]) -> dict[str, dict[str, dict[str, str]]]:
    mapping: dict[str, dict[str, dict[str, str]]] = {}
    for (schema, name), columns in tables.items():
        mapping.setdefault(schema or CURRENT_SCHEMA, {})[name] = {column.lower(): "unknown" for column in columns}
    return mapping


def _ref(key: TableRef | str) -> TableRef:
    """A table as a lower-cased (schema or None, name); a bare string is a table of the current schema."""
    if isinstance(key, str):
        return (None, key.lower())
    schema, name = key
    return (schema.lower() if schema else None, name.lower())


def _sort_key(ref: TableRef) -> tuple[str, str]:
    return (ref[0] or "", ref[1])


def _by_ref(item: tuple[TableRef, list[str]]) -> tuple[str, str]:
    return _sort_key(item[0])


def _shown(ref: TableRef) -> str:
    return f"{ref[0]}.{ref[1]}" if ref[0] else ref[1]


def with_cached_columns(project: Project, data_dir: Path, warehouse_url: str) -> Project:
    """The project with its models' columns derived from the source columns `composable validate` last read.

    For column lineage and schemas through `select *`: every run, sensor tick and command loads the definitions, so
    they never wait for the warehouse; nothing is checked against this snapshot.
    """
    cached = snapshot_lookup(data_dir / SNAPSHOT_FILE, warehouse_url)
    return project if cached is None else with_columns(project, cached)

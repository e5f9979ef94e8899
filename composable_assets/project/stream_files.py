"""Reading streams/*.yaml: event streams, checked against the models, source tables and destinations."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ProjectError, collecting, combine, raise_if_any
from .specs import NAME_PATTERN, DestinationSpec, ModelSpec, StreamSpec
from .sql_parsing import check_where_columns, parse_where
from .yaml_lines import YamlDocument, read_spec_yaml, read_yaml

STREAMS_DIR = "streams"
# Keys a stream file may not set: the loader derives them from the file itself.
_DERIVED_KEYS = ("name", "path")


def load_streams(
    folder: Path,
    models: dict[str, ModelSpec],
    source_tables: set[str],
    destination_names: set[str] | None,
    errors: list[ProjectError],
) -> dict[str, StreamSpec]:
    """Every streams/*.yaml file; `source_tables` are the warehouse tables the project knows besides its models."""
    for path in sorted(folder.glob("*.yml")):
        errors.append(ProjectError("stream files must end in .yaml; rename this file", path))
    streams: dict[str, StreamSpec] = {}
    for path in sorted(folder.glob("*.yaml")):
        if not re.fullmatch(NAME_PATTERN, path.stem):
            errors.append(
                ProjectError(
                    f"stream name `{path.stem}` must start with a lowercase letter and contain only "
                    "lowercase letters, digits and underscores",
                    path,
                )
            )
        with collecting(errors):
            streams[path.stem] = _stream(path, models, source_tables, destination_names)
    return streams


def _stream(
    path: Path, models: dict[str, ModelSpec], source_tables: set[str], destination_names: set[str] | None
) -> StreamSpec:
    """One stream file, validated and cross-checked; raises all of its problems."""
    errors: list[ProjectError] = []
    doc = read_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error("a stream file must be a mapping of fields")
    for key in _DERIVED_KEYS:
        if key in doc.data:
            errors.append(doc.error(f"unknown field `{key}` (a stream is named after its file)", key))
    fields = {key: value for key, value in doc.data.items() if key not in _DERIVED_KEYS}
    try:
        spec = StreamSpec.model_validate({**fields, "name": path.stem, "path": path})
    except ValidationError as exc:
        raise combine(errors + doc.validation_errors(exc)) from None
    errors.extend(_reference_problems(doc, spec, models, source_tables, destination_names))
    if spec.where is not None:
        with collecting(errors):
            condition = parse_where(spec.where, path, doc.line("where"))
            # A source table's columns are only known at run time, where the warehouse checks them.
            columns = _known_columns(spec, models)
            if columns is not None:
                check_where_columns(condition, columns, spec.table, path, doc.line("where"))
    raise_if_any(errors)
    return spec


def _reference_problems(
    doc: YamlDocument,
    spec: StreamSpec,
    models: dict[str, ModelSpec],
    source_tables: set[str],
    destination_names: set[str] | None,
) -> Iterator[ProjectError]:
    """Problems with the table, destinations and columns a stream refers to."""
    if spec.table not in models and spec.table.lower() not in source_tables:
        known = ", ".join(sorted({*models, *source_tables})) or "none"
        yield doc.error(
            f"unknown table `{spec.table}`: not a model, nor a source table that a model reads or that "
            f"project.yaml lands (known: {known})",
            "table",
        )
    seen: set[str] = set()
    for index, sync in enumerate(spec.syncs):
        loc: tuple[str | int, ...] = ("syncs", index, "destination")
        if sync.destination in seen:
            yield doc.error(f"destination `{sync.destination}` is synced twice", *loc)
        seen.add(sync.destination)
        if destination_names is not None and sync.destination not in destination_names:
            known = ", ".join(sorted(destination_names)) or "none"
            yield doc.error(f"unknown destination `{sync.destination}` (destinations.yaml has: {known})", *loc)
    columns = _known_columns(spec, models)
    if columns is not None:
        for loc, column in column_references(spec):
            if column.lower() not in {c.lower() for c in columns}:
                yield _unknown_column(doc, spec, columns, column, loc)


def typed_stream_problems(
    streams: dict[str, StreamSpec],
    models: dict[str, ModelSpec],
    destinations: dict[str, DestinationSpec],
    types: Mapping[str, Any],
) -> Iterator[ProjectError]:
    """What each destination type says about its stream syncs: takes events at all, identifiers, `options`."""
    for spec in streams.values():
        doc: YamlDocument | None = None
        columns = _known_columns(spec, models)
        for index, sync in enumerate(spec.syncs):
            destination = destinations.get(sync.destination)
            if destination is None:
                continue
            kind = types.get(destination.type)
            if kind is None:
                continue
            doc = doc or read_spec_yaml(spec.path)
            options_model: type[BaseModel] | None = getattr(kind, "EventOptions", None)
            if options_model is None:
                yield doc.error(
                    f"destination `{sync.destination}` ({destination.type}) cannot take events; "
                    "stream to braze, iterable, webhook or outbox",
                    "syncs",
                    index,
                    "destination",
                )
                continue
            allowed = getattr(kind, "identifier_types", None)
            if allowed and sync.identifier_type not in allowed:
                yield doc.error(
                    f"{destination.type} identifies people by {', '.join(allowed)}, not `{sync.identifier_type}`",
                    "syncs",
                    index,
                    "identifier",
                    sync.identifier_type,
                )
            try:
                options = options_model.model_validate(sync.options)
            except ValidationError as exc:
                yield from doc.validation_errors(exc, "syncs", index, "options")
                continue
            if columns is None:
                continue
            # Options may name columns too (e.g. Braze `purchase: {price: amount}`).
            named = options.columns() if hasattr(options, "columns") else {}
            for option, column in named.items():
                if column.lower() not in {c.lower() for c in columns}:
                    loc = ("syncs", index, "options", *option.split("."))
                    yield _unknown_column(doc, spec, columns, column, loc)


def column_references(spec: StreamSpec) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(loc in the stream file, table column) for every column the stream reads."""
    yield ("event_id",), spec.event_id
    yield ("cursor",), spec.cursor
    for index, sync in enumerate(spec.syncs):
        yield ("syncs", index, "identifier", sync.identifier_type), sync.identifier_column
        for name, column in sync.properties.items():
            yield ("syncs", index, "properties", name), column


def _known_columns(spec: StreamSpec, models: dict[str, ModelSpec]) -> list[str] | None:
    """The table's columns when they are known without the warehouse (a model's), else None (checked at run time)."""
    model = models.get(spec.table)
    return model.columns if model is not None else None


def _unknown_column(
    doc: YamlDocument, spec: StreamSpec, columns: list[str], column: str, loc: tuple[str | int, ...]
) -> ProjectError:
    return doc.error(
        f"column `{column}` is not an output of model `{spec.table}` (its columns: {', '.join(columns)})", *loc
    )

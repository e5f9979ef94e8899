"""Loading a project folder, collecting every problem found in it."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .dbt import DbtProject, load_dbt_project
from .errors import (
    ProjectError,
    collecting,
    combine,
    raise_if_any,
    read_text,
)
from .project import Project
from .python_models import read_python_model
from .schema import ColumnLookup, ResolvedSchema, resolve_columns, with_resolved
from .secret_refs import SecretRef, is_secret_ref, looks_secret, url_credential
from .specs import (
    NAME_PATTERN,
    AudienceSpec,
    DestinationSpec,
    ModelSpec,
    ProjectSettings,
)
from .sql_parsing import check_where_columns, find_jinja, parse_model_sql, parse_where, read_header
from .stream_files import STREAMS_DIR, load_streams, typed_stream_problems
from .yaml_lines import YamlDocument, read_spec_yaml, read_yaml

PROJECT_FILE = "project.yaml"
DESTINATIONS_FILE = "destinations.yaml"
MODELS_DIR = "models"
AUDIENCES_DIR = "audiences"
# Used when a project has no destinations.yaml: changes are recorded but sent nowhere.
DEFAULT_DESTINATION = "outbox"

# Keys an audience file may not set: the loader derives them from the file itself, or from destinations.yaml.
_DERIVED_AUDIENCE_KEYS = ("name", "path", "destination_types")


def load_project(
    root: str | Path,
    known_destination_types: Collection[str] | Mapping[str, Any] | None = None,
    columns: ColumnLookup | None = None,
    *,
    warehouse_url: str | None = None,
) -> Project:
    """Read and validate a project folder; raise every problem found as ProjectError(s).

    `known_destination_types` may map each type to its class; a class with pydantic models
    `Settings` and `SyncOptions` gets its destinations.yaml entries and sync `options` checked.
    `warehouse_url` (COMPOSABLE_WAREHOUSE) is needed by a project with a dbt project and no profiles.yml of its own:
    dbt's profile is generated from it.

    `columns` looks up the real columns of the tables the models read (the warehouse, a dbt catalog; see
    project/schema.py): every model's output columns are then derived through `select *`, and the audiences' and
    streams' columns are checked against them. What could not be checked is in `Project.schema.skipped`.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise ProjectError("project folder not found", root)
    errors: list[ProjectError] = []
    settings = _load_settings(root, errors)
    destinations, destination_names = _load_destinations(root / DESTINATIONS_FILE, known_destination_types, errors)
    before = len(errors)
    dbt, dbt_models = _load_dbt(root, settings, warehouse_url, errors)
    models = _load_models(root / MODELS_DIR, errors, dbt_models)
    schema = None
    if columns is not None:
        models, schema = _resolve_columns(models, columns, errors, models_failed=len(errors) > before)
    audiences = _load_audiences(root / AUDIENCES_DIR, models, destinations, destination_names, errors)
    # A stream reads a model, or a source table the project knows: one a model reads, or one it lands.
    source_tables = {table for model in models.values() for table in model.source_deps} | set(settings.landing)
    streams = load_streams(root / STREAMS_DIR, models, source_tables, destination_names, errors)
    if isinstance(known_destination_types, Mapping):
        errors.extend(_typed_problems(root, destinations, audiences, known_destination_types))
        errors.extend(typed_stream_problems(streams, models, destinations, known_destination_types))
    for error in errors:
        error.root = root
    raise_if_any(errors)
    return Project(
        root=root,
        settings=settings,
        models=models,
        audiences=audiences,
        destinations=destinations,
        streams=streams,
        dbt=dbt,
        schema=schema,
    )


def _load_dbt(
    root: Path, settings: ProjectSettings, warehouse_url: str | None, errors: list[ProjectError]
) -> tuple[DbtProject | None, dict[str, ModelSpec]]:
    """The dbt project project.yaml names, and its models and seeds; (None, {}) without one or when it is broken."""
    if settings.dbt is None:
        return None, {}
    path = root / PROJECT_FILE
    with collecting(errors):
        return load_dbt_project(root, settings.dbt, warehouse_url, path, read_yaml(path).line("dbt"))
    return None, {}


def _resolve_columns(
    models: dict[str, ModelSpec], lookup: ColumnLookup, errors: list[ProjectError], models_failed: bool
) -> tuple[dict[str, ModelSpec], ResolvedSchema]:
    """The models with the columns known from the real schema; the checks that follow then use them."""
    if models_failed:  # a model that did not load (or a cycle) leaves the order and the columns unknowable
        return models, ResolvedSchema(skipped=["columns not checked: fix the models first"], reachable=False)
    resolved = resolve_columns(models, lookup)
    errors.extend(resolved.errors)
    return with_resolved(models, resolved), resolved


def _load_settings(root: Path, errors: list[ProjectError]) -> ProjectSettings:
    """project.yaml, or the defaults when it is missing or broken."""
    path = root / PROJECT_FILE
    if path.exists():
        with collecting(errors):
            doc = read_yaml(path)
            data = _mapping(doc, {}, "project.yaml must be a mapping of settings")
            try:
                return ProjectSettings.model_validate({"name": root.name, **data})
            except ValidationError as exc:
                raise combine(doc.validation_errors(exc)) from None
    return ProjectSettings(name=root.name)


def _load_destinations(
    path: Path, known_types: Collection[str] | None, errors: list[ProjectError]
) -> tuple[dict[str, DestinationSpec], set[str] | None]:
    """(valid destinations, every name declared or None when the file is unreadable)."""
    if not path.exists():
        default = DestinationSpec(name=DEFAULT_DESTINATION, type=DEFAULT_DESTINATION)
        return {default.name: default}, {default.name}
    data = None
    with collecting(errors):
        doc = read_yaml(path)
        data = _mapping(doc, {}, "destinations.yaml must map destination names to their settings")
    if data is None:
        return {}, None
    destinations: dict[str, DestinationSpec] = {}
    for name, entry in data.items():
        with collecting(errors):
            destinations[name] = _destination(doc, name, entry, known_types)
    return destinations, {str(name) for name in data}


def _destination(doc: YamlDocument, name: Any, entry: Any, known_types: Collection[str] | None) -> DestinationSpec:
    """One destinations.yaml entry, with its type and secret settings checked."""
    errors: list[ProjectError] = []
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        errors.append(doc.error(_bad_name_message("destination", name), name))
    if not isinstance(entry, dict):
        errors.append(doc.error(f"destination `{name}` must be a mapping with a `type`", name))
        raise combine(errors)
    type_ = entry.get("type")
    if "type" not in entry:
        errors.append(doc.error(f"destination `{name}`: missing required field `type`", name))
    elif not isinstance(type_, str) or not type_:
        errors.append(doc.error(f"destination `{name}`: `type` must be a non-empty string", name, "type"))
    elif known_types is not None and type_ not in known_types:
        errors.append(
            doc.error(
                f"unknown destination type `{type_}`; known types: {', '.join(sorted(known_types))}",
                name,
                "type",
            )
        )
    settings = {key: value for key, value in entry.items() if key not in ("type", "consent")}
    consent = entry.get("consent")
    if consent is not None and (not isinstance(consent, str) or not consent.strip()):
        errors.append(
            doc.error(f"destination `{name}`: `consent` must be a purpose name, e.g. email_marketing", name, "consent")
        )
    errors.extend(
        doc.error(f"setting name `{key}` must be a string", name, key) for key in settings if not isinstance(key, str)
    )
    errors.extend(_secret_problems(doc, settings, (name,)))
    raise_if_any(errors)
    assert isinstance(type_, str)  # for the type checker: any other `type` was an error raised just above
    return DestinationSpec(
        name=name, type=type_, settings=settings, consent=consent, path=doc.path, line=doc.line(name)
    )


def _typed_problems(
    root: Path,
    destinations: dict[str, DestinationSpec],
    audiences: dict[str, AudienceSpec],
    types: Mapping[str, Any],
) -> Iterator[ProjectError]:
    """Settings and sync options checked by each destination type's own pydantic models."""
    for spec in destinations.values():
        model = getattr(types.get(spec.type), "Settings", None)
        if model is not None and spec.path is not None:
            try:
                model.model_validate(spec.settings)
            except ValidationError as exc:
                yield from read_yaml(spec.path).validation_errors(exc, spec.name)
    for audience in audiences.values():
        doc = None
        for index, sync in enumerate(audience.syncs):
            destination = destinations.get(sync.destination)
            if destination is None:  # an unknown destination is reported with the references
                continue
            kind = types.get(destination.type)
            allowed = getattr(kind, "identifier_types", None)
            if allowed and sync.identifier_type not in allowed:
                doc = doc or read_spec_yaml(audience.path)
                yield doc.error(
                    f"{destination.type} identifies people by {', '.join(allowed)}, not `{sync.identifier_type}`",
                    "syncs",
                    index,
                    "identifier",
                    sync.identifier_type,
                )
            model = getattr(kind, "SyncOptions", None)
            if model is None:
                continue
            try:
                # The sync's mode and identifier type let the options refuse what cannot work for this sync.
                context = {"mode": sync.mode, "identifier_type": sync.identifier_type}
                options = model.model_validate(sync.options, context=context)
            except ValidationError as exc:
                doc = doc or read_spec_yaml(audience.path)
                yield from doc.validation_errors(exc, "syncs", index, "options")
                continue
            membership = getattr(kind, "membership_fields", None)
            carried = membership(options, audience.name, sync.mode, sync.identifier_type) if membership else {}
            for name in sorted(set(carried) & set(sync.fields)):
                doc = doc or read_spec_yaml(audience.path)
                yield doc.error(
                    f"field `{name}` is the attribute {destination.type} sets on members and clears from leavers; "
                    "rename the field or the attribute",
                    "syncs",
                    index,
                    "fields",
                    name,
                )


def _secret_problems(doc: YamlDocument, settings: dict[Any, Any], loc: tuple[Any, ...]) -> Iterator[ProjectError]:
    """Malformed `{env: ...}` references, secret-looking settings written literally, URLs carrying credentials."""
    for key, value in settings.items():
        secret = looks_secret(str(key))
        # A mapping under a secret-looking key can only be a reference, so validate it strictly.
        if is_secret_ref(value) or (secret and isinstance(value, dict)):
            try:
                SecretRef.model_validate(value)
            except ValidationError as exc:
                yield from doc.validation_errors(exc, *loc, key)
        elif isinstance(value, dict):
            yield from _secret_problems(doc, value, (*loc, key))
        elif secret:
            yield doc.error(
                f"`{key}` looks like a secret: put it in an environment variable "
                f"and write `{key}: {{env: VARIABLE_NAME}}`",
                *loc,
                key,
            )
        elif isinstance(value, str) and (credential := url_credential(value)):
            # A URL is shown in logs, errors and the UI; a credential in it would be too.
            yield doc.error(
                f"`{key}` carries a credential in the URL ({credential}): move it into a header "
                "or a setting read from {env: NAME}",
                *loc,
                key,
            )


def _load_models(
    folder: Path, errors: list[ProjectError], dbt_models: dict[str, ModelSpec] | None = None
) -> dict[str, ModelSpec]:
    """Every models/*.sql and models/*.py file with a valid name, its dependencies resolved, and the dbt project's."""
    dbt_models = dbt_models or {}
    paths = {path.stem: path for path in sorted(folder.glob("*.sql"))}
    for path in sorted(folder.glob("*.py")):
        if path.stem in paths:
            errors.append(
                ProjectError(f"model `{path.stem}` is defined twice: {paths[path.stem].name} and this file", path)
            )
        else:
            paths[path.stem] = path
    for stem, path in list(paths.items()):
        if not re.fullmatch(NAME_PATTERN, stem):
            errors.append(ProjectError(_bad_name_message("model", stem), path))
            del paths[stem]
    for stem, path in list(paths.items()):
        if stem in dbt_models:
            errors.append(
                ProjectError(
                    f"model `{stem}` is defined twice: here and in the dbt project ({dbt_models[stem].path})", path
                )
            )
            del paths[stem]
    model_names = set(paths) | set(dbt_models)
    models: dict[str, ModelSpec] = dict(dbt_models)
    for name, path in paths.items():
        with collecting(errors):
            models[name] = _model(name, path, model_names)
    with collecting(errors):
        _check_acyclic(models)
    return models


def _model(name: str, path: Path, model_names: set[str]) -> ModelSpec:
    """One model file, parsed; its tables split into model and source dependencies."""
    if path.suffix == ".py":
        return _python_model(name, path, model_names)
    text = read_text(path)
    jinja = find_jinja(text)
    if jinja is not None:
        construct, line = jinja
        raise ProjectError(
            f"`{construct}` is Jinja, which a plain SQL model cannot use: models/*.sql files are run as they are. "
            "A model with ref(), macros or other Jinja belongs in a dbt project: put it there and point project.yaml "
            "at it with `dbt: {project_dir: dbt}` (docs/project-folder.md, dbt projects)",
            path,
            line,
        )
    parsed = parse_model_sql(text, path)
    if name in parsed.tables:
        raise ProjectError(f"model `{name}` reads from itself", path, parsed.tables[name])
    description, owners = read_header(text)
    return ModelSpec(
        name=name,
        path=path,
        sql=parsed.sql,
        description=description,
        owners=owners,
        model_deps=sorted(table for table in parsed.tables if table in model_names),
        source_deps=sorted(table for table in parsed.tables if table not in model_names),
        columns=parsed.columns,
    )


def _python_model(name: str, path: Path, model_names: set[str]) -> ModelSpec:
    """One Python model file, read without running it: its parameters are the tables it reads."""
    parsed = read_python_model(path)
    if name in parsed.inputs:
        raise ProjectError(f"model `{name}` reads from itself", path, parsed.line)
    return ModelSpec(
        name=name,
        path=path,
        sql="",
        description=parsed.description,
        owners=parsed.owners,
        model_deps=sorted(table for table in parsed.inputs if table in model_names),
        source_deps=sorted(table for table in parsed.inputs if table not in model_names),
        # Known only once the function has run.
        columns=None,
    )


def _check_acyclic(models: dict[str, ModelSpec]) -> None:
    """Raise naming the files of one dependency cycle among models, if any."""
    try:
        TopologicalSorter({name: model.model_deps for name, model in models.items()}).prepare()
    except CycleError as exc:
        cycle = exc.args[1]
        # graphlib lists each model before the models that read it; show "reads from" order.
        files = " -> ".join(models[name].path.name for name in reversed(cycle))
        raise ProjectError(f"models read from each other in a cycle: {files}", models[cycle[0]].path) from None


def _load_audiences(
    folder: Path,
    models: dict[str, ModelSpec],
    destinations: dict[str, DestinationSpec],
    destination_names: set[str] | None,
    errors: list[ProjectError],
) -> dict[str, AudienceSpec]:
    """Every audiences/*.yaml file, checked against the models and destinations."""
    for path in sorted(folder.glob("*.yml")):
        errors.append(ProjectError("audience files must end in .yaml; rename this file", path))
    audiences: dict[str, AudienceSpec] = {}
    types = {name: spec.type for name, spec in destinations.items()}
    for path in sorted(folder.glob("*.yaml")):
        if not re.fullmatch(NAME_PATTERN, path.stem):
            errors.append(ProjectError(_bad_name_message("audience", path.stem), path))
        with collecting(errors):
            audiences[path.stem] = _audience(path, models, types, destination_names)
    return audiences


def _audience(
    path: Path, models: dict[str, ModelSpec], destination_types: dict[str, str], destination_names: set[str] | None
) -> AudienceSpec:
    """One audience file, validated and cross-checked; raises all of its problems."""
    errors: list[ProjectError] = []
    doc = read_yaml(path)
    data = _mapping(doc, None, "an audience file must be a mapping of fields")
    for key in _DERIVED_AUDIENCE_KEYS:
        if key in data:
            why = " (an audience is named after its file)" if key in ("name", "path") else ""
            errors.append(doc.error(f"unknown field `{key}`{why}", key))
    fields = {key: value for key, value in data.items() if key not in _DERIVED_AUDIENCE_KEYS}
    try:
        spec = AudienceSpec.model_validate(
            {**fields, "name": path.stem, "path": path, "destination_types": destination_types}
        )
    except ValidationError as exc:
        raise combine(errors + doc.validation_errors(exc)) from None
    errors.extend(_reference_problems(doc, spec, models, destination_names))
    if spec.where is not None:
        with collecting(errors):
            condition = parse_where(spec.where, path, doc.line("where"))
            model = models.get(spec.model)
            if model is not None and model.columns is not None:
                check_where_columns(condition, model.columns, model.name, path, doc.line("where"))
    raise_if_any(errors)
    return spec


def _reference_problems(
    doc: YamlDocument,
    spec: AudienceSpec,
    models: dict[str, ModelSpec],
    destination_names: set[str] | None,
) -> Iterator[ProjectError]:
    """Problems with the model, destinations and columns an audience refers to."""
    model = models.get(spec.model)
    if model is None:
        known = ", ".join(sorted(models)) or "none"
        yield doc.error(f"unknown model `{spec.model}` (models: {known})", "model")
    elif model.dbt is not None and (model.dbt.custom_schema or model.dbt.alias):
        where = f"schema `{model.dbt.custom_schema}`" if model.dbt.custom_schema else f"alias `{model.dbt.alias}`"
        yield doc.error(
            f"dbt model `{model.name}` is configured with {where}, but an audience reads a model by its name in the "
            f"warehouse's default schema; remove that config from {model.path.name}",
            "model",
        )
    seen: set[str] = set()
    for index, sync in enumerate(spec.syncs):
        loc: tuple[str | int, ...] = ("syncs", index, "destination")
        if sync.destination in seen:
            yield doc.error(f"destination `{sync.destination}` is synced twice", *loc)
        seen.add(sync.destination)
        # When destinations.yaml is unreadable, that is reported; don't repeat it per sync.
        if destination_names is not None and sync.destination not in destination_names:
            known = ", ".join(sorted(destination_names)) or "none"
            yield doc.error(f"unknown destination `{sync.destination}` (destinations.yaml has: {known})", *loc)
    if model is not None and model.columns is not None:
        # DuckDB column names are case-insensitive.
        available = {column.lower() for column in model.columns}
        for loc, column in _column_references(spec):
            if column.lower() not in available:
                yield doc.error(
                    f"column `{column}` is not an output of model `{model.name}` "
                    f"(its columns: {', '.join(model.columns)})",
                    *loc,
                )


def _column_references(spec: AudienceSpec) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(loc in the audience file, model column) for every column the audience reads."""
    yield ("primary_key",), spec.primary_key
    for index, sync in enumerate(spec.syncs):
        yield ("syncs", index, "identifier", sync.identifier_type), sync.identifier_column
        for field_name, column in sync.fields.items():
            yield ("syncs", index, "fields", field_name), column


def _mapping(doc: YamlDocument, empty: dict[str, Any] | None, message: str) -> dict[Any, Any]:
    """The document as a mapping; an empty file counts as `empty` unless that is None."""
    if doc.data is None and empty is not None:
        return empty
    if not isinstance(doc.data, dict):
        raise doc.error(message)
    return doc.data


def _bad_name_message(kind: str, name: Any) -> str:
    """Why a name cannot be used for an asset key or table name."""
    return (
        f"{kind} name `{name}` must start with a lowercase letter and contain only "
        "lowercase letters, digits and underscores"
    )

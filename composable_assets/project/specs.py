"""The typed contents of a project folder: settings, destinations, models, audiences and event streams."""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .alerts import AlertSpec
from .cadence import Cadence
from .freshness import Duration, FreshnessSpec
from .gates import GatesSpec
from .secret_refs import resolve_setting

# Names become Dagster asset keys and DuckDB table names.
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class LandingSpec(BaseModel):
    """A landing folder of Parquet / JSON Lines files loaded into a source table (as Snowpipe does)."""

    model_config = ConfigDict(extra="forbid")

    # Rows with a known key replace the stored row (profile changes); without a key, files append (orders, events).
    key: str | None = None
    # Relative to the data folder; default `landing/<table>`.
    path: str | None = None


class ConsentSpec(BaseModel):
    """Where consent lives in the warehouse: one row per (member, purpose), granted or not (project.yaml `consent:`)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(min_length=1)
    # The column holding the member's key: the same values as each audience's primary key.
    key: str = Field(min_length=1)
    purpose: str = "purpose"
    granted: str = "granted"
    # When a row last changed: a grant newer than a person's deletion request lets them back in (governance/deletion.py).
    updated_at: str | None = None


class DeletionRequestsSpec(BaseModel):
    """Where right-to-be-forgotten requests arrive in the warehouse: one row per request (project.yaml `deletion_requests:`)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(min_length=1)
    # The column holding the person's key: the same values as each audience's primary key (as the consent key).
    key: str = Field(min_length=1)
    requested_at: str = Field(default="requested_at", min_length=1)
    id: str = Field(default="request_id", min_length=1)


# URL query parameters that would carry an object store's credentials: they come from the standard environment
# variables (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...) instead, never from a project file.
_SECRET_URL_PARAMETERS = ("access_key", "secret_key", "session_token", "password", "token", "credentials", "sas_token")
_ARCHIVE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")


class ArchiveSpec(BaseModel):
    """Archival (project.yaml `archive:`): old days of delta logs, sync logs and outboxes move to Parquet files."""

    model_config = ConfigDict(extra="forbid")

    # Days older than this (before today in the project's timezone) leave the hot tables; see governance/archive.py.
    retention_days: int = Field(default=90, ge=1)
    # Where the files go: None is `<data dir>/archive`; else an absolute folder or a URL (s3://bucket/prefix,
    # gs://bucket/prefix, file:///folder) opened with pyarrow.fs.FileSystem.from_uri.
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url_without_secrets(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if not parsed.scheme:
            if not value.startswith("/"):
                raise ValueError(
                    f"archive url must be an absolute folder or a URL like s3://bucket/prefix, got {value!r}"
                )
            return value
        if parsed.scheme not in _ARCHIVE_SCHEMES:
            raise ValueError(
                f"archive url scheme {parsed.scheme!r} is not supported; use one of {', '.join(_ARCHIVE_SCHEMES)}"
            )
        secrets = sorted(k for k in parse_qs(parsed.query) if k.lower() in _SECRET_URL_PARAMETERS)
        if parsed.username or parsed.password or secrets:
            raise ValueError(
                "archive url must not carry credentials; the object store's client reads them from its standard "
                "environment variables (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)"
            )
        return value


def _dbt_shorthand(value: Any) -> Any:
    """`dbt: path/to/project` is short for `dbt: {project_dir: path/to/project}`."""
    return {"project_dir": value} if isinstance(value, str) else value


class DbtSettings(BaseModel):
    """project.yaml `dbt:`: a dbt project whose models and seeds are models of this project (project/dbt.py)."""

    model_config = ConfigDict(extra="forbid")

    # Relative to the project folder, as every path in project.yaml.
    project_dir: str = Field(default="dbt", min_length=1)
    # A folder holding your own profiles.yml; None: one is generated from COMPOSABLE_WAREHOUSE (same warehouse).
    profiles_dir: str | None = None
    # A target of your own profiles.yml (its default target when None).
    target: str | None = None

    @model_validator(mode="after")
    def _target_needs_profiles(self) -> DbtSettings:
        if self.target is not None and self.profiles_dir is None:
            raise ValueError(
                "`target` names a target of your own profiles.yml: set `profiles_dir` too (without it, the profile "
                "is generated from COMPOSABLE_WAREHOUSE and has one target)"
            )
        return self


class ProjectSettings(BaseModel):
    """project.yaml; the loader defaults `name` to the project folder's name."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    name: str = Field(min_length=1)
    start_date: datetime.date = datetime.date(2026, 1, 1)
    # "schema" would shadow a BaseModel attribute, hence the alias.
    schema_name: str = Field(default="composable", alias="schema", pattern=NAME_PATTERN)
    timezone: str = "UTC"
    # Source tables fed by landing folders: the minute-level sensor watches the folders, not the warehouse.
    landing: dict[str, LandingSpec] = {}
    # Audience and stream schedules run as soon as the code location loads; false starts them stopped.
    schedules: bool = True
    # How often the change sensors of minute-level files look for new data (Dagster's own default is 30s).
    sensor_interval: Duration = datetime.timedelta(seconds=5)
    # Default send gates for every delta (see project/gates.py); audience files override them.
    gates: GatesSpec | None = None
    # Member data in Dagster's metadata and errors (sampled rows, members' keys): only when asked for. Dagster's
    # storage cannot forget anyone, so by default it holds counts, never a person (docs/project-folder.md, Personal
    # data).
    payload_samples: bool = False
    # The consent table destinations' `consent:` purposes are checked against (see governance/consent.py).
    consent: ConsentSpec | None = None
    # Archival of old days to Parquet files (see governance/archive.py).
    archive: ArchiveSpec = ArchiveSpec()
    # Owners of every asset whose file names none (sources, governance assets, ...), e.g. the data team.
    owners: list[str] = []
    # Column name -> personal data category (email, phone, name, address, ... or `none`), beyond what column names
    # say; see governance/pii.py.
    pii: dict[str, str] = {}
    # People who asked to be forgotten: deleted at every destination, never sent again (see governance/deletion.py).
    deletion_requests: DeletionRequestsSpec | None = None
    # Who is told when a sync fails, a send gate holds a delta or a delivery goes stale (see automation/alerts.py).
    alerts: list[AlertSpec] = []
    # A dbt project whose models and seeds become models of this project, run by dagster-dbt (project/dbt.py).
    dbt: Annotated[DbtSettings | None, BeforeValidator(_dbt_shorthand)] = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name like 'Europe/Berlin'") from None
        return value


class _Delivery(BaseModel):
    """What every delivery to a destination names: the destination, whom a row is about, and its options."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(min_length=1)
    identifier: dict[str, str]
    # Destination-specific choices (how a leaver is removed, Braze `purchase:` columns); checked by the destination type.
    options: dict[str, Any] = {}

    @field_validator("identifier")
    @classmethod
    def _one_identifier(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) != 1:
            raise ValueError(
                f"identifier must have exactly one entry (identifier type: model column), found {len(value)}"
            )
        return _non_empty_entries(value, "identifier type")

    @property
    def identifier_type(self) -> str:
        """The destination's identifier type, e.g. `external_id`."""
        return next(iter(self.identifier))

    @property
    def identifier_column(self) -> str:
        """The model column holding the identifier."""
        return next(iter(self.identifier.values()))


class SyncSpec(_Delivery):
    """How one audience is delivered to one destination."""

    mode: Literal["upsert", "mirror"] = "upsert"
    fields: dict[str, str] = {}

    @field_validator("fields")
    @classmethod
    def _named_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _non_empty_entries(value, "field name")


def _non_empty_entries(value: dict[str, str], what: str) -> dict[str, str]:
    """Reject empty keys or empty column names in a destination -> column mapping."""
    for key, column in value.items():
        if not key.strip():
            raise ValueError(f"{what} must not be empty")
        if not column.strip():
            raise ValueError(f"the model column for {key!r} must not be empty")
    return value


class AudienceSpec(BaseModel):
    """One audiences/<name>.yaml file; `name` and `path` come from the file, not its contents."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(exclude=True)
    path: Path | None = Field(default=None, exclude=True)
    # The project's destinations' `type:` by name, from destinations.yaml (set by the loader): what a sync sends can
    # depend on it (a membership attribute, see destinations/base.py `membership_fields`).
    destination_types: dict[str, str] = Field(default={}, exclude=True)
    description: str | None = None
    owners: list[str] = []
    model: str = Field(min_length=1)
    primary_key: str = Field(min_length=1)
    where: str | None = None
    cadence: Cadence = "daily"
    # Overrides the cadence's default freshness policy (see project/freshness.py).
    freshness: FreshnessSpec | None = None
    # Overrides the project's send gates for this audience's deltas (see project/gates.py).
    gates: GatesSpec | None = None
    syncs: list[SyncSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _required_fields_are_sent(self) -> AudienceSpec:
        # Project-wide required fields apply where a sync sends them; naming one here that no sync sends is a typo.
        sent = {field for sync in self.syncs for field in sync.fields}
        unknown = [f for f in (self.gates.required_fields if self.gates else []) if f not in sent]
        if unknown:
            raise ValueError(
                f"gates.required_fields names {', '.join(unknown)}, which no sync sends (fields: {', '.join(sorted(sent))})"
            )
        return self

    def columns_needed(self) -> list[str]:
        """Model columns the audience reads: primary key, then identifier and field columns."""
        columns = [self.primary_key]
        for sync in self.syncs:
            columns.append(sync.identifier_column)
            columns.extend(sync.fields.values())
        return list(dict.fromkeys(columns))

    def sync_for(self, destination: str) -> SyncSpec:
        """The sync delivering this audience to `destination`."""
        for sync in self.syncs:
            if sync.destination == destination:
                return sync
        raise KeyError(f"audience {self.name!r} has no sync to destination {destination!r}")


class DestinationSpec(BaseModel):
    """One entry of destinations.yaml; `settings` is everything except `type`."""

    name: str
    type: str
    settings: dict[str, Any] = {}
    # The consent purpose a member must have granted to be sent here (e.g. email_marketing), or None.
    consent: str | None = None
    # Where the entry is written, so destination packages can point at it in errors.
    path: Path | None = Field(default=None, exclude=True)
    line: int | None = Field(default=None, exclude=True)

    def resolved_settings(self) -> dict[str, Any]:
        """Settings with every `{env: NAME}` reference replaced by the environment value."""
        return {key: resolve_setting(value) for key, value in self.settings.items()}


@dataclass(frozen=True)
class DbtNode:
    """What a model read from a dbt project's manifest is in dbt (project/dbt.py)."""

    unique_id: str
    #: `model`, `seed` or `snapshot`.
    resource_type: str
    #: dbt's config of the node's relation, when it moves it away from the model's name in the default schema.
    custom_schema: str | None = None
    alias: str | None = None


@dataclass
class ModelSpec:
    """One models/<name>.sql file, or a models/<name>.py file (a Python model: `sql` is empty), or a dbt model or
    seed (`dbt` set; `path` is its file in the dbt project, `sql` its query rendered for lineage, or empty)."""

    name: str
    path: Path
    sql: str
    description: str | None = None
    owners: list[str] = field(default_factory=list)
    model_deps: list[str] = field(default_factory=list)
    source_deps: list[str] = field(default_factory=list)
    # Output column names, or None when they cannot be known without running the query.
    columns: list[str] | None = None
    dbt: DbtNode | None = None

    @property
    def is_python(self) -> bool:
        """A models/<name>.py file: a function returning a pandas DataFrame (project/python_models.py)."""
        return self.dbt is None and self.path.suffix == ".py"

    @property
    def is_dbt(self) -> bool:
        """A model or seed of the project's dbt project, built by dbt through dagster-dbt."""
        return self.dbt is not None

    @property
    def is_seed(self) -> bool:
        """A dbt seed: a CSV file dbt loads, where the data of the models reading it starts."""
        return self.dbt is not None and self.dbt.resource_type == "seed"


class StreamSyncSpec(_Delivery):
    """How one event stream is delivered to one destination: who each event is about, its name and properties."""

    # The event's name at the destination (Braze `name`, Iterable `eventName`).
    event: str = Field(min_length=1)
    # Destination property name: table column.
    properties: dict[str, str] = {}

    @field_validator("properties")
    @classmethod
    def _named_properties(cls, value: dict[str, str]) -> dict[str, str]:
        return _non_empty_entries(value, "property name")


def _stream_start(value: Any) -> Any:
    """`now`, or an ISO date (YAML dates arrive as strings; see yaml_lines)."""
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str):
        if value.strip().lower() == "now":
            return "now"
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"start must be `now` or a date like 2026-03-01, got {value!r}")


class StreamSpec(BaseModel):
    """One streams/<name>.yaml file: append-only rows of a table forwarded as events; see composable_assets/streams."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(exclude=True)
    path: Path | None = Field(default=None, exclude=True)
    description: str | None = None
    owners: list[str] = []
    # A model's name or a source table's name.
    table: str = Field(min_length=1)
    # The column whose value identifies a row for ever; the event id is "<stream>:<value>".
    event_id: str = Field(min_length=1)
    # A timestamp column: when the event happened (or landed); rows are picked up in its order.
    cursor: str = Field(min_length=1)
    where: str | None = None
    # The column holding the person's member key (the values of the consent table's key), by which consent and
    # deletion requests apply to events; default: the consent table's key column name.
    key: str | None = None
    cadence: Cadence = "minutes"
    freshness: FreshnessSpec | None = None
    # Rows at most this far behind the high-water mark are still picked up (deduplicated by event id).
    lookback: Duration = datetime.timedelta(hours=1)
    # Where a new (stream, destination) begins: `now` sends nothing older than `lookback`; a date sends from then.
    start: Annotated[Literal["now"] | datetime.date, BeforeValidator(_stream_start)] = "now"
    syncs: list[StreamSyncSpec] = Field(min_length=1)

    @field_validator("lookback")
    @classmethod
    def _not_negative(cls, value: datetime.timedelta) -> datetime.timedelta:
        if value < datetime.timedelta(0):
            raise ValueError("lookback must not be negative")
        return value

    def sync_for(self, destination: str) -> StreamSyncSpec:
        """The sync delivering this stream to `destination`."""
        for sync in self.syncs:
            if sync.destination == destination:
                return sync
        raise KeyError(f"stream {self.name!r} has no sync to destination {destination!r}")

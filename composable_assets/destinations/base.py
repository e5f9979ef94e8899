"""The destination interface: capabilities as data, per-row results, transient vs terminal errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict


class DestinationError(Exception):
    """A destination could not take a batch."""


class TransientError(DestinationError):
    """Worth retrying later (rate limit, 5xx, timeout, dropped connection): the rows stay unsent."""


class TerminalError(DestinationError):
    """Retrying will not help (bad credentials, bad configuration): the sync stops and fails."""


@dataclass(frozen=True)
class Capabilities:
    """What a destination accepts, as data the delivery loop plans with."""

    batch_size: int
    operations: frozenset[str] = frozenset({"upsert", "remove"})
    max_body_bytes: int | None = None
    requests_per_window: int | None = None
    window_seconds: float | None = None
    concurrency: int = 1


class NoOptions(BaseModel):
    """Sync `options` of a destination that takes none."""

    model_config = ConfigDict(extra="forbid")


class AnySettings(BaseModel):
    """destinations.yaml settings of a destination that checks its own."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class SyncTarget:
    """Which sync a session delivers for, with the sync's validated options."""

    audience: str
    destination: str
    mode: str
    identifier_type: str
    partition: str
    run_id: str
    options: BaseModel = field(default_factory=NoOptions)
    #: The warehouse resource and internal schema, for destinations that write there instead of calling an API.
    warehouse: Any = None
    schema: str = "composable"


@dataclass(frozen=True)
class Record:
    """One delta row to deliver. `change` is add, update or remove; add and update are upserts."""

    seq: int
    key: str
    change: str
    identifier: str
    fields: dict[str, Any] | None
    previous: dict[str, Any] | None

    @property
    def operation(self) -> str:
        return "remove" if self.change == "remove" else "upsert"


@dataclass
class BatchResult:
    """Per-row outcome of one batch. Rows neither acknowledged nor rejected stay unsent, for the next run."""

    acknowledged: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    payloads: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def all_acknowledged(cls, batch: Sequence[Record], payloads: list[dict[str, Any]]) -> "BatchResult":
        return cls(acknowledged=[r.seq for r in batch], payloads=payloads)


class Session(ABC):
    """One sync's open connection to a destination."""

    @abstractmethod
    def send(self, batch: Sequence[Record]) -> BatchResult:
        """Deliver one batch (at most `batch_size` rows); raise TransientError/TerminalError for the whole batch."""

    def confirm(self, records: Sequence[Record]) -> list[int]:
        """Seqs of the records the destination already holds exactly as `send` would deliver them ([]: cannot tell)."""
        # Asked after a killed sync about rows maybe delivered but never checkpointed: confirmed rows are acknowledged,
        # the rest are sent again (at least once). Answer only what is certain; never raise for what cannot be told.
        return []

    def close(self) -> None:
        """Release what the session holds."""

    def stats(self) -> dict[str, float]:
        """Counters worth showing: requests, retries, seconds spent waiting for the rate budget."""
        return {}

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Destination(ABC):
    """A named, configured destination (one entry of destinations.yaml)."""

    #: The `type:` of destinations.yaml this class implements.
    type_name: ClassVar[str]
    #: Dagster kind (icon) of its sync assets.
    kind: ClassVar[str]
    #: pydantic model of its destinations.yaml entry (secrets as {env: NAME}), checked when the project loads.
    Settings: ClassVar[type[BaseModel]] = AnySettings
    #: pydantic model of a sync's `options` in an audience file.
    SyncOptions: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, name: str, settings: dict[str, Any], state_dir: Path | None = None):
        self.name = name
        #: As written in destinations.yaml: secrets are still {env: NAME}; resolve them in `open`.
        self.settings = settings
        #: Local folder for state shared between processes (rate budgets).
        self.state_dir = state_dir or Path("data")

    @property
    def config(self) -> Any:
        """The destinations.yaml entry, validated (secrets still unresolved)."""
        return self.Settings.model_validate(self.settings)

    def sync_options(self, options: dict[str, Any]) -> BaseModel:
        return self.SyncOptions.model_validate(options)

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """Limits and supported operations."""

    @abstractmethod
    def open(self, target: SyncTarget) -> Session:
        """Start delivering one sync's delta."""

    def payloads(self, batch: Sequence[Record], target: SyncTarget) -> list[dict[str, Any]]:
        """What this destination would receive for these rows (for previews and metadata samples)."""
        return [generic_payload(r, target.identifier_type) for r in batch]


def generic_payload(record: Record, identifier_type: str) -> dict[str, Any]:
    """A destination-neutral description of one row: operation, identifier and fields."""
    line: dict[str, Any] = {
        "operation": record.operation,
        "change": record.change,
        "identifier": {identifier_type: record.identifier},
    }
    if record.operation == "upsert":
        line["fields"] = record.fields
    return line

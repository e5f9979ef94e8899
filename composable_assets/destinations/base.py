"""The destination interface: capabilities as data, per-row results, transient vs terminal errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence


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


@dataclass(frozen=True)
class SyncTarget:
    """Which sync a session delivers for."""

    audience: str
    destination: str
    mode: str
    identifier_type: str
    partition: str
    run_id: str


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

    def close(self) -> None:
        """Release what the session holds."""

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

    def __init__(self, name: str, settings: dict[str, Any]):
        self.name = name
        self.settings = settings

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

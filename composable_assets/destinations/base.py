"""The destination interface: capabilities as data, per-row results, transient vs terminal errors.

Operations are data: a row to deliver carries its operation ("upsert" and "remove" for an audience's `Record`s,
"event" for a stream's `Event`s), and `Capabilities` says, per operation, how many rows a request takes and how
fast (`Limits`). One `Destination.open(target)` starts either kind of delivery (`target.delivery.kind`), and the
session's `send(batch)` takes its rows. A destination that takes events sets `EventOptions`, lists "event" in its
limits and says whether resending an event is harmless (`idempotent_events`).
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar, overload

from pydantic import BaseModel, ConfigDict

from ..project.keys import Delivery

if TYPE_CHECKING:
    from ..coordination import Coordination


class DestinationError(Exception):
    """A destination could not take a batch."""


class TransientError(DestinationError):
    """Worth retrying later (rate limit, 5xx, timeout, dropped connection): the rows stay unsent."""


class OutcomeUnknown(TransientError):
    """A request may or may not have been applied (no answer after sending): only safe to resend if idempotent."""


class TerminalError(DestinationError):
    """Retrying will not help (bad credentials, bad configuration): the sync stops and fails."""


#: The operations a row can carry: an audience's upserts and removes, a stream's events.
OPERATIONS = ("upsert", "remove", "event")
#: What each kind of delivery sends (an audience batch mixes upserts and removes: it is planned by upsert's limits).
PLANNED_BY = {"audience": "upsert", "stream": "event"}


@dataclass(frozen=True)
class Limits:
    """How many rows of one operation a request takes, and how many requests a window allows (None: no limit)."""

    batch_size: int
    requests_per_window: int | None = None
    window_seconds: float | None = None

    def describe(self) -> str:
        if not self.requests_per_window:
            return "none"
        return f"{self.requests_per_window} requests / {self.window_seconds or 1:g} s"


@dataclass(frozen=True)
class Capabilities:
    """What a destination accepts, as data the delivery loop plans with: limits per operation it supports."""

    #: Operation ("upsert", "remove", "event") -> its limits; an operation missing here is not supported.
    limits: dict[str, Limits]
    max_body_bytes: int | None = None
    concurrency: int = 1
    #: Whether receiving an event twice is harmless (the destination or its receivers deduplicate by event id), so
    #: a batch in doubt may be resent.
    idempotent_events: bool = False
    #: Deletion requests: at most this many identifiers per `Destination.forget` call; None: it cannot forget anyone.
    forget_batch_size: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.limits) - set(OPERATIONS)
        if unknown:  # a typo here would silently make a destination refuse removes or events
            raise ValueError(f"unknown operations {sorted(unknown)}; operations are {', '.join(OPERATIONS)}")

    @classmethod
    def of(cls, rows: Limits, *, remove: bool = True, events: Limits | None = None, **rest: Any) -> Capabilities:
        """Upserts (and removes) under `rows`; events under `events` when it takes them."""
        limits = {"upsert": rows, **({"remove": rows} if remove else {}), **({"event": events} if events else {})}
        return cls(limits=limits, **rest)

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self.limits)

    def limits_for(self, operation: str) -> Limits:
        """The limits of one operation, or of what a kind of delivery sends ("audience", "stream")."""
        operation = PLANNED_BY.get(operation, operation)
        if operation not in self.limits:
            raise TerminalError(f"the destination does not take `{operation}` operations")
        return self.limits[operation]

    @property
    def batch_size(self) -> int:
        """Rows per request of an audience delivery."""
        return self.limits_for("upsert").batch_size


class NoOptions(BaseModel):
    """Sync `options` of a destination that takes none."""

    model_config = ConfigDict(extra="forbid")


class AnySettings(BaseModel):
    """destinations.yaml settings of a destination that checks its own."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class Target:
    """Which delivery a session is for (an audience's sync or a stream's), with its validated options."""

    delivery: Delivery
    destination: str
    identifier_type: str
    partition: str
    run_id: str
    options: BaseModel = field(default_factory=NoOptions)
    #: Audiences: mirror or upsert.
    mode: str = "upsert"
    #: Streams: the event name the stream sync sends.
    event: str | None = None
    #: The warehouse resource and internal schema, for destinations that write there instead of calling an API.
    warehouse: Any = None
    schema: str = "composable"

    @property
    def name(self) -> str:
        return self.delivery.name

    @property
    def audience(self) -> str:
        """The audience name, for code that only serves audience deliveries."""
        return self.delivery.name

    @property
    def stream(self) -> str:
        """The stream name, for code that only serves stream deliveries."""
        return self.delivery.name

    @property
    def events(self) -> bool:
        return self.delivery.kind == "stream"


class Record:
    """One delta row to deliver. `change` is add, update or remove; add and update are upserts.

    The warehouse hands each row's fields over as JSON text (`fields_text`, `previous_text`): they are parsed only
    when something reads `fields` or `previous`, so a destination that can send the text as it is (Braze's adds
    splice it into the request body) never builds the dicts. A plain class with slots rather than a frozen
    dataclass: the delivery loop makes one per delivered row, and this is several times cheaper to build.
    Treat it as immutable.
    """

    __slots__ = ("seq", "key", "change", "identifier", "fields_text", "previous_text", "_fields", "_previous")

    seq: int
    key: str
    change: str
    identifier: str
    #: The fields as JSON text, when the record was read from the warehouse (None: built from dicts, or no fields).
    fields_text: str | None
    previous_text: str | None

    def __init__(
        self,
        seq: int,
        key: str,
        change: str,
        identifier: str,
        fields: dict[str, Any] | None,
        previous: dict[str, Any] | None,
    ):
        self.seq, self.key, self.change, self.identifier = seq, key, change, identifier
        self._fields, self._previous = fields, previous
        self.fields_text = self.previous_text = None

    @classmethod
    def from_json(
        cls, seq: int, key: str, change: str, identifier: str, fields_text: str | None, previous_text: str | None
    ) -> Record:
        """A record whose fields are JSON text as the warehouse wrote them, parsed on first use."""
        record = cls.__new__(cls)
        record.seq, record.key, record.change, record.identifier = seq, key, change, identifier
        record.fields_text, record.previous_text = fields_text, previous_text
        record._fields = record._previous = None  # parsed on first use
        return record

    @property
    def fields(self) -> dict[str, Any] | None:
        # Two sender threads parsing the same record at once both store equal dicts: harmless.
        if self._fields is None and self.fields_text is not None:
            self._fields = json.loads(self.fields_text)
        return self._fields

    @property
    def previous(self) -> dict[str, Any] | None:
        if self._previous is None and self.previous_text is not None:
            self._previous = json.loads(self.previous_text)
        return self._previous

    @property
    def operation(self) -> str:
        return "remove" if self.change == "remove" else "upsert"

    def _values(self) -> tuple:
        return (self.seq, self.key, self.change, self.identifier, self.fields, self.previous)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # equal records hold equal dicts, which cannot be hashed

    def __repr__(self) -> str:
        return (
            f"Record(seq={self.seq!r}, key={self.key!r}, change={self.change!r}, identifier={self.identifier!r}, "
            f"fields={self.fields!r}, previous={self.previous!r})"
        )


class PreparedBatch(Sequence[Record]):
    """Delta rows whose request objects the warehouse already wrote, as JSON text each, in the rows' order.

    What `Session.object_sql` asked for, so a session sends `objects` as they are: no Record, no dict, no encoding
    per row. The rows' columns stay beside them, and a Record is built only where one is asked for (the loop reads
    a batch's first and last row; a rejected row is looked up by its seq). Every row has an identifier; `fields`
    and `previous` may be None (a row with an object needs neither, and the delivery does not read them).
    """

    __slots__ = ("seqs", "keys", "changes", "identifiers", "fields", "previous", "objects")

    def __init__(
        self,
        seqs: list[int],
        keys: list[str],
        changes: list[str],
        identifiers: list[str],
        fields: list[str | None],
        previous: list[str | None],
        objects: list[str],
    ):
        self.seqs, self.keys, self.changes, self.identifiers = seqs, keys, changes, identifiers
        self.fields, self.previous, self.objects = fields, previous, objects

    def __len__(self) -> int:
        return len(self.seqs)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Record.from_json(
            self.seqs[index],
            self.keys[index],
            self.changes[index],
            self.identifiers[index],
            self.fields[index],
            self.previous[index],
        )


@dataclass(frozen=True)
class Event:
    """One row of an event stream to deliver. `seq` numbers it within its run, for per-event results."""

    seq: int
    #: Deterministic and stable: "<stream>:<value of the stream's event_id column>".
    event_id: str
    #: The identifier column's value as text; None when the row has none (rejected before sending).
    identifier: str | None
    name: str
    #: The cursor value: when the event happened, naive UTC.
    time: dt.datetime
    #: Destination property name -> JSON value.
    properties: dict[str, Any]
    #: Values of the columns the destination's event options name (e.g. Braze purchase `price`), by option name.
    extras: dict[str, Any] = field(default_factory=dict)
    operation: ClassVar[str] = "event"


#: One row to deliver: what `Session.send` takes (a session gets the rows of the kind it was opened for).
Row = Record | Event


#: What became of one identifier a destination was asked to forget (the proof in `deletion_log`).
DELETED, NOT_FOUND, FAILED, PURGED = "deleted", "not_found", "failed", "purged"


@dataclass(frozen=True)
class ForgetTarget:
    """Whom a destination is asked to forget: the identifier type, and the delivery through which it knew them."""

    destination: str
    identifier_type: str
    run_id: str
    #: The audience (or stream) whose deliveries reached the person: Braze aliases and CDI tables are per audience.
    source: str
    #: That sync's (or stream sync's) validated options, e.g. Braze `alias_label`.
    options: BaseModel = field(default_factory=NoOptions)
    #: The warehouse resource and internal schema, for destinations that write there instead of calling an API.
    warehouse: Any = None
    schema: str = "composable"


@dataclass(frozen=True)
class Forgotten:
    """One identifier's outcome: DELETED, NOT_FOUND (already gone), FAILED (tried again next run) or PURGED (our copy).

    `response` is what the destination answered (status and a short body), secrets redacted.
    """

    identifier: str
    status: str
    response: str


@dataclass
class BatchResult:
    """Per-row outcome of one batch. Rows neither acknowledged nor rejected stay unsent, for the next run."""

    acknowledged: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    #: What was sent, for the metadata sample: dicts, or JSON text of one object each (parsed only if sampled).
    payloads: list[Any] = field(default_factory=list)
    #: Rows that may or may not have arrived, at a destination where a resend would duplicate them (events only).
    in_doubt: dict[int, str] = field(default_factory=dict)

    @classmethod
    def all_acknowledged(cls, batch: Sequence[Row], payloads: list[Any]) -> BatchResult:
        return cls(acknowledged=[r.seq for r in batch], payloads=payloads)


#: The rows a session takes: `Record`s for an audience's session, `Event`s for a stream's.
RowT = TypeVar("RowT", bound=Row)


class Senders(Protocol):
    """Where the delivery loop's batches go out from: a future of each one's answer."""

    def submit(self, batch: Any) -> Future[BatchResult]: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class Session(Generic[RowT]):
    """One sync's (or one stream's) open connection to a destination."""

    # Not an ABC: every method has a working default (send refuses), so a session overrides only what it does.
    def send(self, batch: Sequence[RowT]) -> BatchResult:
        """Deliver one batch (at most its operation's `batch_size`); results keyed by the rows' `seq`.

        An audience session gets `Record`s (upserts and removes), a stream session `Event`s. Every row should end
        acknowledged or rejected; one left out of both stays unsent and is tried again next run. Raise
        TransientError/TerminalError for the whole batch.
        """
        raise TerminalError(f"{type(self).__name__} does not deliver these rows")

    def concurrent(self, concurrency: int) -> Senders | None:
        """Batches sent side by side from the delivery loop's own thread (answers as they come), each as `send`
        would send it; None: the loop sends each batch in flight from a thread of its own through `send`."""
        return None

    def object_sql(self, change: str, identifier: str, fields: str) -> str | None:
        """SQL (DuckDB dialect) for the JSON text this session sends for one delta row, or None: it builds its own.

        The expression reads the row's `change`, `identifier` and `fields` (JSON text) through the SQL given, and is
        NULL for a row this session must build in Python. A batch whose every row has its text arrives at `send` as a
        `PreparedBatch`; any other batch as Records, as always.
        """
        return None

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

    def __enter__(self) -> Self:
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
    #: pydantic model of a sync's `options` in an audience file. When the project loads it is validated with the
    #: context {"mode": ..., "identifier_type": ...} of its sync (`info.context` in a validator), so that a combination
    #: that cannot work (a mirror whose leavers would still look like members) is refused there, with file and line.
    SyncOptions: ClassVar[type[BaseModel]] = NoOptions
    #: pydantic model of a stream sync's `options` (streams/*.yaml); None: this destination cannot take events.
    #: An options model may name table columns the events need: `columns() -> {option name: column}`, whose
    #: values arrive in `Event.extras`.
    EventOptions: ClassVar[type[BaseModel] | None] = None

    def __init__(self, name: str, settings: dict[str, Any], coordination: Coordination | None = None):
        self.name = name
        #: As written in destinations.yaml: secrets are still {env: NAME}; resolve them in `open`.
        self.settings = settings
        #: Where the rate budgets shared by every process and machine sending to one account live.
        if coordination is None:
            from ..coordination import Coordination  # a Dagster resource, loaded only when a destination is built

            coordination = Coordination(url="sqlite:///data/coordination.sqlite")
        self.coordination = coordination

    @property
    def config(self) -> Any:
        """The destinations.yaml entry, validated (secrets still unresolved)."""
        return self.Settings.model_validate(self.settings)

    def sync_options(self, options: dict[str, Any]) -> BaseModel:
        return self.SyncOptions.model_validate(options)

    @classmethod
    def membership_fields(cls, options: BaseModel, audience: str, mode: str, identifier_type: str) -> dict[str, Any]:
        """Fields every member carries here besides the mapped ones: destination field -> value ({}: none).

        A destination that tells members from leavers by an attribute (Braze's `in_<audience>`: true on members,
        cleared from leavers) names it here. The attribute then travels like a mapped field: it is in every row's
        hash and in the ledger, so adds carry it, updates send it only when it is new, and a sync that gains it
        (an install from before it existed, a new `membership_attribute`) updates every member once with just it.
        """
        return {}

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """Limits and supported operations."""

    @abstractmethod
    def open(self, target: Target) -> Session:
        """Start one delivery: an audience's delta or a stream's events (`target.delivery.kind`)."""

    def payloads(self, batch: Sequence[Record], target: Target) -> list[dict[str, Any]]:
        """What this destination would receive for these rows (for previews and metadata samples)."""
        return [generic_payload(r, target.identifier_type) for r in batch]

    def event_options(self, options: dict[str, Any]) -> BaseModel:
        if self.EventOptions is None:
            raise TerminalError(f"destination {self.name} ({self.type_name}) cannot take events")
        return self.EventOptions.model_validate(options)

    @staticmethod
    def event_columns(options: BaseModel) -> dict[str, str]:
        """Option name -> table column, for the columns a stream sync's options name."""
        columns = getattr(options, "columns", None)
        return dict(columns()) if callable(columns) else {}

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        """Delete these people (at most `capabilities.forget_batch_size`); one outcome per identifier, in order.

        Raise TransientError/TerminalError when nothing could be done at all: every identifier then counts as failed
        and is tried again next run.
        """
        raise TerminalError(f"destination {self.name} ({self.type_name}) cannot delete people")


def generic_event(event: Event, identifier_type: str) -> dict[str, Any]:
    """A destination-neutral description of one event: id, name, time, identifier and properties."""
    line: dict[str, Any] = {
        "id": event.event_id,
        "name": event.name,
        "time": iso_time(event.time),
        "identifier": {identifier_type: event.identifier},
        "properties": event.properties,
    }
    if event.extras:
        line["extras"] = event.extras
    return line


def iso_time(value: dt.datetime) -> str:
    """ISO-8601 in UTC with milliseconds, e.g. 2026-03-02T10:15:00.000Z (naive values are UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


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

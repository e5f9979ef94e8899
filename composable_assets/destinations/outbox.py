"""The outbox: writes what would be sent as JSON Lines on local disk, one file per run and destination.

Audience syncs write `<path>/<destination>/<audience>/<day>/<run id>.jsonl`; event streams write one line per
event (id, name, time, identifier, properties) to `<path>/<destination>/streams/<stream>/<day>/<run id>.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from .base import (
    BatchResult,
    Capabilities,
    Destination,
    Event,
    EventTarget,
    NoOptions,
    Record,
    Session,
    SyncTarget,
    generic_event,
    generic_payload,
)

DEFAULT_BATCH_SIZE = 1000


class OutboxSession(Session):
    def __init__(self, path: Path, target: SyncTarget | EventTarget):
        self.path = path
        self.target = target
        self._file = None

    def send(self, batch: Sequence[Record]) -> BatchResult:
        payloads = [generic_payload(r, self.target.identifier_type) for r in batch]
        self._write(payloads)
        return BatchResult.all_acknowledged(batch, payloads)

    def send_events(self, batch: Sequence[Event]) -> BatchResult:
        payloads = [generic_event(e, self.target.identifier_type) for e in batch]
        self._write(payloads)
        return BatchResult(acknowledged=[e.seq for e in batch], payloads=payloads)

    def _write(self, payloads: list[dict]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Append: a re-executed run adds to its own file instead of hiding what went out before.
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(json.dumps(p, default=str, separators=(",", ":")) + "\n" for p in payloads))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)


class Outbox(Destination):
    """Settings: `path` (folder; default the local data folder's outbox/) and `batch_size`."""

    type_name = "outbox"
    kind = "json"
    Settings = OutboxSettings
    EventOptions = NoOptions

    @property
    def capabilities(self) -> Capabilities:
        batch_size = int(self.settings.get("batch_size", DEFAULT_BATCH_SIZE))
        # A file a consumer reads again after a crash: lines carry event ids to deduplicate by.
        return Capabilities(batch_size=batch_size, events=True, events_idempotent=True, event_batch_size=batch_size)

    def file_for(self, target: SyncTarget) -> Path:
        return Path(self.settings["path"]) / self.name / target.audience / target.partition / f"{target.run_id}.jsonl"

    def open(self, target: SyncTarget) -> Session:
        return OutboxSession(self.file_for(target), target)

    def events_file_for(self, target: EventTarget) -> Path:
        return (
            Path(self.settings["path"]) / self.name / "streams" / target.stream / target.partition / f"{target.run_id}.jsonl"
        )

    def open_events(self, target: EventTarget) -> Session:
        return OutboxSession(self.events_file_for(target), target)

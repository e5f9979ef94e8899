"""The outbox: writes what would be sent as JSON Lines on local disk, one file per run and destination.

Audience syncs write `<path>/<destination>/<audience>/<day>/<run id>.jsonl`; event streams write one line per
event (id, name, time, identifier, properties) to `<path>/<destination>/streams/<stream>/<day>/<run id>.jsonl`.

Deletion requests (governance/deletion.py) purge a person's lines, by identifier, from every file of the destination
(audiences and streams alike); each file is rewritten beside itself and swapped in.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from .base import (
    NOT_FOUND,
    PURGED,
    BatchResult,
    Capabilities,
    Destination,
    ForgetTarget,
    Forgotten,
    Limits,
    NoOptions,
    Row,
    Session,
    Target,
    generic_event,
    generic_payload,
)

DEFAULT_BATCH_SIZE = 1000
# People per forget call: every file is read once a call.
FORGET_BATCH = 10_000


def purge_lines(folder: Path, identifier_type: str, identifiers: set[str]) -> list[tuple[Path, str]]:
    """Rewrite every .jsonl file under `folder` without the lines identifying one of `identifiers`; (file, id) removed."""
    # A line spells an identifier as json.dumps does: a cheap text test before parsing the line.
    spelled = [json.dumps(i) for i in identifiers]
    removed: list[tuple[Path, str]] = []
    for file in sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []:
        kept: list[str] = []
        found: list[str] = []
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                value = (
                    json.loads(line).get("identifier", {}).get(identifier_type)
                    if any(s in line for s in spelled)
                    else None
                )
                if value in identifiers:
                    found.append(value)
                else:
                    kept.append(line)
        if found:
            staging = file.with_name(file.name + ".purging")
            staging.write_text("".join(kept), encoding="utf-8")
            os.replace(staging, file)  # atomic: a reader sees the old file or the new one
            removed += [(file, value) for value in found]
    return removed


class OutboxSession(Session[Row]):
    def __init__(self, path: Path, target: Target):
        self.path = path
        self.target = target
        # One line shape per kind of delivery, chosen once for the session.
        # An events session is given Events and an audience session Records, so each row fits its line shape.
        self.line: Callable[[Any, str], dict[str, Any]] = generic_event if target.events else generic_payload
        self._file: TextIO | None = None

    def send(self, batch: Sequence[Row]) -> BatchResult:
        payloads = [self.line(r, self.target.identifier_type) for r in batch]
        self._write(payloads)
        return BatchResult.all_acknowledged(batch, payloads)

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
        return Capabilities.of(
            Limits(batch_size), events=Limits(batch_size), idempotent_events=True, forget_batch_size=FORGET_BATCH
        )

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        """Remove every line about these people from this destination's files."""
        removed = purge_lines(Path(self.settings["path"]) / self.name, target.identifier_type, set(identifiers))
        lines = Counter(identifier for _, identifier in removed)
        files = Counter(identifier for _, identifier in set(removed))
        return [
            Forgotten(i, PURGED, f"{lines[i]} lines removed from {files[i]} outbox files")
            if lines[i]
            else Forgotten(i, NOT_FOUND, "no line in the outbox")
            for i in identifiers
        ]

    def file_for(self, target: Target) -> Path:
        """Audiences under <path>/<destination>/<audience>/, streams under .../streams/<stream>/ (as before)."""
        folder = Path(self.settings["path"]) / self.name
        folder = folder / "streams" / target.name if target.events else folder / target.name
        return folder / target.partition / f"{target.run_id}.jsonl"

    def open(self, target: Target) -> Session:
        return OutboxSession(self.file_for(target), target)

"""A landing folder on disk: which files wait to be loaded, how writers add one, where loaded ones go.

Nothing here opens the warehouse, so writers (the live-traffic simulator, an export job) and the change
sensor never compete for the embedded DuckDB file's one-writer lock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..project.specs import LandingSpec

# Files a loader reads; anything else in the folder (notes, temp files) is left alone.
SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson")
LOADED, REJECTED = "_loaded", "_rejected"

_counter = itertools.count()


@dataclass(frozen=True)
class LandingFolder:
    """The folder feeding one source table."""

    table: str
    path: Path
    key: str | None = None

    def pending(self) -> list[Path]:
        """Files waiting to be loaded, oldest first (writers name files so they sort by landing time)."""
        if not self.path.is_dir():
            return []
        return sorted(
            p for p in self.path.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
        )

    def marker(self) -> str | None:
        """The newest pending file's name: a change marker that costs one directory listing."""
        files = self.pending()
        return files[-1].name if files else None

    def new_file_name(self, suffix: str = ".parquet", now: dt.datetime | None = None) -> str:
        """A name that sorts after every earlier one from this process: UTC time, pid and a counter."""
        now = now or dt.datetime.now(dt.UTC)
        return f"{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(_counter):06d}{suffix}"

    def temp_path(self, name: str) -> Path:
        """Where a writer builds a file before `publish` renames it in (dot files are never loaded)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / f".{name}.tmp"

    def publish(self, temp: Path, name: str) -> Path:
        """Atomically make a finished file visible to the loader (a rename within one folder)."""
        final = self.path / name
        os.replace(temp, final)
        return final

    def archive(self, file: Path, day: dt.date) -> None:
        """Move a loaded file under _loaded/<day>/: kept, not deleted, so no landed data is ever lost."""
        target = self.path / LOADED / day.isoformat()
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(file, target / file.name)

    def reject(self, file: Path, reason: str) -> Path:
        """Move a file the warehouse refused under _rejected/, with the reason in a .error.txt beside it."""
        target = self.path / REJECTED
        target.mkdir(parents=True, exist_ok=True)
        moved = target / file.name
        shutil.move(file, moved)
        (target / f"{file.name}.error.txt").write_text(reason + "\n")
        return moved


def landing_folders(landing: Mapping[str, LandingSpec], data_dir: Path) -> dict[str, LandingFolder]:
    """The project's landing folders; a relative `path:` is under the data folder."""
    return {
        table: LandingFolder(table=table, path=(data_dir / (spec.path or f"landing/{table}")).absolute(), key=spec.key)
        for table, spec in landing.items()
    }

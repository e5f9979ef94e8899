"""The one environment switch, read when definitions load (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .sample import SAMPLE_PROJECT_DIR


DEFAULT_DUCKDB_MEMORY_LIMIT = "1500MB"


@dataclass(frozen=True)
class Settings:
    """Where the project folder, the warehouse and local files are."""

    project_dir: Path
    warehouse_url: str
    data_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("COMPOSABLE_DATA_DIR") or "data").absolute()
        project_dir = Path(env.get("COMPOSABLE_PROJECT_DIR") or SAMPLE_PROJECT_DIR).absolute()
        # The embedded default shares the machine with Dagster: bound DuckDB's memory (it spills to disk
        # beyond it). At 1,500 MB a 10M-member delta peaks at 1.6 GB instead of 2.5 GB (README, Performance).
        default_url = f"duckdb:///{data_dir / 'warehouse.duckdb'}?memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}"
        warehouse_url = env.get("COMPOSABLE_WAREHOUSE") or default_url
        return cls(project_dir=project_dir, warehouse_url=warehouse_url, data_dir=data_dir)

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

"""The one environment switch, read when definitions load (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DUCKDB_MEMORY_LIMIT = "1500MB"


class NoProjectError(ValueError):
    """No project folder is named: COMPOSABLE_PROJECT_DIR is unset and the current folder holds no project.yaml."""


@dataclass(frozen=True)
class Settings:
    """Where the project folder, the warehouse and local files are."""

    project_dir: Path
    warehouse_url: str
    data_dir: Path
    #: Where leases and rate budgets live (see coordination/); None: a SQLite file in the data folder (one machine).
    coordination_url: str | None = None
    #: A delivery's lease not renewed for this long is taken over (a holder that died on another machine).
    lease_seconds: float = 30.0
    #: Where the Dagster UI is published (https://dagster.example.com): alerts then link to it, else give its paths.
    ui_url: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        project_dir: Path | None = None,
        fallback_project_dir: Path | None = None,
    ) -> Settings:
        """Settings from the environment; `project_dir` replaces the project folder it names.

        The project folder is COMPOSABLE_PROJECT_DIR, else the current folder if it holds a project.yaml, else
        `fallback_project_dir` (the demo commands pass the demo's), else NoProjectError naming the variable.
        """
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("COMPOSABLE_DATA_DIR") or "data").absolute()
        project_dir = project_dir or configured_project_dir(env) or fallback_project_dir
        if project_dir is None:
            raise NoProjectError(
                f"no project folder: COMPOSABLE_PROJECT_DIR is not set and the current folder ({Path.cwd()}) holds "
                "no project.yaml. Set COMPOSABLE_PROJECT_DIR to your project folder or run from it (`composable init "
                "DIR` creates one; `composable demo` runs the demo project)."
            )
        # The embedded default shares the machine with Dagster: bound DuckDB's memory (it spills to disk
        # beyond it). At 1,500 MB a 10M-member delta peaks at 1.6 GB instead of 2.5 GB (docs/performance.md).
        default_url = f"duckdb:///{data_dir / 'warehouse.duckdb'}?memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}"
        warehouse_url = env.get("COMPOSABLE_WAREHOUSE") or default_url
        return cls(
            project_dir=Path(project_dir).absolute(),
            warehouse_url=warehouse_url,
            data_dir=data_dir,
            coordination_url=env.get("COMPOSABLE_COORDINATION_URL") or _instance_postgres_url(env),
            lease_seconds=_seconds(env, "COMPOSABLE_LEASE_SECONDS", 30.0),
            ui_url=env.get("COMPOSABLE_UI_URL") or None,
        )

    @property
    def coordination(self) -> str:
        """The coordination store's URL: the configured one, else a SQLite file beside the local warehouse."""
        return self.coordination_url or f"sqlite:///{self.data_dir / 'coordination.sqlite'}"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"


def configured_project_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The project folder the user named: COMPOSABLE_PROJECT_DIR, else the current folder if it holds a project.yaml."""
    env = os.environ if environ is None else environ
    if env.get("COMPOSABLE_PROJECT_DIR"):
        return Path(env["COMPOSABLE_PROJECT_DIR"])
    here = Path.cwd()
    return here if (here / "project.yaml").is_file() else None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds from the environment; a clear error naming the variable otherwise."""
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
    return value


def _instance_postgres_url(env: Mapping[str, str]) -> str | None:
    """The Dagster instance's PostgreSQL (deploy/dagster.yaml reads DAGSTER_PG_*), when that is where it lives.

    Runs may then start on any machine that shares the instance, so leases and budgets go where they all meet.
    The password stays in DAGSTER_PG_PASSWORD, read when the store connects.
    """
    host = env.get("DAGSTER_PG_HOST")
    if not host:
        return None
    user, port, db = env.get("DAGSTER_PG_USER", ""), env.get("DAGSTER_PG_PORT") or "5432", env.get("DAGSTER_PG_DB", "")
    return f"postgresql://{user}@{host}:{port}/{db}"

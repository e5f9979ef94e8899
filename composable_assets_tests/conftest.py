"""Shared fixtures: a small project folder on a temporary DuckDB file, and a recording destination."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Sequence

import duckdb
import pytest

from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.destinations.base import AnySettings
from composable_assets.destinations import (
    BatchResult,
    Capabilities,
    Limits,
    Destination,
    Event,
    Record,
    Session,
    Target,
    TransientError,
    register_destination_type,
)
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings

import dagster as dg

# Warehouse fixtures (postgres_url, snowflake_url, ...) for any test module.
from .warehouses import fakesnow_server, postgres_url, snowflake_server_url, snowflake_url, warehouse_url  # noqa: F401
from .bigquery_fixtures import bigquery_fake, bigquery_url  # noqa: F401
# The Braze and Iterable stand-ins for event stream tests.
from .stream_project import fakes  # noqa: F401


@register_destination_type
class Recording(Destination):
    """A test destination: keeps what it acknowledged; can reject identifiers, crash, or be unavailable."""

    type_name = "recording"
    kind = "python"
    SyncOptions = AnySettings  # stands in for any destination, so it takes any sync options
    EventOptions = AnySettings  # and any event stream's
    received: ClassVar[dict[str, list[Record]]] = defaultdict(list)
    received_events: ClassVar[dict[str, list[Event]]] = defaultdict(list)
    reject: ClassVar[dict[str, set[str]]] = defaultdict(set)
    crash_after_batches: ClassVar[dict[str, int]] = {}
    unavailable: ClassVar[set[str]] = set()

    @classmethod
    def reset(cls) -> None:
        cls.received.clear()
        cls.received_events.clear()
        cls.reject.clear()
        cls.crash_after_batches.clear()
        cls.unavailable.clear()

    @property
    def capabilities(self) -> Capabilities:
        limits = Limits(int(self.settings.get("batch_size", 3)))
        return Capabilities.of(
            limits, remove=not self.settings.get("upsert_only"), events=limits, idempotent_events=True
        )

    def open(self, target: Target) -> Session:
        return RecordingSession(self.name, target.events)


class RecordingSession(Session):
    def __init__(self, name: str, events: bool = False):
        self.name = name
        self.events = events
        self.batches = 0

    def send(self, batch: Sequence[Record]) -> BatchResult:
        if self.events:
            return self.send_events(batch)
        if self.name in Recording.unavailable:
            raise TransientError("503 Service Unavailable (after retries)")
        limit = Recording.crash_after_batches.get(self.name)
        if limit is not None and self.batches >= limit:
            raise RuntimeError("process crashed mid-sync")
        self.batches += 1
        result = BatchResult()
        for r in batch:
            if r.identifier in Recording.reject[self.name]:
                result.rejected[r.seq] = f"invalid identifier {r.identifier}"
            else:
                Recording.received[self.name].append(r)
                result.acknowledged.append(r.seq)
        return result

    def send_events(self, batch: Sequence[Event]) -> BatchResult:
        Recording.received_events[self.name].extend(batch)
        return BatchResult(acknowledged=[e.seq for e in batch])


@pytest.fixture(autouse=True)
def _reset_recording():
    Recording.reset()
    yield
    Recording.reset()


SMALL_MODEL = """\
-- People with a score.
-- owners: team:growth
SELECT id, email, name, score FROM people
"""

SMALL_AUDIENCE = """\
description: People who scored over 10.
owners: [growth@example.com]
model: people_model
primary_key: id
where: score > 10
cadence: daily
syncs:
  - destination: rec_mirror
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email, name: name}
  - destination: rec_upsert
    mode: upsert
    identifier: {email: email}
    fields: {name: name, score: score}
"""

SMALL_DESTINATIONS = """\
rec_mirror: {type: recording, batch_size: 2}
rec_upsert: {type: recording, batch_size: 3}
box: {type: outbox, batch_size: 2}
"""


class SmallProject:
    """A project folder plus its DuckDB file; `people` rows are (id, email, name, score)."""

    def __init__(self, root: Path):
        self.root = root
        self.db = root / "warehouse.duckdb"
        self.settings = Settings(project_dir=root / "project", warehouse_url=f"duckdb:///{self.db}", data_dir=root / "data")
        self.instance = dg.DagsterInstance.ephemeral()

    def write(self, path: str, text: str) -> None:
        target = self.settings.project_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    def set_people(self, rows: list[tuple[int, str | None, str | None, int]]) -> None:
        with duckdb.connect(str(self.db)) as con:
            con.execute("CREATE OR REPLACE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
            if rows:
                con.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", rows)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with duckdb.connect(str(self.db)) as con:
            return con.execute(sql, params).fetchall()

    def ledger(self, destination: str, audience: str = "high") -> dict[str, str]:
        """key -> identifier of what the destination has acknowledged."""
        return dict(self.query(f'SELECT _key, _identifier FROM composable."ledger__{audience}__{destination}"'))

    def sync(self, audience: str = "high", date: str = "2026-03-02", destination: str | None = None) -> RunOutcome:
        defs = load_definitions(self.settings)
        project = load_project(self.settings.project_dir, warehouse_url=self.settings.warehouse_url)
        return run_selection(defs, audience_selection(project, audience, destination), date, self.instance)


@pytest.fixture
def small(tmp_path: Path) -> SmallProject:
    p = SmallProject(tmp_path)
    p.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\n')
    p.write("models/people_model.sql", SMALL_MODEL)
    p.write("audiences/high.yaml", SMALL_AUDIENCE)
    p.write("destinations.yaml", SMALL_DESTINATIONS)
    p.set_people([(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)])  # ids 11..20 score > 10
    return p


@pytest.fixture
def demo_home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME and data folder for `composable demo` on the bundled sample with its local stand-ins."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    for name in ("COMPOSABLE_WAREHOUSE", "COMPOSABLE_PROJECT_DIR", "BRAZE_REST_ENDPOINT", "ITERABLE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


# What a fresh process imports to load a project's definitions, as a run or the code server would.
_IMPORTED_BY_LOADING = (
    "import sys\n"
    "from pathlib import Path\n"
    "from composable_assets.definitions import load_definitions\n"
    "from composable_assets.settings import Settings\n"
    "settings = Settings(project_dir=Path(sys.argv[1]), warehouse_url=sys.argv[2], data_dir=Path(sys.argv[3]))\n"
    "load_definitions(settings).resolve_asset_graph()\n"
    "print(','.join(sorted(m for m in sys.argv[4:] if m in sys.modules)))\n"
)


def modules_imported_by_loading(project: SmallProject, modules: Sequence[str]) -> list[str]:
    """Which of `modules` a new process imports to load `project`'s definitions (start-up cost of every run).

    The recording destination type is registered in this process only, so the project's audiences are removed and
    its destinations replaced by an outbox first.
    """
    settings = project.settings
    for audience in (settings.project_dir / "audiences").glob("*.yaml"):
        audience.unlink()
    project.write("destinations.yaml", "box: {type: outbox}\n")
    args = [str(settings.project_dir), settings.warehouse_url, str(settings.data_dir)]
    return modules_imported_by(_IMPORTED_BY_LOADING, args, modules)


def modules_imported_by(code: str, args: Sequence[str], modules: Sequence[str], env: dict | None = None) -> list[str]:
    """Which of `modules` a new process running `code` imports: it gets `args`, then `modules`, as its arguments and
    prints those of `modules` in sys.modules, comma-separated, as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args, *modules], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().splitlines()[-1].split(",") if m] if result.stdout.strip() else []

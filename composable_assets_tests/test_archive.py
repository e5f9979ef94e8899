"""Archival: old days leave the hot tables for Parquet files, read back equal, and change no current answer.

A small project (a mirror and an upsert to recording destinations, an upsert to an outbox) syncs over several days,
then the real `governance/archive` asset archives the days older than a short retention.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from composable_assets.assets.archive import ARCHIVE_KEY
from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.governance import archive as archival
from composable_assets.project import load_project
from composable_assets.project.gates import OVERRIDE_TAG
from composable_assets.runner import RunOutcome, run_selection

from .conftest import SMALL_AUDIENCE, Recording
from .test_engines_flow import EngineProject, counts, people

TODAY = dt.datetime.now(dt.UTC).date()  # the project's timezone is UTC


def ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


AUDIENCE = SMALL_AUDIENCE.replace(
    "cadence: daily\n", "cadence: daily\ngates: {min_members: 0, max_remove_percent: 20, max_change_percent: 100}\n"
) + "  - destination: box\n    mode: upsert\n    identifier: {external_id: id}\n    fields: {email: email, name: name}\n"

# The hot tables of the small project that the archive takes rows of.
PAIRS = ("rec_mirror", "rec_upsert", "box")
TABLES = (*(f"delta__high__{d}" for d in PAIRS), "delta_runs", "gate_results", "sync_acks", "sync_failures",
          "sync_log", "sync_runs")


class ArchiveProject(EngineProject):
    """The small project plus an outbox, with send gates and a 3-day archive retention."""

    def __init__(self, root: Path, url: str, archive: str = "{retention_days: 3}"):
        super().__init__(root, url)
        project = self.settings.project_dir
        (project / "audiences" / "high.yaml").write_text(AUDIENCE)
        (project / "destinations.yaml").write_text(
            "rec_mirror: {type: recording, batch_size: 2}\nrec_upsert: {type: recording, batch_size: 3}\n"
            "box: {type: outbox, batch_size: 2}\n"
        )
        (project / "project.yaml").write_text(f'name: small\nstart_date: "2026-01-01"\narchive: {archive}\n')

    def sync(self, date: str = ago(0), tags: dict[str, str] | None = None, selection=None) -> RunOutcome:
        defs = load_definitions(self.settings)
        selection = selection or audience_selection(load_project(self.settings.project_dir), "high", None)
        return run_selection(defs, selection, date, self.instance, tags=tags)

    def archive(self, before: str | None = None) -> dict[str, Any]:
        """Materialize the real archive asset; its metadata."""
        defs = load_definitions(self.settings)
        config = {"ops": {"governance__archive": {"config": {"before": before}}}} if before else None
        result = dg.materialize(
            list(defs.assets or []), selection=dg.AssetSelection.assets(ARCHIVE_KEY), instance=self.instance,
            resources=defs.resources, run_config=config or {},
        )
        [event] = result.get_asset_materialization_events()
        return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}

    @property
    def location(self) -> archival.ArchiveLocation:
        return archival.archive_location(load_project(self.settings.project_dir).settings.archive, self.settings.data_dir)

    def rows(self, name: str) -> list[tuple]:
        """Every hot row of a table, sorted, in a form comparable with Parquet's (JSON as parsed values)."""
        with self.engine.connect() as conn:
            if not conn.table_exists("composable", name):
                return []
            columns = conn.table_columns("composable", name)
            return comparable(columns, conn.fetch_all(f'SELECT * FROM composable."{name}"'))

    def archived_rows(self, name: str) -> list[tuple]:
        with self.engine.connect() as conn:
            columns = conn.table_columns("composable", name)
            data = archival.archived(conn, self.location, "composable", name)
        if data is None:
            return []
        return comparable(columns, [tuple(r[c] for c, _ in columns) for r in data.to_pylist()])

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def archive_query(self, sql: str) -> list[dict]:
        with self.engine.connect() as conn:
            return archival.query(conn, self.location, "composable", sql).to_pylist()

    def files(self) -> list[str]:
        """Every file under the archive root, relative to it."""
        root = Path(self.location.base)
        return sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()) if root.exists() else []


def comparable(columns: list[tuple[str, str]], rows: list[tuple]) -> list[tuple]:
    """Rows with JSON values parsed (the engines return JSON as text or as objects) and sorted."""
    json_columns = {i for i, (_, t) in enumerate(columns) if t.lower() == "json"}

    def value(i: int, v: Any) -> Any:
        if i in json_columns and isinstance(v, str):
            return json.dumps(json.loads(v), sort_keys=True)
        if isinstance(v, (dict, list)):
            return json.dumps(v, sort_keys=True)
        return v

    return sorted((tuple(value(i, v) for i, v in enumerate(r)) for r in rows), key=repr)


def test_old_days_move_to_parquet_and_read_back_equal(tmp_path: Path):
    _archive_flow(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


def test_old_days_move_to_parquet_on_postgres(tmp_path: Path, postgres_url: str):
    _archive_flow(tmp_path, postgres_url)


def _archive_flow(tmp_path: Path, url: str) -> None:
    p = ArchiveProject(tmp_path, url)
    p.set_people(people())
    run_days_fixed(p)
    before = {name: p.rows(name) for name in TABLES}
    outbox = sorted((p.settings.data_dir / "outbox" / "box" / "high").glob("*/*.jsonl"))
    outbox_lines = {f.parent.name: f.read_text() for f in outbox}
    assert sorted(outbox_lines) == [ago(8), ago(7), ago(5)]  # days with rows to send

    metadata = p.archive()
    cutoff = ago(3)
    assert metadata["cutoff"] == cutoff

    # Which runs left: the mirror keeps every run since the newest its gates let through (day -6, the baseline of
    # the next size check); the others keep their newest run and the row with their highest _seq.
    runs_left = p.query("SELECT destination, partition_date FROM composable.delta_runs ORDER BY 1, 2")
    assert runs_left == sorted(
        [("rec_mirror", dt.date.fromisoformat(ago(n))) for n in (6, 5, 4)]
        + [(d, dt.date.fromisoformat(ago(4))) for d in ("box", "rec_upsert")]
    )
    for name in TABLES:
        archived_rows, hot = p.archived_rows(name), p.rows(name)
        # Nothing lost, nothing duplicated: hot + archived = what was hot before, as full rows.
        assert Counter(archived_rows + hot) == Counter(before[name]), name
        assert archived_rows, f"{name}: nothing archived"
    assert p.archived_rows("delta__high__rec_mirror") == [r for r in before["delta__high__rec_mirror"]
                                                        if str(r[0]) in (ago(8), ago(7))]
    upsert = before["delta__high__rec_upsert"]
    top = max(r[2] for r in upsert)
    assert p.rows("delta__high__rec_upsert") == [r for r in upsert if r[2] == top]  # the highest _seq stays
    assert metadata["rows_archived"] == sum(len(p.archived_rows(n)) for n in TABLES) + sum(
        v.count("\n") for v in outbox_lines.values()
    )

    # Files: one per table and day, hive style, listed in the catalog; outbox files gzipped as they were.
    files = p.files()
    parquet = [f for f in files if f.endswith(".parquet")]
    catalog = p.query("SELECT path FROM composable.archive_files ORDER BY path")
    assert sorted(parquet) == [path for (path,) in catalog]
    assert all(f.split("/")[1].removeprefix("day=") < cutoff for f in parquet)
    assert not list((p.settings.data_dir / "outbox").rglob("*.jsonl"))
    root = Path(p.location.base)
    for day, text in outbox_lines.items():
        [gz] = (root / "outbox" / "box" / "high" / f"day={day}").glob("*.jsonl.gz")
        assert gzip.decompress(gz.read_bytes()).decode() == text
    # Plain DuckDB reads the hive layout too.
    with duckdb.connect() as con:
        glob = str(root / "delta__high__rec_mirror" / "*" / "*.parquet")
        days = con.execute(f"SELECT DISTINCT CAST(day AS VARCHAR) FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY 1").fetchall()
    assert days == [(ago(8),), (ago(7),)]

    # The query function: hot and archived rows together, and the archived outbox lines.
    [row] = p.archive_query("SELECT count(*) AS n FROM delta_runs")
    assert row["n"] == len(before["delta_runs"])
    lines = p.archive_query("SELECT day, line->>'change' AS change FROM outbox_archive ORDER BY day")
    assert Counter(r["change"] for r in lines) == Counter({"add": 11, "update": 2})

    # A second run finds nothing to do.
    again = p.archive()
    assert (again["rows_archived"], again["files_written"]) == (0, 0)
    assert p.files() == files

    # A backfill of an archived day: delta and sync of day -8 again deliver the current difference (17 renamed).
    Recording.received.clear()
    p.set_people(people({**LEAVE, 17: ("later", 17)}, upto=21))
    outcome = p.sync(ago(8), tags={OVERRIDE_TAG: "max_remove_percent"})
    assert outcome.success, outcome.errors
    assert counts(outcome) == {"rec_mirror": (0, 2, 3, 0), "rec_upsert": (0, 1, 0, 0), "box": (0, 1, 0, 0)}
    assert sorted((r.change, r.key) for r in Recording.received["rec_mirror"]) == [
        ("remove", "13"), ("remove", "14"), ("remove", "15"), ("update", "16"), ("update", "17")
    ]
    assert p.ledger("rec_mirror")["17"] == ("17", {"email": "p17@example.com", "name": "later"})
    archived_seqs = [r[2] for r in p.archived_rows("delta__high__rec_upsert")]
    new_seqs = [r[2] for r in p.rows("delta__high__rec_upsert") if str(r[0]) == ago(8)]
    assert new_seqs and min(new_seqs) > max(archived_seqs)  # sequence numbers never repeat

    # Later, that backfill's run is archived too: a second file in the same day's folder, read back whole.
    p.set_people(people({**LEAVE, 17: ("later", 17), 18: ("again", 18)}, upto=21))
    assert p.sync(ago(1)).success
    hot_before = {name: p.rows(name) for name in TABLES}
    archived_before = {name: p.archived_rows(name) for name in TABLES}
    p.archive(before=ago(0))
    for name in TABLES:
        assert Counter(p.archived_rows(name) + p.rows(name)) == Counter(hot_before[name] + archived_before[name]), name
    for destination in PAIRS:
        assert len([f for f in p.files() if f.startswith(f"delta__high__{destination}/day={ago(8)}/")]) == 2


LEAVE = {11: ("name11", 3), 12: ("renamed", 12), 13: ("n", 1), 14: ("n", 2), 15: ("n", 3), 16: ("moved", 16)}


def run_days_fixed(p: ArchiveProject) -> None:
    """Five days of syncs: a first sync, a change with a removal, a quiet day, a held mirror, a quiet held day."""
    p.set_people(people())  # ids 11..20 score over 10
    assert p.sync(ago(8)).success
    p.set_people(people({11: ("name11", 3), 12: ("renamed", 12)}, upto=21))
    Recording.reject["rec_upsert"] = {"p21@example.com"}  # a rejection on day -7, sent on day -6
    assert counts(p.sync(ago(7))) == {"rec_mirror": (1, 1, 1, 0), "rec_upsert": (0, 1, 0, 1), "box": (1, 1, 0, 0)}
    Recording.reject.clear()
    assert counts(p.sync(ago(6)))["rec_upsert"] == (1, 0, 0, 0)
    # 13, 14, 15 leave (30% of the mirror, over its 20% gate: held); 16 is renamed.
    p.set_people(people(LEAVE, upto=21))
    outcome = p.sync(ago(5))
    assert not outcome.success and counts(outcome) == {"rec_upsert": (0, 1, 0, 0), "box": (0, 1, 0, 0)}
    assert not p.sync(ago(4)).success  # held again: nothing else changed

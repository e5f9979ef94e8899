"""Archival: old days leave the hot tables for Parquet files, read back equal, and change no current answer.

A small project (a mirror and an upsert to recording destinations, an upsert to an outbox) syncs over several days,
then the real `governance/archive` asset archives the days older than a short retention.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import signal
import subprocess
import sys
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
from composable_assets.store import archival_of
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


def snapshot(p: ArchiveProject, destinations=PAIRS) -> dict[str, Any]:
    """What the next sync did, in a form two projects can be compared by (no run ids, no clock times)."""
    with p.engine.connect() as conn:
        delta = {d: conn.fetch_all(
            f'SELECT _seq, _op, _key, _identifier, _hash, CAST(_fields AS VARCHAR), CAST(_previous AS VARCHAR) '
            f'FROM composable."delta__high__{d}" WHERE _partition = ? ORDER BY _seq', [dt.date.fromisoformat(ago(2))]
        ) for d in destinations}
        gates = conn.fetch_all(
            "SELECT g.destination, g.gate, g.passed, g.overridden, g.detail FROM composable.gate_results AS g "
            "JOIN composable.delta_runs AS r USING (audience, destination, run_id) WHERE r.partition_date = ? "
            "ORDER BY 1, 2", [dt.date.fromisoformat(ago(2))]
        )
        ledgers = {d: conn.fetch_all(
            f'SELECT _key, _identifier, _hash, CAST(_fields AS VARCHAR) FROM composable."ledger__high__{d}" ORDER BY _key'
        ) for d in destinations}
    received = {d: sorted((r.change, r.key, r.identifier, json.dumps(r.fields), json.dumps(r.previous))
                          for r in Recording.received[d]) for d in ("rec_mirror", "rec_upsert")}
    return {"delta": delta, "gates": gates, "ledgers": ledgers, "received": received}


def test_archiving_changes_no_answer_for_current_runs(tmp_path: Path):
    """Two copies of the same warehouse, one archived: the next sync computes, judges and sends exactly the same."""
    a = ArchiveProject(tmp_path / "a", f"duckdb:///{tmp_path / 'a' / 'warehouse.duckdb'}")
    run_days_fixed(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = ArchiveProject(tmp_path / "b", f"duckdb:///{tmp_path / 'b' / 'warehouse.duckdb'}")
    assert a.archive()["rows_archived"] > 0
    assert b.query("SELECT count(*) FROM composable.delta_runs") != a.query("SELECT count(*) FROM composable.delta_runs")

    results = []
    for p in (a, b):
        # A sync of an archived partition alone is refused either way, and sends nothing.
        Recording.received.clear()
        sync_only = dg.AssetSelection.assets(*(dg.AssetKey(["sync", "high", d]) for d in PAIRS))
        outcome = p.sync(ago(8), selection=sync_only)
        assert not outcome.success and not Recording.received
        # The next day: 19 leaves and 20 is renamed; the held removals go out with an override.
        p.set_people(people({**LEAVE, 19: ("n", 4), 20: ("renamed", 20)}, upto=21))
        outcome = p.sync(ago(2), tags={OVERRIDE_TAG: "max_remove_percent"})
        assert outcome.success, outcome.errors
        results.append((counts(outcome), snapshot(p)))
        Recording.received.clear()
    assert results[0] == results[1]
    assert results[0][0]["rec_mirror"] == (0, 2, 4, 0)  # 16 and 20 updated; 13, 14, 15 and 19 removed


CRASH = """
import datetime as dt, os, signal, sys
from pathlib import Path
from composable_assets.governance import archive as archival
from composable_assets.project import load_project
from composable_assets.warehouse import engine_from_url

url, project_dir, data_dir, cutoff = sys.argv[1:]
spec = load_project(Path(project_dir)).settings.archive
# Killed between writing a day's files and the transaction that deletes its rows: what a power cut would do.
archival._commit_day = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
with engine_from_url(url).connect() as conn:
    archival.archive(conn, archival.archive_location(spec, Path(data_dir)), "composable",
                     cutoff=dt.date.fromisoformat(cutoff), run_id="killed")
"""


def test_a_crash_between_writing_and_deleting_leaves_no_duplicate(tmp_path: Path):
    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    run_days_fixed(p)
    before = {name: p.rows(name) for name in TABLES}
    killed = subprocess.run(
        [sys.executable, "-c", CRASH, p.settings.warehouse_url, str(p.settings.project_dir), str(p.settings.data_dir),
         ago(3)],
        capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [f for f in p.files() if f.endswith("/killed.parquet")]
    assert left  # the first day's files were written ...
    assert {name: p.rows(name) for name in TABLES} == before  # ... and no hot row was deleted

    p.archive()
    for name in TABLES:
        assert Counter(p.archived_rows(name) + p.rows(name)) == Counter(before[name]), name
    assert not [f for f in p.files() if "killed" in f]  # the dead run's files were swept
    # Even a plain glob over every file (no catalog) sees each archived row once.
    catalog = dict(p.query("SELECT table_name, sum(row_count) FROM composable.archive_files GROUP BY table_name"))
    with duckdb.connect() as con:
        for name, rows in catalog.items():
            glob = str(Path(p.location.base) / name / "*" / "*.parquet")
            assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0] == rows


def test_purge_archived_forgets_a_person_in_every_archived_file(tmp_path: Path):
    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    run_days_fixed(p)
    p.archive()
    archived_before = {name: p.archived_rows(name) for name in TABLES}
    key_column = {name: archival_of(name).key for name in TABLES}
    assert any("p12@example.com" in str(r) for r in archived_before["delta__high__rec_upsert"])

    with p.engine.connect() as conn:
        removed = archival.purge_archived(
            conn, p.location, "composable", keys=["12"], identifiers=["12", "p12@example.com"], run_id="forget-12"
        )
    for name in TABLES:
        column = key_column[name]
        if column is None:
            assert p.archived_rows(name) == archived_before[name], name
            continue
        index = [c for c, _ in p.query(
            "SELECT column_name, ordinal_position FROM information_schema.columns WHERE table_schema = 'composable' "
            "AND table_name = ? ORDER BY ordinal_position", [name])].index(column)
        expected = [r for r in archived_before[name] if r[index] != "12"]
        assert p.archived_rows(name) == expected, name
        assert removed.get(name, 0) == len(archived_before[name]) - len(expected)
    assert removed["delta__high__rec_upsert"] == 2 and removed["outbox/box/high"] == 2  # add on day -8, update -7
    # No file under the archive still holds the person: Parquet files and gzipped outbox lines alike.
    root = Path(p.location.base)
    for file in root.rglob("*"):
        if file.suffix == ".parquet":
            assert "p12@example.com" not in str(pq.read_table(file).to_pylist())
        elif file.suffix == ".gz":
            lines = [json.loads(line) for line in gzip.decompress(file.read_bytes()).decode().splitlines()]
            assert lines and all(line["identifier"] != {"external_id": "12"} for line in lines)
    assert sorted(f for f in p.files() if f.endswith(".parquet")) == [
        path for (path,) in p.query("SELECT path FROM composable.archive_files ORDER BY path")
    ]
    with p.engine.connect() as conn:  # a second purge finds nothing
        assert archival.purge_archived(conn, p.location, "composable", keys=["12"], identifiers=["12"], run_id="again") == {}


def test_a_file_url_archives_there(tmp_path: Path):
    target = tmp_path / "elsewhere"
    p = ArchiveProject(tmp_path / "p", f"duckdb:///{tmp_path / 'p' / 'warehouse.duckdb'}",
                       archive=f"{{retention_days: 3, url: 'file://{target}'}}")
    run_days_fixed(p)
    before = {name: p.rows(name) for name in TABLES}
    metadata = p.archive()
    assert metadata["location"] == f"file://{target}"
    assert sorted(str(f.relative_to(target)) for f in target.rglob("*.parquet")) == [
        path for (path,) in p.query("SELECT path FROM composable.archive_files ORDER BY path")
    ]
    assert not (p.settings.data_dir / "archive").exists()
    for name in TABLES:
        assert Counter(p.archived_rows(name) + p.rows(name)) == Counter(before[name]), name


def test_an_object_store_url_archives_to_a_local_s3(tmp_path: Path, monkeypatch):
    """moto's S3 server on 127.0.0.1; credentials only from the standard AWS variables."""
    server_module = pytest.importorskip("moto.server")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        import boto3

        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="archive")
        url = f"s3://archive/cdp?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
                           archive=f"{{retention_days: 3, url: '{url}'}}")
        run_days_fixed(p)
        before = {name: p.rows(name) for name in TABLES}
        metadata = p.archive()
        assert metadata["rows_archived"] > 0 and "testing-secret" not in json.dumps(metadata, default=str)
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=f"http://{host}:{port}").list_objects_v2(
            Bucket="archive")["Contents"]]
        assert sorted(k.removeprefix("cdp/") for k in keys if k.endswith(".parquet")) == [
            path for (path,) in p.query("SELECT path FROM composable.archive_files ORDER BY path")
        ]
        assert any(k.startswith("cdp/outbox/box/high/day=") and k.endswith(".jsonl.gz") for k in keys)
        for name in TABLES:
            assert Counter(p.archived_rows(name) + p.rows(name)) == Counter(before[name]), name
        [row] = p.archive_query("SELECT count(*) AS n FROM outbox_archive")
        assert row["n"] == 13
    finally:
        server.stop()


def test_an_archive_url_with_credentials_is_refused_naming_project_yaml(tmp_path: Path):
    from composable_assets.project import ProjectError

    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
                       archive="{url: 's3://bucket/x?secret_key=abc123'}")
    with pytest.raises(ProjectError) as info:
        load_project(p.settings.project_dir)
    assert "project.yaml:3" in str(info.value) and "credentials" in str(info.value) and "abc123" not in str(info.value)


def test_a_stream_keeps_the_sent_log_it_reads_and_its_old_outbox_days_are_archived(tmp_path: Path, fakes):
    """A 30-day lookback: the sent log of old days is still what the stream deduplicates by, so it stays hot."""
    from .stream_project import StreamProject, ids, order, outcome_of

    p = StreamProject(tmp_path, lookback="30d", start=ago(10))
    p.write("project.yaml", 'name: events\nstart_date: "2026-01-01"\narchive: {retention_days: 3}\n')
    at = dt.datetime.combine(TODAY, dt.time(9))
    p.add_orders([order(i, at - dt.timedelta(days=9, minutes=i)) for i in range(1, 6)])
    assert outcome_of(p.run("box", date=ago(6)), "box").count("sent") == 5
    p.add_orders([order(i, at - dt.timedelta(days=5, minutes=i)) for i in range(6, 9)])
    assert outcome_of(p.run("box", date=ago(5)), "box").count("sent") == 3
    sent_before = p.statuses("box")
    lines = {f.parent.name: f.read_text() for f in (p.settings.data_dir / "outbox/box/streams/orders").glob("*/*.jsonl")}
    assert sorted(lines) == [ago(6), ago(5)]

    defs = load_definitions(p.settings)
    result = dg.materialize(list(defs.assets or []), selection=dg.AssetSelection.assets(ARCHIVE_KEY),
                            instance=p.instance, resources=defs.resources)
    assert result.success
    assert p.statuses("box") == sent_before  # every row is within 2 x lookback of the mark: the stream reads them
    root = p.settings.data_dir / "archive" / "outbox" / "box" / "streams" / "orders"
    for day, text in lines.items():
        [gz] = (root / f"day={day}").glob("*.jsonl.gz")
        assert gzip.decompress(gz.read_bytes()).decode() == text
    assert not list((p.settings.data_dir / "outbox").rglob("*.jsonl"))

    # The next run sends exactly the new orders: nothing archived made an old event look unsent.
    p.add_orders([order(i, at - dt.timedelta(days=1, minutes=i)) for i in (9, 10)])
    outcome = p.run("box", date=ago(0))
    assert outcome_of(outcome, "box").count("sent") == 2
    assert set(p.statuses("box")) == set(sent_before) | ids(9, 10)
    [today_file] = (p.settings.data_dir / "outbox/box/streams/orders" / ago(0)).glob("*.jsonl")
    assert {json.loads(line)["id"] for line in today_file.read_text().splitlines()} == ids(9, 10)


def test_the_archive_command_dry_run_run_and_query(tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from composable_assets.cli import cli

    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    run_days_fixed(p)
    for name, value in {"COMPOSABLE_PROJECT_DIR": str(p.settings.project_dir), "COMPOSABLE_WAREHOUSE":
                        p.settings.warehouse_url, "COMPOSABLE_DATA_DIR": str(p.settings.data_dir)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    before = {name: p.rows(name) for name in TABLES}

    def run(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    dry = run("archive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would archive the days before {ago(3)}" in dry.output and "delta__high__rec_mirror" in dry.output
    assert {name: p.rows(name) for name in TABLES} == before and p.files() == []  # a dry run changes nothing

    done = run("archive", "--before", ago(7))  # only day -8
    assert done.exit_code == 0, done.output
    assert f"of the days before {ago(7)}" in done.output
    assert {f.split("/")[-2] for f in p.files()} == {f"day={ago(8)}"}

    query = run("archive", "query", "SELECT CAST(partition_date AS VARCHAR) AS day, count(*) AS runs FROM delta_runs "
                "GROUP BY ALL ORDER BY 1")
    assert query.exit_code == 0, query.output
    assert all(ago(n) in query.output for n in (8, 7, 6, 5, 4))  # day -8 from Parquet, the others hot

    bad = run("archive", "query", "DELETE FROM delta_runs")
    assert bad.exit_code == 1 and "one SELECT" in bad.output
    assert run("archive", "--before", "yesterday").exit_code == 1
    assert "@example.com" not in dry.output + done.output


def test_runs_a_killed_sync_left_acks_or_windows_over_stay_hot(tmp_path: Path):
    """What a SIGKILLed sync leaves (unfolded acks, in-flight windows) is read by the next sync: its runs stay."""
    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    run_days_fixed(p)
    [(first, last)] = p.query(
        "SELECT first_seq, last_seq FROM composable.delta_runs WHERE destination = 'rec_upsert' AND partition_date = ?",
        [dt.date.fromisoformat(ago(8))],
    )
    [(box_first, box_last)] = p.query(
        "SELECT first_seq, last_seq FROM composable.delta_runs WHERE destination = 'box' AND partition_date = ?",
        [dt.date.fromisoformat(ago(7))],
    )
    now = dt.datetime(2026, 1, 1)
    with p.engine.connect() as conn:  # as a killed process would have left them
        conn.execute("INSERT INTO composable.sync_acks VALUES ('high', 'rec_upsert', 'killed', ?, ?, ?, false)",
                     [first, first, now])
        conn.execute("INSERT INTO composable.sync_inflight VALUES ('high', 'box', 'killed', ?, ?, ?)",
                     [box_first, box_last, now])
        planned = archival.plan(conn, "composable", dt.date.fromisoformat(ago(3)))
    upsert_days = {day for day, parts in planned.items() for part in parts if part.table == "delta__high__rec_upsert"}
    box_days = {day for day, parts in planned.items() for part in parts if part.table == "delta__high__box"}
    assert dt.date.fromisoformat(ago(8)) not in upsert_days and dt.date.fromisoformat(ago(7)) in upsert_days
    assert dt.date.fromisoformat(ago(7)) not in box_days and dt.date.fromisoformat(ago(8)) in box_days

    p.archive()
    hot = {r[2] for r in p.rows("delta__high__rec_upsert")}
    assert set(range(first, last + 1)) <= hot  # the whole run the unfolded ack points into
    assert set(range(box_first, box_last + 1)) <= {r[2] for r in p.rows("delta__high__box")}
    assert any(r[6] is False for r in p.rows("sync_acks"))  # the unfolded ack itself is never archived


def test_the_archive_asset_job_and_schedule(tmp_path: Path):
    p = ArchiveProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    defs = load_definitions(p.settings)
    graph = defs.resolve_asset_graph()
    node = graph.get(ARCHIVE_KEY)
    assert node.group_name == "governance" and "older than 3 days" in node.description
    schedule = defs.resolve_schedule_def("archive_schedule")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "archive"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_job_def("archive").asset_layer.executable_asset_keys == {ARCHIVE_KEY}

"""Forget means gone: after `composable forget`, nothing we keep holds the person any more.

One small project on a DuckDB file, under a real Dagster instance (DAGSTER_HOME in the test's folder): an audience
mirrored to the Braze stand-in and to an outbox, an event stream of orders to both, a member and an event Braze
rejects, an archived day. Then the person asks to be forgotten, `composable forget` runs, and the audience and the
stream run again (the person is still in the customer's source tables). Then everything is searched for their e-mail,
name and key: every table in our schema (every column as text), every file under DAGSTER_HOME (SQLite storage read
row by row and as raw bytes, compute logs), every file in the data folder (outbox files, gzip archives decompressed,
archive Parquet files read back). The key counts as personal data in Dagster too (docs/project-folder.md, Personal
data).
"""

from __future__ import annotations

import datetime as dt
import gzip
import sqlite3
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from composable_assets.assets.archive import ARCHIVE_KEY
from composable_assets.cli import cli
from composable_assets.definitions import audience_selection, load_definitions, stream_selection
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings

# The person who asks to be forgotten: distinctive values, so a match is them and nothing else.
KEY, EMAIL, NAME = "cust-7f3q9", "wren.halloway@example.org", "Wren Halloway"
OTHERS = [(f"cust-{i:04d}", f"p{i}@example.com", f"Person {i}", 10 + i) for i in range(1, 6)]

FILES = {
    "project.yaml": """\
        name: forgetting
        start_date: "2026-01-01"
        deletion_requests: {table: deletion_requests, key: customer_id, requested_at: requested_at, id: request_id}
        """,
    "models/people_model.sql": "-- People with a score.\nSELECT id, email, name, score FROM people\n",
    "models/order_facts.sql": "-- Orders.\nSELECT order_id, customer_id, amount, ordered_at FROM orders\n",
    "audiences/high.yaml": """\
        model: people_model
        primary_key: id
        where: score > 10
        syncs:
          - destination: braze
            mode: mirror
            identifier: {external_id: id}
            fields: {email: email, first_name: name}
          - destination: box
            mode: mirror
            identifier: {email: email}
            fields: {name: name}
        """,
    "streams/orders.yaml": """\
        table: orders
        event_id: order_id
        cursor: ordered_at
        key: customer_id
        lookback: 1d
        syncs:
          - destination: braze
            identifier: {external_id: customer_id}
            event: purchase
            properties: {amount: amount}
          - destination: box
            identifier: {external_id: customer_id}
            event: purchase
        """,
    "destinations.yaml": """\
        braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}, max_tries: 2, backoff_base_seconds: 0.01}
        box: {type: outbox, batch_size: 2}
        """,
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class Flow:
    """The project, its warehouse, its data folder and the Dagster instance of DAGSTER_HOME."""

    def __init__(self, root: Path):
        self.home = root / "dagster_home"
        self.db = root / "warehouse.duckdb"
        self.settings = Settings(project_dir=root / "project", warehouse_url=f"duckdb:///{self.db}", data_dir=root / "data")
        for path, text in FILES.items():
            target = self.settings.project_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        self.execute("CREATE TABLE people (id VARCHAR, email VARCHAR, name VARCHAR, score INTEGER)")
        self.execute("INSERT INTO people VALUES (?, ?, ?, ?)", [KEY, EMAIL, NAME, 30])
        for row in OTHERS:
            self.execute("INSERT INTO people VALUES (?, ?, ?, ?)", list(row))
        self.execute("CREATE TABLE orders (order_id BIGINT, customer_id VARCHAR, amount DOUBLE, ordered_at TIMESTAMP)")
        self.execute("CREATE TABLE deletion_requests (request_id VARCHAR, customer_id VARCHAR, requested_at TIMESTAMP)")
        self.instance = dg.DagsterInstance.get()

    def execute(self, sql: str, params: list | None = None) -> None:
        with duckdb.connect(str(self.db)) as con:
            con.execute(sql, params)

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()

    def add_orders(self, customers: list[str]) -> None:
        with duckdb.connect(str(self.db)) as con:
            (last,) = con.execute("SELECT coalesce(max(order_id), 0) FROM orders").fetchone()
            at = utc_now() - dt.timedelta(minutes=10)
            con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                            [[last + n, c, 10.0 + n, at] for n, c in enumerate(customers, start=1)])

    def run(self, selection: dg.AssetSelection, partition: str | None, run_config: dict | None = None) -> RunOutcome:
        outcome = run_selection(load_definitions(self.settings), selection, partition, self.instance,
                                log_level=None, run_config=run_config)
        assert outcome.success, "\n".join(outcome.errors)
        return outcome

    def sync(self, day: str, stream: bool = False) -> RunOutcome:
        """The audience's run of that day, and the stream's with it if asked (one run: each run costs seconds)."""
        project = load_project(self.settings.project_dir)
        selection = audience_selection(project, "high")
        return self.run(selection | stream_selection(project, "orders") if stream else selection, day)

    def archive(self, before: str) -> RunOutcome:
        config = {"ops": {"governance__archive": {"config": {"before": before}}}}
        return self.run(dg.AssetSelection.assets(ARCHIVE_KEY), None, config)


# --- Searching everything -------------------------------------------------------------------------------------


def warehouse_hits(db: Path, needles: list[str], schema: str = "composable") -> list[str]:
    """`table.column: needle` for every needle in any column (as text) of any table of the schema.

    Except the proof's `key` column: the proof of the request names whom it was about, and every delta and stream
    reads it so that the person is never sent again (docs/governance.md, Deletion requests).
    """
    hits = []
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]).fetchall()]
        assert tables
        for name in tables:
            columns = [c for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [schema, name]).fetchall()]
            for column in columns:
                if (name, column) == ("deletion_log", "key"):
                    continue
                for needle in needles:
                    (n,) = con.execute(
                        f'SELECT count(*) FROM "{schema}"."{name}" WHERE contains(CAST("{column}" AS VARCHAR), ?)',
                        [needle]).fetchone()
                    if n:
                        hits.append(f"{name}.{column}: {needle}")
    return hits


def _sqlite_text(path: Path) -> str:
    """Every value of every table of a SQLite file, as text."""
    parts = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in con.execute(f'SELECT * FROM "{name}"'):
                parts += [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row]
    return "\n".join(parts)


def file_texts(folder: Path) -> dict[Path, str]:
    """Every file under `folder` as text: raw bytes, plus SQLite rows, gzip contents, Parquet rows read back."""
    texts = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        text = raw.decode(errors="replace")
        if raw.startswith(b"SQLite format 3\x00"):
            text += _sqlite_text(path)
        elif path.suffix == ".gz":
            text += gzip.decompress(raw).decode(errors="replace")
        elif path.suffix == ".parquet":
            text += "\n".join(str(row) for row in pq.read_table(path).to_pylist())
        texts[path] = text
    return texts


def file_hits(folder: Path, needles: list[str]) -> list[str]:
    return [f"{path.relative_to(folder)}: {n}" for path, text in file_texts(folder).items() for n in needles if n in text]


@pytest.fixture
def flow(tmp_path: Path, monkeypatch, fakes) -> Flow:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    f = Flow(tmp_path)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(f.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", f.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(f.settings.data_dir))
    yield f
    f.instance.dispose()


def test_after_forget_nothing_we_keep_holds_the_person(flow: Flow, fakes):
    braze = fakes["braze"]
    person = [KEY, EMAIL, NAME]
    # Day 1: Braze refuses the person, as a member and their order as an event (rejected rows: sync_failures,
    # sync_log, the stream's sent log with Braze's reason, each run's report of what was rejected).
    braze.faults.invalid_identifiers = {KEY}
    flow.add_orders([KEY, "cust-0002"])
    day1 = flow.sync("2026-03-02", stream=True)
    assert {s.destination: s.count("failed") for s in day1.syncs} == {"braze": 1, "box": 0}
    assert {s.destination: s.count("rejected") for s in day1.streams} == {"braze": 1, "box": 0}
    braze.faults.invalid_identifiers = set()
    # Day 2: someone else changes; Braze now takes the person, and their new orders as events.
    flow.execute("UPDATE people SET name = 'Renamed' WHERE id = 'cust-0001'")
    flow.add_orders([KEY, "cust-0002", KEY])
    flow.sync("2026-03-03", stream=True)
    assert KEY in braze.users and len([e for e in braze.events if e["user"] == KEY]) == 2
    # Day 1 leaves the hot tables for Parquet files, its outbox files for the archive folder.
    assert flow.archive("2026-03-03").materialized["governance/archive"]["rows_archived"].value > 0
    archive = flow.settings.data_dir / "archive"
    assert any(EMAIL in text for path, text in file_texts(archive).items() if path.suffix == ".parquet")
    assert warehouse_hits(flow.db, person)  # the search sees them where they are
    assert file_hits(flow.settings.data_dir, person)

    flow.execute("INSERT INTO deletion_requests VALUES ('dsr-0001', ?, ?)", [KEY, utc_now()])
    result = CliRunner().invoke(cli, ["forget"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert KEY not in braze.users and KEY in braze.deleted

    # They are still in the customer's tables, and order again: the next runs must not take them back in.
    flow.add_orders([KEY, "cust-0003"])
    flow.execute("UPDATE people SET score = 40 WHERE id = ?", [KEY])
    flow.sync(utc_now().date().isoformat(), stream=True)
    assert KEY not in braze.users
    flow.instance.dispose()  # every storage file closed and complete

    # The search reads the event log: each sync's counts are there.
    assert any("rows_per_second" in text for text in file_texts(flow.home).values())
    traces = {
        "warehouse": warehouse_hits(flow.db, person),
        "data folder": file_hits(flow.settings.data_dir, person),
        "DAGSTER_HOME": file_hits(flow.home, person),
    }
    leaks = [f"{where}: {hit}" for where, hits in traces.items() for hit in hits]
    assert not leaks, "the forgotten person is still in:\n" + "\n".join(leaks)
    # The sent log still knows the rejected event (so it is never sent), not what Braze said about it.
    assert flow.query("SELECT status, reason FROM composable.stream_sent__orders__braze WHERE status = 'rejected'") == [
        ("rejected", None)]

"""The store: every table we own is in the registry, and an install made by an earlier release upgrades in place.

The earlier release's warehouse is the one `upgrade/make_release_warehouse.py` made with that release's own code
(commit d7257c4, before the store kept a version): two days of syncs of an audience to two destinations, a stream
and a deletion request, on DuckDB (exported) and on PostgreSQL (pg_dump).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import dagster as dg
import pytest

from composable_assets import store
from composable_assets.definitions import audience_selection, load_definitions, stream_selection
from composable_assets.governance.deletion_log import request_states
from composable_assets.project import load_project
from composable_assets.runner import run_selection
from composable_assets.settings import Settings
from composable_assets.store import migrations, registry
from composable_assets.warehouse import engine_from_url


RELEASE = Path(__file__).parent / "upgrade" / "release_d7257c4"
SCHEMA = "composable"
# What the release left: the tables of the store in its schema.
RELEASE_TABLES = {
    "audience__high", "deletion_log", "delta__high__box_mirror", "delta__high__box_upsert", "delta_runs",
    "gate_results", "ledger__high__box_mirror", "ledger__high__box_upsert", "stream_cursors", "stream_intents",
    "stream_sent__scores__box_upsert", "sync_acks", "sync_failures", "sync_inflight", "sync_log", "sync_runs",
}


def load_duckdb_release(path: Path) -> str:
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute((RELEASE / "duckdb" / "schema.sql").read_text())
        for line in (RELEASE / "duckdb" / "load.sql").read_text().splitlines():
            if line.strip():
                con.execute(line.replace(" FROM '", f" FROM '{RELEASE / 'duckdb'}/"))
    return f"duckdb:///{path}"


def load_postgres_release(url: str) -> str:
    import psycopg2

    con = psycopg2.connect(url)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute((RELEASE / "postgres.sql").read_text())
    con.close()
    return url


@pytest.fixture(params=["duckdb", "postgres"])
def release_url(request, tmp_path: Path) -> str:
    """A warehouse exactly as the earlier release left it."""
    if request.param == "duckdb":
        return load_duckdb_release(tmp_path / "warehouse.duckdb")
    return load_postgres_release(request.getfixturevalue("postgres_url"))


def contents(url: str) -> dict[str, list[str]]:
    """Every table of the store's schema and its rows, as sorted text (what "nothing lost" compares)."""
    with engine_from_url(url).connect() as conn:
        names = [n for (n,) in conn.fetch_all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [SCHEMA])]
        return {n: sorted(str(r) for r in conn.fetch_all(f'SELECT * FROM {SCHEMA}."{n}"')) for n in names}


class UpgradedProject:
    """The release's project folder, run by this code on the release's warehouse."""

    def __init__(self, root: Path, url: str):
        self.settings = Settings(project_dir=RELEASE / "project", warehouse_url=url, data_dir=root / "data")
        self.project = load_project(self.settings.project_dir)
        self.instance = dg.DagsterInstance.ephemeral()
        self.engine = engine_from_url(url)

    def sync(self, date: str):
        defs = load_definitions(self.settings)
        outcome = run_selection(defs, audience_selection(self.project, "high"), date, self.instance)
        assert outcome.success, outcome.errors
        return {s.destination: tuple(s.count(n) for n in ("added", "updated", "removed")) for s in outcome.syncs}

    def stream(self, date: str) -> dict[str, int]:
        defs = load_definitions(self.settings)
        outcome = run_selection(defs, stream_selection(self.project, "scores"), date, self.instance)
        assert outcome.success, outcome.errors
        return {s.destination: s.count("sent") for s in outcome.streams}


def test_an_install_of_the_earlier_release_is_upgraded_in_place_with_nothing_lost(release_url: str, tmp_path: Path):
    before = contents(release_url)
    assert set(before) == RELEASE_TABLES
    with engine_from_url(release_url).connect() as conn:
        assert migrations.current_version(conn, SCHEMA) == 0
        assert migrations.upgrade(conn, SCHEMA) == [step.version for step in store.MIGRATIONS]
        assert migrations.current_version(conn, SCHEMA) == store.CURRENT
        assert migrations.upgrade(conn, SCHEMA) == []  # a second start finds it current
    after = contents(release_url)
    for name, rows in before.items():
        assert after[name] == rows, f"{name} changed in the upgrade"
    added = set(after) - set(before)
    assert {"key_changes", "refresh_state", "landing_files", "archive_files", migrations.VERSION_TABLE} <= added
    assert len(after[migrations.VERSION_TABLE]) == len(store.MIGRATIONS)

    # The new code carries on where the release stopped: nothing acknowledged is sent again...
    p = UpgradedProject(tmp_path, release_url)
    assert p.sync("2026-03-04") == {"box_mirror": (0, 0, 0), "box_upsert": (0, 0, 0)}
    assert p.stream("2026-03-04") == {"box_upsert": 0}
    with p.engine.connect() as conn:
        assert request_states(conn, SCHEMA)["req-20"].done  # the release's deletion proof still counts
    # ...and a change made now is delivered once.
    with p.engine.connect() as conn:
        conn.execute("INSERT INTO people VALUES (22, 'p22@example.com', 'name22', 22)")
        conn.execute("INSERT INTO score_events VALUES ('e22', 22, 22, CAST('2026-03-01 10:00:00' AS TIMESTAMP))")
    assert p.sync("2026-03-05") == {"box_mirror": (1, 0, 0), "box_upsert": (1, 0, 0)}
    assert p.stream("2026-03-05") == {"box_upsert": 1}
    for name in ("ledger__high__box_mirror", "ledger__high__box_upsert"):
        assert set(before[name]) < set(contents(release_url)[name])  # the release's rows kept, one row more


def test_the_registry_names_every_table_the_platform_creates(release_url: str, tmp_path: Path):
    p = UpgradedProject(tmp_path, release_url)
    p.sync("2026-03-04")
    p.stream("2026-03-04")
    named = [t for t in store.TABLES if t.home == "project"]
    rebuilt = [registry.Table(pattern, {}, owner="", forget="") for pattern in registry.REBUILT]
    unknown = [n for n in contents(release_url)
               if n != migrations.VERSION_TABLE and not any(t.matches(n) for t in named + rebuilt)]
    assert unknown == []


def _add_column(version: int, fail: bool = False) -> store.migrations.Migration:
    def apply(conn, schema):
        for name in migrations.existing(conn, schema, registry.LEDGER):
            conn.execute(f'ALTER TABLE {schema}."{name}" ADD COLUMN _note VARCHAR')
        if fail:
            raise RuntimeError("step failed half-way")

    return migrations.Migration(version, "a note on every ledger", apply)


def test_a_step_that_fails_changes_nothing_and_the_next_start_applies_it(release_url: str, monkeypatch):
    with engine_from_url(release_url).connect() as conn:
        migrations.upgrade(conn, SCHEMA)
        monkeypatch.setattr(migrations, "MIGRATIONS", (*store.MIGRATIONS, _add_column(store.CURRENT + 1, fail=True)))
        with pytest.raises(RuntimeError, match="half-way"):
            migrations.upgrade(conn, SCHEMA)
        assert migrations.current_version(conn, SCHEMA) == store.CURRENT
        assert "_note" not in dict(conn.table_columns(SCHEMA, "ledger__high__box_mirror"))  # rolled back

        monkeypatch.setattr(migrations, "MIGRATIONS", (*store.MIGRATIONS, _add_column(store.CURRENT + 1)))
        assert migrations.upgrade(conn, SCHEMA) == [store.CURRENT + 1]
        for name in ("ledger__high__box_mirror", "ledger__high__box_upsert"):
            assert "_note" in dict(conn.table_columns(SCHEMA, name))
            assert conn.fetch_one(f'SELECT count(*) FROM {SCHEMA}."{name}" WHERE _key IS NOT NULL')[0] > 0


def test_a_column_the_registry_has_is_added_to_every_pair_table_that_lacks_it(release_url: str, monkeypatch):
    with engine_from_url(release_url).connect() as conn:
        migrations.upgrade(conn, SCHEMA)
        ledger = registry.Table(registry.LEDGER.name, {**registry.LEDGER.columns, "_source": "VARCHAR NOT NULL"},
                                owner="", forget="")
        added = migrations.add_missing_columns(conn, SCHEMA, ledger)
        assert sorted(added) == ["ledger__high__box_mirror._source", "ledger__high__box_upsert._source"]
        # Existing rows have no value, so the column is nullable whatever the registry says.
        assert conn.fetch_one(f'SELECT count(*) FROM {SCHEMA}."ledger__high__box_mirror" WHERE _source IS NULL')[0] > 0
        assert migrations.add_missing_columns(conn, SCHEMA, ledger) == []


def test_two_processes_starting_together_on_a_new_postgres_install_both_carry_on(postgres_url: str):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            with engine_from_url(postgres_url).connect() as conn:
                barrier.wait()
                store.ensure_store(conn, SCHEMA)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine_from_url(postgres_url).connect() as conn:
        assert conn.fetch_all(f"SELECT version FROM {SCHEMA}.{migrations.VERSION_TABLE}") == [(store.CURRENT,)]


def test_every_table_of_the_store_is_documented():
    page = (Path(__file__).parents[1] / "docs" / "governance.md").read_text()
    names = [t.name for t in store.TABLES if t.home == "project"] + [migrations.VERSION_TABLE]
    shown = {n: "`" + re.sub(r"{(\w+)}", r"<\1>", n) + "`" for n in names}  # ledger__<audience>__<destination>
    missing = [n for n, text in shown.items() if text not in page]
    assert missing == [], f"docs/governance.md, Where things live in the warehouse, lacks {missing}"

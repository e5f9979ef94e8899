"""One flow, every engine that can run here: first sync, a change, a mirror removal, a partial failure.

The same test body runs on every warehouse `warehouses.py` can reach here (DuckDB files, PostgreSQL, Snowflake
via fakesnow, ...), so no engine silently diverges.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.warehouse import Warehouse, WarehouseError, engine_from_url
from composable_assets.warehouse.snowflake_engine import SESSION_PARAMETERS

from .conftest import SMALL_AUDIENCE, SMALL_MODEL, Recording
from .warehouses import PG_HOST, PG_PORT, PG_USER


class EngineProject:
    """The small project on any warehouse; source tables are written through the Warehouse connection."""

    def __init__(self, root: Path, url: str):
        self.settings = Settings(project_dir=root / "project", warehouse_url=url, data_dir=root / "data")
        self.engine = engine_from_url(url)
        self.instance = dg.DagsterInstance.ephemeral()
        for path, text in {
            "project.yaml": 'name: small\nstart_date: "2026-01-01"\n',
            "models/people_model.sql": SMALL_MODEL,
            "audiences/high.yaml": SMALL_AUDIENCE,
            "destinations.yaml": "rec_mirror: {type: recording, batch_size: 2}\nrec_upsert: {type: recording, batch_size: 3}\n",
        }.items():
            target = self.settings.project_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))

    def set_people(self, rows: list[tuple[int, str | None, str | None, int]]) -> None:
        with self.engine.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS people")
            conn.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
            conn.execute(
                f"INSERT INTO people VALUES {', '.join(['(?, ?, ?, ?)'] * len(rows))}", [v for r in rows for v in r]
            )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def ledger(self, destination: str) -> dict[str, tuple[str, dict]]:
        """key -> (identifier, fields) of what the destination has acknowledged."""
        rows = self.query(f'SELECT _key, _identifier, _fields FROM composable."ledger__high__{destination}"')
        return {k: (i, json.loads(f)) for k, i, f in rows}

    def sync(self, date: str = "2026-03-02") -> RunOutcome:
        defs = load_definitions(self.settings)
        return run_selection(defs, audience_selection(load_project(self.settings.project_dir), "high", None), date, self.instance)


def people(changes: dict[int, tuple[str, int] | None] | None = None, upto: int = 20) -> list[tuple]:
    """ids 1..upto as (id, email, name, score); `changes` sets (name, score) of an id, or drops it."""
    rows = []
    for i in range(1, upto + 1):
        name, score = (changes or {}).get(i, (f"name{i}", i)) if i in (changes or {}) else (f"name{i}", i)
        rows.append((i, f"p{i}@example.com", name, score))
    return rows


def counts(outcome: RunOutcome) -> dict[str, tuple[int, int, int, int]]:
    return {s.destination: tuple(s.count(n) for n in ("added", "updated", "removed", "failed")) for s in outcome.syncs}


def received(name: str) -> list[tuple[str, str, str]]:
    return sorted((r.change, r.key, r.identifier) for r in Recording.received[name])


def mirror_entry(i: int, name: str | None = None) -> tuple[str, dict]:
    return str(i), {"email": f"p{i}@example.com", "name": name or f"name{i}"}


def test_the_whole_flow_is_the_same_on_every_engine(tmp_path: Path, warehouse_url: str):
    whole_flow(tmp_path, warehouse_url)


def whole_flow(tmp_path: Path, warehouse_url: str) -> None:
    """First sync, nothing changed, a change with a mirror removal, a partial failure and its recovery."""
    p = EngineProject(tmp_path, warehouse_url)
    p.set_people(people())  # ids 11..20 score over 10

    # First sync: every member goes to both destinations.
    outcome = p.sync()
    assert outcome.success, outcome.errors
    assert counts(outcome) == {"rec_mirror": (10, 0, 0, 0), "rec_upsert": (10, 0, 0, 0)}
    assert p.ledger("rec_mirror") == {str(i): mirror_entry(i) for i in range(11, 21)}
    assert p.ledger("rec_upsert")["11"] == ("p11@example.com", {"name": "name11", "score": 11})

    # Nothing changed: nothing is sent.
    Recording.received.clear()
    assert counts(p.sync()) == {"rec_mirror": (0, 0, 0, 0), "rec_upsert": (0, 0, 0, 0)}
    assert received("rec_mirror") == [] and received("rec_upsert") == []

    # A change: 12 is renamed, 21 joins; 11 leaves (the mirror removes it, the upsert keeps it).
    p.set_people(people({11: ("name11", 3), 12: ("renamed", 12)}, upto=21))
    outcome = p.sync()
    assert outcome.success, outcome.errors
    assert counts(outcome) == {"rec_mirror": (1, 1, 1, 0), "rec_upsert": (1, 1, 0, 0)}
    assert received("rec_mirror") == [("add", "21", "21"), ("remove", "11", "11"), ("update", "12", "12")]
    assert received("rec_upsert") == [("add", "21", "p21@example.com"), ("update", "12", "p12@example.com")]
    removed = next(r for r in Recording.received["rec_mirror"] if r.change == "remove")
    assert removed.fields is None and removed.previous == {"email": "p11@example.com", "name": "name11"}
    mirror = {str(i): mirror_entry(i) for i in range(12, 22)} | {"12": mirror_entry(12, "renamed")}
    assert p.ledger("rec_mirror") == mirror
    assert set(p.ledger("rec_upsert")) == {str(i) for i in range(11, 22)}
    assert p.ledger("rec_upsert")["12"] == ("p12@example.com", {"name": "renamed", "score": 12})

    # A partial failure: the mirror rejects 13 (renamed) and 22 (joining); the rest goes through.
    Recording.received.clear()
    Recording.reject["rec_mirror"] = {"13", "22"}
    p.set_people(people({11: ("name11", 3), 12: ("renamed", 12), 13: ("again", 13), 14: ("also", 14)}, upto=22))
    outcome = p.sync()
    assert outcome.success, outcome.errors  # rejected rows do not fail the rows that succeeded
    assert counts(outcome)["rec_mirror"] == (0, 1, 0, 2)
    assert received("rec_mirror") == [("update", "14", "14")]
    assert p.ledger("rec_mirror") == mirror | {"14": mirror_entry(14, "also")}
    failures = p.query("SELECT key, op, reason FROM composable.sync_failures ORDER BY key")
    assert failures == [("13", "update", "invalid identifier 13"), ("22", "add", "invalid identifier 22")]

    # Recovery: exactly the two rejected rows go through.
    Recording.received.clear()
    Recording.reject.clear()
    outcome = p.sync()
    assert counts(outcome)["rec_mirror"] == (1, 1, 0, 0)
    assert received("rec_mirror") == [("add", "22", "22"), ("update", "13", "13")]
    assert p.ledger("rec_mirror") == mirror | {
        "13": mirror_entry(13, "again"), "14": mirror_entry(14, "also"), "22": mirror_entry(22)
    }
    runs = p.query(
        "SELECT added, updated, removed FROM composable.delta_runs WHERE destination = ? ORDER BY computed_at",
        ["rec_mirror"],
    )
    assert runs == [(10, 0, 0), (0, 0, 0), (1, 1, 1), (1, 2, 0), (1, 1, 0)]


def test_a_password_in_the_postgres_url_is_refused_without_being_shown():
    with pytest.raises(WarehouseError, match="COMPOSABLE_WAREHOUSE_PASSWORD") as info:
        engine_from_url("postgresql://postgres:s3cret-value@127.0.0.1:5432/db")
    assert "s3cret-value" not in str(info.value)


def test_a_secret_in_the_snowflake_url_is_refused_without_being_shown():
    with pytest.raises(WarehouseError, match="COMPOSABLE_WAREHOUSE_PASSWORD") as info:
        engine_from_url("snowflake://me:s3cret-value@acct/db/sch?warehouse=wh")
    assert "s3cret-value" not in str(info.value)
    with pytest.raises(WarehouseError, match="password") as info:
        engine_from_url("snowflake://me@acct/db/sch?warehouse=wh&password=s3cret-value")
    assert "s3cret-value" not in str(info.value)
    with pytest.raises(WarehouseError, match="snowflake://user@account/database/schema"):
        engine_from_url("snowflake://me@acct/db")
    with pytest.raises(WarehouseError, match="no credentials for user 'me': set COMPOSABLE_WAREHOUSE_PASSWORD"):
        with engine_from_url("snowflake://me@acct/db/sch?warehouse=wh").connect():
            pass


def test_the_snowflake_connection_is_dagster_snowflakes_resource_with_the_password_as_an_env_var(monkeypatch):
    from dagster_snowflake import SnowflakeResource

    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", "s3cret-value")
    warehouse = Warehouse.from_url("snowflake://me@acct/db/sch?warehouse=wh&role=r")
    engine = warehouse.engine
    assert (engine.kind, engine.dialect, engine.options) == ("snowflake", "snowflake", {"warehouse": "wh", "role": "r"})
    assert isinstance(warehouse.connection, SnowflakeResource)
    assert (warehouse.connection.database, warehouse.connection.schema_) == ("db", "sch")
    # What Dagster shows and stores of the resource (its config) names the variable, never its value.
    config = str(warehouse.connection.model_dump()) + str(warehouse.model_dump())
    assert "s3cret-value" not in config and "COMPOSABLE_WAREHOUSE_PASSWORD" in config


def test_connection_errors_name_the_setting_and_never_the_password(monkeypatch):
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", "pw-never-shown")
    with pytest.raises(WarehouseError, match="database 'no_such_db_composable'") as info:
        with engine_from_url(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/no_such_db_composable").connect():
            pass
    assert "pw-never-shown" not in str(info.value)
    with pytest.raises(WarehouseError, match="host or port") as info:
        with engine_from_url(f"postgresql://{PG_USER}@127.0.0.1:1/postgres").connect():
            pass
    assert "pw-never-shown" not in str(info.value)


def test_duckdb_only_features_refuse_postgres_by_name(postgres_url):
    from composable_assets.warehouse.base import require_duckdb

    with engine_from_url(postgres_url).connect() as conn:
        with pytest.raises(WarehouseError, match="only on a DuckDB warehouse for now; this warehouse is postgres"):
            require_duckdb(conn, "Loading landing folders")


def test_acks_fold_without_merge_as_with_it(postgres_url):
    """Servers before PostgreSQL 15 have no MERGE: delete-then-insert gives the same ledger."""
    import datetime as dt

    from composable_assets.delta.ledger import fold_acks, record_acks
    from composable_assets.store import PairTables

    engine = engine_from_url(postgres_url)
    ledgers = []
    for version in (150000, 140000):  # as the server says, then as a PostgreSQL 14 would
        tables = PairTables(f"s_{version}", "a", "d")
        with engine.connect() as conn:
            conn.server_version = version
            assert conn.has_merge == (version >= 150000)
            tables.ensure(conn)
            now = dt.datetime(2026, 3, 2)
            rows = [
                ("2026-03-02", "r1", 1, "add", "k1", "i1", "h1", '{"x": 1}', None, now),
                ("2026-03-02", "r1", 2, "add", "k2", "i2", "h2", '{"x": 2}', None, now),
                ("2026-03-02", "r2", 3, "update", "k1", "i1", "h1b", '{"x": 3}', '{"x": 1}', now),
                ("2026-03-02", "r2", 4, "remove", "k2", "i2", None, None, '{"x": 2}', now),
            ]
            conn.execute(
                f"INSERT INTO {tables.delta} VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'] * len(rows))}",
                [v for r in rows for v in r],
            )
            record_acks(conn, tables, "r1", [(1, 2)], now)
            assert fold_acks(conn, tables) == 1
            record_acks(conn, tables, "r2", [(3, 4)], now)
            assert fold_acks(conn, tables) == 1
            ledgers.append(conn.fetch_all(f"SELECT _key, _identifier, _hash, CAST(_fields AS VARCHAR) FROM {tables.ledger}"))
    assert ledgers[0] == ledgers[1] == [("k1", "i1", "h1b", '{"x": 3}')]


def test_the_connection_interface_on_every_engine(warehouse_url: str):
    """Bound values (a literal % beside them), Arrow results, batched streaming and column lookup agree."""
    with engine_from_url(warehouse_url).connect() as conn:
        conn.execute("CREATE TABLE t (id BIGINT, label VARCHAR)")
        conn.execute("INSERT INTO t SELECT i, 'n' || CAST(i AS VARCHAR) FROM range(1, 6) AS r(i)")
        assert conn.fetch_all("SELECT count(*) FROM t WHERE label LIKE 'n%' AND id > ?", [2]) == [(3,)]
        assert conn.fetch_arrow("SELECT id, label FROM t WHERE id = ?", [4]).to_pylist() == [{"id": 4, "label": "n4"}]
        batches = list(conn.stream_arrow("SELECT id FROM t ORDER BY id", batch_rows=2))
        assert [b.num_rows for b in batches] == [2, 2, 1]
        assert [c for c, _ in conn.table_columns(None, "t")] == ["id", "label"]
        assert conn.table_columns(None, "missing") == []


def test_a_deployments_own_snowflake_resource_is_used_or_refused_naming_what_it_lacks(monkeypatch):
    from dagster_snowflake import SnowflakeResource

    monkeypatch.setenv("SF_PW", "s3cret-value")
    url = "snowflake://me@acct/db/sch"
    plain = SnowflakeResource(account="acct", user="me", password=dg.EnvVar("SF_PW"), database="db", schema="sch")
    with pytest.raises(WarehouseError, match="paramstyle='qmark', autocommit=True") as info:
        Warehouse(url=url, connection=plain).engine
    assert "s3cret-value" not in str(info.value)
    fit = SnowflakeResource(
        account="acct2", user="me", password=dg.EnvVar("SF_PW"), database="db2", schema="sch2",
        paramstyle="qmark", autocommit=True,
        additional_snowflake_connection_args={"session_parameters": SESSION_PARAMETERS},
    )
    engine = Warehouse(url=url, connection=fit).engine
    assert (engine.account, engine.database, engine.schema) == ("acct2", "db2", "sch2")  # the resource wins


def test_a_duckdb_warehouse_refuses_another_vendors_resource():
    from dagster_snowflake import SnowflakeResource

    other = SnowflakeResource(account="a", user="u", password="p", database="d", schema="s")
    with pytest.raises(WarehouseError, match="DuckDBResource, not SnowflakeResource"):
        Warehouse(url="duckdb:///x.duckdb", connection=other).engine

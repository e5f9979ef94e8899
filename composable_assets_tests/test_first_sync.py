"""A first sync (nothing acknowledged yet) reads the snapshot once instead of joining it to the empty ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from composable_assets.delta.diff import compute_delta, delta_select
from composable_assets.delta.snapshot import SyncShape, build_snapshot
from composable_assets.store import PairTables
from composable_assets.warehouse import engine_from_url

SCHEMA = "composable"
# Odd ids consented; id 7 has no email (the identifier) and id 9 no name: NULLs travel as the join carries them.
PEOPLE = [(i, None if i == 7 else f"p{i}@example.com", None if i == 9 else f"n{i}", i * 10) for i in range(1, 13)]
ALLOWED = "CAST(_key AS BIGINT) % 2 = 1"


@pytest.fixture(params=["duckdb", "postgres"])
def url(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("postgres_url")


def prepared(conn, shape: SyncShape) -> PairTables:
    conn.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
    conn.execute(
        f"INSERT INTO people VALUES {', '.join(['(?, ?, ?, ?)'] * len(PEOPLE))}", [v for p in PEOPLE for v in p]
    )
    build_snapshot(
        conn,
        schema=SCHEMA,
        audience="crowd",
        audience_file=Path("audiences/crowd.yaml"),
        model="people",
        primary_key="id",
        columns=["email", "name", "score"],
        where=None,
        syncs=[shape],
    )
    tables = PairTables(SCHEMA, "crowd", shape.destination)
    tables.ensure(conn)
    return tables


@pytest.mark.parametrize("mode", ["mirror", "upsert"])
@pytest.mark.parametrize("allowed", [None, ALLOWED])
def test_the_one_scan_gives_the_rows_the_join_gives_on_an_empty_ledger(url: str, mode: str, allowed: str | None):
    shape = SyncShape("crm", "email", {"mail": "email", "name": "name", "score": "score"}, allowed=allowed)
    with engine_from_url(url).connect() as conn:
        tables = prepared(conn, shape)
        joined = conn.fetch_all(f"SELECT * FROM ({delta_select(tables, shape, mode, conn.dialect)}) AS d ORDER BY _key")
        scanned = conn.fetch_all(
            f"SELECT * FROM ({delta_select(tables, shape, mode, conn.dialect, ledger_empty=True)}) AS d ORDER BY _key"
        )
    # The same rows; numbered 1..n, in the snapshot's order on DuckDB rather than by key.
    assert [r[:2] + r[3:] for r in scanned] == [r[:2] + r[3:] for r in joined]
    assert sorted(r[2] for r in scanned) == list(range(1, len(joined) + 1))
    assert len(scanned) == (6 if allowed else 12) and {r[0] for r in scanned} == {"add"}


def test_a_first_sync_reads_no_ledger_rows_and_a_later_one_joins(tmp_path: Path, monkeypatch):
    """compute_delta takes the one scan only while the ledger is empty; once rows are acknowledged it joins."""
    from composable_assets.delta import diff

    shape = SyncShape("crm", "email", {"mail": "email", "name": "name"})
    seen: list[bool] = []
    original = diff.delta_select

    def spy(*args, ledger_empty: bool = False, **kwargs):
        seen.append(ledger_empty)
        return original(*args, ledger_empty=ledger_empty, **kwargs)

    monkeypatch.setattr(diff, "delta_select", spy)
    now = dt.datetime(2026, 3, 2, 3)
    with engine_from_url(f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        tables = prepared(conn, shape)
        first = compute_delta(conn, tables, shape, "mirror", run_id="r1", partition=now.date(), now=now)
        conn.execute(
            f"INSERT INTO {tables.ledger} (_key, _identifier, _hash, _fields, _synced_at, _run_id) "
            f"SELECT _key, _identifier, _hash, _fields, _computed_at, _run_id FROM {tables.delta} WHERE _key <> '3'"
        )
        second = compute_delta(conn, tables, shape, "mirror", run_id="r2", partition=now.date(), now=now)
    assert seen == [True, False]
    assert (first.added, first.first_seq, first.last_seq) == (12, 1, 12)
    # Only the one member the ledger lacks is added again, numbered after the first run's rows.
    assert (second.added, second.updated, second.removed, second.first_seq) == (1, 0, 0, 13)


def _compressions(conn, table: str) -> set[str]:
    rows = conn.fetch_all(
        f"SELECT DISTINCT compression FROM pragma_storage_info('{table}') "
        "WHERE segment_type = 'VARCHAR' AND column_name IN ('_key', '_hash', '_fields', '_hash__crm')"
    )
    return {c for (c,) in rows}


def test_a_first_sync_writes_its_text_columns_as_zstd_and_puts_the_setting_back(tmp_path: Path):
    """The snapshot's and the delta's big writes are stored as zstd (cheaper to write), the rows unchanged."""
    shape = SyncShape("crm", "email", {"mail": "email"})
    now = dt.datetime(2026, 3, 2, 3)
    with engine_from_url(f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        # More than one row group (122,880 rows): DuckDB writes those as the statement runs, compressed.
        conn.execute(
            "CREATE TABLE people AS SELECT i AS id, 'p' || i || '@example.com' AS email, NULL AS name, i AS score "
            "FROM range(1, 130001) AS r(i)"
        )
        build_snapshot(
            conn,
            schema=SCHEMA,
            audience="crowd",
            audience_file=Path("audiences/crowd.yaml"),
            model="people",
            primary_key="id",
            columns=["email"],
            where=None,
            syncs=[shape],
        )
        tables = PairTables(SCHEMA, "crowd", "crm")
        run = compute_delta(conn, tables, shape, "mirror", run_id="r1", partition=now.date(), now=now)
        assert (run.added, run.last_seq) == (130_000, 130_000)
        assert _compressions(conn, tables.snapshot.replace('"', "")) == {"ZSTD"}
        assert _compressions(conn, tables.delta.replace('"', "")) == {"ZSTD"}
        assert conn.fetch_row("SELECT current_setting('force_compression')") == ("auto",)
        row = conn.fetch_row(f"SELECT _identifier, _fields::VARCHAR FROM {tables.delta} WHERE _key = '7'")
        assert row == ("p7@example.com", '{"mail":"p7@example.com"}')


def test_bulk_writes_keep_a_compression_the_url_chose_and_report_the_blocks_own_error(tmp_path: Path):
    with engine_from_url(f"duckdb:///{tmp_path / 'w.duckdb'}?force_compression=uncompressed").connect() as conn:
        with conn.bulk_writes():
            assert conn.fetch_row("SELECT current_setting('force_compression')") == ("uncompressed",)
        assert conn.fetch_row("SELECT current_setting('force_compression')") == ("uncompressed",)
    with engine_from_url(f"duckdb:///{tmp_path / 'v.duckdb'}").connect() as conn:
        # An error aborts the block's transaction: that error is raised, not the refused reset's.
        with pytest.raises(Exception, match="boom"), conn.bulk_writes(), conn.transaction():
            assert conn.fetch_row("SELECT current_setting('force_compression')") == ("zstd",)
            conn.execute("SELECT error('boom')")
        assert conn.fetch_row("SELECT current_setting('force_compression')") == ("auto",)
        with pytest.raises(Exception, match="bang"), conn.transaction(), conn.bulk_writes():
            conn.execute("SELECT error('bang')")

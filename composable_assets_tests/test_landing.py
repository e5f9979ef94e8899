"""Landing folders: files load into their source table exactly once; refused files are kept with the reason."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from composable_assets.landing import LandingFolder, load_landing
from composable_assets.landing.folder import LOADED, REJECTED
from composable_assets.warehouse import Warehouse

NOW = dt.datetime(2026, 11, 29, 12, 0)


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    with wh.connect() as conn:
        conn.execute("CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, amount DECIMAL(12, 2))")
        conn.execute("CREATE TABLE customers (customer_id BIGINT, first_name VARCHAR, country VARCHAR)")
        conn.execute("INSERT INTO customers VALUES (1, 'Anna', 'DE'), (2, 'Ben', 'FR')")
    return wh


def land_parquet(folder: LandingFolder, rows: list[dict]) -> str:
    name = folder.new_file_name(".parquet")
    temp = folder.temp_path(name)
    pq.write_table(pa.Table.from_pylist(rows), temp)
    folder.publish(temp, name)
    return name


def land_jsonl(folder: LandingFolder, rows: list[dict]) -> str:
    name = folder.new_file_name(".jsonl")
    temp = folder.temp_path(name)
    temp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder.publish(temp, name)
    return name


def test_appended_files_load_once_and_move_to_loaded(tmp_path, warehouse):
    folder = LandingFolder("orders", tmp_path / "landing" / "orders")
    first = land_parquet(folder, [{"order_id": 1, "customer_id": 1, "amount": 10.5}, {"order_id": 2, "customer_id": 2, "amount": 3}])
    second = land_jsonl(folder, [{"order_id": 3, "customer_id": 1, "amount": 7.25}])
    assert folder.marker() == second  # names sort by landing time
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-1", now=NOW)
        assert (report.files, report.rows, report.rejected) == (2, 3, [])
        assert conn.fetch_all("SELECT order_id, amount::VARCHAR FROM orders ORDER BY 1") == [(1, "10.50"), (2, "3.00"), (3, "7.25")]
        # Nothing pending any more: a second load is a no-op.
        assert load_landing(conn, folder, "composable", "run-2", now=NOW).files == 0
        assert conn.fetch_one("SELECT count(*) FROM orders") == (3,)
    assert folder.pending() == [] and folder.marker() is None
    assert sorted(p.name for p in (folder.path / LOADED / "2026-11-29").iterdir()) == sorted([first, second])


def test_a_file_loaded_before_a_crash_is_not_loaded_again(tmp_path, warehouse):
    folder = LandingFolder("orders", tmp_path / "landing" / "orders")
    name = land_parquet(folder, [{"order_id": 1, "customer_id": 1, "amount": 1}])
    with warehouse.connect() as conn:
        load_landing(conn, folder, "composable", "run-1", now=NOW)
    # A run killed after the commit but before the move leaves the file where it was.
    (folder.path / LOADED / "2026-11-29" / name).rename(folder.path / name)
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-2", now=NOW)
        assert (report.files, report.already_loaded) == (0, 1)
        assert conn.fetch_one("SELECT count(*) FROM orders") == (1,)
    assert folder.pending() == []


def test_upserts_replace_only_the_columns_a_file_carries_and_later_rows_win(tmp_path, warehouse):
    folder = LandingFolder("customers", tmp_path / "landing" / "customers", key="customer_id")
    land_parquet(folder, [{"customer_id": 2, "first_name": "Bea"}, {"customer_id": 2, "first_name": "Bella"}])
    land_parquet(folder, [{"customer_id": 3, "first_name": "Cleo", "country": "NL"}])
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-1", now=NOW)
        assert report.rows == 3 and not report.rejected
        assert conn.fetch_all("SELECT * FROM customers ORDER BY 1") == [
            (1, "Anna", "DE"),
            (2, "Bella", "FR"),  # country untouched: the file did not carry it
            (3, "Cleo", "NL"),
        ]


def test_a_row_marked_deleted_deletes_its_key_and_is_journaled_for_the_models(tmp_path, warehouse):
    folder = LandingFolder("customers", tmp_path / "landing" / "customers", key="customer_id")
    # Customer 2 is deleted; 3 is added then deleted in one file (the last row of a key wins); 1 is edited.
    land_parquet(folder, [
        {"customer_id": 2, "first_name": None, "_deleted": True},
        {"customer_id": 3, "first_name": "Cleo", "_deleted": False},
        {"customer_id": 3, "first_name": None, "_deleted": True},
        {"customer_id": 1, "first_name": "Anne", "_deleted": False},
    ])
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-1", now=NOW, journal_columns=["customer_id"])
        assert not report.rejected
        assert conn.fetch_all("SELECT * FROM customers ORDER BY 1") == [(1, "Anne", "DE")]
        journaled = conn.fetch_all("SELECT DISTINCT relation, key FROM composable.key_changes ORDER BY key")
        assert journaled == [("customers:customer_id", "1"), ("customers:customer_id", "2"), ("customers:customer_id", "3")]


def test_a_refused_file_is_kept_with_its_reason_and_the_others_still_load(tmp_path, warehouse):
    folder = LandingFolder("orders", tmp_path / "landing" / "orders")
    good = land_parquet(folder, [{"order_id": 1, "customer_id": 1, "amount": 1}])
    bad = land_parquet(folder, [{"order_id": 2, "discount_code": "X"}])
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-1", now=NOW)
        assert report.files == 1
        assert [name for name, _ in report.rejected] == [bad]
        assert bad in report.rejected[0][1] and "discount_code" in report.rejected[0][1]
        assert conn.fetch_one("SELECT count(*) FROM orders") == (1,)
    kept = folder.path / REJECTED / bad
    assert kept.exists() and "discount_code" in (folder.path / REJECTED / f"{bad}.error.txt").read_text()
    assert (folder.path / LOADED / "2026-11-29" / good).exists()


def test_files_being_written_are_not_picked_up(tmp_path):
    folder = LandingFolder("orders", tmp_path / "landing" / "orders")
    temp = folder.temp_path("x.parquet")
    pq.write_table(pa.table({"order_id": [1]}), temp)
    (folder.path / "notes.txt").write_text("not data")
    assert folder.pending() == []


def test_a_landing_folder_for_a_missing_table_is_a_clear_error(tmp_path, warehouse):
    folder = LandingFolder("refunds", tmp_path / "landing" / "refunds")
    land_parquet(folder, [{"refund_id": 1}])
    with warehouse.connect() as conn, pytest.raises(ValueError, match="refunds.*does not exist"):
        load_landing(conn, folder, "composable", "run-1", now=NOW)
    assert len(folder.pending()) == 1  # nothing moved, nothing lost


def test_a_json_file_with_a_wrong_type_is_refused_by_name(tmp_path, warehouse):
    folder = LandingFolder("orders", tmp_path / "landing" / "orders")
    bad = land_jsonl(folder, [{"order_id": "not a number", "customer_id": 1, "amount": 1}])
    with warehouse.connect() as conn:
        report = load_landing(conn, folder, "composable", "run-1", now=NOW)
    assert [name for name, _ in report.rejected] == [bad]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchone() == (0,)

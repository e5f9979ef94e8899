"""The row hash: the same row hashes the same on every engine and in every session time zone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from composable_assets.warehouse.sql import row_hash
from composable_assets.warehouse import engine_from_url

from .warehouses import PG_HOST, PG_PORT, PG_USER

COLUMNS = ["i", "s", "n", "e", "b", "ts", "tz", "f", "d", "dt"]
SETUP = [
    "CREATE TABLE h (k INTEGER, i BIGINT, s VARCHAR, n VARCHAR, e VARCHAR, b BOOLEAN, ts TIMESTAMP, tz TIMESTAMPTZ, "
    "f DOUBLE, d DECIMAL(10, 2), dt DATE)",
    "INSERT INTO h VALUES "
    "(1, 42, 'héllo', NULL, '', true, TIMESTAMP '2026-03-01 10:00:00.5', TIMESTAMPTZ '2026-03-01 10:00:00+02:00', "
    "0.1, 3.5, DATE '2026-03-01'), "
    "(2, 42, 'héllo', '', NULL, true, TIMESTAMP '2026-03-01 10:00:00.5', TIMESTAMPTZ '2026-03-01 10:00:00+02:00', "
    "0.1, 3.5, DATE '2026-03-01')",
]
QUERY = f"SELECT k, {row_hash(COLUMNS, 'salt')} FROM h ORDER BY k"


def hashes(url: str) -> list[tuple]:
    with engine_from_url(url).connect() as conn:
        for statement in SETUP:
            conn.execute(statement)
        return conn.fetch_all(QUERY)


@pytest.fixture(params=["postgres", "snowflake"])
def other_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_same_row_same_hash_on_every_engine_and_null_is_not_empty(other_url: str, tmp_path: Path):
    duckdb_hashes = hashes(f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert duckdb_hashes[0][1] != duckdb_hashes[1][1]  # NULL and '' swapped between two columns
    assert hashes(other_url) == duckdb_hashes


def test_postgres_sessions_hash_in_utc_whatever_the_server_default(postgres_url: str, tmp_path: Path):
    database = postgres_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"ALTER DATABASE \"{database}\" SET timezone TO 'America/New_York'")
    admin.close()
    assert hashes(postgres_url) == hashes(f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_duckdb_sessions_print_time_zones_in_utc_whatever_the_machine_s(tmp_path: Path):
    script = (
        "from composable_assets.warehouse import engine_from_url\n"
        f"with engine_from_url('duckdb:///{tmp_path / 'w.duckdb'}').connect() as c:\n"
        "    print(c.fetch_one(\"SELECT CAST(TIMESTAMPTZ '2026-03-01 10:00:00+02:00' AS VARCHAR)\")[0])\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], env={"TZ": "America/New_York", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert printed == "2026-03-01 08:00:00+00"

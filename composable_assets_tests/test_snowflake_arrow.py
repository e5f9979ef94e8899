"""Snowflake results come out as the connector's Arrow chunks (no row-by-row conversion), typed as on DuckDB."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from composable_assets.warehouse import engine_from_url

ROWS = 2_500


def test_arrow_results_over_the_network_match_duckdb(snowflake_server_url: str, tmp_path):
    setup = [
        "CREATE TABLE typed (id BIGINT, name VARCHAR, seen TIMESTAMP, score DOUBLE, ok BOOLEAN)",
        f"INSERT INTO typed SELECT i, 'n' || CAST(i AS VARCHAR), TIMESTAMP '2026-03-01 10:00:00', i / 4, i % 2 = 0 "
        f"FROM range(0, {ROWS}) AS r(i)",
        "INSERT INTO typed VALUES (-1, NULL, TIMESTAMP '2026-03-02 11:30:00.123456', NULL, NULL)",
    ]
    query = "SELECT id, name, seen, score, ok FROM typed ORDER BY id"
    results = {}
    for name, url in {"snowflake": snowflake_server_url, "duckdb": f"duckdb:///{tmp_path / 'w.duckdb'}"}.items():
        with engine_from_url(url).connect() as conn:
            for statement in setup:
                conn.execute(statement)
            whole = conn.fetch_arrow(query)
            batches = list(conn.stream_arrow(query, batch_rows=1_000))
        assert max(b.num_rows for b in batches) <= 1_000
        assert pa.Table.from_batches(batches).to_pylist() == whole.to_pylist()
        results[name] = whole

    snowflake, duckdb = results["snowflake"], results["duckdb"]
    assert snowflake.num_rows == duckdb.num_rows == ROWS + 1
    assert snowflake.to_pylist() == duckdb.to_pylist()
    assert snowflake.schema.field("seen").type == pa.timestamp("us")
    assert snowflake.column("seen")[0].as_py() == dt.datetime(2026, 3, 2, 11, 30, 0, 123456)

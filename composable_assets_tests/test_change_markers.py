"""The minute-level sensor's change markers move when a source table's data does, on every engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from composable_assets.warehouse import engine_from_url


@pytest.fixture(params=["duckdb", "postgres", "snowflake", "snowflake_server"])
def url(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'w.duckdb'}"
    return request.getfixturevalue(f"{request.param}_url")


def test_markers_move_on_insert_update_and_delete_only(url: str):
    engine = engine_from_url(url)
    with engine.connect() as conn:
        conn.execute("CREATE TABLE orders (id BIGINT, total DOUBLE, updated_at TIMESTAMP)")
        conn.execute("INSERT INTO orders VALUES (1, 10.0, TIMESTAMP '2026-03-01 10:00:00')")
    seen = [engine.change_markers(["orders", "missing"])]
    assert seen[0]["missing"] is None and seen[0]["orders"] is not None
    assert engine.change_markers(["orders"])["orders"] == seen[0]["orders"]  # nothing changed: same marker

    for statement in (
        "INSERT INTO orders VALUES (2, 5.0, TIMESTAMP '2026-03-01 10:01:00')",
        "UPDATE orders SET total = 12.0, updated_at = TIMESTAMP '2026-03-01 10:02:00' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
    ):
        with engine.connect() as conn:
            conn.execute(statement)
        seen.append(engine.change_markers(["orders"]))
        assert seen[-1]["orders"] != seen[-2]["orders"], statement

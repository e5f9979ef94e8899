"""`Connection.transaction()`: one block, committed when it ends, rolled back when it raises, on every engine."""

from __future__ import annotations

import pytest

from composable_assets.warehouse import Warehouse


class Refused(Exception):
    pass


def test_a_block_commits_when_it_ends_and_rolls_back_when_it_raises(warehouse_url: str):
    warehouse = Warehouse(url=warehouse_url)
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE tx_probe (n INTEGER)")
        with conn.transaction():
            conn.execute("INSERT INTO tx_probe VALUES (1)")
            conn.execute("INSERT INTO tx_probe VALUES (2)")
        with pytest.raises(Refused):
            with conn.transaction():
                conn.execute("INSERT INTO tx_probe VALUES (3)")
                raise Refused("the block fails after a write")
        # The connection is usable after a rollback, and only the committed block's rows are there.
        with conn.transaction():
            conn.execute("INSERT INTO tx_probe VALUES (4)")
    with warehouse.connect() as conn:
        assert [n for (n,) in conn.fetch_all("SELECT n FROM tx_probe ORDER BY n")] == [1, 2, 4]


def test_a_block_inside_another_joins_it(warehouse_url: str):
    warehouse = Warehouse(url=warehouse_url)
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE tx_nested (n INTEGER)")
        with conn.transaction():
            conn.execute("INSERT INTO tx_nested VALUES (1)")
            with conn.transaction():  # no second BEGIN (an error on most engines): one commit for both
                conn.execute("INSERT INTO tx_nested VALUES (2)")
        with pytest.raises(Refused):
            with conn.transaction():
                conn.execute("INSERT INTO tx_nested VALUES (3)")
                with conn.transaction():
                    conn.execute("INSERT INTO tx_nested VALUES (4)")
                raise Refused("the outer block fails after the inner one ended")
        with pytest.raises(Refused):
            with conn.transaction():
                conn.execute("INSERT INTO tx_nested VALUES (5)")
                with conn.transaction():
                    conn.execute("INSERT INTO tx_nested VALUES (6)")
                    raise Refused("the inner block fails")
        with conn.transaction():  # still usable, and a block on its own again
            conn.execute("INSERT INTO tx_nested VALUES (7)")
    with warehouse.connect() as conn:
        assert [n for (n,) in conn.fetch_all("SELECT n FROM tx_nested ORDER BY n")] == [1, 2, 7]

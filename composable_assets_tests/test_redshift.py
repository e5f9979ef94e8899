"""Amazon Redshift: its URL, and its SQL checked on PostgreSQL as far as PostgreSQL can run it.

There is no Redshift here. Redshift speaks PostgreSQL's wire protocol, so the check is: while the whole flow runs
on the local PostgreSQL server, every statement is also rendered for Redshift and run first, on the same data,
inside a savepoint that is rolled back. A Redshift rendering PostgreSQL refuses fails the test, except for the
Redshift-only spellings the harness swaps for PostgreSQL's (listed in `REDSHIFT_ONLY`); those are named in
docs/configuration.md as not proved here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from composable_assets.warehouse import WarehouseError, engine_from_url
from composable_assets.warehouse.dialect import render
from composable_assets.warehouse.postgres_engine import PostgresConnection

from .test_engines_flow import whole_flow

# Redshift-only spellings and the PostgreSQL equivalent the harness runs instead (everything else runs as rendered).
REDSHIFT_ONLY = {
    "VARCHAR(MAX)": "VARCHAR",  # Redshift's unbounded VARCHAR (plain VARCHAR there is 256 bytes)
    "SUPER": "JSON",  # Redshift's semi-structured type
    "JSON_SERIALIZE(OBJECT(...))": "json_build_object(...)",  # building a JSON object as text
}


def as_postgres_runs_it(sql: str) -> str:
    """The Redshift rendering with only the `REDSHIFT_ONLY` spellings replaced."""
    sql = sql.replace("VARCHAR(MAX)", "VARCHAR")
    sql = re.sub(r"\bSUPER\b", "JSON", sql)
    marker = "JSON_SERIALIZE(OBJECT("
    while marker in sql:
        start = sql.index(marker)
        depth, i = 2, start + len(marker)
        while depth:  # find the two closing parentheses that match
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        inner = sql[start + len(marker) : i - 2]
        sql = f"{sql[:start]}json_build_object({inner}){sql[i:]}"
    return sql


@pytest.fixture
def redshift_shadow(monkeypatch):
    """Run each statement's Redshift rendering on PostgreSQL first (rolled back), then the real one."""
    seen: list[tuple[str, str | None]] = []
    original = PostgresConnection._run

    def shadowed(self, cursor, sql, params):
        # Transaction control runs as it is; indexes are never sent to Redshift (RedshiftConnection.ensure_index).
        control = sql.strip().upper() in ("BEGIN TRANSACTION", "COMMIT", "ROLLBACK") or sql.startswith("CREATE INDEX")
        if self.dialect == "postgres" and not control and not getattr(cursor, "name", None):
            redshift = as_postgres_runs_it(render(sql, "redshift") if params else render(sql, "redshift", "?"))
            in_transaction = self._con.info.transaction_status != 0  # not idle: BEGIN ... COMMIT is open
            cursor.execute("SAVEPOINT redshift_check" if in_transaction else "BEGIN")
            error = None
            try:
                cursor.execute(redshift, list(params) if params else None)
            except Exception as exc:  # recorded, then the test fails on it
                error = f"{type(exc).__name__}: {exc}".strip()
            cursor.execute("ROLLBACK TO SAVEPOINT redshift_check" if in_transaction else "ROLLBACK")
            seen.append((redshift, error))
        return original(self, cursor, sql, params)

    monkeypatch.setattr(PostgresConnection, "_run", shadowed)
    return seen


def test_the_flow_s_redshift_sql_runs_on_postgresql(tmp_path: Path, postgres_url: str, redshift_shadow):
    whole_flow(tmp_path, postgres_url)

    refused = [(sql, error) for sql, error in redshift_shadow if error]
    assert not refused, "\n\n".join(f"{sql}\n-> {error}" for sql, error in refused)
    statements = [sql for sql, _ in redshift_shadow]
    # The statements that matter were among those checked: the diff, the ledger MERGE, the delta numbering.
    assert any("FULL OUTER JOIN" in s and "CASE WHEN (" in s for s in statements)  # IS DISTINCT FROM, rewritten
    assert any(s.startswith("MERGE INTO") for s in statements)
    assert any("ROW_NUMBER() OVER" in s and "_w = 1" in s for s in statements)  # QUALIFY, as a subquery
    assert any("json_build_object" in s for s in statements)
    assert len(statements) > 50


def test_redshift_rendering_avoids_what_redshift_refuses():
    diff = render(
        "SELECT a._key FROM s AS a FULL OUTER JOIN l ON a._key = l._key WHERE a._hash IS DISTINCT FROM l._hash "
        "QUALIFY row_number() OVER (PARTITION BY a._key ORDER BY a._seq DESC) = 1",
        "redshift",
    )
    assert "IS DISTINCT FROM" not in diff and "QUALIFY" not in diff and "NULLS" not in diff
    assert render("CREATE TABLE t (f JSON, s VARCHAR)", "redshift") == "CREATE TABLE t (f SUPER, s VARCHAR(MAX))"
    assert render("SELECT json_object('a', x)", "redshift") == "SELECT JSON_SERIALIZE(OBJECT('a', x))"
    assert render("CREATE OR REPLACE TABLE t AS SELECT 1", "redshift").startswith("DROP TABLE IF EXISTS t; CREATE TABLE t")


def test_redshift_url_defaults_to_port_5439_and_refuses_a_password(monkeypatch):
    engine = engine_from_url("redshift://analyst@example-cluster.abc123.eu-west-1.redshift.amazonaws.com/dev")
    assert (engine.kind, engine.dialect, engine.port, engine.database) == ("redshift", "redshift", 5439, "dev")
    with pytest.raises(WarehouseError, match="Redshift URL must not contain a password") as info:
        engine_from_url("redshift://analyst:hunter2-secret@host/dev")
    assert "hunter2-secret" not in str(info.value)
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE_PASSWORD", "pw-never-shown")
    with pytest.raises(WarehouseError, match="Redshift warehouse: nothing answers at 127.0.0.1:1") as info:
        with engine_from_url("redshift://analyst@127.0.0.1:1/dev").connect():
            pass
    assert "pw-never-shown" not in str(info.value)

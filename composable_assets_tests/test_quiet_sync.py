"""Quiet syncs: a run with nothing changed skips the model, the snapshot and the full delta, and is still exact.

Each skip is checked against the change that must end it: a source row edited in place (same row count), a model
that reads the clock, a row the destination rejected, another audience condition, another field mapping, a model
table written by someone else.
"""

from __future__ import annotations

import duckdb
import pytest

from composable_assets.delta import quiet
from composable_assets.warehouse.duckdb_engine import DuckDBConnection

from .conftest import Recording


def text(outcome, key: str, name: str = "mode") -> str:
    value = outcome.materialized[key][name]
    return str(getattr(value, "value", value))


def sent(outcome, destination: str) -> int:
    s = next(s for s in outcome.syncs if s.destination == destination)
    return s.count("added") + s.count("updated") + s.count("removed")


def test_a_second_run_with_nothing_changed_skips_every_step_and_sends_nothing(small):
    first = small.sync()
    assert first.success and sent(first, "rec_mirror") == 10
    quiet_run = small.sync()
    assert quiet_run.success
    assert text(quiet_run, "model/people_model").startswith("skipped")
    assert text(quiet_run, "audience/high").startswith("skipped")
    assert text(quiet_run, "delta/high/rec_mirror").startswith("skipped")
    assert text(quiet_run, "delta/high/rec_upsert").startswith("skipped")
    assert sent(quiet_run, "rec_mirror") == sent(quiet_run, "rec_upsert") == 0
    # The snapshot kept is the one computed: ten members.
    assert quiet_run.materialized["audience/high"]["members"].value == 10


def test_a_source_row_changed_in_place_is_picked_up_by_the_next_sync(small):
    small.sync()
    # Same row count, no updated_at column: only the content tells.
    small.query("UPDATE people SET name = 'renamed' WHERE id = 15")
    outcome = small.sync()
    assert text(outcome, "model/people_model").startswith("full")
    assert text(outcome, "audience/high").startswith("full")
    assert [r.fields["name"] for r in Recording.received["rec_upsert"][-1:]] == ["renamed"]
    assert sent(outcome, "rec_mirror") == sent(outcome, "rec_upsert") == 1


def test_a_model_reading_the_clock_is_recomputed_on_every_run(small):
    small.write(
        "models/people_model.sql",
        "SELECT id, email, name, score FROM people WHERE current_timestamp - INTERVAL 48 HOUR < TIMESTAMP '2999-01-01'\n",
    )
    small.sync()
    outcome = small.sync()
    assert text(outcome, "model/people_model").startswith("full")
    assert "reads the clock" in text(outcome, "model/people_model", "skip")


def test_a_rejected_row_is_retried_when_nothing_changed(small):
    Recording.reject["rec_mirror"] = {"13"}
    first = small.sync()
    assert first.rejected == 1 and "13" not in small.ledger("rec_mirror")
    Recording.reject.clear()
    retry = small.sync()
    assert text(retry, "model/people_model").startswith("skipped")
    assert text(retry, "delta/high/rec_mirror").startswith("skipped")
    assert [r.identifier for r in Recording.received["rec_mirror"][-1:]] == ["13"]
    assert "13" in small.ledger("rec_mirror")
    # Acknowledged now: the run after has nothing left to send.
    assert sent(small.sync(), "rec_mirror") == 0


def test_a_changed_audience_condition_is_picked_up(small):
    small.sync()
    small.write(
        "audiences/high.yaml",
        (small.settings.project_dir / "audiences/high.yaml").read_text().replace("score > 10", "score > 15"),
    )
    outcome = small.sync()
    assert text(outcome, "model/people_model").startswith("skipped")
    assert text(outcome, "audience/high").startswith("full")
    mirror = next(s for s in outcome.syncs if s.destination == "rec_mirror")
    assert mirror.count("removed") == 5
    assert sorted(small.ledger("rec_mirror")) == [str(i) for i in range(16, 21)]


def test_a_changed_field_mapping_is_picked_up(small):
    small.sync()
    small.write(
        "audiences/high.yaml",
        (small.settings.project_dir / "audiences/high.yaml")
        .read_text()
        .replace("fields: {name: name, score: score}", "fields: {name: name, points: score}"),
    )
    outcome = small.sync()
    upsert = next(s for s in outcome.syncs if s.destination == "rec_upsert")
    assert upsert.count("updated") == 10
    assert {tuple(sorted(r.fields)) for r in Recording.received["rec_upsert"][-10:]} == {("name", "points")}


def test_a_model_table_written_by_someone_else_is_recomputed(small):
    small.sync()
    small.query("DELETE FROM people_model WHERE id = 20")
    outcome = small.sync()
    assert text(outcome, "model/people_model").startswith("full")
    assert sent(outcome, "rec_mirror") == 0  # recomputed as it was: member 20 is still there
    assert "20" in small.ledger("rec_mirror")


@pytest.mark.parametrize(
    ("sql", "reads_date", "volatile"),
    [
        ("SELECT id FROM people", False, ""),
        ("SELECT id FROM people WHERE joined > current_date - INTERVAL 90 DAY", True, ""),
        ("last_order_at >= current_date - INTERVAL 90 DAY", True, ""),
        ("SELECT id FROM events WHERE at >= current_timestamp - INTERVAL 48 HOUR", False, "reads the clock"),
        ("SELECT id FROM events WHERE at >= now() - INTERVAL 1 HOUR", False, "reads the clock"),
        ("SELECT id, random() AS r FROM people", False, "answers differently"),
    ],
)
def test_what_a_step_reads_of_the_clock_is_found_in_its_sql(sql, reads_date, volatile):
    clock = quiet.clock_of(sql)
    assert clock.reads_date == reads_date
    assert (volatile in clock.volatile) if volatile else not clock.volatile


def test_a_date_dependent_step_is_fingerprinted_with_the_date_and_content():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS id, range * 2 AS v FROM range(100)")
    conn = DuckDBConnection(con)
    clock = quiet.clock_of("SELECT id FROM t WHERE current_date > DATE '2000-01-01'")
    base = quiet.fingerprint(conn, "def", [(None, "t")], clock, "2026-03-02").fingerprint
    assert base == quiet.fingerprint(conn, "def", [(None, "t")], clock, "2026-03-02").fingerprint
    assert base != quiet.fingerprint(conn, "def", [(None, "t")], clock, "2026-03-03").fingerprint
    assert base != quiet.fingerprint(conn, "other", [(None, "t")], clock, "2026-03-02").fingerprint
    # Two rows swapping values: same count, same sum of values, another content.
    con.execute("UPDATE t SET v = CASE id WHEN 1 THEN 4 WHEN 2 THEN 2 ELSE v END WHERE id IN (1, 2)")
    assert base != quiet.fingerprint(conn, "def", [(None, "t")], clock, "2026-03-02").fingerprint
    # A duplicated row does not cancel out.
    con.execute("CREATE TABLE u AS SELECT 1 AS a")
    once = conn.content_markers([(None, "u")])
    con.execute("INSERT INTO u VALUES (1), (1)")
    assert once != conn.content_markers([(None, "u")])
    assert conn.content_markers([(None, "missing")]) == ["absent"]


def test_tables_read_by_a_member_condition_are_found():
    condition = (
        "_key NOT IN (SELECT CAST(customer_id AS VARCHAR) FROM requests UNION ALL SELECT key FROM composable.log)"
    )
    assert quiet.tables_read(condition) == [(None, "requests"), ("composable", "log")]
    assert quiet.tables_read("WITH x AS (SELECT 1 AS a FROM t) SELECT a FROM x") == [(None, "t")]


def test_a_step_reading_files_or_table_functions_is_never_skipped():
    assert quiet.tables_read("SELECT * FROM read_parquet('orders/*.parquet')") is None
    assert quiet.tables_read("SELECT * FROM range(10)") is None
    conn = DuckDBConnection(duckdb.connect())
    # DuckDB reads a file, or a variable of the process, under a name no table has: it can change unseen.
    inputs = quiet.fingerprint(
        conn, "def", quiet.tables_read("SELECT * FROM 'orders.csv'"), quiet.Clock(), "2026-03-02"
    )
    assert inputs.fingerprint is None and "orders.csv" in inputs.why
    assert quiet.fingerprint(conn, "def", None, quiet.Clock(), "2026-03-02").fingerprint is None

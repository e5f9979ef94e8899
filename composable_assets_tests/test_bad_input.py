"""Bad data is stopped before anything is sent, with an error naming the file and the offending keys."""

from __future__ import annotations

from .conftest import Recording


def _ledger_rows(small, destination="rec_mirror"):
    return small.query(f'SELECT _key, _hash FROM composable."ledger__high__{destination}" ORDER BY _key')


def _duplicate_keys(small) -> str:
    """Sync, then make 15 and 18 appear more than once; the errors of the sync that follows."""
    small.sync()
    before = _ledger_rows(small)
    Recording.received.clear()
    rows = [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)]
    rows += [(15, "dup@example.com", "dup", 50), (15, "dup2@example.com", "dup", 60), (18, "x@example.com", "x", 70)]
    small.set_people(rows)
    outcome = small.sync()
    assert not outcome.success
    assert Recording.received == {}
    assert _ledger_rows(small) == before
    return " ".join(outcome.errors)


def test_duplicate_primary_keys_stop_the_sync_and_say_how_to_find_them(small):
    """Keys are member data: Dagster keeps the error for ever, so it counts them and gives the query instead."""
    message = _duplicate_keys(small)
    assert "audiences/high.yaml" in message and "2 keys have more than one row" in message
    assert 'SELECT "id", count(*) FROM "people_model" WHERE score > 10 GROUP BY "id" HAVING count(*) > 1' in message
    assert "'15'" not in message and "'18'" not in message


def test_duplicate_primary_keys_are_named_with_payload_samples_on(small):
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\npayload_samples: true\n')
    message = _duplicate_keys(small)
    assert "audiences/high.yaml" in message and "'15' (3 rows)" in message and "'18' (2 rows)" in message


def test_null_keys_stop_the_sync(small):
    small.set_people([(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)] + [(None, "n@example.com", "n", 99)])
    outcome = small.sync()
    assert not outcome.success
    assert any("high.yaml" in e and "NULL in 1 row" in e for e in outcome.errors)
    assert Recording.received == {}


def test_null_keys_stop_the_sync_when_deletion_requests_leave_people_out_too(small):
    """The snapshot leaves out people who asked to be forgotten; a NULL key is not one of them, it stops the sync."""
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\n'
                "deletion_requests: {table: forget_me, key: id, requested_at: at, id: request}\n")
    small.query("CREATE TABLE forget_me AS SELECT 'r-1' AS request, 15 AS id, TIMESTAMP '2026-03-01' AS at")
    small.set_people([(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)] + [(None, "n@example.com", "n", 99)])
    outcome = small.sync()
    assert not outcome.success
    assert any("high.yaml" in e and "NULL in 1 row" in e for e in outcome.errors), outcome.errors
    assert Recording.received == {}


def test_a_failing_model_names_its_file(small):
    small.write("models/people_model.sql", "SELECT id, email, name, score, no_such_column FROM people\n")
    outcome = small.sync()
    assert not outcome.success
    assert any("models/people_model.sql" in e and "no_such_column" in e for e in outcome.errors)
    assert Recording.received == {}


def test_null_identifier_rows_are_rejected_individually(small):
    rows = [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)]
    rows[13] = (14, None, "no email", 14)
    small.set_people(rows)
    outcome = small.sync(destination="rec_upsert")
    assert outcome.success
    upsert = outcome.syncs[0]
    assert upsert.count("failed") == 1 and upsert.count("added") == 9
    assert small.query("SELECT key, reason FROM composable.sync_failures") == [("14", "identifier is NULL")]

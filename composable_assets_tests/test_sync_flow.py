"""The core flow on a temporary DuckDB file: first sync, no-change, modes, rejections, crashes, past partitions."""

from __future__ import annotations

import json

from .conftest import Recording

MEMBERS = {str(i) for i in range(11, 21)}


def received(name: str) -> list[tuple[str, str, str]]:
    return [(r.change, r.key, r.identifier) for r in Recording.received[name]]


def test_first_sync_sends_every_member_and_fills_the_ledger(small):
    outcome = small.sync()
    assert outcome.success, outcome.errors
    assert sorted(k for _, k, _ in received("rec_mirror")) == sorted(MEMBERS)
    assert {c for c, _, _ in received("rec_mirror")} == {"add"}
    assert set(small.ledger("rec_mirror")) == MEMBERS
    # The upsert sync is identified by email: the identifier is the email, fields as mapped.
    first = next(r for r in Recording.received["rec_upsert"] if r.key == "11")
    assert first.identifier == "p11@example.com" and first.fields == {"name": "name11", "score": 11}
    counts = {(s.destination, n): s.count(n) for s in outcome.syncs for n in ("added", "updated", "removed", "failed")}
    assert counts[("rec_mirror", "added")] == 10 and counts[("rec_mirror", "removed")] == 0


def test_second_run_without_changes_sends_nothing(small):
    small.sync()
    Recording.received.clear()
    outcome = small.sync()
    assert outcome.success
    assert received("rec_mirror") == [] and received("rec_upsert") == []
    assert all(s.count("added") + s.count("updated") + s.count("removed") == 0 for s in outcome.syncs)


def test_mirror_removes_leavers_and_upsert_does_not(small):
    small.sync()
    Recording.received.clear()
    # 11 leaves (score drops), 12 changes name, 21 joins.
    rows = [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 22)]
    rows[10] = (11, "p11@example.com", "name11", 3)
    rows[11] = (12, "p12@example.com", "renamed", 12)
    small.set_people(rows)
    assert small.sync().success
    assert sorted(received("rec_mirror")) == [("add", "21", "21"), ("remove", "11", "11"), ("update", "12", "12")]
    assert sorted(received("rec_upsert")) == [("add", "21", "p21@example.com"), ("update", "12", "p12@example.com")]
    assert "11" not in small.ledger("rec_mirror")
    assert "11" in small.ledger("rec_upsert")  # upsert never removes
    removed = next(r for r in Recording.received["rec_mirror"] if r.change == "remove")
    assert removed.fields is None and removed.previous == {"email": "p11@example.com", "name": "name11"}


def test_rejected_rows_stay_for_the_next_run_and_go_through_on_recovery(small):
    Recording.reject["rec_mirror"] = {"13", "17"}
    outcome = small.sync()
    assert outcome.success  # rejected rows do not fail the rows that succeeded
    mirror = next(s for s in outcome.syncs if s.destination == "rec_mirror")
    assert mirror.count("failed") == 2 and mirror.count("added") == 8
    assert set(small.ledger("rec_mirror")) == MEMBERS - {"13", "17"}
    reasons = small.query("SELECT key, reason FROM composable.sync_failures ORDER BY key")
    assert reasons == [("13", "invalid identifier 13"), ("17", "invalid identifier 17")]
    # Still rejected: the same two rows are tried again, nothing else is resent.
    Recording.received.clear()
    small.sync()
    assert received("rec_mirror") == []
    # The destination recovers: exactly those two go through.
    Recording.reject.clear()
    small.sync()
    assert sorted(received("rec_mirror")) == [("add", "13", "13"), ("add", "17", "17")]
    assert set(small.ledger("rec_mirror")) == MEMBERS


def test_crash_after_k_batches_resends_nothing_acknowledged(small):
    Recording.crash_after_batches["rec_mirror"] = 2  # batch_size 2: 4 rows acknowledged, then the crash
    outcome = small.sync(destination="rec_mirror")
    assert not outcome.success
    acknowledged = {k for _, k, _ in received("rec_mirror")}
    assert len(acknowledged) == 4 and set(small.ledger("rec_mirror")) == acknowledged
    Recording.crash_after_batches.clear()
    Recording.received.clear()
    assert small.sync(destination="rec_mirror").success
    resent = {k for _, k, _ in received("rec_mirror")}
    assert resent == MEMBERS - acknowledged
    assert set(small.ledger("rec_mirror")) == MEMBERS


def test_rerunning_only_the_sync_after_a_crash_resumes(small):
    """Re-executing just the failed sync step (same delta) skips what was acknowledged before the crash."""
    import dagster as dg

    from composable_assets.project.keys import sync_key
    from composable_assets.definitions import load_definitions
    from composable_assets.runner import run_selection

    Recording.crash_after_batches["rec_mirror"] = 1
    small.sync(destination="rec_mirror")
    first = {k for _, k, _ in received("rec_mirror")}
    Recording.crash_after_batches.clear()
    Recording.received.clear()
    defs = load_definitions(small.settings)
    outcome = run_selection(defs, dg.AssetSelection.assets(sync_key("high", "rec_mirror")), "2026-03-02", small.instance)
    assert outcome.success
    assert {k for _, k, _ in received("rec_mirror")} == MEMBERS - first
    assert next(s for s in outcome.syncs).count("skipped") == len(first)


def test_transient_outage_fails_the_sync_and_keeps_rows_for_later(small):
    Recording.unavailable.add("rec_mirror")
    outcome = small.sync(destination="rec_mirror")
    assert not outcome.success
    assert any("503" in e for e in outcome.errors)
    assert small.ledger("rec_mirror") == {}
    Recording.unavailable.clear()
    assert small.sync(destination="rec_mirror").success
    assert set(small.ledger("rec_mirror")) == MEMBERS


def test_rerunning_a_past_partition_does_not_corrupt_the_ledger(small):
    small.sync(date="2026-03-01")
    rows = [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)]
    rows[14] = (15, "p15@example.com", "changed", 15)
    small.set_people(rows)
    small.sync(date="2026-03-02")
    ledger_before = small.query('SELECT _key, _hash, _fields FROM composable."ledger__high__rec_mirror" ORDER BY _key')
    Recording.received.clear()
    # Replaying the earlier day computes the current difference (none): it can never move data backwards.
    outcome = small.sync(date="2026-03-01")
    assert outcome.success
    assert received("rec_mirror") == []
    after = small.query('SELECT _key, _hash, _fields FROM composable."ledger__high__rec_mirror" ORDER BY _key')
    assert after == ledger_before
    assert json.loads(dict((k, f) for k, _, f in after)["15"])["name"] == "changed"
    # Every run's delta is kept, tagged with its run and partition.
    runs = small.query(
        "SELECT partition_date::VARCHAR, count(*) FROM composable.delta_runs WHERE destination = 'rec_mirror' "
        "GROUP BY 1 ORDER BY 1"
    )
    assert runs == [("2026-03-01", 2), ("2026-03-02", 1)]


def test_a_stale_delta_is_never_delivered(small):
    """A sync re-executed after a newer delta exists refuses, instead of sending older values."""
    import dagster as dg

    from composable_assets.project.keys import sync_key
    from composable_assets.definitions import load_definitions
    from composable_assets.runner import run_selection

    small.sync(date="2026-03-01")
    small.sync(date="2026-03-02")
    defs = load_definitions(small.settings)
    outcome = run_selection(defs, dg.AssetSelection.assets(sync_key("high", "rec_mirror")), "2026-03-01", small.instance)
    assert not outcome.success
    assert any("older than the delta of 2026-03-02" in e for e in outcome.errors)


def test_outbox_writes_one_jsonl_file_per_run_and_destination(small):
    small.write(
        "audiences/boxed.yaml",
        """\
        model: people_model
        primary_key: id
        where: score > 18
        syncs:
          - destination: box
            mode: mirror
            identifier: {external_id: id}
            fields: {email: email}
        """,
    )
    outcome = small.sync(audience="boxed")
    assert outcome.success
    files = list((small.settings.outbox_dir / "box" / "boxed" / "2026-03-02").glob("*.jsonl"))
    assert [f.stem for f in files] == [outcome.run_id]
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert sorted(lines, key=lambda d: d["identifier"]["external_id"]) == [
        {"operation": "upsert", "change": "add", "identifier": {"external_id": "19"}, "fields": {"email": "p19@example.com"}},
        {"operation": "upsert", "change": "add", "identifier": {"external_id": "20"}, "fields": {"email": "p20@example.com"}},
    ]

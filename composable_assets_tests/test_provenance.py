"""Provenance: every delivered row traces to its run, code and upstream data; `explain` matches what the fakes got."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import random
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from composable_assets.project.keys import audience_key, delta_key, model_key, sync_key
from composable_assets.cli import cli
from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.governance.provenance import explain
from composable_assets.project import load_project
from composable_assets.runner import run_selection
from composable_assets.warehouse import engine_from_url

from .conftest import Recording
from .test_engines_flow import EngineProject, people as engine_people

AUDIENCE = """\
description: Scorers, to Braze and Iterable.
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: braze
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email, name: name, score: score}
  - destination: iterable
    mode: upsert
    identifier: {email: email}
    fields: {name: name, score: score}
"""

DESTINATIONS = """\
braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}, max_tries: 3, backoff_base_seconds: 0.01}
iterable: {type: iterable, base_url: {env: ITERABLE_BASE_URL}, api_key: {env: ITERABLE_API_KEY}, max_tries: 3, backoff_base_seconds: 0.01}
"""

ORDERS_MODEL = "-- Orders, so the stream's table is a known source.\nSELECT * FROM orders\n"

ORDERS_STREAM = """\
table: orders
event_id: order_id
cursor: ordered_at
key: customer_id
start: 2026-01-01
syncs:
  - destination: iterable
    identifier: {email: email}
    event: purchase
    properties: {order_id: order_id, amount: amount}
"""


def people(n: int = 30, **overrides: tuple) -> list[tuple]:
    rows = {i: (i, f"p{i}@example.com", f"name{i}", i) for i in range(1, n + 1)}
    rows.update({int(k[1:]): v for k, v in overrides.items()})
    return list(rows.values())


@pytest.fixture
def cdp(small, fakes):
    """The small project syncing `high` to the Braze and Iterable stand-ins (real HTTP)."""
    small.write("audiences/high.yaml", AUDIENCE)
    small.write("destinations.yaml", DESTINATIONS)
    small.set_people(people())  # members 11..30
    return small


def explained(p, key: str, **options):
    project = load_project(p.settings.project_dir)
    with engine_from_url(p.settings.warehouse_url).connect() as conn:
        return explain(conn, project, key, **options)


def track_bodies(braze, user: str) -> list[dict]:
    """Each /users/track attributes object Braze accepted for this external_id, in order."""
    return [
        a for r in braze.requests if r.path == "/users/track" and r.status < 300
        for a in r.body.get("attributes", []) if a.get("external_id") == user
    ]


def iterable_users_sent(iterable, email: str) -> list[dict]:
    return [
        u for r in iterable.requests if r.path == "/api/users/bulkUpdate" and r.status == 200
        for u in r.body["users"] if u.get("email") == email
    ]


def test_explain_of_a_sampled_member_matches_what_braze_and_iterable_hold(cdp, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    outcome = cdp.sync()
    assert outcome.success, outcome.errors
    key = random.Random(5).choice(sorted(cdp.ledger("braze")))

    found = explained(cdp, key)
    assert found.known and found.audiences == ["high"]
    [to_braze] = [c for c in found.changes if c.destination == "braze"]
    [to_iterable] = [c for c in found.changes if c.destination == "iterable"]
    for change in (to_braze, to_iterable):
        assert (change.op, change.status, change.sync_run_id, change.audience) == ("add", "delivered", outcome.run_id, "high")
    # Braze holds exactly the attributes explain says were sent, under the identifier it names.
    assert to_braze.identifier == key
    assert braze.users[key] == {"external_id": key, **to_braze.changed_values}
    assert track_bodies(braze, key) == [{"external_id": key, **to_braze.changed_values}]
    # Iterable: the profile found by the e-mail explain names holds those data fields.
    [profile] = [u for u in iterable.users.values() if u.get("email") == to_iterable.identifier]
    assert profile["dataFields"] == to_iterable.changed_values == {"name": f"name{key}", "score": int(key)}
    assert [u["dataFields"] for u in iterable_users_sent(iterable, to_iterable.identifier)] == [to_iterable.changed_values]
    # What each destination holds now, per its ledger.
    assert {(e.destination, e.identifier, e.run_id) for e in found.ledger} == {
        ("braze", key, outcome.run_id), ("iterable", f"p{key}@example.com", outcome.run_id)
    }


def test_an_update_shows_the_changed_fields_as_the_destinations_received_them(cdp, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    assert cdp.sync().success
    cdp.set_people(people(p12=(12, "p12@example.com", "Renamed", 12)))
    second = cdp.sync()
    assert second.success, second.errors

    found = explained(cdp, "12")
    braze_changes = [c for c in found.changes if c.destination == "braze"]
    assert [(c.op, c.status) for c in braze_changes] == [("add", "delivered"), ("update", "delivered")]
    update = braze_changes[-1]
    assert update.sync_run_id == second.run_id and update.changed == ["name"]
    assert update.previous["name"] == "name12" and update.fields["name"] == "Renamed"
    assert track_bodies(braze, "12")[-1] == {"external_id": "12", **update.changed_values} == {
        "external_id": "12", "name": "Renamed"
    }
    [iterable_update] = [c for c in found.changes if c.destination == "iterable" and c.op == "update"]
    assert iterable_users_sent(iterable, "p12@example.com")[-1]["dataFields"] == iterable_update.changed_values
    # --since leaves out what was sent before that day; the first sync and the second ran on the same day here.
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert explained(cdp, "12", since=tomorrow).changes == []
    assert [c.destination for c in explained(cdp, "12", destination="iterable").changes] == ["iterable", "iterable"]


def test_a_rejected_row_shows_the_destinations_reason_then_its_delivery(cdp, fakes):
    braze = fakes["braze"]
    braze.faults.invalid_identifiers = {"15"}
    first = cdp.sync()
    assert first.success
    reason = dict(cdp.query("SELECT key, reason FROM composable.sync_failures WHERE destination = 'braze'"))["15"]

    [rejected] = [c for c in explained(cdp, "15").changes if c.destination == "braze"]
    assert (rejected.status, rejected.reason, rejected.op, rejected.sync_run_id) == ("rejected", reason, "add", first.run_id)
    # What was refused, the mirror's membership attribute included.
    assert rejected.fields == {"email": "p15@example.com", "name": "name15", "score": 15, "in_high": True}
    assert "15" not in braze.users

    braze.faults.invalid_identifiers = set()
    second = cdp.sync()
    assert second.success
    changes = [c for c in explained(cdp, "15").changes if c.destination == "braze"]
    assert [(c.status, c.sync_run_id) for c in changes] == [("rejected", first.run_id), ("delivered", second.run_id)]
    assert braze.users["15"]["name"] == "name15"


def test_sync_runs_carry_the_dagster_run_the_files_hashes_and_code_versions(cdp):
    outcome = cdp.sync()
    assert outcome.success
    project_dir = cdp.settings.project_dir
    audience_sha = hashlib.sha256((project_dir / "audiences/high.yaml").read_bytes()).hexdigest()
    model_sha = hashlib.sha256((project_dir / "models/people_model.sql").read_bytes()).hexdigest()
    rows = cdp.query(
        "SELECT destination, run_id, partition_date, delta_run_id, code_version, package_version, audience_sha256, "
        "model_sha256, upstream_versions, status, added, updated, removed, failed, unsent "
        "FROM composable.sync_runs ORDER BY destination"
    )
    assert [r[0] for r in rows] == ["braze", "iterable"]
    defs = load_definitions(cdp.settings)
    instance = cdp.instance
    assert instance.get_run_by_id(outcome.run_id) is not None
    for (destination, run_id, partition, delta_run_id, version, package, audience_hash, model_hash, upstream, status,
         *counts) in rows:
        key = sync_key("high", destination)
        assert (run_id, delta_run_id, partition) == (outcome.run_id, outcome.run_id, dt.date(2026, 3, 2))
        assert (audience_hash, model_hash) == (audience_sha, model_sha)
        assert package == importlib.metadata.version("composable_assets")
        assert (status, counts) == ("succeeded", [20, 0, 0, 0, 0])
        # The code version is the sync asset's, as Dagster recorded it on this run's materialization.
        assert version == defs.resolve_assets_def(key).code_versions_by_key[key]
        event = instance.get_latest_materialization_event(key)
        assert event.run_id == run_id and event.asset_materialization.tags["dagster/code_version"] == version
        # Upstream: the audience and model materializations the delta was computed from, with Dagster's versions.
        upstream = json.loads(upstream)
        delta_event = instance.get_latest_materialization_event(delta_key("high", destination))
        inputs = dg.DataProvenance.from_tags(delta_event.asset_materialization.tags).input_data_versions
        assert upstream["audience/high"]["data_version"] == inputs[audience_key("high")].value
        assert upstream["audience/high"]["run_id"] == upstream["model/people_model"]["run_id"] == run_id
        # Model and audience tables are named by the run that rebuilt them, not by a hash of code and inputs that
        # would stay the same while the source tables change.
        assert upstream["audience/high"]["data_version"] == upstream["model/people_model"]["data_version"] == run_id
        assert upstream["audience/high"]["code_version"] == audience_sha[:16]
        assert upstream["model/people_model"]["code_version"] == model_sha[:16]
    # explain shows the same for a delivered row.
    change = next(c for c in explained(cdp, "20").changes if c.destination == "braze")
    assert (change.code_version, change.audience_sha256, change.model_sha256) == (rows[0][4], audience_sha, model_sha)
    assert change.upstream == json.loads(rows[0][8])


def test_a_sync_the_destination_stopped_is_recorded_with_what_it_left_unsent(cdp, fakes):
    fakes["braze"].faults.unavailable = True
    outcome = cdp.sync(destination="braze")
    assert not outcome.success
    [row] = cdp.query("SELECT run_id, status, added, unsent, finished_at IS NOT NULL FROM composable.sync_runs")
    assert row == (outcome.run_id, "stopped", 0, 20, True)
    assert cdp.query("SELECT count(*) FROM composable.sync_log") == [(0,)]  # nothing delivered, nothing rejected
    assert explained(cdp, "12").changes == []


def test_code_versions_change_with_the_files_that_define_each_asset(cdp):
    def versions() -> dict[dg.AssetKey, str]:
        defs = load_definitions(cdp.settings)
        keys = [model_key("people_model"), audience_key("high")] + [
            f("high", d) for d in ("braze", "iterable") for f in (delta_key, sync_key)
        ]
        return {k: defs.resolve_assets_def(k).code_versions_by_key[k] for k in keys}

    before = versions()
    assert all(before.values())
    cdp.write("destinations.yaml", DESTINATIONS.replace("max_tries: 3", "max_tries: 4", 1))  # braze's entry only
    after_destination = versions()
    assert {k for k in before if before[k] != after_destination[k]} == {sync_key("high", "braze")}
    cdp.write("audiences/high.yaml", AUDIENCE.replace("where: score > 10", "where: score > 11"))
    after_audience = versions()
    assert {k for k in before if after_destination[k] != after_audience[k]} == set(before) - {model_key("people_model")}
    cdp.write("models/people_model.sql", "-- People.\nSELECT id, email, name, score FROM people WHERE id > 0\n")
    assert versions()[model_key("people_model")] != after_audience[model_key("people_model")]


def test_events_sent_by_a_stream_are_explained_from_its_sent_log(cdp, fakes):
    iterable = fakes["iterable"]
    cdp.write("models/order_facts.sql", ORDERS_MODEL)
    cdp.write("streams/orders.yaml", ORDERS_STREAM)
    at = dt.datetime(2026, 3, 1, 12, 0)
    with engine_from_url(cdp.settings.warehouse_url).connect() as conn:
        conn.execute("CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, email VARCHAR, amount DOUBLE, "
                     "ordered_at TIMESTAMP)")
        conn.execute("INSERT INTO orders VALUES (1, 12, 'p12@example.com', 10.5, ?), (2, 13, 'p13@example.com', 7.0, ?), "
                     "(3, 12, 'p12@example.com', 3.25, ?)", [at, at, at + dt.timedelta(minutes=5)])
    defs = load_definitions(cdp.settings)
    outcome = run_selection(defs, stream_selection(load_project(cdp.settings.project_dir), "orders"), "2026-03-02",
                            cdp.instance)
    assert outcome.success, outcome.errors

    events = explained(cdp, "12").events
    assert [(e.event_id, e.status, e.run_id, e.identifier) for e in events] == [
        ("orders:1", "sent", outcome.run_id, "p12@example.com"), ("orders:3", "sent", outcome.run_id, "p12@example.com"),
    ]
    received = {e["id"]: e for e in iterable.received_events}
    for e in events:
        assert received[e.event_id]["email"] == e.identifier
        assert received[e.event_id]["dataFields"] == e.properties
    assert [e.event_id for e in explained(cdp, "13").events] == ["orders:2"]
    assert explained(cdp, "12", audience="high").events == []  # events belong to no audience


def test_explain_says_why_audiences_consent_and_deletion_requests(small):
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\nconsent: {table: consents, key: id}\n')
    small.query("CREATE TABLE consents AS SELECT * FROM (VALUES (12, 'email_marketing', true), (12, 'push', false), "
                "(3, 'push', true)) AS t(id, purpose, granted)")
    assert small.sync().success  # rec_mirror and rec_upsert (Recording destinations): members 11..20

    twelve = explained(small, "12")
    assert twelve.audiences == ["high"] and twelve.consents == {"email_marketing": True, "push": False}
    assert twelve.deletions == [] and {c.destination for c in twelve.changes} == {"rec_mirror", "rec_upsert"}
    three = explained(small, "3")  # not a member (score 3), never sent, but a consent row
    assert (three.known, three.audiences, three.changes, three.consents) == (True, [], [], {"push": True})

    small.query("CREATE TABLE forget_me AS SELECT 12 AS customer_id, 'req-1' AS request_id, "
                "TIMESTAMP '2026-03-03 10:00' AS requested_at")
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\nconsent: {table: consents, key: id}\n'
                "deletion_requests: {table: forget_me, key: customer_id}\n")
    [request] = explained(small, "12").deletions
    assert request == {"table": "forget_me", "customer_id": 12, "request_id": "req-1",
                       "requested_at": dt.datetime(2026, 3, 3, 10, 0)}
    assert explained(small, "13").deletions == [] and not explained(small, "999").known


@pytest.fixture
def run_cli(cdp, monkeypatch):
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(cdp.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", cdp.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(cdp.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_command_prints_what_was_sent_where_and_an_unknown_id_is_one_clear_line(cdp, run_cli):
    assert cdp.sync().success
    cdp.set_people(people(p12=(12, "p12@example.com", "Renamed", 12)))
    second = cdp.sync()
    assert second.success

    result = run_cli("explain", "12")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "12: member of high now" in out
    assert "sent to braze" in out and "sent to iterable" in out
    assert 'name: "name12" -> "Renamed"' in out  # the update, with what the destination had before
    assert second.run_id[:8] in out
    assert "braze holds now" in out and '"name": "Renamed"' in out

    only = run_cli("explain", "12", "--destination", "iterable", "--since", "2026-01-01")
    assert only.exit_code == 0 and "sent to iterable" in only.output and "sent to braze" not in only.output

    unknown = run_cli("explain", "no-such-person")
    assert unknown.exit_code == 1
    lines = [line for line in unknown.output.splitlines() if line.strip()]
    assert lines == [
        "error: no record of 'no-such-person': never sent to a destination, in no audience, no consent or deletion "
        "request (the key is an audience's primary key, e.g. a customer_id)."
    ]
    bad = run_cli("explain", "12", "--since", "yesterday")
    assert bad.exit_code == 1 and "--since 'yesterday' is not a date" in bad.output


def test_the_sync_log_is_written_the_same_on_postgresql(tmp_path: Path, postgres_url: str):
    """Delivered and rejected rows, the fold and the rejection path, and explain, on PostgreSQL."""
    p = EngineProject(tmp_path, postgres_url)
    p.set_people(engine_people())  # members 11..20
    Recording.reject["rec_mirror"] = {"15"}
    first = p.sync()
    assert first.success
    p.set_people(engine_people({12: ("Renamed", 12), 11: ("name11", 0)}))  # 12 renamed, 11 leaves
    Recording.reject.clear()
    second = p.sync()
    assert second.success
    log = p.query(
        "SELECT sync_run_id, destination, key, op, status, reason FROM composable.sync_log "
        "WHERE destination = 'rec_mirror' ORDER BY recorded_at, seq"
    )
    assert [r[2:5] for r in log if r[0] == first.run_id] == [
        (str(i), "add", "delivered" if i != 15 else "rejected") for i in range(11, 21)
    ]
    assert [r[5] for r in log if r[4] == "rejected"] == ["invalid identifier 15"]
    assert sorted(r[2:5] for r in log if r[0] == second.run_id) == [
        ("11", "remove", "delivered"), ("12", "update", "delivered"), ("15", "add", "delivered")
    ]
    project = load_project(p.settings.project_dir)
    with p.engine.connect() as conn:
        found = explain(conn, project, "12")
    mirror = [c for c in found.changes if c.destination == "rec_mirror"]
    assert [(c.op, c.changed, c.sync_run_id) for c in mirror] == [
        ("add", ["email", "name"], first.run_id), ("update", ["name"], second.run_id)
    ]
    assert mirror[-1].changed_values == {"name": "Renamed"}
    assert [c.code_version for c in mirror] == [mirror[0].code_version] * 2 and mirror[0].code_version
    [runs] = p.query("SELECT count(*) FROM composable.sync_runs WHERE status = 'succeeded'")
    assert runs == (4,)  # two pairs, two runs

"""Braze REST against the local Braze fake: batching, column-level diffs, partial failures, retries, removal modes."""

from __future__ import annotations

import json
import time
from collections import Counter

import dagster as dg
import pytest
import requests

import composable_assets.delivery.audience as delivery
from composable_assets.project.keys import sync_key
from composable_assets.coordination import Coordination
from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.destinations import Record, Target
from composable_assets.project.keys import Delivery
from composable_assets.destinations.braze import Braze, BrazeSyncOptions
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets_tests.fakes import BrazeFake

API_KEY = "braze-secret-key-4f1c"

BRAZE_AUDIENCE = """\
description: Scorers, to Braze.
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: braze
    mode: mirror
    identifier: {{external_id: id}}
    fields: {{email: email, name: name, score: score}}
    options: {options}
"""


@pytest.fixture
def braze(small, monkeypatch):
    fake = BrazeFake(api_key=API_KEY).start()
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", fake.url)
    monkeypatch.setenv("BRAZE_API_KEY", API_KEY)
    small.write(
        "destinations.yaml",
        "braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}, "
        "concurrency: 2, max_tries: 5, backoff_base_seconds: 0.02}\n",
    )
    small.write("audiences/high.yaml", BRAZE_AUDIENCE.format(options="{on_remove: delete}"))
    yield fake
    fake.stop()


def people(n: int, overrides: dict | None = None):
    rows = {i: (i, f"p{i}@example.com", f"name{i}", i) for i in range(1, n + 1)}
    rows.update(overrides or {})
    return list(rows.values())


def track_requests(fake):
    return [r for r in fake.requests if r.path == "/users/track" and r.status < 300]


def materialize(small, *, sync: bool) -> RunOutcome:
    """Materialize only the sync of high -> braze (sync=True), or everything up to its delta."""
    project = load_project(small.settings.project_dir)
    syncs = dg.AssetSelection.assets(sync_key("high", "braze"))
    selection = syncs if sync else audience_selection(project, "high", "braze") - syncs
    outcome = run_selection(load_definitions(small.settings), selection, "2026-03-02", small.instance)
    assert outcome.success, outcome.errors
    return outcome


def seqs(small) -> dict[str, int]:
    """key -> sequence number of the newest delta rows."""
    return dict(small.query('SELECT _key, max(_seq) FROM composable."delta__high__braze" GROUP BY _key'))


def leave_intent(small, first_seq: int, last_seq: int) -> None:
    """The intent row a sync killed while rows first_seq..last_seq were in flight leaves behind."""
    small.query(
        "INSERT INTO composable.sync_inflight VALUES ('high', 'braze', 'killed-run', ?, ?, now())",
        [first_seq, last_seq],
    )


def braze_post(fake, path: str, body: dict) -> None:
    """What the killed run had sent, as Braze received it."""
    response = requests.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert response.status_code == 201, response.text


def inflight_rows(small) -> int:
    return small.query("SELECT count(*) FROM composable.sync_inflight")[0][0]


def attribute_points(fake) -> list[tuple]:
    """(user, attribute, value) for every attribute data point Braze received."""
    return [(p[0], p[1], json.dumps(p[2])) for p in fake.data_points]


def test_first_sync_batches_at_75_and_sends_every_member(small, braze):
    small.set_people(people(210))  # members: 11..210 = 200
    outcome = small.sync()
    assert outcome.success, outcome.errors
    sizes = sorted(len(r.body["attributes"]) for r in track_requests(braze))
    assert sizes == [50, 75, 75]
    assert set(braze.users) == {str(i) for i in range(11, 211)}
    assert braze.users["42"]["email"] == "p42@example.com" and braze.users["42"]["score"] == 42
    assert all(r.headers.get("Authorization") == "***" for r in braze.requests)  # the fake redacts its log


def test_updates_send_only_the_changed_attributes(small, braze):
    small.set_people(people(30))
    small.sync()
    before = len(braze.data_points)
    small.set_people(people(30, {12: (12, "p12@example.com", "Renamed", 12), 13: (13, "new13@example.com", "name13", 13)}))
    assert small.sync().success
    sent = [r.body["attributes"] for r in track_requests(braze)][-1]
    assert sorted(sent, key=lambda a: a["external_id"]) == [
        {"external_id": "12", "name": "Renamed"},
        {"external_id": "13", "email": "new13@example.com"},
    ]
    assert len(braze.data_points) - before == 2  # two data points, not 2 x 3 fields


def test_a_field_that_became_null_is_cleared_and_only_then(small, braze):
    small.set_people(people(15, {11: (11, None, "name11", 11)}))
    small.sync()
    assert "email" not in braze.users["11"]  # an add does not send nulls
    small.set_people(people(15, {11: (11, None, "name11", 11), 12: (12, None, "name12", 12)}))
    small.sync()
    sent = track_requests(braze)[-1].body["attributes"]
    assert sent == [{"external_id": "12", "email": None}]
    assert "email" not in braze.users["12"]


def test_minor_errors_reject_only_their_rows_which_go_through_later(small, braze):
    small.set_people(people(40))
    braze.faults.invalid_identifiers = {"15", "33"}
    outcome = small.sync()
    assert outcome.success
    sync = outcome.syncs[0]
    assert sync.count("failed") == 2 and sync.count("added") == 28
    assert set(small.ledger("braze")) == {str(i) for i in range(11, 41)} - {"15", "33"}
    braze.faults.invalid_identifiers = set()
    assert small.sync().success
    assert set(small.ledger("braze")) == {str(i) for i in range(11, 41)}
    assert {u for u, a, _ in attribute_points(braze) if u in ("15", "33")} == {"15", "33"}


def test_429_storms_and_5xx_bursts_end_with_every_row_delivered_once(small, braze):
    small.set_people(people(310))  # 300 members, 4 requests
    braze.faults.status_for_next = [429, 429, 500, 503, 429, 502]
    braze.faults.retry_after_seconds = 0.2
    outcome = small.sync()
    assert outcome.success, outcome.errors
    points = attribute_points(braze)
    assert len(points) == len(set(points)) == 300 * 3
    assert outcome.syncs[0].count("retries") >= 6


def test_transient_failure_beyond_the_tries_leaves_rows_unsent(small, braze):
    small.set_people(people(20))
    braze.faults.fail_next = 100
    outcome = small.sync()
    assert not outcome.success
    assert "gave up after 5 tries" in " ".join(outcome.errors)
    assert small.ledger("braze") == {}
    assert inflight_rows(small) == 0  # a transient stop is an orderly way out: nothing is left in flight
    braze.faults.fail_next = 0
    assert small.sync().success
    assert len(small.ledger("braze")) == 10


@pytest.mark.parametrize(
    "options, check",
    [
        ("{on_remove: delete}", lambda fake: "11" in fake.deleted and "11" not in fake.users),
        (
            "{on_remove: clear_attribute, membership_attribute: high_scorer}",
            lambda fake: "high_scorer" not in fake.users["11"] and fake.users["12"]["high_scorer"] is True,
        ),
        (
            "{on_remove: unsubscribe, subscription_group_id: grp-1}",
            lambda fake: fake.subscriptions[("grp-1", "11")] == "unsubscribed",
        ),
    ],
)
def test_mirror_removes_leavers_the_configured_way(small, braze, options, check):
    small.write("audiences/high.yaml", BRAZE_AUDIENCE.format(options=options))
    small.set_people(people(20))
    small.sync()
    small.set_people(people(20, {11: (11, "p11@example.com", "name11", 1)}))
    outcome = small.sync()
    assert outcome.success and outcome.syncs[0].count("removed") == 1
    assert check(braze)
    assert "11" not in small.ledger("braze")


def test_the_api_key_never_reaches_logs_metadata_or_errors(small, braze, caplog):
    small.set_people(people(20))
    braze.faults.invalid_identifiers = {"12"}
    outcome = small.sync()
    braze.faults.fail_next = 100
    small.set_people(people(20, {13: (13, "x@example.com", "x", 13)}))
    failed = small.sync()
    text = repr([s.metadata for s in outcome.syncs + failed.syncs]) + " ".join(failed.errors)
    records = small.instance.all_logs(outcome.run_id) + small.instance.all_logs(failed.run_id)
    text += " ".join(str(r.user_message) + str(r.dagster_event) for r in records) + caplog.text
    assert API_KEY not in text
    assert "gave up" in text  # the failure is there, without the key


def test_after_a_kill_exactly_the_rows_braze_already_applied_are_acknowledged_and_the_rest_sent(small, braze):
    small.set_people(people(40))  # members 11..40
    materialize(small, sync=False)
    order = sorted(seqs(small).items(), key=lambda item: item[1])
    window = [key for key, _ in order[10:]]
    applied, stale = window[:10], window[10:12]
    # The killed run had sent a batch Braze applied but never checkpointed it, and Braze holds other values for two
    # more members of its intent window (a third party wrote them, or an older value): those are not confirmed.
    objects = [{"external_id": k, "email": f"p{k}@example.com", "name": f"name{k}", "score": int(k)} for k in applied]
    braze_post(braze, "/users/track", {"attributes": objects})
    braze_post(braze, "/users/track", {"attributes": [{"external_id": k, "name": "stale"} for k in stale]})
    # Its newest window starts at its oldest unsettled batch; the older window's rows were settled (say, rejected).
    leave_intent(small, order[0][1], order[19][1])
    leave_intent(small, order[10][1], order[29][1])
    before = len(braze.data_points)

    outcome = materialize(small, sync=True)

    sync = outcome.syncs[0]
    assert (sync.count("skipped"), sync.count("added"), sync.count("failed")) == (10, 20, 0)
    exports = [r for r in braze.requests if r.path == "/users/export/ids"]
    assert len(exports) == 1 and exports[0].status == 200
    assert exports[0].body["external_ids"] == window  # only the newest leftover window is looked up
    assert set(exports[0].body["fields_to_export"]) == {"external_id", "custom_attributes", "email"}
    sent = Counter((p.user, p.attribute) for p in braze.data_points[before:])
    assert set(sent) == {(str(i), a) for i in range(11, 41) for a in ("email", "name", "score")} - {
        (k, a) for k in applied for a in ("email", "name", "score")
    }
    assert set(sent.values()) == {1}
    assert all(braze.users[k]["name"] == f"name{k}" for k in stale)
    assert set(small.ledger("braze")) == {str(i) for i in range(11, 41)}
    acked = small.query(
        "SELECT d._key FROM composable.sync_acks AS a JOIN composable.\"delta__high__braze\" AS d "
        "ON d._seq BETWEEN a.first_seq AND a.last_seq WHERE a.run_id = ?",
        [outcome.run_id],
    )
    assert sorted(k for (k,) in acked) == sorted(str(i) for i in range(11, 41))  # confirmed ones acknowledged too
    assert inflight_rows(small) == 0


@pytest.mark.parametrize(
    "options, already_applied, confirmable",
    [
        ("{on_remove: delete}", ("/users/delete", {"external_ids": ["11"]}), True),
        (
            "{on_remove: clear_attribute, membership_attribute: high_scorer}",
            ("/users/track", {"attributes": [{"external_id": "11", "high_scorer": None}]}),
            True,
        ),
        (
            "{on_remove: unsubscribe, subscription_group_id: grp-1}",
            (
                "/subscription/status/set",
                {"subscription_group_id": "grp-1", "subscription_state": "unsubscribed", "external_id": ["11"]},
            ),
            False,  # the export shows no subscription state: sent again, at least once
        ),
    ],
)
def test_after_a_kill_removals_braze_already_applied_are_confirmed_where_the_export_can_show_them(
    small, braze, options, already_applied, confirmable
):
    small.write("audiences/high.yaml", BRAZE_AUDIENCE.format(options=options))
    small.set_people(people(20))
    assert small.sync().success
    small.set_people(people(20, {i: (i, f"p{i}@example.com", f"name{i}", 1) for i in (11, 12, 13)}))  # leavers
    materialize(small, sync=False)
    leavers = seqs(small)
    braze_post(braze, *already_applied)
    leave_intent(small, min(leavers[k] for k in ("11", "12", "13")), max(leavers[k] for k in ("11", "12", "13")))
    before, requests_before = len(braze.data_points), len(braze.requests)

    outcome = materialize(small, sync=True)

    sync = outcome.syncs[0]
    assert (sync.count("skipped"), sync.count("removed")) == ((1, 2) if confirmable else (0, 3))
    later = braze.requests[requests_before:]
    assert bool([r for r in later if r.path == "/users/export/ids"]) == confirmable
    removal_path = already_applied[0]
    resent = {p.user for p in braze.data_points[before:]} if removal_path == "/users/track" else {
        i for r in later if r.path == removal_path for i in r.body.get("external_ids") or r.body.get("external_id")
    }
    assert resent == ({"12", "13"} if confirmable else {"11", "12", "13"})
    assert not {"11", "12", "13"} & set(small.ledger("braze"))
    assert inflight_rows(small) == 0


def test_intent_is_durable_before_its_batches_go_out_written_per_window_and_gone_after_the_sync(
    small, braze, monkeypatch
):
    small.write(
        "destinations.yaml",
        "braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}, "
        "batch_size: 10, concurrency: 2}\n",
    )
    small.set_people(people(210))  # 200 members: 20 batches of 10
    written: list[tuple[float, int, int]] = []

    def record_intent(conn, tables, run_id, first_seq, last_seq, now):
        real_record_intent(conn, tables, run_id, first_seq, last_seq, now)
        written.append((time.time(), first_seq, last_seq))

    real_record_intent = delivery.record_intent
    monkeypatch.setattr(delivery, "record_intent", record_intent)
    monkeypatch.setattr(delivery, "WINDOW_BATCHES_PER_SLOT", 2)  # windows of 4 batches here: 5 for 20 batches
    outcome = small.sync()
    assert outcome.success, outcome.errors

    assert len(written) == 5  # one window per 2 x concurrency batches, not one per batch
    seq_of = seqs(small)
    tracks = track_requests(braze)
    assert len(tracks) == 20
    for request in tracks:
        batch = [seq_of[a["external_id"]] for a in request.body["attributes"]]
        assert any(t < request.time and first <= min(batch) and max(batch) <= last for t, first, last in written)
    assert inflight_rows(small) == 0

    # A sync that crashes (credentials refused mid-way) leaves no intent behind either.
    small.set_people(people(210, {i: (i, f"new{i}@example.com", f"name{i}", i) for i in range(11, 211)}))
    braze.faults.status_for_next = [401]
    assert not small.sync().success
    assert inflight_rows(small) == 0


def test_confirm_compares_what_would_be_sent_with_the_exported_profile(braze, tmp_path):
    def alias(name: str) -> dict:
        return {"user_alias": {"alias_name": name, "alias_label": "crm"}, "_update_existing_only": False}

    profiles = [
        {**alias("a1"), "name": "A", "score": 12.0, "vip": True},  # 12.0 is the 12 we would send
        {**alias("a2"), "name": "B", "score": True, "vip": True},  # true is not the 1 we would send
        {**alias("a3"), "name": "C", "score": 3},  # the membership attribute never arrived
        {**alias("a4"), "name": "new", "score": 999},  # the update changes name only; score is not ours to check
        {**alias("a5"), "name": "E"},  # a leaver whose membership attribute is already cleared
    ]
    braze_post(braze, "/users/track", {"attributes": profiles})
    before = len(braze.data_points)
    records = [
        Record(1, "k1", "add", "a1", {"name": "A", "score": 12}, None),
        Record(2, "k2", "add", "a2", {"name": "B", "score": 1}, None),
        Record(3, "k3", "add", "a3", {"name": "C", "score": 3}, None),
        Record(4, "k4", "update", "a4", {"name": "new", "score": 5}, {"name": "old", "score": 5}),
        Record(5, "k5", "remove", "a5", None, {"name": "E"}),
        Record(6, "k6", "remove", "a6", None, {"name": "F"}),  # no such user: nothing to clear
        Record(7, "k7", "add", "a7", {"name": "G", "score": 7}, None),  # never arrived
    ]
    destination = Braze("braze", {"rest_endpoint": braze.url, "api_key": {"env": "BRAZE_API_KEY"}},
                        Coordination(url=f"sqlite:///{tmp_path / 'coordination.sqlite'}"))

    def target(identifier_type: str) -> Target:
        options = BrazeSyncOptions(membership_attribute="vip", alias_label="crm")
        return Target(Delivery("audience", "high"), "braze", identifier_type, "2026-03-02", "run", options, mode="mirror")

    with destination.open(target("user_alias")) as session:
        assert sorted(session.confirm(records)) == [1, 4, 5, 6]
        braze.faults.status_for_next = [401]
        assert session.confirm(records) == []  # a key without users.export.ids: nothing confirmed, nothing raised
    (export, refused) = [r for r in braze.requests if r.path == "/users/export/ids"]
    assert export.body["user_aliases"] == [{"alias_name": f"a{i}", "alias_label": "crm"} for i in range(1, 8)]
    assert sorted(export.body["fields_to_export"]) == ["custom_attributes", "user_aliases"]
    assert refused.status == 401
    assert len(braze.data_points) == before  # looking is free of data points

    with destination.open(target("email")) as session:
        assert session.confirm(records) == []  # one address per export request: not looked up
    assert len([r for r in braze.requests if r.path == "/users/export/ids"]) == 2

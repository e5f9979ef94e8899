"""Braze REST against the local Braze fake: batching, column-level diffs, partial failures, retries, removal modes."""

from __future__ import annotations

import json

import pytest

from composable_assets.fakes import BrazeFake

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

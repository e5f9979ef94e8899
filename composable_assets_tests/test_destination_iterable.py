"""Iterable against the local Iterable fake: size splitting, failures by identifier, lists, deletes, the official spec."""

from __future__ import annotations

import pytest

from composable_assets_tests.fakes import IterableFake

API_KEY = "iterable-secret-key-77aa"
LIST_ID = 4242

AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: iterable
    mode: mirror
    identifier: {{{identifier}}}
    fields: {{name: name, score: score}}
    options: {options}
"""


def configure(small, monkeypatch, fake, *, identifier="email: email", options="{list_id: 4242}", extra=""):
    monkeypatch.setenv("ITERABLE_BASE_URL", fake.url)
    monkeypatch.setenv("ITERABLE_API_KEY", API_KEY)
    small.write(
        "destinations.yaml",
        "iterable: {type: iterable, base_url: {env: ITERABLE_BASE_URL}, api_key: {env: ITERABLE_API_KEY}, "
        f"max_tries: 5, backoff_base_seconds: 0.02{extra}}}\n",
    )
    small.write("audiences/high.yaml", AUDIENCE.format(identifier=identifier, options=options))


@pytest.fixture
def iterable(small, monkeypatch):
    fake = IterableFake(api_key=API_KEY, lists={LIST_ID: "high scorers"}).start()
    configure(small, monkeypatch, fake)
    yield fake
    assert fake.spec_violations == [], "every request must match Iterable's official OpenAPI spec"
    fake.stop()


def people(n: int, overrides: dict | None = None):
    rows = {i: (i, f"p{i}@example.com", f"name{i}", i) for i in range(1, n + 1)}
    rows.update(overrides or {})
    return list(rows.values())


def posts(fake, path):
    return [r for r in fake.requests if r.path == path and r.status == 200]


def test_bulk_update_and_list_subscription_for_every_member(small, iterable):
    small.set_people(people(60))
    outcome = small.sync()
    assert outcome.success, outcome.errors
    members = {f"p{i}@example.com" for i in range(11, 61)}
    assert {u["email"] for u in iterable.users.values()} == members
    listed = {iterable.users[k]["email"] for k in iterable.lists[LIST_ID]}
    assert listed == members
    user = next(u for u in iterable.users.values() if u["email"] == "p42@example.com")
    assert user["dataFields"] == {"name": "name42", "score": 42}


def test_requests_are_split_by_count_and_by_body_size(small, iterable, monkeypatch):
    configure(small, monkeypatch, iterable, extra=", batch_size: 40, max_body_bytes: 2048")
    small.set_people(people(110))  # 100 members
    assert small.sync().success
    bodies = [r for r in iterable.requests if r.path == "/api/users/bulkUpdate"]
    assert all(len(r.body["users"]) <= 40 for r in bodies)
    assert max(len(_raw(r.body)) for r in bodies) <= 2048
    assert len(bodies) >= 100 * 60 // 2048  # really split by size, not only by count
    assert sum(len(r.body["users"]) for r in bodies) == 100


def _raw(body) -> bytes:
    import json

    return json.dumps(body, separators=(",", ":")).encode()


def test_failures_come_back_by_email_and_are_mapped_to_their_rows(small, iterable):
    small.set_people(people(30))
    iterable.faults.invalid_identifiers = {"p14@example.com", "p27@example.com"}
    outcome = small.sync()
    assert outcome.success
    assert outcome.syncs[0].count("failed") == 2
    assert set(small.ledger("iterable").values()) == {f"p{i}@example.com" for i in range(11, 31)} - {
        "p14@example.com", "p27@example.com"
    }
    reasons = dict(small.query("SELECT key, reason FROM composable.sync_failures"))
    assert reasons == {"14": "invalidEmails", "27": "invalidEmails"}
    iterable.faults.invalid_identifiers = set()
    assert small.sync().success
    assert len(small.ledger("iterable")) == 20


def test_leavers_are_unsubscribed_from_the_list(small, iterable):
    small.set_people(people(20))
    small.sync()
    small.set_people(people(20, {12: (12, "p12@example.com", "name12", 0)}))
    assert small.sync().success
    unsubscribed = posts(iterable, "/api/lists/unsubscribe")
    assert [s["email"] for r in unsubscribed for s in r.body["subscribers"]] == ["p12@example.com"]
    assert "p12@example.com" not in {iterable.users[k]["email"] for k in iterable.lists[LIST_ID]}


def test_on_remove_delete_deletes_the_user_by_user_id(small, iterable, monkeypatch):
    configure(small, monkeypatch, iterable, identifier="userId: id", options="{on_remove: delete}")
    small.set_people(people(20))
    small.sync()
    assert all(r.body["users"][0].get("preferUserId") for r in posts(iterable, "/api/users/bulkUpdate"))
    small.set_people(people(20, {15: (15, "p15@example.com", "name15", 0)}))
    assert small.sync().success
    assert [r.path for r in iterable.requests if r.method == "DELETE"] == ["/api/users/byUserId/15"]
    assert "15" not in small.ledger("iterable")


def test_a_row_that_spoils_its_request_is_isolated_and_the_rest_delivered(small, iterable):
    # `tag` is a number for one member and a string for the others: Iterable refuses the type change.
    small.write("models/people_model.sql", "SELECT id, email, name, score, "
                "CASE WHEN id = 15 THEN '15'::JSON ELSE '\"x\"'::JSON END AS tag FROM people\n")
    small.write("audiences/high.yaml", AUDIENCE.format(identifier="email: email", options="{list_id: 4242}")
                .replace("score: score}", "score: score, tag: tag}"))
    small.set_people(people(30))
    outcome = small.sync()
    assert outcome.success
    failures = small.query("SELECT key, reason FROM composable.sync_failures")
    assert len(failures) == 1, failures
    assert failures[0][1].startswith("HTTP 400") and "type" in failures[0][1].lower()
    assert len(small.ledger("iterable")) == 19


def test_rate_limits_and_server_errors_are_ridden_out(small, iterable, monkeypatch):
    configure(small, monkeypatch, iterable, extra=", batch_size: 10")
    small.set_people(people(110))  # 100 members: 10 bulkUpdates + 10 subscribes at 5/s and 10/s
    iterable.faults.status_for_next = [500, 503, 429]
    assert small.sync().success
    assert len(small.ledger("iterable")) == 100
    assert not [r for r in iterable.requests if r.status == 429 and r.path == "/api/users/bulkUpdate"][3:]


def test_the_api_key_never_reaches_logs_or_metadata(small, iterable):
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\npayload_samples: true\n')  # samples shown
    small.set_people(people(20))
    iterable.faults.invalid_identifiers = {"p12@example.com"}
    outcome = small.sync()
    records = small.instance.all_logs(outcome.run_id)
    text = repr([s.metadata for s in outcome.syncs]) + " ".join(str(r.user_message) for r in records)
    assert API_KEY not in text and "p13@example.com" in text  # sample present, key absent

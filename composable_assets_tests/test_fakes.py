"""The Braze and Iterable fakes, driven over real HTTP with plain `requests`."""

from __future__ import annotations

import http.client
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
import requests
from jsonschema import Draft4Validator

from composable_assets_tests.fakes import BrazeFake, DataPoint, IterableFake, SpecViolation
from composable_assets_tests.fakes.iterable import SPEC_PATH

KEY = "secret-key-123"
BRAZE_AUTH = {"Authorization": f"Bearer {KEY}"}
ITERABLE_AUTH = {"Api-Key": KEY}
SPEC = json.loads(SPEC_PATH.read_text())


def spec_errors(definition: str, instance: object) -> list[str]:
    """Messages from validating a response body against one of the spec's definitions."""
    validator = Draft4Validator({**SPEC["definitions"][definition], "definitions": SPEC["definitions"]})
    return [error.message for error in validator.iter_errors(instance)]


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def braze() -> Iterator[BrazeFake]:
    with BrazeFake(KEY) as fake:
        yield fake


@pytest.fixture
def iterable() -> Iterator[IterableFake]:
    with IterableFake(KEY, lists={7: "vip", 8: "churn"}) as fake:
        yield fake


def post(
    session: requests.Session, url: str, body: object, headers: dict[str, str]
) -> tuple[int, dict, Mapping[str, str]]:
    """POST a JSON body; (status, JSON reply, headers), with the response closed."""
    with session.post(url, json=body, headers=headers, timeout=10) as response:
        return response.status_code, response.json(), response.headers


# Braze


def test_braze_rejects_missing_or_unknown_key_without_echoing_it(braze: BrazeFake, session: requests.Session) -> None:
    body = {"attributes": [{"external_id": "u1", "tier": "gold"}]}
    assert post(session, f"{braze.url}/users/track", body, {})[:2] == (401, {"message": "Invalid API key"})
    status, reply, _ = post(session, f"{braze.url}/users/track", body, {"Authorization": "Bearer wrong-key"})
    assert (status, reply) == (401, {"message": "Invalid API key"})
    assert (
        post(session, f"{braze.url}/users/track", body, {"Api-Key": KEY})[0] == 401
    )  # Iterable's header is not Braze's
    assert braze.users == {}
    assert post(session, f"{braze.url}/users/track", body, BRAZE_AUTH)[0] == 201
    assert [request.status for request in braze.requests] == [401, 401, 401, 201]
    assert braze.requests[-1].headers["Authorization"] == "***"
    assert KEY not in repr(braze.requests)


def test_braze_track_merges_attributes_and_keeps_every_event(braze: BrazeFake, session: requests.Session) -> None:
    first = {
        "attributes": [{"external_id": "u1", "email": "a@example.com", "tier": "gold", "visits": {"inc": 2}}],
        "events": [{"external_id": "u1", "name": "rented", "time": "2022-12-06T19:20:45+01:00"}],
    }
    status, reply, _ = post(session, f"{braze.url}/users/track", first, BRAZE_AUTH)
    assert (status, reply) == (201, {"message": "success", "attributes_processed": 1, "events_processed": 1})
    second = {
        "attributes": [{"external_id": "u1", "tier": None, "city": "Oslo", "visits": {"inc": 1}}],
        "events": [{"external_id": "u1", "name": "rented", "time": "2022-12-06T19:20:45+01:00"}],
        "purchases": [
            {
                "email": "a@example.com",
                "product_id": "p",
                "currency": "USD",
                "price": 1.5,
                "time": "2017-05-12T18:47:12Z",
            }
        ],
    }
    status, reply, _ = post(session, f"{braze.url}/users/track", second, BRAZE_AUTH)
    assert (status, reply) == (
        201,
        {"message": "success", "attributes_processed": 1, "events_processed": 1, "purchases_processed": 1},
    )
    # null removed "tier"; the purchase by email landed on the identified profile carrying that email
    assert braze.users == {"u1": {"external_id": "u1", "email": "a@example.com", "visits": 3, "city": "Oslo"}}
    assert [event["user"] for event in braze.events] == ["u1", "u1"]  # Braze does not de-duplicate events
    assert [(purchase["user"], purchase["product_id"]) for purchase in braze.purchases] == [("u1", "p")]
    assert Counter((point.user, point.attribute) for point in braze.data_points) == {
        ("u1", "email"): 1,
        ("u1", "tier"): 2,
        ("u1", "visits"): 2,
        ("u1", "city"): 1,
    }
    assert DataPoint("u1", "tier", None) in braze.data_points


def test_braze_rejects_more_than_max_objects_per_array(session: requests.Session) -> None:
    with BrazeFake(KEY, max_objects=3) as braze:
        too_many = {"events": [{"external_id": f"u{i}", "name": "e", "time": "2024-01-01T00:00:00Z"} for i in range(4)]}
        status, reply, _ = post(session, f"{braze.url}/users/track", too_many, BRAZE_AUTH)
        assert (status, reply) == (400, {"message": "Max Input Length Exceeded"})
        assert braze.events == [] and braze.users == {}
        assert post(session, f"{braze.url}/users/track", {"events": too_many["events"][:3]}, BRAZE_AUTH)[0] == 201
    with BrazeFake(KEY) as braze:
        attributes = [{"external_id": f"u{i}", "n": i} for i in range(76)]
        assert post(session, f"{braze.url}/users/track", {"attributes": attributes}, BRAZE_AUTH)[:2] == (
            400,
            {"message": "Max Input Length Exceeded"},
        )
        assert post(session, f"{braze.url}/users/track", {"attributes": attributes[:75]}, BRAZE_AUTH)[0] == 201
        assert len(braze.users) == 75


def test_braze_minor_errors_name_array_and_index_and_the_rest_is_applied(
    braze: BrazeFake, session: requests.Session
) -> None:
    braze.faults.invalid_identifiers = {"blocked"}
    body = {
        "attributes": [
            {"external_id": "ok1", "n": 1},
            {"n": 2},
            {"external_id": "blocked", "n": 3},
            {"email": "e@example.com", "n": 4},
        ],
        "events": [
            {"external_id": "ok1", "time": "2024-01-01T00:00:00Z"},
            {"external_id": "ok1", "name": "e", "time": "yesterday"},
        ],
        "purchases": [{"external_id": "ok1", "product_id": "p", "price": 1, "time": "2024-01-01T00:00:00Z"}],
    }
    status, reply, _ = post(session, f"{braze.url}/users/track", body, BRAZE_AUTH)
    assert status == 201
    assert reply == {
        "message": "success",
        "attributes_processed": 2,
        "events_processed": 0,
        "purchases_processed": 0,
        "errors": [
            {
                "type": "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required",
                "input_array": "attributes",
                "index": 1,
            },
            {"type": "provided external_id is blacklisted and disallowed", "input_array": "attributes", "index": 2},
            {"type": "'name' is required", "input_array": "events", "index": 0},
            {"type": "'time' must be an ISO-8601 time", "input_array": "events", "index": 1},
            {"type": "'currency' is required", "input_array": "purchases", "index": 0},
        ],
    }
    assert braze.users == {
        "ok1": {"external_id": "ok1", "n": 1},
        "email:e@example.com": {"email": "e@example.com", "n": 4},
    }
    assert braze.events == [] and braze.purchases == []


def test_braze_request_with_only_invalid_objects_is_fatal(braze: BrazeFake, session: requests.Session) -> None:
    status, reply, _ = post(session, f"{braze.url}/users/track", {"attributes": [{"n": 1}]}, BRAZE_AUTH)
    assert status == 400
    assert reply["message"] == "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
    assert [(error["input_array"], error["index"]) for error in reply["errors"]] == [("attributes", 0)]


def test_braze_update_existing_only(braze: BrazeFake, session: requests.Session) -> None:
    alias = {"alias_name": "crm", "alias_label": "42"}
    body = {
        "attributes": [{"user_alias": alias, "n": 1}, {"external_id": "ghost", "_update_existing_only": True, "n": 1}]
    }
    status, reply, _ = post(session, f"{braze.url}/users/track", body, BRAZE_AUTH)
    assert (status, reply) == (201, {"message": "success", "attributes_processed": 2})
    assert braze.users == {}  # an alias is update-only unless told otherwise
    body = {"attributes": [{"user_alias": alias, "_update_existing_only": False, "n": 1}]}
    assert post(session, f"{braze.url}/users/track", body, BRAZE_AUTH)[0] == 201
    assert braze.users == {"alias:crm:42": {"user_alias": alias, "n": 1}}
    assert (
        post(session, f"{braze.url}/users/track", {"attributes": [{"user_alias": alias, "n": 2}]}, BRAZE_AUTH)[0] == 201
    )
    assert braze.users["alias:crm:42"]["n"] == 2


def test_braze_delete(braze: BrazeFake, session: requests.Session) -> None:
    # the email-only profile comes first: once u2 carries the email, Braze would route that email to u2
    attributes = [
        {"external_id": "u1"},
        {"email": "shared@example.com", "x": 1},
        {"external_id": "u2", "email": "shared@example.com"},
    ]
    post(session, f"{braze.url}/users/track", {"attributes": attributes}, BRAZE_AUTH)
    assert set(braze.users) == {"u1", "u2", "email:shared@example.com"}
    assert post(session, f"{braze.url}/users/delete", {"external_ids": [f"u{i}" for i in range(51)]}, BRAZE_AUTH)[
        :2
    ] == (
        400,
        {"message": "The max number of ids per request was exceeded"},
    )
    assert (
        post(session, f"{braze.url}/users/delete", {"external_ids": ["u1"], "braze_ids": ["b"]}, BRAZE_AUTH)[0] == 400
    )
    assert (
        post(session, f"{braze.url}/users/delete", {"email_addresses": [{"email": "shared@example.com"}]}, BRAZE_AUTH)[
            0
        ]
        == 400
    )
    assert set(braze.users) == {"u1", "u2", "email:shared@example.com"}

    status, reply, _ = post(session, f"{braze.url}/users/delete", {"external_ids": ["u1", "nobody"]}, BRAZE_AUTH)
    assert (status, reply) == (201, {"message": "success", "deleted": 1})
    assert post(session, f"{braze.url}/users/delete", {"external_ids": ["u1"]}, BRAZE_AUTH)[1] == {
        "message": "success",
        "deleted": 0,
    }
    by_email = {
        "email_addresses": [
            {"email": "shared@example.com", "prioritization": ["unidentified", "most_recently_updated"]}
        ]
    }
    assert post(session, f"{braze.url}/users/delete", by_email, BRAZE_AUTH)[1]["deleted"] == 1
    assert braze.deleted == ["u1", "email:shared@example.com"]
    assert set(braze.users) == {"u2"}


def test_braze_subscription_status(braze: BrazeFake, session: requests.Session) -> None:
    v1 = {
        "subscription_group_id": "g1",
        "subscription_state": "unsubscribed",
        "external_id": ["u1"],
        "email": ["a@example.com"],
    }
    assert post(session, f"{braze.url}/subscription/status/set", v1, BRAZE_AUTH)[:2] == (201, {"message": "success"})
    both = {**v1, "phone": ["+4712345678"]}
    status, reply, _ = post(session, f"{braze.url}/subscription/status/set", both, BRAZE_AUTH)
    assert (status, reply) == (
        400,
        {"message": "Either an email address or a phone number should be provided, but not both."},
    )
    v2 = {
        "subscription_groups": [
            {"subscription_group_id": "g2", "subscription_state": "subscribed", "phones": ["+4712345678"]}
        ]
    }
    assert post(session, f"{braze.url}/v2/subscription/status/set", v2, BRAZE_AUTH)[:2] == (201, {"message": "success"})
    too_many = {
        "subscription_groups": [
            {"subscription_group_id": "g2", "subscription_state": "subscribed", "external_ids": ["x"] * 51}
        ]
    }
    assert post(session, f"{braze.url}/v2/subscription/status/set", too_many, BRAZE_AUTH)[0] == 400
    assert braze.subscriptions == {
        ("g1", "u1"): "unsubscribed",
        ("g1", "a@example.com"): "unsubscribed",
        ("g2", "+4712345678"): "subscribed",
    }


def test_braze_export_ids(braze: BrazeFake, session: requests.Session) -> None:
    attributes = [
        {"email": "a@example.com", "country": "NO"},  # an email-only profile first, so two profiles share the email
        {"external_id": "u1", "email": "a@example.com", "first_name": "Ann", "tier": "gold", "visits": 3},
        {"_update_existing_only": False, "user_alias": {"alias_name": "crm-7", "alias_label": "crm"}, "vip": True},
    ]
    post(session, f"{braze.url}/users/track", {"attributes": attributes}, BRAZE_AUTH)
    points, users = list(braze.data_points), json.loads(json.dumps(braze.users))
    url = f"{braze.url}/users/export/ids"
    fields = ["external_id", "email", "first_name", "custom_attributes"]

    by_ids = {"external_ids": ["u1", "nobody"], "fields_to_export": fields}
    status, reply, headers = post(session, url, by_ids, BRAZE_AUTH)
    assert status == 200
    assert reply == {
        "message": "success",
        "users": [
            {
                "external_id": "u1",
                "email": "a@example.com",
                "first_name": "Ann",
                "custom_attributes": {"tier": "gold", "visits": 3},  # standard fields top-level, the rest nested
            }
        ],
        "invalid_user_ids": ["nobody"],
    }
    assert headers["x-ratelimit-limit"] == "250"  # its own window, not /users/track's
    # only the fields asked for; aliases come back as user_aliases
    alias = {"alias_name": "crm-7", "alias_label": "crm"}
    reply = post(session, url, {"user_aliases": [alias], "fields_to_export": ["user_aliases", "email"]}, BRAZE_AUTH)[1]
    assert reply["users"] == [{"user_aliases": [alias]}]
    # by email: one address per request, and every profile that has it
    reply = post(session, url, {"email_address": "a@example.com", "fields_to_export": ["country"]}, BRAZE_AUTH)[1]
    assert sorted(reply["users"], key=len) == [{}, {"country": "NO"}]

    assert post(session, url, {"external_ids": ["u1"]}, BRAZE_AUTH)[0] == 400  # fields_to_export is required
    too_many = {"external_ids": [f"u{i}" for i in range(26)], "user_aliases": [alias] * 25, "fields_to_export": fields}
    assert post(session, url, too_many, BRAZE_AUTH)[:2] == (
        400,
        {"message": "The max number of external_ids and aliases per request was exceeded"},
    )
    both = {"external_ids": ["u1"], "email_address": "a@example.com", "fields_to_export": fields}
    assert post(session, url, both, BRAZE_AUTH)[0] == 400
    assert post(session, url, {"fields_to_export": fields}, BRAZE_AUTH)[0] == 400
    assert post(session, url, {"external_ids": ["u1"], "fields_to_export": fields}, {})[0] == 401
    # exports read profiles: they change nothing and are no data points
    assert braze.data_points == points and braze.users == users


def test_braze_export_ids_has_its_own_rate_window(session: requests.Session) -> None:
    with BrazeFake(KEY, rate_limit=2, export_rate_limit=1) as braze:
        body = {"external_ids": ["u1"], "fields_to_export": ["external_id"]}
        assert [post(session, f"{braze.url}/users/export/ids", body, BRAZE_AUTH)[0] for _ in range(2)] == [200, 429]
        track = {"attributes": [{"external_id": "u1"}]}
        assert [post(session, f"{braze.url}/users/track", track, BRAZE_AUTH)[0] for _ in range(2)] == [201, 201]


def test_braze_rate_limit_headers_and_429(session: requests.Session) -> None:
    with BrazeFake(KEY, rate_limit=5, rate_window_seconds=1.0) as braze:
        time.sleep(math.ceil(time.time()) - time.time() + 0.02)  # start just after a window opens
        window_end = math.ceil(time.time())
        replies = [
            post(session, f"{braze.url}/users/track", {"attributes": [{"external_id": "u"}]}, BRAZE_AUTH)
            for _ in range(6)
        ]
        assert [status for status, _, _ in replies] == [201] * 5 + [429]
        assert [headers["x-ratelimit-remaining"] for _, _, headers in replies] == ["4", "3", "2", "1", "0", "0"]
        assert {headers["x-ratelimit-limit"] for _, _, headers in replies} == {"5"}
        assert {headers["x-ratelimit-reset"] for _, _, headers in replies} == {str(window_end)}
        assert replies[-1][1] == {"message": "Rate Limited"}
        assert braze.max_requests_in_window() == 6
        time.sleep(window_end - time.time() + 0.02)
        assert post(session, f"{braze.url}/users/track", {"attributes": [{"external_id": "u"}]}, BRAZE_AUTH)[0] == 201
        assert braze.max_requests_in_window() == 6


def test_injected_statuses_come_in_order_and_change_nothing(braze: BrazeFake, session: requests.Session) -> None:
    braze.faults.status_for_next = [429, 429, 503]
    braze.faults.fail_next = 1
    braze.faults.retry_after_seconds = 2
    body = {"events": [{"external_id": "u1", "name": "e", "time": "2024-01-01T00:00:00Z"}]}
    replies = [post(session, f"{braze.url}/users/track", body, BRAZE_AUTH) for _ in range(5)]
    assert [status for status, _, _ in replies] == [429, 429, 503, 500, 201]
    assert [headers.get("Retry-After") for _, _, headers in replies] == ["2", "2", None, None, None]
    assert replies[0][1] == {"message": "Rate Limited"}
    # injected replies are not counted, and only a 429 claims the window is spent
    assert [headers["x-ratelimit-remaining"] for _, _, headers in replies] == ["0", "0", "3000", "3000", "2999"]
    assert len(braze.events) == 1  # only the request that was served applied its event


def test_dropped_connection_raises_and_applies_nothing(iterable: IterableFake, session: requests.Session) -> None:
    iterable.faults.drop_next = 1
    body = {"users": [{"email": "a@example.com", "dataFields": {"n": 1}}]}
    with pytest.raises(requests.ConnectionError):
        session.post(f"{iterable.url}/api/users/bulkUpdate", json=body, headers=ITERABLE_AUTH, timeout=10)
    assert iterable.users == {}
    assert [(request.path, request.status) for request in iterable.requests] == [("/api/users/bulkUpdate", None)]
    assert iterable.requests[0].body == body
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)[0] == 200
    assert iterable.users["a@example.com"]["dataFields"] == {"n": 1}


def test_latency_and_path_prefix(braze: BrazeFake, session: requests.Session) -> None:
    braze.faults.latency_seconds = 0.3
    braze.faults.fail_next = 1
    braze.faults.path_prefix = "/users/delete"
    started = time.monotonic()
    assert post(session, f"{braze.url}/users/track", {"attributes": [{"external_id": "u"}]}, BRAZE_AUTH)[0] == 201
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    assert post(session, f"{braze.url}/users/delete", {"external_ids": ["u"]}, BRAZE_AUTH)[0] == 500
    assert time.monotonic() - started >= 0.3
    assert post(session, f"{braze.url}/users/delete", {"external_ids": ["u"]}, BRAZE_AUTH)[1]["deleted"] == 1


def test_keep_alive_and_reset(braze: BrazeFake) -> None:
    connection = http.client.HTTPConnection(braze.url.removeprefix("http://"), timeout=10)
    try:
        for _ in range(2):
            connection.request("POST", "/users/track", body=b'{"attributes":[{"external_id":"u"}]}', headers=BRAZE_AUTH)
            response = connection.getresponse()
            payload = response.read()
            assert (response.status, response.version, response.will_close) == (201, 11, False)
            assert int(response.headers["Content-Length"]) == len(payload)
        assert connection.sock is not None  # the same socket served both requests
    finally:
        connection.close()
    braze.faults.fail_next = 3
    braze.reset()
    assert (braze.users, braze.requests, braze.faults.fail_next, braze.max_requests_in_window()) == ({}, [], 0, 0)


# Iterable


def test_iterable_rejects_missing_or_unknown_key(iterable: IterableFake, session: requests.Session) -> None:
    body = {"users": [{"email": "a@example.com"}]}
    expected = (401, {"msg": "Invalid API key", "code": "BadApiKey", "params": None})
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, {})[:2] == expected
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, {"Api-Key": "wrong"})[:2] == expected
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, {"api_key": KEY})[:2] == expected
    assert (
        post(session, f"{iterable.url}/api/users/bulkUpdate", body, {"Authorization": f"Bearer {KEY}"})[:2] == expected
    )
    assert iterable.users == {}
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)[0] == 200
    assert [request.headers.get("api_key", request.headers.get("Api-Key")) for request in iterable.requests] == [
        None,
        "***",
        "***",
        None,
        "***",
    ]


def test_iterable_bulk_update_reports_failures_by_identifier(iterable: IterableFake, session: requests.Session) -> None:
    iterable.faults.invalid_identifiers = {"rejected@example.com"}
    body = {
        "users": [
            {"email": "a@example.com", "dataFields": {"tier": "gold", "prefs": {"sms": True}}},
            {"email": "not-an-email", "dataFields": {"tier": "x"}},
            {"userId": "u-unknown"},
            {"email": "rejected@example.com"},
            {"dataFields": {"tier": "y"}},
        ]
    }
    status, reply, _ = post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)
    assert status == 200
    assert spec_errors("UserBulkUpdateListResponse", reply) == []
    assert (reply["successCount"], reply["failCount"]) == (1, 4)
    assert {bucket: values for bucket, values in reply["failedUpdates"].items() if values} == {
        "invalidEmails": ["not-an-email", "rejected@example.com"],
        "invalidUserIds": ["u-unknown"],
    }
    assert (reply["invalidEmails"], reply["invalidUserIds"]) == (
        ["not-an-email", "rejected@example.com"],
        ["u-unknown"],
    )
    assert reply["createdFields"] == ["prefs", "tier"]

    more = {
        "users": [
            {
                "email": "a@example.com",
                "userId": "u1",
                "mergeNestedObjects": True,
                "dataFields": {"prefs": {"email": False}},
            }
        ]
    }
    assert post(session, f"{iterable.url}/api/users/bulkUpdate", more, ITERABLE_AUTH)[1]["successCount"] == 1
    assert iterable.users == {
        "a@example.com": {
            "email": "a@example.com",
            "userId": "u1",
            "dataFields": {"tier": "gold", "prefs": {"sms": True, "email": False}},
        }
    }
    assert iterable.spec_violations == []


def test_iterable_rejects_bodies_that_break_the_spec(iterable: IterableFake, session: requests.Session) -> None:
    status, reply, _ = post(
        session, f"{iterable.url}/api/users/bulkUpdate", {"users": {"email": "a@example.com"}}, ITERABLE_AUTH
    )
    assert (status, reply["code"], reply["msg"]) == (400, "BadJsonBody", "[/api/users/bulkUpdate] Invalid JSON body")
    assert list(reply["params"]) == ["obj.users"]
    bad_flag = {"listId": 7, "subscribers": [{"email": "a@example.com", "preferUserId": "yes"}]}
    assert post(session, f"{iterable.url}/api/lists/subscribe", bad_flag, ITERABLE_AUTH)[1]["params"] == {
        "obj.subscribers[0].preferUserId": "'yes' is not of type 'boolean'"
    }
    assert (
        post(session, f"{iterable.url}/api/events/trackBulk", {"events": [{"email": "a@example.com"}]}, ITERABLE_AUTH)[
            0
        ]
        == 400
    )
    with session.post(
        f"{iterable.url}/api/users/bulkUpdate", data=b"{not json", headers=ITERABLE_AUTH, timeout=10
    ) as response:
        assert (response.status_code, response.json()["code"]) == (400, "BadJsonBody")
    assert [violation.path for violation in iterable.spec_violations] == [
        "/api/users/bulkUpdate",
        "/api/lists/subscribe",
        "/api/events/trackBulk",
        "/api/users/bulkUpdate",
    ]
    assert iterable.spec_violations[2] == SpecViolation(
        "/api/events/trackBulk", {"obj.events[0]": "'eventName' is a required property"}
    )
    assert iterable.users == {} and iterable.lists[7] == set()


def test_iterable_type_change_fails_the_whole_request(iterable: IterableFake, session: requests.Session) -> None:
    post(
        session,
        f"{iterable.url}/api/users/bulkUpdate",
        {"users": [{"email": "a@example.com", "dataFields": {"score": 1}}]},
        ITERABLE_AUTH,
    )
    body = {
        "users": [
            {"email": "b@example.com", "dataFields": {"score": 2}},
            {"email": "c@example.com", "dataFields": {"score": "high"}},
        ]
    }
    status, reply, _ = post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)
    assert (status, reply["code"]) == (400, "RequestFieldsTypesMismatched")
    mismatch = reply["params"]["validationErrors"]["user:::score"]
    assert (mismatch["incomingTypes"], mismatch["expectedType"]) == (["string"], "number")
    assert set(iterable.users) == {"a@example.com"}


def test_iterable_size_limits(session: requests.Session) -> None:
    with IterableFake(KEY, max_body_bytes=1000, max_users=2) as iterable:
        body = {"users": [{"email": f"u{i}@example.com"} for i in range(3)]}
        status, reply, _ = post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)
        assert (status, reply["code"]) == (400, "BatchTooLarge")
        big = {"users": [{"email": "a@example.com", "dataFields": {"blob": "x" * 1000}}]}
        assert post(session, f"{iterable.url}/api/users/bulkUpdate", big, ITERABLE_AUTH)[1]["code"] == "BatchTooLarge"
        assert iterable.users == {}
        assert (
            post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": body["users"][:2]}, ITERABLE_AUTH)[1][
                "successCount"
            ]
            == 2
        )


def test_iterable_track_bulk_upserts_on_event_id(iterable: IterableFake, session: requests.Session) -> None:
    event = {
        "email": "a@example.com",
        "eventName": "joined",
        "id": "evt-1",
        "createdAt": 1700000000,
        "dataFields": {"n": 1},
    }
    body = {"events": [event, {"userId": "unknown-user", "eventName": "joined", "id": "evt-2"}]}
    status, reply, _ = post(session, f"{iterable.url}/api/events/trackBulk", body, ITERABLE_AUTH)
    assert status == 200
    assert spec_errors("BulkTrackResponse", reply) == []
    assert (reply["successCount"], reply["failCount"], reply["failedUpdates"]["notFoundUserIds"]) == (
        1,
        1,
        ["unknown-user"],
    )
    assert reply["disallowedEventNames"] == []
    post(
        session, f"{iterable.url}/api/events/trackBulk", {"events": [{**event, "dataFields": {"n": 2}}]}, ITERABLE_AUTH
    )
    assert list(iterable.events) == ["evt-1"]
    assert iterable.events["evt-1"]["dataFields"] == {"n": 2} and iterable.events["evt-1"]["user"] == "a@example.com"
    assert Counter(received.get("id") for received in iterable.received_events) == {"evt-1": 2, "evt-2": 1}
    assert "a@example.com" in iterable.users  # an event for an unknown email creates the user


def test_iterable_delete_twice_is_400(iterable: IterableFake, session: requests.Session) -> None:
    users = {"users": [{"email": "a/b@example.com", "userId": "u1"}, {"email": "c@example.com", "userId": "u2"}]}
    post(session, f"{iterable.url}/api/users/bulkUpdate", users, ITERABLE_AUTH)
    post(
        session,
        f"{iterable.url}/api/lists/subscribe",
        {"listId": 7, "subscribers": [{"email": "a/b@example.com"}]},
        ITERABLE_AUTH,
    )
    with session.delete(f"{iterable.url}/api/users/a%2Fb@example.com", headers=ITERABLE_AUTH, timeout=10) as response:
        assert (response.status_code, response.json()) == (
            200,
            {
                "msg": "All users associated with a/b@example.com were successfully deleted",
                "code": "Success",
                "params": None,
            },
        )
    with session.delete(f"{iterable.url}/api/users/a%2Fb@example.com", headers=ITERABLE_AUTH, timeout=10) as response:
        assert (response.status_code, response.json()) == (
            400,
            {"msg": "User does not exist. Email: a/b@example.com UserId: ", "code": "BadParams", "params": None},
        )
    with session.delete(f"{iterable.url}/api/users/byUserId/u2", headers=ITERABLE_AUTH, timeout=10) as response:
        assert response.status_code == 200
    with session.delete(f"{iterable.url}/api/users/byUserId/u2", headers=ITERABLE_AUTH, timeout=10) as response:
        assert (response.status_code, response.json()["msg"]) == (400, "User does not exist. Email:  UserId: u2")
    assert iterable.deleted == ["a/b@example.com", "c@example.com"]
    assert iterable.users == {} and iterable.lists[7] == set()


def test_iterable_list_membership(iterable: IterableFake, session: requests.Session) -> None:
    subscribe = {
        "listId": 7,
        "subscribers": [{"email": "a@example.com", "dataFields": {"tier": "gold"}}, {"email": "b@example.com"}],
    }
    status, reply, _ = post(session, f"{iterable.url}/api/lists/subscribe", subscribe, ITERABLE_AUTH)
    assert (status, reply["successCount"], reply["failCount"]) == (200, 2, 0)
    assert iterable.lists == {7: {"a@example.com", "b@example.com"}, 8: set()}
    assert iterable.users["a@example.com"]["dataFields"] == {"tier": "gold"}
    unsubscribe = {"listId": 7, "subscribers": [{"email": "a@example.com"}, {"email": "nobody@example.com"}]}
    status, reply, _ = post(session, f"{iterable.url}/api/lists/unsubscribe", unsubscribe, ITERABLE_AUTH)
    assert (status, reply["successCount"], reply["failCount"]) == (200, 1, 1)
    assert reply["failedUpdates"]["notFoundEmails"] == ["nobody@example.com"]
    assert iterable.lists[7] == {"b@example.com"}
    status, reply, _ = post(
        session, f"{iterable.url}/api/lists/subscribe", {"listId": 99, "subscribers": []}, ITERABLE_AUTH
    )
    assert (status, reply["code"]) == (400, "BadParams") and "error.lists.invalidListId" in reply["msg"]


def test_iterable_user_id_and_hybrid_projects(session: requests.Session) -> None:
    with IterableFake(KEY, project_type="userId", lists={1: "l"}) as iterable:
        body = {"users": [{"userId": "u1", "email": "a@example.com"}, {"email": "b@example.com"}, {"userId": "x" * 53}]}
        reply = post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)[1]
        assert (
            reply["successCount"],
            reply["failedUpdates"]["invalidEmails"],
            reply["failedUpdates"]["invalidUserIds"],
        ) == (
            1,
            ["b@example.com"],
            ["x" * 53],
        )
        assert iterable.users == {"u1": {"email": "a@example.com", "userId": "u1", "dataFields": {}}}
        only_existing = {
            "listId": 1,
            "subscribers": [{"userId": "u1"}, {"userId": "u9"}],
            "updateExistingUsersOnly": True,
        }
        reply = post(session, f"{iterable.url}/api/lists/subscribe", only_existing, ITERABLE_AUTH)[1]
        assert (reply["successCount"], reply["failedUpdates"]["notFoundUserIds"], iterable.lists[1]) == (
            1,
            ["u9"],
            {"u1"},
        )
        with session.delete(f"{iterable.url}/api/users/a@example.com", headers=ITERABLE_AUTH, timeout=10) as response:
            assert response.status_code == 400 and "u1" in iterable.users
    with IterableFake(KEY, project_type="hybrid") as iterable:
        body = {"users": [{"userId": "u1", "email": "a@example.com"}, {"userId": "u2", "email": "b@example.com"}]}
        assert post(session, f"{iterable.url}/api/users/bulkUpdate", body, ITERABLE_AUTH)[1]["successCount"] == 2
        clash = {"users": [{"userId": "u1", "email": "b@example.com"}]}
        reply = post(session, f"{iterable.url}/api/users/bulkUpdate", clash, ITERABLE_AUTH)[1]
        assert (reply["failCount"], reply["failedUpdates"]["conflictEmails"]) == (1, ["b@example.com"])


def test_iterable_single_user_update(iterable: IterableFake, session: requests.Session) -> None:
    reply = post(
        session, f"{iterable.url}/api/users/update", {"email": "a@example.com", "dataFields": {"n": 1}}, ITERABLE_AUTH
    )
    assert reply[:2] == (200, {"msg": "This user has been updated", "code": "Success", "params": None})
    reply = post(session, f"{iterable.url}/api/users/update", {"email": "nope", "dataFields": {"n": 1}}, ITERABLE_AUTH)
    assert reply[:2] == (400, {"msg": "Invalid email: nope", "code": "InvalidEmailAddressError", "params": None})
    assert iterable.users == {"a@example.com": {"email": "a@example.com", "dataFields": {"n": 1}}}


def test_iterable_rate_limits(session: requests.Session) -> None:
    with IterableFake(KEY, rate_limits={"users/bulkUpdate": 2}) as iterable:
        statuses = [
            post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": []}, ITERABLE_AUTH)[:2] for _ in range(3)
        ]
        assert statuses[:2] == [(200, statuses[0][1])] * 2
        assert statuses[2] == (429, {"msg": "Rate limit exceeded", "code": "RateLimitExceeded", "params": None})
        assert (
            post(session, f"{iterable.url}/api/events/trackBulk", {"events": []}, ITERABLE_AUTH)[0] == 200
        )  # its own, unlimited bucket
        time.sleep(0.55)  # one token back at 2/s
        assert post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": []}, ITERABLE_AUTH)[0] == 200
    with IterableFake(KEY, rate_limits=None) as iterable:
        assert {
            post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": []}, ITERABLE_AUTH)[0] for _ in range(12)
        } == {200}
    with IterableFake(KEY) as iterable:  # the documented 5/s
        assert [
            post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": []}, ITERABLE_AUTH)[0] for _ in range(6)
        ] == [200] * 5 + [429]
    with pytest.raises(ValueError, match="unknown rate-limit buckets"):
        IterableFake(KEY, rate_limits={"bulkUpdate": 5})


def test_injected_faults_on_iterable(iterable: IterableFake, session: requests.Session) -> None:
    iterable.faults.status_for_next = [429, 500]
    iterable.faults.retry_after_seconds = 1.5
    replies = [post(session, f"{iterable.url}/api/users/bulkUpdate", {"users": []}, ITERABLE_AUTH) for _ in range(3)]
    assert [(status, reply.get("code")) for status, reply, _ in replies] == [
        (429, "RateLimitExceeded"),
        (500, "GenericError"),
        (200, None),
    ]
    assert replies[0][2]["Retry-After"] == "1.5" and "Retry-After" not in replies[1][2]


# separate process


def test_runs_as_a_separate_process_and_stops_on_sigterm(session: requests.Session) -> None:
    command = [sys.executable, "-m", "composable_assets_tests.fakes", "braze", "--port", "0", "--api-key", KEY]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            announced = json.loads(process.stdout.readline())
            assert announced["url"] == f"http://127.0.0.1:{announced['port']}"
            status, reply, _ = post(
                session, f"{announced['url']}/users/track", {"attributes": [{"external_id": "u"}]}, BRAZE_AUTH
            )
            assert (status, reply) == (201, {"message": "success", "attributes_processed": 1})
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

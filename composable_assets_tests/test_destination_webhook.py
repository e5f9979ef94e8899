"""The webhook destination against a local receiver: batching, signatures, rejections, retries, secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import SMALL_DESTINATIONS

MEMBERS = {str(i) for i in range(11, 21)}
SECRET = "whsec-4f9b2c7d1e8a"
TOKEN = "tok-77a1b2c3d4e5"
# How old a signed timestamp the receiver accepts: older requests are treated as replays.
TOLERANCE_SECONDS = 300

HOOK_AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: hook
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email, name: name}
"""


def signature_is_valid(secret: str, headers, raw: bytes) -> bool:
    """What a receiver does: recompute the HMAC over the raw body, compare in constant time, refuse replays."""
    parts = dict(p.split("=", 1) for p in headers.get("X-Composable-Signature", "").split(",") if "=" in p)
    timestamp = parts.get("t", "")
    if not timestamp.isdigit() or timestamp != headers.get("X-Composable-Timestamp"):
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Receiver:
    """A webhook endpoint on 127.0.0.1: checks signatures, records requests, rejects or fails on demand."""

    def __init__(self, secret: str):
        self.secret = secret
        self.reject_keys: set[str] = set()
        self.fail_times = 0
        self.status: int | None = None
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    def delivered_keys(self) -> list[str]:
        """Keys of rows the receiver took: answered 2xx and not rejected."""
        return sorted(
            row["key"]
            for r in self.requests
            if r["status"] == 200
            for row in r["body"]["rows"]
            if row["key"] not in r["rejected"]
        )

    def _answer(self, headers, raw: bytes) -> tuple[int, dict[str, str], dict]:
        body = json.loads(raw)
        with self._lock:
            record = {"body": body, "raw": raw, "headers": dict(headers), "rejected": set(), "at": time.time()}
            self.requests.append(record)
            echo = {"error": "refused", "echo": headers.get("Authorization")}
            if not signature_is_valid(self.secret, headers, raw):
                record["status"] = 401
                return 401, {}, echo
            if self.fail_times:
                self.fail_times -= 1
                record["status"] = 500
                return 500, {"Retry-After": "0"}, {"error": "busy"}
            if self.status is not None:
                record["status"] = self.status
                return self.status, {}, echo
            record["status"] = 200
            rejected = [
                {"index": i, "reason": f"unknown contact {row['key']} ({headers.get('Authorization')})"}
                for i, row in enumerate(body["rows"])
                if row["key"] in self.reject_keys
            ]
            record["rejected"] = {body["rows"][r["index"]]["key"] for r in rejected}
            return 200, {}, {"rejected": rejected}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, answer = receiver._answer(self.headers, raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver():
    with Receiver(SECRET) as r:
        yield r


@pytest.fixture
def hooked(small, receiver, monkeypatch):
    """The small project with a `hooked` audience (ids 11..20) syncing to webhook `hook`, 3 rows a request."""
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HOOK_AUTH", f"Bearer {TOKEN}")
    entry = {
        "type": "webhook",
        "url": receiver.url,
        "secret": {"env": "HOOK_SECRET"},
        "batch_size": 3,
        "headers": {"Authorization": {"env": "HOOK_AUTH"}, "Accept": "application/json"},
    }
    # A JSON object is a YAML flow mapping.
    small.write("destinations.yaml", SMALL_DESTINATIONS + f"hook: {json.dumps(entry)}\n")
    small.write("audiences/hooked.yaml", HOOK_AUDIENCE)
    return small


def sync(project):
    return project.sync(audience="hooked")


def ledger(project) -> set[str]:
    return set(project.ledger("hook", audience="hooked"))


def test_each_batch_is_one_signed_post_of_the_documented_body(hooked, receiver):
    outcome = sync(hooked)
    assert outcome.success, outcome.errors
    assert sorted(len(r["body"]["rows"]) for r in receiver.requests) == [1, 3, 3, 3]
    for request in receiver.requests:
        assert request["status"] == 200
        assert {k: v for k, v in request["body"].items() if k != "rows"} == {
            "audience": "hooked",
            "destination": "hook",
            "run_id": outcome.run_id,
            "partition": "2026-03-02",
        }
        # The signature is exactly the documented HMAC of "<timestamp>.<raw body>".
        timestamp = request["headers"]["X-Composable-Timestamp"]
        digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request["raw"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Composable-Signature"] == f"t={timestamp},v1={digest}"
        assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
        assert request["headers"]["Content-Type"] == "application/json"
    rows = {row["key"]: row for r in receiver.requests for row in r["body"]["rows"]}
    assert rows["11"] == {
        "key": "11",
        "operation": "upsert",
        "change": "add",
        "identifier": {"external_id": "11"},
        "fields": {"email": "p11@example.com", "name": "name11"},
    }
    assert receiver.delivered_keys() == sorted(MEMBERS) and ledger(hooked) == MEMBERS
    sync_outcome = outcome.syncs[0]
    assert sync_outcome.count("added") == 10 and sync_outcome.count("batches") == 4


def test_removes_carry_no_fields(hooked, receiver):
    sync(hooked)
    receiver.requests.clear()
    hooked.set_people([(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 20)])  # 20 is gone
    assert sync(hooked).success
    [request] = receiver.requests
    assert request["body"]["rows"] == [
        {"key": "20", "operation": "remove", "change": "remove", "identifier": {"external_id": "20"}}
    ]
    assert ledger(hooked) == MEMBERS - {"20"}


def test_a_receiver_with_another_secret_detects_it_and_the_sync_fails(hooked, receiver):
    receiver.secret = "not-the-secret"
    outcome = sync(hooked)
    assert not outcome.success
    assert any("credentials refused" in e for e in outcome.errors), outcome.errors
    assert receiver.requests and all(r["status"] == 401 for r in receiver.requests)
    assert ledger(hooked) == set()
    # The same requests verify with the right secret: only the key was wrong.
    assert all(signature_is_valid(SECRET, r["headers"], r["raw"]) for r in receiver.requests)


def test_rejected_rows_stay_for_the_next_run_and_nothing_else_is_resent(hooked, receiver):
    receiver.reject_keys = {"13", "17"}
    outcome = sync(hooked)
    assert outcome.success, outcome.errors
    assert outcome.syncs[0].count("failed") == 2 and outcome.syncs[0].count("added") == 8
    assert ledger(hooked) == MEMBERS - {"13", "17"}
    reasons = hooked.query("SELECT key, reason FROM composable.sync_failures ORDER BY key")
    assert reasons == [("13", "unknown contact 13 (***)"), ("17", "unknown contact 17 (***)")]
    receiver.reject_keys.clear()
    receiver.requests.clear()
    assert sync(hooked).success
    assert [sorted(row["key"] for row in r["body"]["rows"]) for r in receiver.requests] == [["13", "17"]]
    assert ledger(hooked) == MEMBERS


def test_a_burst_of_5xx_is_retried_and_every_row_is_delivered_once(hooked, receiver):
    receiver.fail_times = 2
    outcome = sync(hooked)
    assert outcome.success, outcome.errors
    assert [r["status"] for r in receiver.requests].count(500) == 2
    assert receiver.delivered_keys() == sorted(MEMBERS)  # no row twice
    assert outcome.syncs[0].count("retries") == 2 and outcome.syncs[0].count("added") == 10
    assert ledger(hooked) == MEMBERS


def test_requests_per_second_holds_requests_back(hooked, receiver):
    entry = {"type": "webhook", "url": receiver.url, "secret": {"env": "HOOK_SECRET"}, "batch_size": 2}
    entry["requests_per_second"] = 2
    hooked.write("destinations.yaml", SMALL_DESTINATIONS + f"hook: {json.dumps(entry)}\n")
    outcome = sync(hooked)
    assert outcome.success, outcome.errors
    # Five requests at two a second span three one-second windows.
    arrivals = sorted(r["at"] for r in receiver.requests)
    assert len(arrivals) == 5 and arrivals[-1] - arrivals[0] > 0.9
    assert outcome.syncs[0].metadata["rate_limit_wait_seconds"].value > 0
    assert ledger(hooked) == MEMBERS


def test_a_client_error_rejects_the_whole_batch_with_the_status(hooked, receiver):
    receiver.status = 422
    outcome = sync(hooked)
    assert outcome.success, outcome.errors  # rejected rows do not fail the sync
    assert outcome.syncs[0].count("failed") == 10
    reasons = {r for (r,) in hooked.query("SELECT DISTINCT reason FROM composable.sync_failures")}
    assert reasons == {'HTTP 422: {"error": "refused", "echo": "***"}'}
    assert ledger(hooked) == set()


def test_secrets_never_reach_metadata_logs_or_errors(hooked, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    runs = []
    receiver.reject_keys = {"12"}
    runs.append(sync(hooked))
    receiver.status = 400
    hooked.set_people([(i, f"p{i}@example.com", f"renamed{i}", i) for i in range(1, 21)])
    runs.append(sync(hooked))
    receiver.status = None
    receiver.secret = "rotated-on-the-receiver-only"
    runs.append(sync(hooked))
    assert [r.success for r in runs] == [True, True, False]
    # Every request carried the token, and the receiver echoed it back: there was something to leak.
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in receiver.requests)
    seen = [repr(caplog.records), caplog.text]
    seen += [msg for record in caplog.records for msg in (record.getMessage(), repr(record.__dict__))]
    for outcome in runs:
        seen += outcome.errors
        seen += [repr(s.metadata) + str(s.error) for s in outcome.syncs]
        seen += [repr(entry) for entry in hooked.instance.all_logs(outcome.run_id)]
    seen += [repr(row) for row in hooked.query("SELECT * FROM composable.sync_failures")]
    text = "\n".join(seen)
    assert "credentials refused" in text and "HTTP 400" in text and "unknown contact 12" in text
    assert SECRET not in text and TOKEN not in text

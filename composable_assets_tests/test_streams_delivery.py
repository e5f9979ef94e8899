"""Event streams end to end: real DuckDB files, the real assets, and the Braze / Iterable fakes over HTTP."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


from composable_assets_tests.fakes import IterableFake
from composable_assets_tests.fakes.server import Response

from .stream_project import KEY, StreamProject, ids, order, outcome_of, utc_now

MINUTE = dt.timedelta(minutes=1)


def outbox_lines(project: StreamProject) -> list[dict]:
    folder = project.settings.data_dir / "outbox" / "box" / "streams" / "orders"
    files = sorted(folder.glob("*/*.jsonl"), key=lambda f: f.stat().st_mtime_ns)  # one file per run, in run order
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_a_new_stream_starts_now_and_each_run_sends_only_what_is_new(tmp_path, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    now = utc_now()
    project = StreamProject(tmp_path, lookback="1h", start="now")
    # The metadata shows what each vendor received (member data) only when asked for.
    project.write("project.yaml", 'name: events\nstart_date: "2026-01-01"\npayload_samples: true\n')
    project.add_orders(
        [
            order(1, now - 3 * 60 * MINUTE),  # older than the lookback when the stream starts: never sent
            order(2, now - 30 * MINUTE),
            order(3, now - 10 * MINUTE),
            order(4, now - 5 * MINUTE, status="refunded"),  # not a completed order
        ]
    )
    first = project.run()
    assert first.success, first.errors
    assert set(iterable.events) == ids(2, 3)
    assert braze.received_event_ids() == Counter(ids(2, 3))
    assert [line["id"] for line in outbox_lines(project)] == ["orders:2", "orders:3"]
    assert {s.destination: s.count("sent") for s in first.streams} == {"braze": 2, "iterable": 2, "box": 2}
    started = project.high_water("iterable")
    assert started >= now  # a stream starting now: the mark is the first run's time, not the newest row's

    project.add_orders([order(5, now - MINUTE), order(6, now + 60 * MINUTE)])  # order 6 is in the future: it waits
    second = project.run()
    assert second.success, second.errors
    assert {s.destination: s.count("sent") for s in second.streams} == {"braze": 1, "iterable": 1, "box": 1}
    assert iterable.event_receipts == Counter(ids(2, 3, 5))
    assert braze.received_event_ids() == Counter(ids(2, 3, 5))
    assert [line["id"] for line in outbox_lines(project)] == ["orders:2", "orders:3", "orders:5"]

    # What each vendor received, in its own format.
    [purchase] = [p for p in braze.purchases if p["properties"]["event_id"] == "orders:5"]
    assert purchase == {
        "user": "6", "external_id": "6", "product_id": "sku-2", "currency": "EUR", "price": 15.5,
        "time": (now - MINUTE).isoformat() + ".000Z", "properties": {"order_id": 5, "event_id": "orders:5"},
    }
    event = iterable.events["orders:5"]
    assert (event["eventName"], event["email"], event["user"]) == ("purchase", "c6@example.com", "c6@example.com")
    assert event["createdAt"] == calendar.timegm((now - MINUTE).utctimetuple())
    assert event["dataFields"] == {"order_id": 5, "amount": 15.5, "currency": "EUR"}
    assert iterable.spec_violations == []
    assert outbox_lines(project)[-1] == {
        "id": "orders:5", "name": "purchase", "time": (now - MINUTE).isoformat() + ".000Z",
        "identifier": {"external_id": "6"}, "properties": {"amount": 15.5},
    }
    metadata = outcome_of(second, "iterable").metadata
    assert metadata["high_water_mark"].value == str(started)  # order 5 is older than the starting mark
    assert "| purchase | c6@example.com | orders:5 |" in metadata["payload_sample"].value  # Iterable's event, a table row


def test_late_rows_within_the_lookback_are_sent_exactly_once_and_older_ones_are_counted(tmp_path, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    t = utc_now() - 10 * MINUTE
    project = StreamProject(tmp_path, lookback="1h", start=(t - dt.timedelta(days=1)).date().isoformat())
    project.add_orders([order(i, t - (5 - i) * 10 * MINUTE) for i in range(1, 6)] + [order(6, t)])
    first = project.run()
    assert first.success, first.errors
    assert set(iterable.events) == ids(1, 2, 3, 4, 5, 6)
    assert project.high_water("braze") == t

    project.add_orders(
        [
            order(7, t - 30 * MINUTE),  # late, within the lookback: sent
            order(8, t),  # at the high-water mark itself: sent, and orders 5 and 6 (same cursor) are not resent
            order(9, t - 90 * MINUTE),  # behind the window, but the sent log still covers it: counted late
            order(10, t - 5 * 60 * MINUTE),  # far behind: invisible
        ]
    )
    second = project.run()
    assert second.success, second.errors
    for destination in ("braze", "iterable", "box"):
        outcome = outcome_of(second, destination)
        assert (outcome.count("sent"), outcome.count("late_skipped")) == (2, 1), destination
        statuses = project.statuses(destination)
        assert statuses["orders:9"] == "late_skipped" and "orders:10" not in statuses
    assert iterable.event_receipts == Counter(ids(1, 2, 3, 4, 5, 6, 7, 8))
    assert braze.received_event_ids() == Counter(ids(1, 2, 3, 4, 5, 6, 7, 8))

    # A late row is counted once, not on every run.
    third = project.run()
    assert third.success, third.errors
    assert all((s.count("sent"), s.count("late_skipped")) == (0, 0) for s in third.streams)
    assert iterable.event_receipts == Counter(ids(1, 2, 3, 4, 5, 6, 7, 8))
    assert [line["id"] for line in outbox_lines(project)].count("orders:8") == 1


def test_rejected_events_are_recorded_with_their_reason_and_not_retried(tmp_path, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    t = utc_now() - 30 * MINUTE
    project = StreamProject(tmp_path)
    iterable.faults.invalid_identifiers = {"c3@example.com"}  # orders 2 and 9 belong to customer 3
    project.add_orders(
        [order(i, t + i * MINUTE) for i in (1, 2, 3, 9)]
        + [order(4, t + 4 * MINUTE, email=None), order(5, t + 5 * MINUTE, currency="EURO")]
    )
    first = project.run()
    assert first.success, first.errors
    iterable_statuses, braze_statuses = project.statuses("iterable"), project.statuses("braze")
    assert {e for e, s in iterable_statuses.items() if s == "rejected"} == ids(2, 4, 9)
    assert {e for e, s in braze_statuses.items() if s == "rejected"} == ids(5)
    reasons = dict(project.query("SELECT event_id, reason FROM composable.stream_sent__orders__iterable WHERE status = 'rejected'"))
    assert reasons == {"orders:2": "invalidEmails", "orders:9": "invalidEmails", "orders:4": "identifier is NULL"}
    assert "ISO-4217" in project.query("SELECT reason FROM composable.stream_sent__orders__braze WHERE status = 'rejected'")[0][0]
    assert set(iterable.events) == ids(1, 3, 5)
    assert outcome_of(first, "iterable").count("rejected") == 3
    rejections = outcome_of(first, "iterable").metadata["rejections"].value
    assert "invalidEmails" in rejections and "orders:2" not in rejections  # reasons, not whose (payload_samples off)

    requests_before = len(iterable.requests) + len(braze.requests)
    second = project.run()
    assert second.success and all(s.count("sent") + s.count("rejected") == 0 for s in second.streams)
    assert len(iterable.requests) + len(braze.requests) == requests_before  # nothing was tried again


class _PickyIterable(IterableFake):
    """Iterable answering 503 to any trackBulk request carrying one given event id, while `broken`."""

    def __init__(self, *args, poison: str, **kwargs):
        self.poison = poison
        self.broken = True
        super().__init__(*args, **kwargs)

    def _handle(self, request):
        events = (request.body or {}).get("events") if isinstance(request.body, dict) else None
        if self.broken and events and any(e.get("id") == self.poison for e in events):
            return Response(503, {"msg": "Service Unavailable", "code": "GenericError", "params": None})
        return super()._handle(request)


def test_a_destination_that_stops_accepting_fails_the_run_and_the_mark_waits_for_the_failed_batch(tmp_path, monkeypatch):
    iterable = _PickyIterable(KEY, rate_limits=None, poison="orders:13").start()
    try:
        monkeypatch.setenv("ITERABLE_BASE_URL", iterable.url)
        monkeypatch.setenv("ITERABLE_API_KEY", KEY)
        t = utc_now() - 60 * MINUTE
        # No lookback: the next run starts exactly at the mark, so a mark moved past the failed batch would lose it.
        project = StreamProject(tmp_path, lookback="0s", start=(t - dt.timedelta(days=1)).date().isoformat(), batch=5)
        project.add_orders([order(i, t + i * MINUTE) for i in range(1, 31)])
        first = project.run("iterable")
        assert not first.success
        failed = outcome_of(first, "iterable")
        assert "stopped accepting events" in failed.error and failed.count("sent") >= 10
        # Batches 1-2 settled; batch 3 (orders 11-15) did not: the mark stays at order 10 whatever came back later.
        assert project.high_water("iterable") == t + 10 * MINUTE
        assert ids(11, 12, 13, 14, 15).isdisjoint(iterable.events)

        iterable.broken = False
        second = project.run("iterable")
        assert second.success, second.errors
        assert outcome_of(second, "iterable").count("sent") == 30 - failed.count("sent")
        assert iterable.event_receipts == Counter(ids(*range(1, 31)))  # every event once, none twice
        assert project.high_water("iterable") == t + 30 * MINUTE
    finally:
        iterable.stop()


def test_leftovers_of_a_killed_run_are_resent_where_ids_deduplicate_and_held_in_doubt_elsewhere(tmp_path, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    t = utc_now() - 60 * MINUTE
    project = StreamProject(tmp_path, start=(t - dt.timedelta(days=1)).date().isoformat())
    project.add_orders([order(i, t + i * MINUTE) for i in range(1, 11)])
    assert project.run().success
    project.add_orders([order(i, t + i * MINUTE) for i in range(11, 21)])
    # What a run killed while sending orders 11-15 leaves behind: their intents, nothing in the sent log.
    for destination in ("braze", "iterable", "box"):
        for i in range(11, 16):
            project.query(
                "INSERT INTO composable.stream_intents VALUES ('orders', ?, 'killed-run', ?, ?, ?)",
                [destination, f"orders:{i}", t + i * MINUTE, utc_now()],
            )

    outcome = project.run()
    assert outcome.success, outcome.errors
    braze_outcome, iterable_outcome = outcome_of(outcome, "braze"), outcome_of(outcome, "iterable")
    # Braze keeps duplicates: what may have arrived is recorded in doubt and never sent again.
    assert (braze_outcome.count("in_doubt"), braze_outcome.count("sent")) == (5, 5)
    assert braze.received_event_ids() == Counter(ids(*range(1, 11), *range(16, 21)))
    assert {e for e, s in project.statuses("braze").items() if s == "in_doubt"} == ids(11, 12, 13, 14, 15)
    # Iterable upserts by id: they are simply sent again.
    assert (iterable_outcome.count("in_doubt"), iterable_outcome.count("resent_after_crash")) == (0, 5)
    assert iterable_outcome.count("sent") == 10 and set(iterable.events) == ids(*range(1, 21))
    assert project.query("SELECT count(*) FROM composable.stream_intents") == [(0,)]


def test_a_braze_request_without_an_answer_is_held_in_doubt_not_retried(tmp_path, fakes):
    braze, iterable = fakes["braze"], fakes["iterable"]
    t = utc_now() - 30 * MINUTE
    project = StreamProject(tmp_path, start=(t - dt.timedelta(days=1)).date().isoformat(), batch=5, concurrency=1)
    project.add_orders([order(i, t + i * MINUTE) for i in range(1, 21)])
    braze.faults.drop_next = 1  # the connection of the first request closes without an answer
    iterable.faults.drop_next = 1  # the same at Iterable, which deduplicates: simply retried
    first = project.run()
    assert not first.success
    braze_outcome = outcome_of(first, "braze")
    assert braze_outcome.error and "may have been processed" in braze_outcome.error
    assert braze_outcome.count("in_doubt") == 5
    assert outcome_of(first, "iterable").count("sent") == 20
    assert len([r for r in braze.requests if r.path == "/users/track"]) == 1  # not retried

    second = project.run("braze")
    assert second.success, second.errors
    assert braze.received_event_ids() == Counter(ids(*range(6, 21)))
    assert {e for e, s in project.statuses("braze").items() if s == "in_doubt"} == ids(1, 2, 3, 4, 5)
    assert set(iterable.events) == ids(*range(1, 21))


def test_a_cursor_that_is_not_a_time_fails_the_run_naming_the_file(tmp_path, fakes):
    project = StreamProject(tmp_path)
    stream = (project.settings.project_dir / "streams" / "orders.yaml").read_text()
    project.write("streams/orders.yaml", stream.replace("cursor: ordered_at", "cursor: customer_id"))
    project.add_orders([order(1, utc_now())])
    outcome = project.run("box")
    assert not outcome.success
    assert "stream orders (orders.yaml): cursor column `customer_id` is BIGINT, not a timestamp or date" in outcome.errors[0]

    project.write("streams/orders.yaml", stream.replace("properties: {{amount: amount}}".format(), "properties: {total: total}"))
    outcome = project.run("box")
    assert "table `orders` has no column `total`" in outcome.errors[0]


class _Hook:
    """A webhook receiver for events: checks signatures, records events, rejects one index per request."""

    def __init__(self, secret: str):
        self.secret = secret
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                t, v1 = (part.split("=", 1)[1] for part in self.headers["X-Composable-Signature"].split(","))
                expected = hmac.new(hook.secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
                body = json.loads(raw)
                status = 200 if hmac.compare_digest(expected, v1) else 401
                hook.bodies.append(body)
                reply = json.dumps({"rejected": [{"index": 1, "reason": "unknown customer"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/events"


def test_a_webhook_gets_signed_batches_of_events_with_their_ids(tmp_path, monkeypatch):
    hook = _Hook("whsec-streams-1")
    try:
        monkeypatch.setenv("HOOK_SECRET", hook.secret)
        project = StreamProject(tmp_path, batch=3)
        stream = (project.settings.project_dir / "streams" / "orders.yaml").read_text()
        project.write("streams/orders.yaml", stream.replace("destination: box", "destination: hook"))
        destinations = (project.settings.project_dir / "destinations.yaml").read_text()
        project.write(
            "destinations.yaml",
            destinations + f"hook: {{type: webhook, url: {hook.url}, secret: {{env: HOOK_SECRET}}, batch_size: 3}}\n",
        )
        t = utc_now() - 30 * MINUTE
        project.add_orders([order(i, t + i * MINUTE) for i in range(1, 7)])
        outcome = project.run("hook")
        assert outcome.success, outcome.errors
        assert [len(b["events"]) for b in hook.bodies] == [3, 3]
        # Batches are in flight together (webhook concurrency 4), so they may arrive in either order.
        first = min(hook.bodies, key=lambda body: body["events"][0]["id"])
        assert (first["stream"], first["destination"]) == ("orders", "hook") and "audience" not in first
        assert first["events"][0] == {
            "id": "orders:1", "name": "purchase", "time": (t + MINUTE).isoformat() + ".000Z",
            "identifier": {"external_id": "2"}, "properties": {"amount": 11.5},
        }
        statuses = project.statuses("hook")
        assert {e for e, s in statuses.items() if s == "rejected"} == ids(2, 5)
        assert outcome_of(outcome, "hook").count("sent") == 4
    finally:
        hook.server.shutdown()
        hook.server.server_close()

"""Deletion requests: a person who asks is deleted at every destination that received them, purged from our tables,
never sent again (until a new consent), with proof; real fakes (Braze, Iterable, a webhook receiver), Braze CDI,
MessageGears and the outbox, on DuckDB, PostgreSQL, Snowflake (fakesnow) and BigQuery (its local stand-in)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from composable_assets.assets.deletions import DELETION_REQUESTS
from composable_assets.definitions import audience_selection, load_definitions, stream_selection
from composable_assets.project import ProjectError, load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.warehouse import engine_from_url
from composable_assets.warehouse.base import insert_rows

from .stream_project import KEY
from .test_destination_webhook import signature_is_valid

HOOK_SECRET = "whsec-deletion-5d2a"

MODELS = {
    "models/people_model.sql": "-- People with a score.\nSELECT id, email, name, score FROM people\n",
    # A model reads `orders`, so the stream's table is a known source.
    "models/order_facts.sql": "-- Orders.\nSELECT order_id, customer_id, amount, ordered_at FROM orders\n",
}

AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: braze
    mode: mirror
    identifier: {external_id: id}
    fields: {first_name: name}
    options: {membership_attribute: in_high}
  - destination: iterable
    identifier: {email: email}
    fields: {name: name}
  - destination: hook
    mode: mirror
    identifier: {external_id: id}
    fields: {name: name}
  - destination: cdi
    identifier: {external_id: id}
    fields: {name: name}
  - destination: mg
    identifier: {external_id: id}
    fields: {name: name}
  - destination: box
    mode: mirror
    identifier: {email: email}
    fields: {name: name}
"""

STREAM = """\
table: orders
event_id: order_id
cursor: ordered_at
key: customer_id
lookback: 1d
syncs:
  - destination: braze
    identifier: {external_id: customer_id}
    event: purchase
    properties: {amount: amount}
  - destination: box
    identifier: {external_id: customer_id}
    event: purchase
"""

DESTINATIONS = """\
braze: {{type: braze, rest_endpoint: {{env: BRAZE_REST_ENDPOINT}}, api_key: {{env: BRAZE_API_KEY}}, max_tries: 2, backoff_base_seconds: 0.01}}
iterable: {{type: iterable, base_url: {{env: ITERABLE_BASE_URL}}, api_key: {{env: ITERABLE_API_KEY}}, max_tries: 2, backoff_base_seconds: 0.01}}
hook: {{type: webhook, url: "{hook}", secret: {{env: HOOK_SECRET}}, max_tries: 2, backoff_base_seconds: 0.01}}
cdi: {{type: braze_cdi, schema: braze_cdi}}
mg: {{type: messagegears, schema: mg}}
box: {{type: outbox}}
"""

PROJECT = """\
name: forgetting
start_date: "2026-01-01"
consent: {table: consents, key: id, updated_at: updated_at}
deletion_requests: {table: deletion_requests, key: customer_id, requested_at: requested_at, id: request_id}
"""

EVERY_PLACE = ("braze", "iterable", "hook", "cdi", "mg", "box")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class HookReceiver:
    """A webhook endpoint keeping what it was told: rows upserted and removed by external id, people forgotten."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.held: dict[str, dict] = {}
        self.forgotten: list[str] = []
        self.bodies: list[dict] = []
        self.fail_forget = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = receiver._answer(self.headers, raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    def _answer(self, headers, raw: bytes) -> tuple[int, dict]:
        if not signature_is_valid(HOOK_SECRET, headers, raw):
            return 401, {"error": "bad signature"}
        body = json.loads(raw)
        with self._lock:
            self.bodies.append(body)
            if body.get("action") == "forget":
                if self.fail_forget:
                    return 503, {"error": "busy"}
                ids = [p["identifier"]["external_id"] for p in body["people"]]
                missing = [i for i, person in enumerate(ids) if person not in self.held]
                for person in ids:
                    self.held.pop(person, None)
                    self.forgotten.append(person)
                return 200, {"not_found": missing}
            for row in body["rows"]:
                person = row["identifier"]["external_id"]
                if row["operation"] == "remove":
                    self.held.pop(person, None)
                else:
                    self.held[person] = row["fields"]
            return 200, {}

    def rows_about(self, person: str) -> int:
        return sum(1 for b in self.bodies for r in b.get("rows", []) if r["identifier"]["external_id"] == person)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ForgettingProject:
    """People 1..20 (members: score over 10) synced to six destinations, and orders streamed to Braze and the outbox."""

    def __init__(self, root: Path, url: str, hook: HookReceiver):
        self.settings = Settings(project_dir=root / "project", warehouse_url=url, data_dir=root / "data")
        self.engine = engine_from_url(url)
        self.instance = dg.DagsterInstance.ephemeral()
        self.day = dt.datetime.now(dt.UTC).date().isoformat()
        files = {
            **MODELS,
            "project.yaml": PROJECT,
            "audiences/high.yaml": AUDIENCE,
            "streams/orders.yaml": STREAM,
            "destinations.yaml": DESTINATIONS.format(hook=hook.url),
        }
        for path, text in files.items():
            self.write(path, text)
        with self.engine.connect() as conn:
            conn.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
            insert_rows(conn, "people", {"id": "BIGINT", "email": "VARCHAR", "name": "VARCHAR", "score": "INTEGER"},
                        [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)])
            conn.execute("CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, amount DOUBLE, ordered_at TIMESTAMP)")
            conn.execute("CREATE TABLE consents (id BIGINT, purpose VARCHAR, granted BOOLEAN, updated_at TIMESTAMP)")
            conn.execute("CREATE TABLE deletion_requests (request_id VARCHAR, customer_id BIGINT, requested_at TIMESTAMP)")

    def write(self, path: str, text: str) -> None:
        target = self.settings.project_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        with self.engine.connect() as conn:
            conn.execute(sql, params)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def add_orders(self, customers: list[int], at: dt.datetime) -> None:
        (last,) = self.query("SELECT coalesce(max(order_id), 0) FROM orders")[0]
        rows = [(last + n, c, 10.0 + n, at) for n, c in enumerate(customers, start=1)]
        with self.engine.connect() as conn:
            insert_rows(conn, "orders", {"order_id": "BIGINT", "customer_id": "BIGINT", "amount": "DOUBLE",
                                         "ordered_at": "TIMESTAMP"}, rows)

    def ask_to_forget(self, person: int, at: dt.datetime | None = None) -> None:
        self.execute("INSERT INTO deletion_requests VALUES (?, ?, ?)", [f"dsr-{person}", person, at or utc_now()])

    def consent(self, person: int, at: dt.datetime) -> None:
        self.execute("INSERT INTO consents VALUES (?, 'email_marketing', true, ?)", [person, at])

    def _run(self, selection, partition: str | None) -> RunOutcome:
        defs = load_definitions(self.settings)
        return run_selection(defs, selection, partition, self.instance)

    def sync(self) -> RunOutcome:
        return self._run(audience_selection(load_project(self.settings.project_dir), "high"), self.day)

    def stream(self) -> RunOutcome:
        return self._run(stream_selection(load_project(self.settings.project_dir), "orders"), self.day)

    def forget(self) -> RunOutcome:
        return self._run(dg.AssetSelection.assets(DELETION_REQUESTS), None)

    def ledger_keys(self, destination: str) -> set[str]:
        return {k for (k,) in self.query(f'SELECT _key FROM composable."ledger__high__{destination}"')}

    def delta_keys(self, destination: str) -> set[str]:
        return {k for (k,) in self.query(f'SELECT DISTINCT _key FROM composable."delta__high__{destination}"')}

    def cdi(self, suffix: str) -> list[str]:
        return [r[0] for r in self.query(f'SELECT "EXTERNAL_ID" FROM braze_cdi."HIGH_USERS_{suffix}_SYNC"')]

    def mg_members(self) -> set[str]:
        return {k for (k,) in self.query("SELECT member_key FROM mg.high")}

    def outbox_lines(self) -> list[dict]:
        folder = self.settings.data_dir / "outbox" / "box"
        return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]

    def proof(self) -> list[dict]:
        rows = self.query(
            "SELECT request_id, key, destination, source, identifier_type, identifier_sha256, status, response "
            "FROM composable.deletion_log ORDER BY destination, source, status"
        )
        names = ("request_id", "key", "destination", "source", "identifier_type", "identifier_sha256", "status", "response")
        return [dict(zip(names, r)) for r in rows]

    def check(self, name: str = "requests_honoured") -> dg.AssetCheckEvaluation:
        key = dg.AssetCheckKey(DELETION_REQUESTS, name)
        record = self.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        return record.event.dagster_event.event_specific_data


def about(lines: list[dict], *identifiers: str) -> list[dict]:
    """Outbox lines naming one of these identifier values."""
    return [line for line in lines if set(line["identifier"].values()) & set(identifiers)]


def mentions(body: Any, *identifiers: str) -> bool:
    """Whether a request body names one of these identifiers anywhere (as a value)."""
    if isinstance(body, dict):
        return any(mentions(v, *identifiers) for v in body.values())
    if isinstance(body, list):
        return any(mentions(v, *identifiers) for v in body)
    return isinstance(body, str) and body in identifiers


def braze_events_of(braze, person: str) -> int:
    return sum(1 for e in braze.events if e["user"] == person)


@pytest.fixture
def hook():
    receiver = HookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(params=["duckdb", "postgres", "snowflake", "bigquery"])
def url(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def project(tmp_path: Path, url: str, hook: HookReceiver, fakes, monkeypatch) -> ForgettingProject:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    p = ForgettingProject(tmp_path, url, hook)
    p.add_orders([11, 12, 13, 12], utc_now() - dt.timedelta(minutes=30))
    assert p.sync().success
    assert p.stream().success
    return p


def test_a_deletion_request_deletes_the_person_everywhere_and_they_do_not_come_back(project, fakes, hook):
    braze, iterable = fakes["braze"], fakes["iterable"]
    # Everyone got person 12 first.
    assert "12" in braze.users and braze_events_of(braze, "12") == 2
    assert "p12@example.com" in iterable.users
    assert "12" in hook.held and "12" in project.cdi("ATTRIBUTES") and "12" in project.mg_members()
    assert about(project.outbox_lines(), "p12@example.com", "12")
    assert all("12" in project.ledger_keys(d) for d in EVERY_PLACE)
    # Braze refuses one more order of 12: the sent log keeps Braze's reason for it (its words may name the person).
    braze.faults.invalid_identifiers = {"12"}
    project.add_orders([12], utc_now() - dt.timedelta(minutes=20))
    assert project.stream().success
    braze.faults.invalid_identifiers = set()
    rejected = 'SELECT event_id, reason FROM composable."stream_sent__orders__braze" WHERE status = \'rejected\''
    [(event, reason)] = project.query(rejected)
    assert reason == "provided external_id is blacklisted and disallowed"

    project.ask_to_forget(12)
    outcome = project.forget()
    assert outcome.success, outcome.errors
    # The event stays known (it is never sent), Braze's reason about it does not.
    assert project.query(rejected) == [(event, None)]

    # Gone from every destination ...
    assert "12" not in braze.users and "12" in braze.deleted
    assert "p12@example.com" not in iterable.users and "p12@example.com" in iterable.deleted
    assert "12" not in hook.held and hook.forgotten == ["12"]
    assert project.cdi("DELETE") == ["12"] and "12" not in project.cdi("ATTRIBUTES")
    assert "12" not in project.mg_members()
    assert about(project.outbox_lines(), "p12@example.com", "12") == []
    # ... from every ledger and delta, and nobody else was touched.
    for destination in EVERY_PLACE:
        assert "12" not in project.ledger_keys(destination) | project.delta_keys(destination)
        assert project.ledger_keys(destination) == {str(i) for i in range(11, 21)} - {"12"}
    assert {"11", "13"} <= set(braze.users) and "p11@example.com" in iterable.users and "11" in hook.held
    # The proof: one outcome per destination and delivery, plus the purges; no raw identifier anywhere in it.
    proof = project.proof()
    outcomes = {(r["destination"], r["source"], r["status"]) for r in proof if r["identifier_type"]}
    assert outcomes == {
        ("braze", "audience high", "deleted"), ("braze", "stream orders", "not_found"),
        ("iterable", "audience high", "deleted"), ("hook", "audience high", "deleted"),
        ("cdi", "audience high", "deleted"), ("mg", "audience high", "purged"),
        ("box", "audience high", "purged"), ("box", "stream orders", "purged"),
    }
    purged = {r["destination"] for r in proof if r["status"] == "purged" and r["identifier_type"] is None}
    assert purged == set(EVERY_PLACE) | {"(snapshot)"}  # every pair's tables, and the audience snapshot
    assert "12" not in {k for (k,) in project.query('SELECT _key FROM composable."audience__high"')}
    assert {r["request_id"] for r in proof} == {"dsr-12"} and {r["key"] for r in proof} == {"12"}
    assert not any("@" in str(value) for r in proof for value in r.values())

    # Next day: person 12 is still in `people` and orders again; nothing about them leaves, anywhere.
    requests_before = {name: len(fake.requests) for name, fake in fakes.items()}
    project.execute("UPDATE people SET name = 'renamed', score = 30 WHERE id IN (12, 15)")
    project.add_orders([12, 11], utc_now() - dt.timedelta(minutes=5))
    assert project.sync().success and project.stream().success
    for name, fake in fakes.items():  # not one request about 12 reached Braze or Iterable
        assert not [r for r in fake.requests[requests_before[name]:] if mentions(r.body, "12", "p12@example.com")]
    assert "12" not in braze.users and braze_events_of(braze, "12") == 2
    assert braze_events_of(braze, "11") == 2  # the stream still runs for others
    assert "p12@example.com" not in iterable.users
    assert hook.rows_about("12") == 1 and "12" not in hook.held
    assert "12" not in project.cdi("ATTRIBUTES")
    assert about(project.outbox_lines(), "p12@example.com", "12") == []
    assert all("12" not in project.ledger_keys(d) for d in EVERY_PLACE)
    # The new snapshot leaves them out: it does not take back in whom the deletion purged from it.
    assert {k for (k,) in project.query('SELECT _key FROM composable."audience__high"')} == {
        str(i) for i in range(11, 21)} - {"12"}
    assert braze.users["15"]["first_name"] == "renamed"  # the rest of the audience moves on
    assert len(fakes["braze"].requests) > requests_before["braze"]
    # The request is done: a new run of the deletion asset asks nobody anything.
    requests_before = {name: len(fake.requests) for name, fake in fakes.items()}
    assert project.forget().success
    assert {name: len(fake.requests) for name, fake in fakes.items()} == requests_before
    assert project.check().passed


def test_a_consent_granted_after_the_request_lets_the_person_back_in(project, fakes):
    project.ask_to_forget(12, utc_now() - dt.timedelta(hours=1))
    project.consent(12, utc_now() - dt.timedelta(hours=2))  # a grant older than the request changes nothing
    assert project.forget().success
    assert project.sync().success
    assert "12" not in fakes["braze"].users and "12" not in project.ledger_keys("braze")

    project.consent(12, utc_now())
    project.add_orders([12], utc_now() - dt.timedelta(minutes=1))
    events_before = braze_events_of(fakes["braze"], "12")
    assert project.sync().success and project.stream().success
    assert "12" in fakes["braze"].users and "p12@example.com" in fakes["iterable"].users
    assert all("12" in project.ledger_keys(d) for d in EVERY_PLACE)
    # Only the new order: the old ones were sent before the request, and the stream never sends an event twice.
    assert braze_events_of(fakes["braze"], "12") == events_before + 1


def test_a_destination_failing_is_retried_next_run_and_the_others_are_not_redone(project, fakes, hook):
    braze, iterable = fakes["braze"], fakes["iterable"]
    project.ask_to_forget(13, utc_now() - dt.timedelta(days=5))
    braze.faults.path_prefix = "/users/delete"
    braze.faults.unavailable = True
    assert project.forget().success

    statuses = {(r["destination"], r["source"]): r["status"] for r in project.proof() if r["identifier_type"]}
    assert statuses[("braze", "audience high")] == "failed" and statuses[("iterable", "audience high")] == "deleted"
    assert "13" in braze.users and "p13@example.com" not in iterable.users
    # Braze's pair keeps the rows that say whom to delete there; the others are purged.
    assert "13" in project.ledger_keys("braze") and "13" not in project.ledger_keys("iterable")
    check = project.check()
    assert not check.passed and "1 requests older than 3 days" in check.description
    assert "dsr-13" not in check.description  # a request id leads to the person: named with payload_samples only
    # The request row disappears meanwhile: the proof still holds the request, and nobody gets person 13 again.
    project.execute("DELETE FROM deletion_requests")
    assert project.sync().success
    assert "13" not in project.ledger_keys("iterable") and "13" not in hook.held

    braze.faults.unavailable = False
    deletes_before = [r for r in iterable.requests if r.method == "DELETE"]
    hook_before = len(hook.bodies)
    assert project.forget().success
    assert "13" not in braze.users and "13" not in project.ledger_keys("braze")
    assert [r for r in iterable.requests if r.method == "DELETE"] == deletes_before  # done ones are not redone
    assert len(hook.bodies) == hook_before
    assert project.check().passed
    newest = {}
    for r in project.proof():
        if r["identifier_type"]:
            newest.setdefault((r["destination"], r["source"]), set()).add(r["status"])
    assert newest[("braze", "audience high")] == {"failed", "deleted"}
    assert newest[("iterable", "audience high")] == {"deleted"}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("deletion_requests: {table: deletion_requests, key: cust}", "has no column for key: `cust`"),
        ("deletion_requests: {table: forget_me, key: customer_id}", "table `forget_me` does not exist"),
    ],
)
def test_a_requests_table_that_does_not_match_the_warehouse_is_an_error_naming_project_yaml(
    tmp_path: Path, hook, fakes, monkeypatch, setting: str, message: str
):
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    p = ForgettingProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", hook)
    p.write("project.yaml", PROJECT.replace(PROJECT.splitlines()[-1], setting))
    outcome = p.forget()
    assert not outcome.success
    assert any(f"project.yaml: deletion_requests: {message}" in e or message in e for e in outcome.errors)
    assert any("project.yaml" in e for e in outcome.errors)


def test_a_deletion_requests_setting_without_a_table_is_an_error_naming_project_yaml(tmp_path: Path):
    p = tmp_path / "project"
    p.mkdir()
    (p / "project.yaml").write_text('name: x\ndeletion_requests: {key: customer_id}\n')
    with pytest.raises(ProjectError, match=r"project\.yaml:2: missing required field `table`"):
        load_project(p)


@pytest.mark.parametrize("url", ["duckdb"], indirect=True)
def test_composable_forget_says_per_request_and_destination_what_happened(project, fakes, monkeypatch):
    from click.testing import CliRunner

    from composable_assets.cli import cli

    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(project.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", project.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(project.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    project.ask_to_forget(12)
    result = CliRunner().invoke(cli, ["forget"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "dsr-12" in line]
    for destination, status in [("braze", "deleted"), ("iterable", "deleted"), ("hook", "deleted"),
                                ("cdi", "deleted"), ("mg", "purged"), ("box", "purged")]:
        assert any(destination in line and status in line for line in lines), (destination, result.output)
    assert "1 of 1 requests done" in result.output
    assert "p12@example.com" not in result.output

    project.ask_to_forget(13)
    fakes["iterable"].faults.path_prefix = "/api/users/"
    fakes["iterable"].faults.unavailable = True
    result = CliRunner().invoke(cli, ["forget"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "1 of 2 requests done; not yet: dsr-13" in result.output
    assert any("iterable" in line and "failed" in line for line in result.output.splitlines() if "dsr-13" in line)

    result = CliRunner().invoke(cli, ["forget", "--request", "dsr-404"])
    assert result.exit_code == 1
    assert "no deletion request `dsr-404`" in result.output and "Traceback" not in result.output


def test_history_archived_to_parquet_is_searched_and_purged_too(tmp_path: Path, hook, fakes, monkeypatch):
    """Person 14 left the mirrors months ago and those days are archived: found there, deleted, purged from it."""
    from composable_assets.governance.archive import archive_location, archived, archived_outbox

    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    p = ForgettingProject(tmp_path, f"duckdb:///{tmp_path / 'warehouse.duckdb'}", hook)
    p.day = "2026-03-02"
    assert p.sync().success
    p.execute("UPDATE people SET score = 1 WHERE id = 14")  # leaves: the mirrors remove 14 from their ledgers
    p.day = "2026-03-03"
    assert p.sync().success
    p.execute("UPDATE people SET name = 'later' WHERE id = 15")
    p.day = "2026-03-04"
    assert p.sync().success
    assert "14" not in p.ledger_keys("braze") and "14" in fakes["braze"].users  # cleared attribute, profile kept
    defs = load_definitions(p.settings)
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey(["governance", "archive"])], instance=p.instance,
        resources=defs.resources, run_config={"ops": {"governance__archive": {"config": {"before": "2026-03-04"}}}},
    )
    assert result.success
    assert "14" not in p.delta_keys("braze")  # only the archive remembers that Braze got 14
    location = archive_location(load_project(p.settings.project_dir).settings.archive, p.settings.data_dir)
    with p.engine.connect() as conn:
        assert "14" in archived(conn, location, "composable", "delta__high__braze")["_key"].to_pylist()
    assert any("p14@example.com" in line for line in archived_outbox(location)["line"].to_pylist())

    p.ask_to_forget(14)
    assert p.forget().success
    assert "14" not in fakes["braze"].users and "14" in fakes["braze"].deleted
    with p.engine.connect() as conn:
        for name in ("delta__high__braze", "delta__high__hook", "delta__high__box"):
            assert "14" not in archived(conn, location, "composable", name)["_key"].to_pylist()
    assert not any("p14@example.com" in line for line in archived_outbox(location)["line"].to_pylist())
    assert {r["destination"] for r in p.proof() if r["status"] == "purged"} >= {"(archive)"}


def test_each_destination_answers_per_identifier_and_answers_are_scrubbed(fakes, tmp_path: Path):
    """Braze by e-mail (with a prioritization), Iterable's "User does not exist" (it echoes the e-mail), a dead API."""
    from composable_assets.destinations import ForgetTarget
    from composable_assets.coordination import Coordination
    from composable_assets.destinations.braze import Braze
    from composable_assets.destinations.iterable import Iterable
    from composable_assets.governance.deletion import scrub

    braze, iterable = fakes["braze"], fakes["iterable"]
    settings = {"max_tries": 1, "backoff_base_seconds": 0.01}
    coordination = Coordination(url=f"sqlite:///{tmp_path / 'coordination.sqlite'}")
    braze.users["email:a@example.com"] = {"email": "a@example.com"}
    at_braze = Braze("braze", {"rest_endpoint": {"env": "BRAZE_REST_ENDPOINT"}, "api_key": {"env": "BRAZE_API_KEY"},
                               **settings}, coordination)
    by_email = ForgetTarget("braze", "email", "run-1", "aud", at_braze.sync_options({}))
    assert [f.status for f in at_braze.forget(by_email, ["a@example.com"])] == ["deleted"]
    assert [f.status for f in at_braze.forget(by_email, ["nobody@example.com"])] == ["not_found"]
    sent = [r.body for r in braze.requests if r.path == "/users/delete"]
    assert sent[0] == {"email_addresses": [{"email": "a@example.com",
                                            "prioritization": ["identified", "most_recently_updated"]}]}
    assert at_braze.capabilities.forget_batch_size == 50

    iterable.users["b@example.com"] = {"email": "b@example.com", "dataFields": {}}
    at_iterable = Iterable("iterable", {"base_url": {"env": "ITERABLE_BASE_URL"}, "api_key": {"env": "ITERABLE_API_KEY"},
                                        **settings}, coordination)
    target = ForgetTarget("iterable", "email", "run-1", "aud", at_iterable.sync_options({}))
    answers = at_iterable.forget(target, ["b@example.com", "ghost@example.com"])
    assert [a.status for a in answers] == ["deleted", "not_found"]
    assert "ghost@example.com" in answers[1].response and "HTTP 400" in answers[1].response  # Iterable echoes it
    assert "@" not in scrub(answers[1].response, ["b@example.com", "ghost@example.com"])
    assert KEY not in answers[0].response

    iterable.faults.unavailable = True
    answers = at_iterable.forget(target, ["c@example.com", "d@example.com"])
    assert [a.status for a in answers] == ["failed", "failed"]
    assert "503" in answers[0].response and "not tried" in answers[1].response
    assert sum(1 for r in iterable.requests if r.method == "DELETE" and "example.com" in r.path and r.path.endswith(("c@example.com", "d@example.com"))) == 1


@pytest.mark.parametrize("url", ["duckdb"], indirect=True)
def test_the_consent_gate_holds_a_delta_that_would_send_someone_who_asked_to_be_forgotten(project):
    """The gate re-checks what is about to leave: a delta computed without the suppression condition is held."""
    import dataclasses

    from composable_assets.assets.audiences import sync_shapes
    from composable_assets.delta.diff import compute_delta
    from composable_assets.store import PairTables
    from composable_assets.governance.consent import consent_conditions
    from composable_assets.governance.gates import judge_delta
    from composable_assets.project.gates import GatesSpec

    project.execute("UPDATE people SET name = 'changed' WHERE id IN (12, 13)")
    refresh = dg.AssetSelection.assets(dg.AssetKey(["model", "people_model"]), dg.AssetKey(["audience", "high"]))
    assert project._run(refresh, None).success
    # The request arrives after the snapshot was built (which leaves out people who asked), before the delta.
    project.ask_to_forget(12)
    spec = load_project(project.settings.project_dir)
    [shape] = [s for s in sync_shapes(spec.audiences["high"], consent_conditions(spec)) if s.destination == "box"]
    tables = PairTables("composable", "high", "box")
    with project.engine.connect() as conn:
        unchecked = compute_delta(conn, tables, dataclasses.replace(shape, allowed=None), "mirror",
                                  run_id="unchecked", partition=dt.date(2026, 3, 3), now=utc_now())
        held = {v.name: v for v in judge_delta(conn, tables, shape, unchecked, "mirror", GatesSpec(), set())}
        checked = compute_delta(conn, tables, shape, "mirror", run_id="checked", partition=dt.date(2026, 3, 3),
                                now=utc_now())
        passed = {v.name: v for v in judge_delta(conn, tables, shape, checked, "mirror", GatesSpec(), set())}
    assert unchecked.updated == 2 and held["consent_applied"].blocks
    assert held["consent_applied"].metadata["members_without_consent"] == 1
    # With the condition: 13 is updated; 12, still in the ledger until the deletion runs, is only removed (mirror).
    assert (checked.updated, checked.removed) == (1, 1) and passed["consent_applied"].passed

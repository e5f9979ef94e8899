"""Consent: a destination naming a purpose only ever receives members who granted it, whatever the data."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composable_assets.project import ProjectError

from .conftest import Recording
from .test_engines_flow import EngineProject, people

PROJECT = 'name: small\nstart_date: "2026-01-01"\nconsent: {table: consents, key: id}\n'
DESTINATIONS = (
    "rec_mirror: {type: recording, batch_size: 2, consent: email_marketing}\n"
    "rec_upsert: {type: recording, batch_size: 3}\n"
)


class ConsentProject(EngineProject):
    """The small project (audience: score over 10) with a consents table; the mirror needs email_marketing."""

    def __init__(self, root: Path):
        super().__init__(root, f"duckdb:///{root / 'warehouse.duckdb'}")
        (self.settings.project_dir / "project.yaml").write_text(PROJECT)
        (self.settings.project_dir / "destinations.yaml").write_text(DESTINATIONS)

    def set_consents(self, granted: dict[int, bool]) -> None:
        with self.engine.connect() as conn:
            conn.execute("CREATE OR REPLACE TABLE consents (id BIGINT, purpose VARCHAR, granted BOOLEAN)")
            rows = [(i, "email_marketing", g) for i, g in granted.items()] + [(i, "push", True) for i in granted]
            conn.execute(f"INSERT INTO consents VALUES {', '.join(['(?, ?, ?)'] * len(rows))}", [v for r in rows for v in r])


def test_only_consented_members_are_sent_and_a_revocation_removes_from_the_mirror(tmp_path: Path):
    p = ConsentProject(tmp_path)
    p.set_people(people())  # members 11..20
    p.set_consents({i: i % 2 == 0 for i in range(1, 21)})  # even ids granted email_marketing
    assert p.sync().success
    assert set(p.ledger("rec_mirror")) == {"12", "14", "16", "18", "20"}
    assert set(p.ledger("rec_upsert")) == {str(i) for i in range(11, 21)}  # no consent purpose: everyone

    Recording.received.clear()
    p.set_consents({i: i % 2 == 0 and i != 14 for i in range(1, 21)} | {11: True})  # 14 revokes, 11 grants
    assert p.sync().success
    assert sorted((r.change, r.key) for r in Recording.received["rec_mirror"]) == [("add", "11"), ("remove", "14")]
    assert Recording.received["rec_upsert"] == []


def test_a_consent_purpose_without_a_consent_table_is_an_error_naming_the_file(tmp_path: Path):
    p = ConsentProject(tmp_path)
    (p.settings.project_dir / "project.yaml").write_text('name: small\nstart_date: "2026-01-01"\n')
    p.set_people(people())
    with pytest.raises(ProjectError, match="rec_mirror.*email_marketing.*no `consent:` table") as info:
        p.sync()
    assert "destinations.yaml" in str(info.value)


def test_the_consent_gate_holds_a_delta_that_would_send_someone_without_consent(tmp_path: Path):
    """The gate re-checks what is about to leave: a delta computed without the consent condition is held."""
    import dataclasses
    import datetime as dt

    from composable_assets.governance.consent import consent_conditions
    from composable_assets.delta.diff import compute_delta
    from composable_assets.governance.gates import judge_delta
    from composable_assets.delta.snapshot import SyncShape
    from composable_assets.store import PairTables
    from composable_assets.project import load_project
    from composable_assets.project.gates import GatesSpec

    p = ConsentProject(tmp_path)
    p.set_people(people())
    p.set_consents({i: i % 2 == 0 for i in range(1, 21)})
    assert p.sync().success  # builds the audience snapshot; the mirror got the consented half
    allowed = consent_conditions(load_project(p.settings.project_dir))["rec_mirror"]
    shape = SyncShape("rec_mirror", "id", {"email": "email", "name": "name"}, allowed=allowed)
    tables = PairTables("composable", "high", "rec_mirror")
    with p.engine.connect() as conn:
        run = compute_delta(conn, tables, dataclasses.replace(shape, allowed=None), "mirror",
                            run_id="no-consent-check", partition=dt.date(2026, 3, 3), now=dt.datetime(2026, 3, 3))
        verdict = {v.name: v for v in judge_delta(conn, tables, shape, run, "mirror", GatesSpec(), set())}
    assert run.added == 5  # the five odd members, who did not consent
    assert verdict["consent_applied"].blocks and verdict["consent_applied"].metadata["members_without_consent"] == 5


members = st.dictionaries(st.integers(1, 40), st.tuples(st.integers(0, 30), st.booleans()), max_size=25)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=members, second=members)
def test_no_member_without_consent_ever_reaches_the_consent_destination(first, second):
    """Random people, scores and consents, two syncs: the mirror holds exactly the consented audience each time."""
    Recording.reset()
    with tempfile.TemporaryDirectory() as folder:
        p = ConsentProject(Path(folder))
        for state in (first, second):
            rows = [(i, f"p{i}@example.com", f"n{i}", score) for i, (score, _) in sorted(state.items())]
            p.set_people(rows or [(999, "x@example.com", "x", 0)])
            p.set_consents({i: granted for i, (_, granted) in state.items()} | {999: False})
            assert p.sync().success
            audience = {str(i) for i, (score, _) in state.items() if score > 10}
            consented = {str(i) for i, (_, granted) in state.items() if granted}
            assert set(p.ledger("rec_mirror")) == audience & consented
            sent = {r.key for r in Recording.received["rec_mirror"] if r.change != "remove"}
            assert sent <= consented
            Recording.received.clear()


def test_event_streams_only_send_events_of_people_who_granted_the_purpose_at_send_time(tmp_path: Path):
    from .stream_project import DESTINATIONS, StreamProject, order, utc_now

    p = StreamProject(tmp_path)
    p.write("project.yaml", 'name: events\nstart_date: "2026-01-01"\nconsent: {table: consents, key: customer_id}\n')
    box = "box: {type: outbox, batch_size: 5}"
    destinations = DESTINATIONS.format(batch=5, concurrency=1)
    assert box in destinations
    p.write("destinations.yaml", destinations.replace(box, "box: {type: outbox, batch_size: 5, consent: push}"))

    def grant(push: set[int]) -> None:
        with p.engine.connect() as conn:
            conn.execute("CREATE OR REPLACE TABLE consents (customer_id BIGINT, purpose VARCHAR, granted BOOLEAN)")
            for customer in range(1, 8):
                conn.execute("INSERT INTO consents VALUES (?, 'push', ?)", [customer, customer in push])
                conn.execute("INSERT INTO consents VALUES (?, 'email_marketing', true)", [customer])

    def customers_of(event_ids: set[str]) -> set[int]:
        return {int(e.split(":")[1]) % 7 + 1 for e in event_ids}  # order() gives order n to customer n % 7 + 1

    now = utc_now()
    grant({1, 3, 5})
    p.add_orders([order(n, now - dt.timedelta(minutes=30 - n)) for n in range(1, 15)])
    assert p.run("box").success
    first = set(p.outbox_ids())
    assert customers_of(first) == {1, 3, 5}
    assert first == {f"orders:{n}" for n in range(1, 15) if n % 7 + 1 in {1, 3, 5}}

    grant({3, 5, 7})  # 1 revokes, 7 grants
    p.add_orders([order(n, now - dt.timedelta(minutes=5)) for n in range(15, 29)])
    assert p.run("box").success
    second = set(p.outbox_ids()) - first
    assert second and customers_of(second) <= {3, 5, 7}  # consent is checked when sending, in the warehouse
    assert {f"orders:{n}" for n in range(15, 29) if n % 7 + 1 in {3, 5, 7}} <= second


def test_a_consent_table_missing_from_the_warehouse_fails_the_delta_naming_project_yaml(tmp_path: Path):
    p = ConsentProject(tmp_path)
    p.set_people(people())  # no consents table written
    outcome = p.sync()
    assert not outcome.success
    assert any("project.yaml `consent:` names the table `consents`" in e for e in outcome.errors), outcome.errors
    assert Recording.received["rec_mirror"] == []
    assert len(Recording.received["rec_upsert"]) == 10  # a destination without a consent purpose does not need it


@settings(max_examples=40, deadline=None)
@given(
    requests=st.dictionaries(st.integers(1, 12), st.integers(0, 5), max_size=8),
    consents=st.dictionaries(st.integers(1, 12), st.tuples(st.booleans(), st.integers(0, 5)), max_size=8),
    checked=st.sets(st.integers(1, 12), min_size=1, max_size=5),
)
def test_a_member_condition_narrowed_to_the_members_checked_answers_the_same_for_them(requests, consents, checked):
    """The incremental path reads only the checked members' requests and consents; their answers must not change."""
    import duckdb

    from composable_assets.warehouse.sql import among_keys
    from composable_assets.governance.consent import not_forgotten_predicate
    from composable_assets.project import load_project

    root = Path(tempfile.mkdtemp())
    (root / "project.yaml").write_text(
        "name: t\ndeletion_requests: {table: deletion_requests, key: customer_id, requested_at: requested_at}\n"
        "consent: {table: consents, key: customer_id, purpose: purpose, granted: granted, updated_at: updated_at}\n"
    )
    project = load_project(root)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA composable; CREATE TABLE composable.deletion_log (key VARCHAR, requested_at TIMESTAMP)")
    con.execute("CREATE TABLE deletion_requests (customer_id BIGINT, requested_at TIMESTAMP)")
    con.execute("CREATE TABLE consents (customer_id BIGINT, purpose VARCHAR, granted BOOLEAN, updated_at TIMESTAMP)")
    day = dt.datetime(2026, 12, 1)
    for who, at in requests.items():
        con.execute("INSERT INTO deletion_requests VALUES (?, ?)", [who, day + dt.timedelta(days=at)])
    for who, (granted, at) in consents.items():
        con.execute("INSERT INTO consents VALUES (?, 'email', ?, ?)", [who, granted, day + dt.timedelta(days=at)])
    con.execute("CREATE TABLE members AS SELECT i AS customer_id, CAST(i AS VARCHAR) AS _key FROM range(1, 13) t(i)")
    con.execute("CREATE TABLE checked (key VARCHAR)")
    con.executemany("INSERT INTO checked VALUES (?)", [[str(k)] for k in checked])
    for column in ("_key", "customer_id"):
        whole = not_forgotten_predicate(project, column)
        narrowed = among_keys(whole, "SELECT key FROM checked")
        assert narrowed != whole
        only = "_key IN (SELECT key FROM checked)"
        answers = [con.execute(f"SELECT _key, ({c}) FROM members WHERE {only} ORDER BY 1").fetchall()
                   for c in (whole, narrowed)]
        assert answers[0] == answers[1]

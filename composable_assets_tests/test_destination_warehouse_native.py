"""Warehouse-native destinations: Braze CDI tables and the MessageGears view, written into the DuckDB file."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from composable_assets.destinations import DESTINATION_TYPES, braze_cdi
from composable_assets.project import ProjectError, load_project

from .conftest import SMALL_DESTINATIONS

MEMBERS = {str(i) for i in range(11, 21)}

CDI_DESTINATIONS = """\
braze_ext: {type: braze_cdi}
braze_mail: {type: braze_cdi, schema: braze_mail_cdi, table_prefix: mail_}
braze_alias: {type: braze_cdi, table_prefix: alias_}
"""

CDI_AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: braze_ext
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email, name: name}
    options: {membership_attribute: in_high}
  - destination: braze_mail
    mode: mirror
    identifier: {email: email}
    fields: {email: email, name: name, score: score}
  - destination: braze_alias
    mode: mirror
    identifier: {user_alias: id}
    fields: {name: name}
    options: {alias_label: crm_id, on_remove: clear_attribute, membership_attribute: in_high}
"""

EXT = ("braze_cdi", "CDI_USERS_ATTRIBUTES_SYNC")
EXT_DELETE = ("braze_cdi", "CDI_USERS_DELETE_SYNC")
MAIL = ("braze_mail_cdi", "MAIL_CDI_USERS_ATTRIBUTES_SYNC")
ALIAS = ("braze_cdi", "ALIAS_CDI_USERS_ATTRIBUTES_SYNC")
IDENTIFIER_COLUMNS = ["EXTERNAL_ID", "ALIAS_NAME", "ALIAS_LABEL", "EMAIL", "PHONE"]


def people(**changes: tuple[str | None, str | None, int]) -> list[tuple[int, str | None, str | None, int]]:
    """The fixture's people (ids 1..20, score = id), with some ids' (email, name, score) replaced."""
    rows = {i: (f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)}
    rows.update({int(k.removeprefix("p")): v for k, v in changes.items()})
    return [(i, *v) for i, v in sorted(rows.items())]


@pytest.fixture
def cdi(small):
    small.write("destinations.yaml", SMALL_DESTINATIONS + CDI_DESTINATIONS)
    small.write("audiences/cdi.yaml", CDI_AUDIENCE)
    return small


def sync_cdi(project):
    outcome = project.sync(audience="cdi")
    assert outcome.success, outcome.errors
    return outcome


def rows_of(project, where: tuple[str, str]) -> list[dict]:
    """Rows of a CDI table in insertion order, PAYLOAD parsed."""
    columns = [c for c, _, _ in columns_of(project, *where)]
    rows = [dict(zip(columns, r)) for r in project.query(f'SELECT * FROM "{where[0]}"."{where[1]}" ORDER BY rowid')]
    for row in rows:
        if "PAYLOAD" in row:
            row["PAYLOAD"] = json.loads(row["PAYLOAD"])
    return rows


def payload_by(rows: list[dict], column: str) -> dict[str, dict]:
    return {r[column]: r["PAYLOAD"] for r in rows}


def columns_of(project, schema: str, name: str) -> list[tuple[str, str, str]]:
    return project.query(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    )


# --- Braze CDI -------------------------------------------------------------------------------


def test_cdi_tables_have_the_documented_shapes(cdi):
    sync_cdi(cdi)
    assert columns_of(cdi, *EXT) == [
        ("UPDATED_AT", "TIMESTAMP", "NO"),
        ("EXTERNAL_ID", "VARCHAR", "YES"),
        ("ALIAS_NAME", "VARCHAR", "YES"),
        ("ALIAS_LABEL", "VARCHAR", "YES"),
        ("EMAIL", "VARCHAR", "YES"),
        ("PHONE", "VARCHAR", "YES"),
        ("PAYLOAD", "VARCHAR", "NO"),
    ]
    assert columns_of(cdi, *EXT_DELETE) == [
        ("UPDATED_AT", "TIMESTAMP", "NO"),
        ("EXTERNAL_ID", "VARCHAR", "YES"),
        ("ALIAS_NAME", "VARCHAR", "YES"),
        ("ALIAS_LABEL", "VARCHAR", "YES"),
    ]
    # Prefix and schema come from the destination's settings.
    assert [c for c, _, _ in columns_of(cdi, *MAIL)][-1] == "PAYLOAD"
    assert columns_of(cdi, "braze_mail_cdi", "MAIL_CDI_USERS_DELETE_SYNC")


def test_first_sync_writes_one_row_per_member_with_one_identifier_and_every_non_null_field(cdi):
    cdi.set_people(people(p15=("p15@example.com", None, 15)))
    sync_cdi(cdi)
    ext = rows_of(cdi, EXT)
    assert len(ext) == 10
    assert all([c for c in IDENTIFIER_COLUMNS if row[c] is not None] == ["EXTERNAL_ID"] for row in ext)
    assert payload_by(ext, "EXTERNAL_ID")["11"] == {"email": "p11@example.com", "name": "name11", "in_high": True}
    assert payload_by(ext, "EXTERNAL_ID")["15"] == {"email": "p15@example.com", "in_high": True}
    mail = rows_of(cdi, MAIL)
    assert all([c for c in IDENTIFIER_COLUMNS if row[c] is not None] == ["EMAIL"] for row in mail)
    # The identifier is never inside PAYLOAD, even when it is also mapped as a field. A mirror by email clears
    # leavers' membership attribute (CDI cannot delete by email), so members carry it: in_<audience> by default.
    assert payload_by(mail, "EMAIL")["p11@example.com"] == {"name": "name11", "score": 11, "in_cdi": True}
    alias = rows_of(cdi, ALIAS)
    assert {(r["ALIAS_NAME"], r["ALIAS_LABEL"]) for r in alias} == {(k, "crm_id") for k in MEMBERS}
    assert all(r["EXTERNAL_ID"] is None and r["EMAIL"] is None for r in alias)
    assert rows_of(cdi, EXT_DELETE) == []


def test_an_update_sends_only_the_changed_attributes_and_null_for_a_cleared_one(cdi):
    sync_cdi(cdi)
    before = len(rows_of(cdi, EXT)), len(rows_of(cdi, MAIL))
    cdi.set_people(people(p12=("p12@example.com", "renamed", 12), p13=("p13@example.com", None, 13)))
    outcome = sync_cdi(cdi)
    updated = {s.destination: s.count("updated") for s in outcome.syncs}
    assert updated == {"braze_ext": 2, "braze_mail": 2, "braze_alias": 2}
    ext = rows_of(cdi, EXT)[before[0] :]
    # The membership attribute is not sent again: Braze has it since the add (one data point saved per update).
    assert payload_by(ext, "EXTERNAL_ID") == {"12": {"name": "renamed"}, "13": {"name": None}}
    mail = rows_of(cdi, MAIL)[before[1] :]
    assert payload_by(mail, "EMAIL") == {"p12@example.com": {"name": "renamed"}, "p13@example.com": {"name": None}}


def test_a_member_whose_identifier_changed_gets_every_attribute(cdi):
    sync_cdi(cdi)
    before = len(rows_of(cdi, MAIL))
    cdi.set_people(people(p12=("new12@example.com", "name12", 12)))
    sync_cdi(cdi)
    # By email, the new address may be a profile that has nothing yet.
    assert payload_by(rows_of(cdi, MAIL)[before:], "EMAIL") == {
        "new12@example.com": {"name": "name12", "score": 12, "in_cdi": True}
    }
    # By external id, only the email attribute changed.
    assert payload_by(rows_of(cdi, EXT)[10:], "EXTERNAL_ID") == {"12": {"email": "new12@example.com"}}


def test_leavers_are_deleted_or_cleared_as_their_identifier_allows(cdi):
    sync_cdi(cdi)
    cdi.set_people(people(p11=("p11@example.com", "name11", 3)))
    outcome = sync_cdi(cdi)
    removed = {s.destination: (s.count("removed"), s.count("failed")) for s in outcome.syncs}
    assert removed == {"braze_ext": (1, 0), "braze_alias": (1, 0), "braze_mail": (1, 0)}
    # By external id: a delete row, in the table without PAYLOAD.
    [delete] = rows_of(cdi, EXT_DELETE)
    assert (delete["EXTERNAL_ID"], delete["ALIAS_NAME"], delete["ALIAS_LABEL"]) == ("11", None, None)
    assert len(rows_of(cdi, EXT)) == 10
    # By alias with on_remove: clear_attribute: the membership attribute is cleared instead.
    cleared = rows_of(cdi, ALIAS)[10:]
    assert [(r["ALIAS_NAME"], r["PAYLOAD"]) for r in cleared] == [("11", {"in_high": None})]
    # By email: CDI cannot delete, so the default membership attribute, in_<audience>, is cleared.
    assert [(r["EMAIL"], r["PAYLOAD"]) for r in rows_of(cdi, MAIL)[10:]] == [("p11@example.com", {"in_cdi": None})]
    assert cdi.query("SELECT count(*) FROM composable.sync_failures") == [(0,)]
    assert "11" not in cdi.ledger("braze_mail", audience="cdi") and "11" not in cdi.ledger("braze_ext", audience="cdi")


def test_updated_at_strictly_increases_across_rows_and_runs_even_if_the_clock_goes_back(cdi, monkeypatch):
    sync_cdi(cdi)
    first = [r["UPDATED_AT"] for r in rows_of(cdi, EXT)]
    # The clock steps back a quarter of a century and stops.
    monkeypatch.setattr(braze_cdi, "utc_now", lambda: dt.datetime(2001, 1, 1))
    cdi.set_people(people(p11=("p11@example.com", "name11", 3), p12=("p12@example.com", "x", 12)))
    sync_cdi(cdi)
    cdi.set_people(people(p11=("p11@example.com", "name11", 3), p12=("p12@example.com", "y", 12)))
    sync_cdi(cdi)
    for where in (EXT, EXT_DELETE, MAIL, ALIAS):
        stamps = [r["UPDATED_AT"] for r in rows_of(cdi, where)]
        assert stamps == sorted(set(stamps)), where  # strictly increasing in insertion order
    later = [r["UPDATED_AT"] for r in rows_of(cdi, EXT)][len(first) :]
    assert len(later) == 2 and min(later) > max(first)


def test_a_run_without_changes_writes_nothing(cdi):
    sync_cdi(cdi)
    tables = (EXT, EXT_DELETE, MAIL, ALIAS)
    before = [len(rows_of(cdi, t)) for t in tables]
    outcome = sync_cdi(cdi)
    assert [len(rows_of(cdi, t)) for t in tables] == before
    assert all(s.count("added") + s.count("updated") + s.count("removed") == 0 for s in outcome.syncs)


def test_deleting_by_email_is_refused_when_the_project_loads(cdi):
    cdi.write("audiences/cdi.yaml", CDI_AUDIENCE.replace("fields: {email: email, name: name, score: score}", (
        "fields: {email: email, name: name, score: score}\n    options: {on_remove: delete}")))
    with pytest.raises(ProjectError) as raised:
        load_project(cdi.settings.project_dir, known_destination_types=DESTINATION_TYPES)
    assert str(raised.value).startswith("audiences/cdi.yaml:14: `syncs[1].options`: Braze CDI cannot delete users by email")


def test_an_alias_without_its_label_fails_the_sync_before_writing(cdi):
    cdi.write("audiences/cdi.yaml", CDI_AUDIENCE.replace("alias_label: crm_id, ", ""))
    outcome = cdi.sync(audience="cdi", destination="braze_alias")
    assert not outcome.success
    assert any("user_alias needs options.alias_label" in e for e in outcome.errors), outcome.errors
    assert cdi.ledger("braze_alias", audience="cdi") == {}


# --- MessageGears ----------------------------------------------------------------------------

MG_DESTINATIONS = """\
mg_mirror: {type: messagegears}
mg_upsert: {type: messagegears, schema: mg_upsert}
"""

MG_AUDIENCE = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: mg_mirror
    mode: mirror
    identifier: {external_id: id}
    fields: {email: email, name: name}
  - destination: mg_upsert
    mode: upsert
    identifier: {email: email}
    fields: {name: name, score: score}
"""


@pytest.fixture
def mg(small):
    small.write("destinations.yaml", SMALL_DESTINATIONS + MG_DESTINATIONS)
    small.write("audiences/mg.yaml", MG_AUDIENCE)
    return small


def sync_mg(project):
    outcome = project.sync(audience="mg")
    assert outcome.success, outcome.errors
    return outcome


def view(project, schema: str = "messagegears") -> dict[str, tuple]:
    """member_key -> the rest of the view's row."""
    return {r[0]: r[1:] for r in project.query(f'SELECT * FROM "{schema}".mg')}


def expected_mirror(rows) -> dict[str, tuple]:
    return {str(i): (str(i), email, name) for i, email, name, score in rows if score > 10}


def test_the_view_has_the_documented_columns_and_the_audience_after_the_first_sync(mg):
    sync_mg(mg)
    assert columns_of(mg, "messagegears", "mg") == [
        ("member_key", "VARCHAR", "YES"),
        ("external_id", "VARCHAR", "YES"),
        ("email", "VARCHAR", "YES"),
        ("name", "VARCHAR", "YES"),
        ("updated_at", "TIMESTAMP", "YES"),
    ]
    upsert_columns = [c for c, _, _ in columns_of(mg, "mg_upsert", "mg")]
    assert upsert_columns == ["member_key", "email", "name", "score", "updated_at"]
    assert {k: v[:3] for k, v in view(mg).items()} == expected_mirror(people())
    assert {k: v[:3] for k, v in view(mg, "mg_upsert").items()} == {
        str(i): (f"p{i}@example.com", f"name{i}", str(i)) for i in range(11, 21)
    }
    [(comment,)] = mg.query(
        "SELECT table_comment FROM information_schema.tables WHERE table_schema = 'messagegears' AND table_name = 'mg'"
    )
    assert comment == "composable: audience mg synced to destination mg_mirror"


def test_a_change_shows_with_a_new_updated_at_for_the_changed_member_only(mg):
    sync_mg(mg)
    before = view(mg)
    rows = people(p12=("p12@example.com", "renamed", 12), p13=("p13@example.com", None, 13))
    mg.set_people(rows)
    sync_mg(mg)
    after = view(mg)
    assert {k: v[:3] for k, v in after.items()} == expected_mirror(rows)
    assert {k for k in after if after[k][3] != before[k][3]} == {"12", "13"}
    assert all(after[k][3] > before[k][3] for k in ("12", "13"))


def test_mirror_drops_a_leaver_and_upsert_keeps_it(mg):
    sync_mg(mg)
    rows = people(p11=("p11@example.com", "name11", 3))
    mg.set_people(rows)
    sync_mg(mg)
    assert set(view(mg)) == MEMBERS - {"11"}
    assert {k: v[:3] for k, v in view(mg).items()} == expected_mirror(rows)
    assert set(view(mg, "mg_upsert")) == MEMBERS


def test_a_new_field_becomes_a_column_when_the_sync_finishes(mg):
    sync_mg(mg)
    widened = MG_AUDIENCE.replace("{email: email, name: name}", "{email: email, name: name, score: score}")
    mg.write("audiences/mg.yaml", widened)
    sync_mg(mg)
    assert [c for c, _, _ in columns_of(mg, "messagegears", "mg")] == [
        "member_key", "external_id", "email", "name", "score", "updated_at"
    ]
    assert view(mg)["15"][:4] == ("15", "p15@example.com", "name15", "15")


def test_a_second_destination_does_not_take_over_the_view(mg):
    mg.write("destinations.yaml", SMALL_DESTINATIONS + MG_DESTINATIONS.replace(", schema: mg_upsert", ""))
    outcome = mg.sync(audience="mg")
    assert not outcome.success
    assert any("messagegears.mg exists and is not the view of" in e for e in outcome.errors), outcome.errors
    # Whichever synced first keeps its view.
    assert len(view(mg)) == 10

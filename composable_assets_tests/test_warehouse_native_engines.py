"""Braze CDI tables and the MessageGears view on every warehouse engine: one test body each, the real assets."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg

from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.destinations import braze_cdi
from composable_assets.project import load_project
from composable_assets.runner import RunOutcome, run_selection
from composable_assets.settings import Settings
from composable_assets.warehouse import engine_from_url

from .conftest import SMALL_MODEL
from .test_destination_warehouse_native import CDI_AUDIENCE, CDI_DESTINATIONS, MG_AUDIENCE, MG_DESTINATIONS

MICROSECOND = dt.timedelta(microseconds=1)
EXT = '"braze_cdi"."CDI_USERS_ATTRIBUTES_SYNC"'
EXT_DELETE = '"braze_cdi"."CDI_USERS_DELETE_SYNC"'
MAIL = '"braze_mail_cdi"."MAIL_CDI_USERS_ATTRIBUTES_SYNC"'
ALIAS = '"braze_cdi"."ALIAS_CDI_USERS_ATTRIBUTES_SYNC"'
IDENTIFIERS = ["EXTERNAL_ID", "ALIAS_NAME", "ALIAS_LABEL", "EMAIL", "PHONE"]


class WarehouseProject:
    """A project folder over `people` (id, email, name, score) on any warehouse, written through its connection."""

    def __init__(self, root: Path, url: str, destinations: str, audience: str, name: str):
        self.settings = Settings(project_dir=root / "project", warehouse_url=url, data_dir=root / "data")
        self.engine = engine_from_url(url)
        self.instance = dg.DagsterInstance.ephemeral()
        self.audience = name
        self.write("project.yaml", 'name: native\nstart_date: "2026-01-01"\n')
        self.write("models/people_model.sql", SMALL_MODEL)
        self.write("destinations.yaml", destinations)
        self.write(f"audiences/{name}.yaml", audience)
        self.set_people()

    def write(self, path: str, text: str) -> None:
        target = self.settings.project_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    def set_people(self, **changes: tuple[str | None, str | None, int]) -> list[tuple]:
        """ids 1..20 as (id, email, name, score = id), some replaced by (email, name, score); returns the rows."""
        people = {i: (f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)}
        people.update({int(k.removeprefix("p")): v for k, v in changes.items()})
        rows = [(i, *v) for i, v in sorted(people.items())]
        with self.engine.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS people")
            conn.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
            conn.execute(f"INSERT INTO people VALUES {', '.join(['(?, ?, ?, ?)'] * len(rows))}", [v for r in rows for v in r])
        return rows

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.engine.connect() as conn:
            return conn.fetch_all(sql, params)

    def sync(self, destination: str | None = None) -> RunOutcome:
        defs = load_definitions(self.settings)
        selection = audience_selection(load_project(self.settings.project_dir), self.audience, destination)
        return run_selection(defs, selection, "2026-03-02", self.instance)

    def synced(self) -> RunOutcome:
        outcome = self.sync()
        assert outcome.success, outcome.errors
        return outcome

    def cdi_rows(self, name: str) -> list[dict]:
        """Rows of a CDI table in UPDATED_AT order, PAYLOAD kept as the text the warehouse holds."""
        with self.engine.connect() as conn:
            table = conn.fetch_arrow(f'SELECT * FROM {name} ORDER BY "UPDATED_AT"')
        return table.to_pylist()


def payloads(rows: list[dict], column: str) -> dict[str, str]:
    return {r[column]: r["PAYLOAD"] for r in rows}


def text(payload: dict) -> str:
    """PAYLOAD as it must be stored on every engine: compact JSON, keys in mapping order, NULL as null."""
    return json.dumps(payload, separators=(",", ":"))


def test_braze_cdi_tables_are_written_alike_on_every_engine(tmp_path, warehouse_url, monkeypatch):
    p = WarehouseProject(tmp_path, warehouse_url, CDI_DESTINATIONS, CDI_AUDIENCE, "cdi")
    p.set_people(p15=("p15@example.com", None, 15))

    # First sync: one row per member, one identifier column filled, every non-null field in PAYLOAD.
    p.synced()
    ext = p.cdi_rows(EXT)
    assert len(ext) == 10
    assert all([c for c in IDENTIFIERS if row[c] is not None] == ["EXTERNAL_ID"] for row in ext)
    assert payloads(ext, "EXTERNAL_ID")["11"] == text({"email": "p11@example.com", "name": "name11", "in_high": True})
    assert payloads(ext, "EXTERNAL_ID")["15"] == text({"email": "p15@example.com", "in_high": True})
    mail = p.cdi_rows(MAIL)
    # By email (CDI cannot delete by it) a mirror's members carry in_<audience>, which leavers lose.
    assert payloads(mail, "EMAIL") == {
        f"p{i}@example.com": text({"name": f"name{i}", "score": i, "in_cdi": True} if i != 15 else {"score": 15, "in_cdi": True})
        for i in range(11, 21)
    }
    alias = p.cdi_rows(ALIAS)
    assert {(r["ALIAS_NAME"], r["ALIAS_LABEL"]) for r in alias} == {(str(i), "crm_id") for i in range(11, 21)}
    assert p.cdi_rows(EXT_DELETE) == []
    # UPDATED_AT: one microsecond apart within a batch (no engine rounds them together).
    stamps = [r["UPDATED_AT"] for r in ext]
    assert [b - a for a, b in zip(stamps, stamps[1:])] == [MICROSECOND] * 9

    # An update sends only what changed; a field that became null is sent as null.
    p.set_people(p12=("p12@example.com", "renamed", 12), p13=("p13@example.com", None, 13), p15=("p15@example.com", None, 15))
    p.synced()
    assert payloads(p.cdi_rows(EXT)[10:], "EXTERNAL_ID") == {
        "12": text({"name": "renamed"}),
        "13": text({"name": None}),
    }
    assert payloads(p.cdi_rows(MAIL)[10:], "EMAIL") == {
        "p12@example.com": text({"name": "renamed"}),
        "p13@example.com": text({"name": None}),
    }

    # The clock steps back a quarter of a century: UPDATED_AT still moves forward, after every earlier row.
    before = max(r["UPDATED_AT"] for r in p.cdi_rows(EXT))
    monkeypatch.setattr(braze_cdi, "utc_now", lambda: dt.datetime(2001, 1, 1))
    p.set_people(p11=("p11@example.com", "name11", 3), p12=("p12@example.com", "again", 12), p13=("p13@example.com", None, 13), p15=("p15@example.com", None, 15))
    outcome = p.synced()
    removed = {s.destination: (s.count("removed"), s.count("failed")) for s in outcome.syncs}
    assert removed == {"braze_ext": (1, 0), "braze_alias": (1, 0), "braze_mail": (1, 0)}
    later = p.cdi_rows(EXT)[12:]
    assert [(r["EXTERNAL_ID"], r["PAYLOAD"]) for r in later] == [("12", text({"name": "again"}))]
    assert later[0]["UPDATED_AT"] == before + MICROSECOND
    # Leavers: a delete row by external id (no PAYLOAD column), the membership cleared by alias and by email.
    [delete] = p.cdi_rows(EXT_DELETE)
    assert (delete["EXTERNAL_ID"], delete["ALIAS_NAME"], delete["ALIAS_LABEL"]) == ("11", None, None)
    assert "PAYLOAD" not in delete and delete["UPDATED_AT"] == dt.datetime(2001, 1, 1)  # its own table's sequence
    assert [r["ALIAS_NAME"] for r in p.cdi_rows(ALIAS) if r["PAYLOAD"] == text({"in_high": None})] == ["11"]
    assert [r["EMAIL"] for r in p.cdi_rows(MAIL) if r["PAYLOAD"] == text({"in_cdi": None})] == ["p11@example.com"]
    assert p.query("SELECT count(*) FROM composable.sync_failures") == [(0,)]
    for name in (EXT, EXT_DELETE, MAIL, ALIAS):
        [(rows, distinct)] = p.query(f'SELECT count(*), count(DISTINCT "UPDATED_AT") FROM {name}')
        assert rows == distinct, name

    # Nothing changed: nothing is written.
    sizes = [len(p.cdi_rows(name)) for name in (EXT, EXT_DELETE, MAIL, ALIAS)]
    p.synced()
    assert [len(p.cdi_rows(name)) for name in (EXT, EXT_DELETE, MAIL, ALIAS)] == sizes


def view(p: WarehouseProject, schema: str = "messagegears") -> tuple[list[str], dict[str, tuple]]:
    """The view's column names, and member_key -> the rest of its row."""
    with p.engine.connect() as conn:
        table = conn.fetch_arrow(f'SELECT * FROM "{schema}"."mg"')
    rows = table.to_pylist()
    return table.column_names, {r["member_key"]: tuple(list(r.values())[1:]) for r in rows}


def test_the_messagegears_view_selects_the_same_rows_on_every_engine(tmp_path, warehouse_url):
    p = WarehouseProject(tmp_path, warehouse_url, MG_DESTINATIONS, MG_AUDIENCE, "mg")
    p.synced()
    columns, mirror = view(p)
    assert columns == ["member_key", "external_id", "email", "name", "updated_at"]
    assert {k: v[:3] for k, v in mirror.items()} == {str(i): (str(i), f"p{i}@example.com", f"name{i}") for i in range(11, 21)}
    assert all(isinstance(v[3], dt.datetime) for v in mirror.values())
    columns, upsert = view(p, "mg_upsert")
    assert columns == ["member_key", "email", "name", "score", "updated_at"]
    assert {k: v[:3] for k, v in upsert.items()} == {str(i): (f"p{i}@example.com", f"name{i}", str(i)) for i in range(11, 21)}

    # A change: 12 renamed, 13's name cleared (NULL in the view), 11 leaves (mirror drops it, upsert keeps it).
    p.set_people(p11=("p11@example.com", "name11", 3), p12=("p12@example.com", "renamed", 12), p13=("p13@example.com", None, 13))
    p.synced()
    _, after = view(p)
    assert set(after) == {str(i) for i in range(12, 21)}
    assert (after["12"][2], after["13"][2], after["14"][2]) == ("renamed", None, "name14")
    assert {k for k in after if after[k][3] != mirror[k][3]} == {"12", "13"}
    assert set(view(p, "mg_upsert")[1]) == {str(i) for i in range(11, 21)}

    # A new field becomes a column, in mapping order, before updated_at (the view is replaced whole).
    p.write("audiences/mg.yaml", MG_AUDIENCE.replace("{email: email, name: name}", "{email: email, name: name, score: score}"))
    p.synced()
    columns, widened = view(p)
    assert columns == ["member_key", "external_id", "email", "name", "score", "updated_at"]
    assert widened["15"][:4] == ("15", "p15@example.com", "name15", "15")

    # A second destination publishing into the same schema does not take the view over.
    p.write("destinations.yaml", MG_DESTINATIONS.replace(", schema: mg_upsert", ""))
    outcome = p.sync()
    assert not outcome.success
    assert any("messagegears.mg exists and is not the view of" in e for e in outcome.errors), outcome.errors
    assert len(view(p)[1]) == 9

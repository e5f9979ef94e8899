"""The delivery's lean paths give what the plain ones gave: spliced Braze bodies, lazily parsed rows, the HTTP
client's retries and answers (over libcurl), reserved rate budget, and checkpoints written once per intent window."""

from __future__ import annotations

import contextlib
import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from collections.abc import Iterator
from typing import Any

import certifi
import duckdb
import pycurl
import pytest

import composable_assets.delivery.audience as audience
from composable_assets.coordination import Coordination, Limit
from composable_assets.destinations import (
    BatchResult,
    OutcomeUnknown,
    PreparedBatch,
    Record,
    Target,
    TerminalError,
    TransientError,
)
from composable_assets.destinations.braze import BrazeSession, BrazeSyncOptions, attribute_object, removal_object
from composable_assets.destinations.http import (
    HttpClient,
    Response,
    _curl_options,
    _may_have_arrived,
    _NoAnswer,
    _problem_name,
)
from composable_assets.project.keys import Delivery

# --- Braze: a body spliced from the warehouse's JSON text is the body the dicts made -------------------------------

# Fields as the warehouse writes them (json_object in DuckDB), with what makes splicing unsafe among them.
FIELDS_SQL = {
    "plain": "json_object('email', 'a@example.com', 'name', 'Anna', 'score', 42)",
    "unicode and escapes": "json_object('name', 'Zoë \"Z\" Łukasz\\n', 'city', '東京')",
    "numbers": "json_object('ratio', 0.1::DOUBLE, 'big', 12345678901234::BIGINT, 'small', 1e-7::DOUBLE)",
    "nested": "json_object('tags', ['a', 'b'], 'address', {'city': 'Oslo', 'zip': NULL})",
    "a null": "json_object('email', NULL, 'name', 'Ben')",
    "the word null in a value": "json_object('name', 'nullable')",
    "empty": "json_object()",
    "empty with a tab inside": "'{ \t }'::JSON",
    "clashes with the identifier": "json_object('external_id', 'other', 'name', 'Chloe')",
    "membership at the end": "json_object('name', 'Dora', 'in_vip', true)",
    "membership false": "json_object('name', 'Emil', 'in_vip', false)",
    "email field": "json_object('email', 'f@example.com')",
}


def fields_text(sql: str) -> str:
    return duckdb.sql(f"SELECT CAST({sql} AS VARCHAR)").fetchall()[0][0]


class Capture:
    """An HttpClient stand-in: keeps each request's body, answers Braze's success."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def exchange(self, method: str, path: str, *, data: bytes, **kwargs: Any) -> Iterator[Any]:
        """The request as steps (HttpClient.exchange): none to take, answered at once."""
        self.bodies.append(data)
        return Response(201, {}, b'{"message": "success"}')
        yield  # a generator, as the client's steps are

    def transfers(self, slots: int, steps: Any) -> None:
        return None  # no transfers of its own: the loop sends each batch from a thread through `send`

    def drive(self, steps: Iterator[Any]) -> Any:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        raise AssertionError("the stand-in's steps never take a try")

    def redact(self, text: str) -> str:
        return text

    def stats(self) -> dict[str, float]:
        return {"requests": len(self.bodies)}


def braze_target(identifier_type: str, options: BrazeSyncOptions, mode: str = "mirror") -> Target:
    return Target(Delivery("audience", "vip"), "braze", identifier_type, "2026-03-02", "run", options, mode=mode)


@pytest.mark.parametrize("identifier_type", ["external_id", "user_alias", "email"])
@pytest.mark.parametrize(
    "options",
    [
        BrazeSyncOptions(),
        BrazeSyncOptions(membership_attribute="in_vip"),
        BrazeSyncOptions(on_remove="delete", subscription_group_id="sg-1"),
    ],
    ids=["mirror", "membership", "subscription"],
)
def test_a_spliced_track_body_holds_the_objects_the_dicts_made_in_their_order(identifier_type, options):
    target = braze_target(identifier_type, options)
    texts = {name: fields_text(sql) for name, sql in FIELDS_SQL.items()}
    records = [
        Record.from_json(i, f"k{i}", "add", f"id-{i}-é", text, None) for i, text in enumerate(texts.values(), start=1)
    ]
    previous = texts["plain"]
    records.append(Record.from_json(50, "k50", "update", "id-50", texts["numbers"], previous))
    if options.on_remove == "clear_attribute":
        records.append(Record.from_json(51, "k51", "remove", "id-51", None, previous))
    client = Capture()
    session = BrazeSession(client, {"track": None}, target)  # type: ignore[arg-type]
    result = session.send(records)
    assert sorted(result.acknowledged) == [r.seq for r in records if r.operation == "upsert" or r.seq == 51]

    # What the same rows gave before: parsed fields, the dicts of attribute_object, json.dumps of the body.
    plain = [
        Record(r.seq, r.key, r.change, r.identifier, r.fields, r.previous)
        for r in (
            Record.from_json(r.seq, r.key, r.change, r.identifier, r.fields_text, r.previous_text) for r in records
        )
    ]
    objects = [
        attribute_object(r, target, options) if r.operation == "upsert" else removal_object(r, target, options)
        for r in plain
    ]
    expected = json.loads(json.dumps({"attributes": objects}))
    (body,) = client.bodies
    sent = json.loads(body)
    assert sent == expected
    # Same keys in the same order, object by object (a dict compares equal in any order).
    assert [list(o) for o in sent["attributes"]] == [list(o) for o in expected["attributes"]]
    # No duplicate key anywhere: a spliced object never carries a field twice.
    json.loads(body, object_pairs_hook=lambda pairs: _no_duplicates(pairs))
    # Samples are the objects sent.
    assert [json.loads(p) if isinstance(p, str) else p for p in result.payloads] == expected["attributes"]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), names
    return dict(pairs)


def test_splicing_is_used_for_plain_adds_only():
    target = braze_target("external_id", BrazeSyncOptions())
    session = BrazeSession(Capture(), {}, target)  # type: ignore[arg-type]
    spliced = session.spliced.text
    ending = ',"in_vip":true}'
    assert spliced(Record.from_json(1, "k", "add", "7", '{"name":"Anna"' + ending, None)) == (
        '{"external_id":"7","name":"Anna","in_vip":true}'
    )
    assert spliced(Record.from_json(1, "k", "add", "7", '{"in_vip":true}', None)) == '{"external_id":"7","in_vip":true}'
    # The membership attribute missing (a delta from before it was a field), a null, an update: built as dicts.
    assert spliced(Record.from_json(1, "k", "add", "7", '{"name":"Anna"}', None)) is None
    assert spliced(Record.from_json(1, "k", "add", "7", '{"name":null,"in_vip":true}', None)) is None
    assert spliced(Record.from_json(1, "k", "update", "7", '{"in_vip":true}', '{"in_vip":false}')) is None
    assert spliced(Record(1, "k", "add", "7", {"in_vip": True}, None)) is None  # no text to splice


# --- Records parse their fields lazily, to what eager parsing gave --------------------------------------------------


def test_a_record_from_json_text_equals_the_eagerly_parsed_one():
    text, before = '{"a":1,"b":[1,2],"c":"é"}', '{"a":0}'
    lazy = Record.from_json(3, "k3", "update", "id3", text, before)
    eager = Record(3, "k3", "update", "id3", json.loads(text), json.loads(before))
    assert lazy == eager
    assert lazy.fields == {"a": 1, "b": [1, 2], "c": "é"} and lazy.previous == {"a": 0}
    assert lazy.fields is lazy.fields  # parsed once
    assert lazy.operation == "upsert" and Record.from_json(1, "k", "remove", "i", None, text).operation == "remove"
    assert Record.from_json(1, "k", "remove", "i", None, None).fields is None
    assert repr(lazy) == repr(eager)
    unparsed = Record.from_json(3, "k3", "update", "id3", text, before)
    assert pickle.loads(pickle.dumps(unparsed)) == eager  # e.g. to another process, parsed or not
    assert Record.from_json(1, "k", "add", "i", "null", None).fields is None  # JSON null stays None
    rows = [{"_seq": 3, "_key": "k3", "_op": "update", "_identifier": "id3", "_fields": text, "_previous": before}]
    assert audience.records_from_rows(rows) == [eager]


def test_delta_chunks_read_column_by_column_match_the_rows(tmp_path):
    from composable_assets.store import PairTables
    from composable_assets.warehouse import Warehouse

    warehouse = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    tables = PairTables("composable", "vip", "braze")
    with warehouse.connect() as conn:
        tables.ensure(conn)
        conn.execute(
            f"INSERT INTO {tables.delta} (_partition, _run_id, _seq, _op, _key, _identifier, _hash, _fields, _previous, "
            "_computed_at) SELECT DATE '2026-03-02', 'd1', i, CASE WHEN i % 3 = 0 THEN 'update' ELSE 'add' END, "
            "'k' || i, 'id' || i, 'h' || i, json_object('n', i, 'name', 'é' || i), "
            "CASE WHEN i % 3 = 0 THEN json_object('n', 0) END, TIMESTAMP '2026-03-02 10:00:00' FROM range(1, 26) t(i)"
        )
        # The ledger already holds row 4 as this delta has it: a re-run skips it.
        conn.execute(
            f"INSERT INTO {tables.ledger} (_key, _identifier, _hash, _fields, _synced_at, _run_id) "
            "VALUES ('k4', 'id4', 'h4', '{}', TIMESTAMP '2026-03-02 10:00:00', 'r0')"
        )
        run = SimpleNamespace(first_seq=1, last_seq=25, size=25)
        chunks = list(audience._chunks(conn, tables, run, batch_size=10))
    records = [r for chunk, _ in chunks for r in chunk]
    assert sum(skipped for _, skipped in chunks) == 1
    assert [r.seq for r in records] == [i for i in range(1, 26) if i != 4]
    assert records[0] == Record(1, "k1", "add", "id1", {"n": 1, "name": "é1"}, None)
    assert records[1].fields_text is not None and records[2].previous == {"n": 0}


def test_rows_the_ledger_holds_are_found_by_one_join_for_the_run_not_one_per_chunk(tmp_path, monkeypatch):
    from composable_assets.store import PairTables
    from composable_assets.warehouse import Warehouse

    monkeypatch.setattr(audience, "READ_CHUNK_ROWS", 10)  # three chunks of 10 rows for 25 rows
    warehouse = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    tables = PairTables("composable", "vip", "braze")
    with warehouse.connect() as conn:
        tables.ensure(conn)
        # Rows 1-24 add or update k1..k24; row 25 removes k25 (a key no longer in the ledger: done as well).
        conn.execute(
            f"INSERT INTO {tables.delta} (_partition, _run_id, _seq, _op, _key, _identifier, _hash, _fields, _previous, "
            "_computed_at) SELECT DATE '2026-03-02', 'd1', i, CASE WHEN i = 25 THEN 'remove' ELSE 'add' END, "
            "'k' || i, 'id' || i, 'h' || i, json_object('n', i), NULL, TIMESTAMP '2026-03-02 10:00:00' "
            "FROM range(1, 26) t(i)"
        )
        # Held as this delta has them: rows 9-12 (across two chunks) and 20; row 15 held with another hash.
        conn.execute(
            f"INSERT INTO {tables.ledger} (_key, _identifier, _hash, _fields, _synced_at, _run_id) SELECT 'k' || i, "
            "'id' || i, CASE WHEN i = 15 THEN 'old' ELSE 'h' || i END, '{}', TIMESTAMP '2026-03-02 10:00:00', 'r0' "
            "FROM (VALUES (9), (10), (11), (12), (15), (20)) t(i)"
        )
        queries: list[str] = []
        real = conn.fetch_columns, conn.fetch_all
        monkeypatch.setattr(conn, "fetch_columns", lambda sql, params=None: queries.append(sql) or real[0](sql, params))
        monkeypatch.setattr(conn, "fetch_all", lambda sql, params=None: queries.append(sql) or real[1](sql, params))
        run = SimpleNamespace(first_seq=1, last_seq=25, size=25)
        chunks = list(audience._chunks(conn, tables, run, batch_size=5))
    assert [(len(chunk), skipped) for chunk, skipped in chunks] == [(8, 2), (7, 3), (4, 1)]
    assert [r.seq for chunk, _ in chunks for r in chunk] == [*range(1, 9), *range(13, 20), 21, 22, 23, 24]
    assert len(queries) == 4 and sum(tables.ledger in sql for sql in queries) == 1


# --- Braze objects written by the warehouse are the objects Python builds --------------------------------------------

# Identifiers JSON must escape (a quote, a backslash, a control character) or may write either way (non-ASCII).
IDENTIFIERS = ["id-1", 'with "quote"', "back\\slash", "ctrl\x01char", "", "Zoë 東京"]


def _object_rows(options: BrazeSyncOptions) -> list[Record]:
    """Adds of every kind of fields text for every identifier, an update and a remove."""
    texts = {name: fields_text(sql) for name, sql in FIELDS_SQL.items()}
    rows, seq = [], 0
    for identifier in IDENTIFIERS:
        for text in texts.values():
            seq += 1
            rows.append(Record.from_json(seq, f"k{seq}", "add", identifier, text, None))
    rows.append(Record.from_json(seq + 1, "ku", "update", "id-u", texts["plain"], texts["numbers"]))
    rows.append(Record.from_json(seq + 2, "kr", "remove", "id-r", None, texts["plain"]))
    return rows


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
@pytest.mark.parametrize("identifier_type", ["external_id", "user_alias"])
@pytest.mark.parametrize(
    "options, mode",
    [
        (BrazeSyncOptions(), "mirror"),
        (BrazeSyncOptions(membership_attribute="in_vip"), "mirror"),
        (BrazeSyncOptions(alias_label="it's"), "mirror"),
        (BrazeSyncOptions(), "upsert"),  # no membership attribute: fields with nothing in them are spliced too
    ],
    ids=["mirror", "membership", "quoted-label", "upsert"],
)
def test_objects_the_warehouse_writes_are_the_objects_python_builds(
    engine, identifier_type, options, mode, request, tmp_path
):
    from composable_assets.warehouse import Warehouse

    url = f"duckdb:///{tmp_path / 'w.duckdb'}" if engine == "duckdb" else request.getfixturevalue("postgres_url")
    session = BrazeSession(Capture(), {}, braze_target(identifier_type, options, mode))  # type: ignore[arg-type]
    sql = session.object_sql("d._op", "d._identifier", "CAST(d._fields AS VARCHAR)")
    assert sql is not None
    rows = _object_rows(options)
    with Warehouse(url=url).connect() as conn:
        conn.execute("CREATE TABLE delta_rows (_seq BIGINT, _op VARCHAR, _identifier VARCHAR, _fields JSON)")
        for r in rows:
            conn.execute("INSERT INTO delta_rows VALUES (?, ?, ?, ?)", [r.seq, r.change, r.identifier, r.fields_text])
        written = dict(conn.fetch_all(f"SELECT _seq, {sql} FROM delta_rows AS d ORDER BY _seq"))
    assert len(written) == len(rows)
    for r in rows:
        spliced = session.spliced.text(r)
        # Where Python splices, the warehouse writes the same object (same members, same order); where Python must
        # build a dict (a null, a clash with the identifier, an update, a remove), the warehouse writes nothing.
        assert (written[r.seq] is None) == (spliced is None), (r, written[r.seq], spliced)
        if spliced is not None:
            expected = attribute_object(
                Record(r.seq, r.key, r.change, r.identifier, r.fields, None), session.target, options
            )
            got = json.loads(written[r.seq], object_pairs_hook=_no_duplicates)
            assert got == expected == json.loads(spliced)
            assert list(got) == list(expected)
    assert sum(v is not None for v in written.values()) >= len(IDENTIFIERS)  # the fast path is really taken


def test_no_warehouse_objects_where_a_braze_add_needs_more_than_its_fields():
    options = BrazeSyncOptions(on_remove="delete", subscription_group_id="sg-1")
    session = BrazeSession(Capture(), {}, braze_target("external_id", options))  # type: ignore[arg-type]
    assert session.object_sql("d._op", "d._identifier", "d._fields") is None


def test_a_first_sync_sends_the_warehouse_objects_and_builds_only_a_mixed_batch_in_python(tmp_path, monkeypatch):
    from composable_assets.destinations.braze import AttributeText
    from composable_assets.store import PairTables
    from composable_assets.warehouse import Warehouse

    tables = PairTables("composable", "vip", "braze")
    built: list[int] = []
    text = AttributeText.text
    monkeypatch.setattr(
        AttributeText, "text", lambda self, r, checked=False: built.append(r.seq) or text(self, r, checked)
    )
    client = Capture()
    target = braze_target("external_id", BrazeSyncOptions(), mode="upsert")  # no membership attribute to carry
    session = BrazeSession(client, {"track": None}, target)  # type: ignore[arg-type]
    with Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        tables.ensure(conn)
        # 25 adds; row 13 has a null field, so its batch (11-15) is built in Python and the others are not.
        conn.execute(
            f"INSERT INTO {tables.delta} (_partition, _run_id, _seq, _op, _key, _identifier, _hash, _fields, _previous, "
            "_computed_at) SELECT DATE '2026-03-02', 'd1', i, 'add', 'k' || i, 'id' || i, 'h' || i, "
            "json_object('n', i, 'name', CASE WHEN i <> 13 THEN 'é' || i END), NULL, TIMESTAMP '2026-03-02 10:00:00' "
            "FROM range(1, 26) t(i)"
        )
        run = SimpleNamespace(first_seq=1, last_seq=25, size=25)
        report = audience.deliver(
            conn, tables, run, session, batch_size=5, concurrency=2, sync_run_id="s1", partition="2026-03-02"
        )
        ledger = conn.fetch_all(f"SELECT _key, _fields FROM {tables.ledger} ORDER BY _key")
    assert report.added == 25 and report.failed == 0 and report.unsent == 0
    assert sorted(built) == [11, 12, 13, 14, 15]
    sent = sorted((o for body in client.bodies for o in json.loads(body)["attributes"]), key=lambda o: o["n"])
    assert len(client.bodies) == 5 and [o["n"] for o in sent] == list(range(1, 26))
    assert sent[0] == {"external_id": "id1", "n": 1, "name": "é1"}
    assert sent[12] == {"external_id": "id13", "n": 13}  # the null left out, as attribute_object does
    assert len(ledger) == 25
    assert report.sample and report.sample[0] == {"external_id": "id1", "n": 1, "name": "é1"}


def test_rows_with_warehouse_objects_leave_their_fields_behind_unless_their_chunk_mixes_both(tmp_path, monkeypatch):
    from composable_assets.store import PairTables
    from composable_assets.warehouse import Warehouse

    monkeypatch.setattr(audience, "READ_CHUNK_ROWS", 10)
    tables = PairTables("composable", "vip", "braze")
    session = BrazeSession(Capture(), {"track": None}, braze_target("external_id", BrazeSyncOptions(), mode="upsert"))  # type: ignore[arg-type]
    object_sql = session.object_sql("d._op", "d._identifier", "CAST(d._fields AS VARCHAR)")
    with Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        tables.ensure(conn)
        # Rows 1-10 all get an object; row 13 (a null field) none, so rows 11-20 are one chunk mixing both.
        conn.execute(
            f"INSERT INTO {tables.delta} (_partition, _run_id, _seq, _op, _key, _identifier, _hash, _fields, _previous, "
            "_computed_at) SELECT DATE '2026-03-02', 'd1', i, 'add', 'k' || i, 'id' || i, 'h' || i, "
            "json_object('n', i, 'name', CASE WHEN i <> 13 THEN 'x' END), NULL, TIMESTAMP '2026-03-02 10:00:00' "
            "FROM range(1, 21) t(i)"
        )
        run = SimpleNamespace(first_seq=1, last_seq=20, size=20)
        (lean, _), (mixed, _) = list(audience._chunks(conn, tables, run, batch_size=5, object_sql=object_sql))
    assert lean.fields == [None] * 10 and None not in lean.objects
    assert None not in mixed.fields and mixed.objects.count(None) == 1
    assert isinstance(lean[0:5], PreparedBatch) and isinstance(mixed[0:5], list)


# --- The HTTP client (libcurl): retries, answers, signing, what may have arrived, redirects, proxies -----------------


class Server:
    """Answers from a script: each item (status, headers, body), "drop" (close without answering) or "stall" (read
    the request, then answer nothing until the server stops). `seen` holds each request's path as the request line
    gave it (a whole URL when it came through a proxy)."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append({"path": self.path, "headers": dict(self.headers), "body": raw, "at": time.monotonic()})
                step = server.script.pop(0) if server.script else (200, {}, b"{}")
                if step == "stall":
                    server.stop.wait(30)
                if step in ("drop", "stall"):
                    self.close_connection = True
                    self.connection.close()
                    return
                status, headers, body = step
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def client(url: str, **kwargs: Any) -> HttpClient:
    return HttpClient(
        url,
        {"Authorization": "Bearer sekret-token"},
        secrets=("sekret-token",),
        max_tries=3,
        backoff_base_seconds=0.01,
        **kwargs,
    )


class Ask:
    """Requests of one client, sent as `request` sends them (in this thread) or as `Transfers` runs them (one curl
    multi handle for many at once): the same steps either way, so every answer must be the same."""

    def __init__(self, http: HttpClient, way: str):
        self.http = http
        self.transfers = http.transfers(4, lambda kwargs: http.exchange(**kwargs)) if way == "transfers" else None

    def __call__(self, method: str, path: str, **kwargs: Any) -> Response:
        if self.transfers is None:
            return self.http.request(method, path, **kwargs)
        return self.transfers.submit({"method": method, "path": path, **kwargs}).result()


WAYS = pytest.mark.parametrize("way", ["thread", "transfers"])


@WAYS
def test_retries_honour_retry_after_and_sign_each_try_afresh(way):
    script = [(503, {"Retry-After": "0"}, b"busy"), (429, {"Retry-After": "0"}, b"slow"), (200, {}, b'{"ok": 1}')]
    signed: list[bytes] = []

    def sign(body: bytes) -> dict[str, str]:
        signed.append(body)
        return {"X-Try": str(len(signed))}

    with Server(script) as server:
        http = client(server.url)
        response = Ask(http, way)("POST", "/hook", data=b'{"rows":[]}', sign=sign)
        assert response.status_code == 200 and response.json() == {"ok": 1} and response.text == '{"ok": 1}'
        assert [s["headers"]["X-Try"] for s in server.seen] == ["1", "2", "3"]
        assert all(
            s["body"] == b'{"rows":[]}' and s["headers"]["Authorization"] == "Bearer sekret-token" for s in server.seen
        )
        assert http.stats()["requests"] == 3 and http.stats()["retries"] == 2
        http.close()


@WAYS
def test_json_bodies_final_errors_and_refused_credentials(way):
    with Server([(400, {"Content-Type": "application/json; charset=utf-8"}, '{"e": "née"}'.encode())]) as server:
        ask = Ask(client(server.url), way)
        response = ask("POST", "/x", json={"a": [1, "é"]})
        assert response.status_code == 400 and response.json() == {"e": "née"}
        assert json.loads(server.seen[0]["body"]) == {"a": [1, "é"]}
        assert server.seen[0]["headers"]["Content-Type"] == "application/json"
        with pytest.raises(ValueError):
            ask("POST", "/x", json={"a": float("nan")})  # not JSON: refused before sending
    with Server([(401, {}, b"bad key sekret-token")]) as server:
        with pytest.raises(TerminalError) as refused:
            Ask(client(server.url), way)("POST", "/x", data=b"{}")
        assert "sekret-token" not in str(refused.value)
    with Server([(503, {}, b"down")] * 3) as server:
        with pytest.raises(TransientError, match="gave up after 3 tries; last: 503 down"):
            Ask(client(server.url), way)("POST", "/x", data=b"{}")


@WAYS
def test_a_dropped_connection_is_retried_or_in_doubt_and_a_refused_one_is_not(way):
    with Server(["drop", (200, {}, b"{}")]) as server:
        assert Ask(client(server.url), way)("POST", "/x", data=b"{}").status_code == 200
    with Server(["drop"]) as server:
        with pytest.raises(OutcomeUnknown, match="ConnectionError; the request may have been processed"):
            Ask(client(server.url), way)("POST", "/x", data=b"{}", retry_unknown_outcome=False)
    closed = Server([])
    url = closed.url
    closed.__exit__()
    # Nothing listens: the request never left, so even a request that must not be applied twice is retried.
    with pytest.raises(TransientError, match="gave up after 3 tries; last: ConnectionError"):
        Ask(client(url), way)("POST", "/x", data=b"{}", retry_unknown_outcome=False)


@WAYS
def test_redirects_are_returned_when_not_followed(way):
    with Server([(307, {"Location": "/elsewhere"}, b"")]) as server:
        response = Ask(client(server.url), way)("POST", "/x", data=b"{}", allow_redirects=False)
        assert response.status_code == 307 and len(server.seen) == 1


@WAYS
def test_redirects_are_followed_when_asked_and_only_the_last_answer_counts(way):
    script = [(307, {"Location": "/elsewhere", "X-Hop": "first"}, b""), (200, {}, b'{"ok": 1}')]
    with Server(script) as server:
        response = Ask(client(server.url), way)("POST", "/x", data=b'{"a": 1}')
        assert response.status_code == 200 and response.json() == {"ok": 1}
        assert response.headers.get("X-Hop") is None  # the redirect's own headers are not the answer's
        assert [(s["path"], s["body"]) for s in server.seen] == [("/x", b'{"a": 1}'), ("/elsewhere", b'{"a": 1}')]


@WAYS
def test_headers_are_read_whatever_case_the_server_used(way):
    reset = int(time.time()) + 5
    script = [
        (429, {"RETRY-AFTER": "0"}, b"slow"),
        (200, {"X-RateLimit-Remaining": "0", "x-RATELIMIT-reset": str(reset)}, b"{}"),
    ]
    pauses: list[float] = []
    budget = SimpleNamespace(try_take=lambda: 0.0, pause_until=pauses.append)
    with Server(script) as server:
        response = Ask(client(server.url), way)("POST", "/x", data=b"{}", budget=budget)
    assert response.headers.get("x-ratelimit-remaining") == "0" and response.headers["X-RATELIMIT-RESET"] == str(reset)
    assert response.headers.get("content-length") == "2"
    # The 429's Retry-After paused the budget (now), and the answer's spent window paused it until its reset.
    assert len(pauses) == 2 and abs(pauses[0] - time.time()) < 5 and pauses[1] == reset


@WAYS
def test_a_read_timeout_is_in_doubt_for_a_request_that_must_not_be_applied_twice(way):
    with Server(["stall"]) as server:
        http = client(server.url, timeout_seconds=1)
        with pytest.raises(OutcomeUnknown, match="ReadTimeout; the request may have been processed"):
            Ask(http, way)("POST", "/x", data=b"{}", retry_unknown_outcome=False)
        assert len(server.seen) == 1 and http.stats()["requests"] == 1


@WAYS
def test_a_request_that_must_not_be_applied_twice_never_goes_out_on_a_reused_connection(way):
    # curl sends a request again, by itself, when a kept-alive connection closes before any answer: here that would
    # be a second copy of the request the server read before dropping the connection.
    with Server([(200, {}, b"{}"), "drop"]) as server:
        http = client(server.url)
        ask = Ask(http, way)
        assert ask("POST", "/x", data=b"{}").status_code == 200
        with pytest.raises(OutcomeUnknown, match="ConnectionError"):
            ask("POST", "/x", data=b"{}", retry_unknown_outcome=False)
        assert len(server.seen) == 2
        http.close()


@WAYS
def test_nothing_listening_is_a_connection_error_retried_and_a_connect_timeout_never_arrived(way):
    closed = Server([])
    url = closed.url
    closed.__exit__()
    http = client(url)
    with pytest.raises(TransientError, match="gave up after 3 tries; last: ConnectionError"):
        Ask(http, way)("POST", "/x", data=b"{}", retry_unknown_outcome=False)
    assert http.stats()["requests"] == 3 and http.stats()["retries"] == 2
    # Curl's timeout error is a connect timeout while nothing of the request was sent, a read timeout after.
    not_sent, sent = (
        _NoAnswer(pycurl.E_OPERATION_TIMEDOUT, sent=False),
        _NoAnswer(pycurl.E_OPERATION_TIMEDOUT, sent=True),
    )
    assert (_problem_name(not_sent), _may_have_arrived(not_sent)) == ("ConnectTimeout", False)
    assert (_problem_name(sent), _may_have_arrived(sent)) == ("ReadTimeout", True)


class SlowServer:
    """Answers each request after `delay` seconds, 503 with Retry-After: 1 to a path's first request when asked;
    counts the requests it holds at once."""

    def __init__(self, delay: float) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.refused: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.now += 1
                    server.most = max(server.most, server.now)
                    refuse = self.path.endswith("/busy-once") and self.path not in server.refused
                    server.refused.add(self.path)
                time.sleep(delay)
                with server.lock:
                    server.now -= 1
                status, headers = (503, {"Retry-After": "1"}) if refuse else (200, {})
                self.send_response(status)
                for name, value in {"Content-Length": "2", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> SlowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_transfers_run_many_requests_at_once_in_the_calling_thread_never_more_than_their_slots():
    threads: set[int] = set()

    def steps(path: str) -> Iterator[Any]:
        threads.add(threading.get_ident())
        response = yield from http.exchange("POST", path, data=b"{}")
        threads.add(threading.get_ident())
        return response.status_code

    with SlowServer(delay=0.3) as server:
        http = client(server.url)
        started = time.monotonic()
        with http.transfers(3, steps) as transfers:
            futures = [transfers.submit(f"/r{i}") for i in range(7)]
            assert [f.result() for f in futures] == [200] * 7
        took = time.monotonic() - started
    assert server.most == 3  # never more than the slots, and as many as the slots
    assert 0.9 <= took < 2.0  # three rounds of 0.3 s, not seven
    assert threads == {threading.get_ident()}
    assert http.stats()["requests"] == 7


def test_a_paused_request_holds_up_none_of_the_others():
    with SlowServer(delay=0.05) as server:
        http = client(server.url)
        with http.transfers(2, lambda path: http.exchange("POST", path, data=b"{}")) as transfers:
            paused = transfers.submit("/busy-once")  # 503, Retry-After: 1
            others = [transfers.submit(f"/r{i}") for i in range(6)]
            started = time.monotonic()
            assert all(f.result().status_code == 200 for f in others)
            assert time.monotonic() - started < 0.9 and not paused.done()
            assert paused.result().status_code == 200
    assert http.stats()["retries"] == 1


class SecondWaits:
    """A rate budget whose second request must wait half a second for the next window (a stand-in)."""

    def __init__(self) -> None:
        self.asked = 0

    def try_take(self) -> float:
        self.asked += 1
        return 0.5 if self.asked == 2 else 0.0

    def pause_until(self, epoch_seconds: float) -> None:
        pass


def test_a_request_that_took_its_budget_slot_goes_out_while_another_waits_for_the_next_window():
    # One thread runs every transfer: had the second request slept in the budget, the first (slot taken, its
    # connection still opening) would have gone out half a second later, in a window its slot was not from.
    budget = SecondWaits()
    with Server([]) as server:
        http = client(server.url)
        with http.transfers(2, lambda path: http.exchange("POST", path, data=b"{}", budget=budget)) as transfers:
            started = time.monotonic()
            first, second = transfers.submit("/first"), transfers.submit("/second")
            assert time.monotonic() - started < 0.3  # submitting does not wait for the budget
            assert first.result().status_code == 200 and second.result().status_code == 200
        arrived = {s["path"]: s["at"] - started for s in server.seen}
    assert arrived["/first"] < 0.3 <= 0.5 <= arrived["/second"], arrived
    assert http.stats()["rate_limit_wait_seconds"] == 0.5


def clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)


def test_the_proxy_the_environment_names_is_used_and_no_proxy_respected(monkeypatch):
    clear_proxy_environment(monkeypatch)
    with Server([]) as api, Server([]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)  # a name curl itself does not read for http://
        assert client(api.url).request("POST", "/x", data=b"{}").status_code == 200
        assert [s["path"] for s in proxy.seen] == [f"{api.url}/x"] and api.seen == []
        # NO_PROXY wins, even over the lower-case name curl would read on its own.
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert client(api.url).request("POST", "/y", data=b"{}").status_code == 200
        assert [s["path"] for s in api.seen] == ["/y"] and len(proxy.seen) == 1


def test_the_ca_bundle_the_environment_names_is_the_only_one_trusted(monkeypatch, tmp_path):
    clear_proxy_environment(monkeypatch)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    options = dict(_curl_options("https://api.example.com", 30.0))
    assert options[pycurl.CAINFO] == certifi.where() and options[pycurl.CAPATH] is None
    assert options[pycurl.PROXY] == ""  # no proxy: curl is told so, rather than left to read its own variables
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path))
    options = dict(_curl_options("https://api.example.com", 30.0))
    assert options[pycurl.CAPATH] == str(tmp_path) and options[pycurl.CAINFO] is None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "corp.pem"))
    options = dict(_curl_options("https://api.example.com", 30.0))
    assert options[pycurl.CAINFO] == str(tmp_path / "corp.pem") and options[pycurl.CAPATH] is None


# --- Rate budget: requests reserved together, never beyond the window's budget --------------------------------------


def test_a_budget_reserves_requests_together_and_never_exceeds_its_window(tmp_path):
    coordination = Coordination(url=f"sqlite:///{tmp_path / 'c.sqlite'}")
    big = coordination.budget("big", Limit(3000, 3600.0))
    assert big.reserve == 30  # 1% of the window
    small = coordination.budget("small", Limit(250, 3600.0))
    assert small.reserve == 2 and coordination.budget("tiny", Limit(8, 1.0)).reserve == 1
    window = int(__import__("time").time() // 3600)
    for _ in range(250):
        assert small._take(window * 3600.0, window) == (True, False)
    # The window's budget is spent: the next request waits for the next window.
    assert small._take(window * 3600.0, window)[0] is False
    assert small._bucket.count() == 250
    for _ in range(20):
        big._take(window * 3600.0, window)
    assert big._bucket.count() == 30  # one store write of 30 for 20 requests
    # Spare requests never move to another window.
    assert big._take((window + 1) * 3600.0, window + 1) == (True, False) and big._spare == 29
    for budget in (big, small):
        budget.close()


# --- Checkpoints: answers written once per intent window, never outside the newest window ---------------------------


def test_answers_are_written_before_each_new_window_and_stay_inside_the_newest_one(monkeypatch):
    intents: list[tuple[int, int]] = []
    written: list[int] = []
    monkeypatch.setattr(
        audience, "record_intent", lambda conn, tables, run_id, first, last, now: intents.append((first, last))
    )
    monkeypatch.setattr(
        audience,
        "record_acks",
        lambda conn, tables, run_id, ranges, now: written.extend(
            s for first, last in ranges for s in range(first, last + 1)
        ),
    )
    monkeypatch.setattr(audience, "record_rejections", lambda conn, tables, rows: None)
    monkeypatch.setattr(audience, "clear_intents", lambda *args: None)
    monkeypatch.setattr(audience, "fold_acks", lambda *args: None)
    monkeypatch.setattr(audience, "WINDOW_BATCHES_PER_SLOT", 2)  # windows of 4 batches here: 10 for 40 batches
    tables = SimpleNamespace(audience="vip", destination="braze")
    run_ = SimpleNamespace(first_seq=1, last_seq=400, size=400)
    commits: list[str] = []

    class Conn:  # the warehouse stand-in: says when the answers and the next window commit together
        @contextlib.contextmanager
        def transaction(self):
            yield
            commits.append("together")

    source = audience.AudienceSource(
        Conn(), tables, run_, batch_size=10, concurrency=2, sync_run_id="r", partition=None
    )
    rows = [Record(i, f"k{i}", "add", f"id{i}", {"v": i}, None) for i in range(1, 401)]
    batches = [rows[i : i + 10] for i in range(0, 400, 10)]
    in_flight: list[list[Record]] = []
    for batch in batches:
        if len(in_flight) == 2:  # the oldest answers before another goes out (concurrency 2)
            oldest = in_flight.pop(0)
            source.answered(oldest, BatchResult(acknowledged=[r.seq for r in oldest]))
        source.going_out([batch], in_flight[0][0] if in_flight else None)
        in_flight.append(batch)
        # Whatever was answered but not yet written, and whatever is in flight, lies in the newest window.
        first, last = intents[-1]
        doubtful = [r.seq for answered, _ in source.answers for r in answered] + [r.seq for b in in_flight for r in b]
        assert all(first <= s <= last for s in doubtful)
    for batch in in_flight:
        source.answered(batch, BatchResult(acknowledged=[r.seq for r in batch]))
    source.going_out([], None)
    assert sorted(written) == list(range(1, 401)) and len(written) == 400
    assert source.report.added == 400 and source.report.batches == 40
    # One ack write per window of 2 x concurrency batches rather than one per batch answered, in the same commit as
    # the next window's intent (every window but the first, which has no answers before it).
    assert len(intents) == 10
    assert len(commits) == 9


def test_a_stop_writes_the_answers_it_holds(monkeypatch):
    written: list[tuple[int, int]] = []
    monkeypatch.setattr(audience, "record_intent", lambda *args: None)
    monkeypatch.setattr(audience, "record_acks", lambda conn, tables, run_id, ranges, now: written.extend(ranges))
    monkeypatch.setattr(audience, "record_rejections", lambda conn, tables, rows: None)
    monkeypatch.setattr(audience, "clear_intents", lambda *args: None)
    monkeypatch.setattr(audience, "fold_acks", lambda *args: None)
    tables = SimpleNamespace(audience="vip", destination="braze")
    source = audience.AudienceSource(
        None,
        tables,
        SimpleNamespace(first_seq=1, last_seq=20, size=20),
        batch_size=10,
        concurrency=2,
        sync_run_id="r",
        partition=None,
    )
    rows = [Record(i, f"k{i}", "add", f"id{i}", {}, None) for i in range(1, 21)]
    source.going_out([rows[:10], rows[10:]], None)
    source.answered(rows[:10], BatchResult(acknowledged=list(range(1, 11))))
    source.close(drained=False)
    assert written == [(1, 10)]

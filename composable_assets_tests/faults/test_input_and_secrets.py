"""Adversarial input and leaking secrets: a `where` that is more than a condition, secrets echoed in part,
credentials in URLs, a --date outside the partitions."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.destinations.http import HttpClient
from composable_assets.project import ProjectError, load_project

from ..conftest import SMALL_AUDIENCE, SMALL_DESTINATIONS
from ..test_destination_webhook import HOOK_AUDIENCE, SECRET, TOKEN, Receiver

WHERE_LINE = 5  # of SMALL_AUDIENCE


def load_error(small) -> str:
    with pytest.raises(ProjectError) as raised:
        load_project(small.settings.project_dir)
    return str(raised.value)


# --- 1. `where` is a boolean condition over the model's columns, nothing else ------------------------------------


@pytest.mark.parametrize(
    ("where", "message"),
    [
        # Not a condition: DuckDB would take a number or a string as a truth test.
        ("score", "`where` must be a condition, but `score` is a bare column: write `score = true`"),
        ("score > 10 AND name", "`where` must be a condition, but `name` is a bare column: write `name = true`"),
        ("NOT score", "`where` must be a condition, but `score` is a bare column: write `score = true`"),
        ("score * 2", "`where` must be a boolean condition, but `score * 2` is arithmetic"),
        ("'yes'", "`where` must be a boolean condition, but `'yes'` is a literal"),
        ("42", "`where` must be a boolean condition, but `42` is a literal"),
        # Reads beyond the model's row.
        ("id IN (SELECT id FROM other_schema.t)", "`where` must not contain a subquery"),
        ("EXISTS (SELECT 1 FROM people)", "`where` must not contain a subquery"),
        ("people.score > 10", "`where` must name the model's columns alone, not `people.score`"),
        ("length(read_text('/etc/passwd')) > 0", "`where` must not call read_text"),
        ("read_csv('/etc/passwd') IS NOT NULL", "`where` must not call read_csv"),
        ("read_parquet('/tmp/x.parquet') IS NOT NULL", "`where` must not call read_parquet"),
        ("read_json('/tmp/x.json') IS NOT NULL", "`where` must not call read_json"),
        ("len(glob('/etc/*')) > 0", "`where` must not call glob"),
        ("getenv('HOME') = '/root'", "`where` must not call getenv"),
        ("current_setting('home_directory') <> ''", "`where` must not call current_setting"),
        ("sum(score) > 10", "`where` must not aggregate (`SUM(score)`)"),
        ("score > 10 AND unnest([1, 2]) = 1", "`where` must not call a table function (`UNNEST([1, 2])`)"),
        # Only the model's columns.
        ("lifetime_value > 500", "column `lifetime_value` in `where` is not an output of model `people_model`"),
    ],
)
def test_a_where_that_is_more_than_a_condition_on_the_model_is_refused_at_its_line(small, where, message):
    small.write("audiences/high.yaml", SMALL_AUDIENCE.replace("where: score > 10", f"where: {json.dumps(where)}"))

    assert load_error(small).startswith(f"audiences/high.yaml:{WHERE_LINE}: {message}")


@pytest.mark.parametrize(
    "where",
    [
        "score > 10",
        "(score > 10 OR email LIKE '%@example.com') AND NOT (name IS NULL)",
        "score BETWEEN 1 AND 5 AND lower(name) IN ('a', 'b')",
        "starts_with(email, 'p1') AND strlen(name) > 3",  # strlen: a DuckDB function sqlglot does not know
        "list_filter([score], x -> x > 1) <> []",  # a lambda's parameter is no column
        "coalesce(score, 0) > 10 AND current_date >= DATE '2026-01-01'",
        "TRUE",
    ],
)
def test_conditions_on_the_model_s_columns_still_load(small, where):
    small.write("audiences/high.yaml", SMALL_AUDIENCE.replace("where: score > 10", f"where: {json.dumps(where)}"))

    assert load_project(small.settings.project_dir).audiences["high"].where == where


STREAM = """\
table: people_model
event_id: id
cursor: score
where: {where}
syncs:
  - destination: rec_mirror
    identifier: {{external_id: id}}
    event: scored
"""


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("score", "`where` must be a condition, but `score` is a bare column: write `score = true`"),
        ("id IN (SELECT customer_id FROM other_schema.t)", "`where` must not contain a subquery"),
        ("length(read_text('/etc/passwd')) > 0", "`where` must not call read_text"),
        ("status = 'completed'", "column `status` in `where` is not an output of model `people_model`"),
    ],
)
def test_a_stream_where_is_checked_the_same_way(small, where, message):
    small.write("streams/scores.yaml", STREAM.format(where=json.dumps(where)))

    assert load_error(small).startswith(f"streams/scores.yaml:4: {message}")


def test_validate_names_the_file_and_line_of_a_where_reading_a_file(small, monkeypatch):
    small.write("audiences/high.yaml", SMALL_AUDIENCE.replace("score > 10", "length(read_text('/etc/passwd')) > 0"))
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))

    result = CliRunner().invoke(cli, ["validate"], catch_exceptions=False)

    assert result.exit_code == 1
    assert f"audiences/high.yaml:{WHERE_LINE}: `where` must not call read_text" in result.output


# --- 2. every part of a secret is redacted ------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        (f"Bearer {TOKEN}", [TOKEN]),
        (f"Token token={TOKEN}", [TOKEN]),
        (basic("svc-account", "pa55-w0rd-9z"), ["svc-account:pa55-w0rd-9z", "pa55-w0rd-9z", "svc-account",
                                                base64.b64encode(b"svc-account:pa55-w0rd-9z").decode()]),
        ("https://hookuser:hookpass-31@hooks.example.com/in?token=q-tok-8812&team=t1", ["hookpass-31", "q-tok-8812"]),
    ],
)
def test_each_part_of_a_secret_is_redacted(secret, echoed):
    client = HttpClient("http://127.0.0.1:9", {}, secrets=(secret,))
    for part in echoed:
        text = client.redact(f'{{"error": "invalid credentials {part}"}}')
        assert part not in text and "***" in text
    # The scheme word is no secret: the message stays readable.
    assert client.redact("Bearer or Basic auth refused") == "Bearer or Basic auth refused"


class TokenEcho(Receiver):
    """A receiver answering 400 with the bearer token alone in its body (the scheme word dropped)."""

    def _answer(self, headers, raw):
        self.requests.append({"headers": dict(headers)})
        token = headers.get("Authorization", "").split(" ", 1)[-1]
        return 400, {}, {"error": f"token {token} is not allowed here"}


def test_a_token_echoed_without_its_scheme_reaches_neither_warehouse_nor_dagster(small, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with TokenEcho(SECRET) as receiver:
        entry = {"type": "webhook", "url": receiver.url, "secret": {"env": "HOOK_SECRET"}, "batch_size": 5,
                 "max_tries": 1, "headers": {"Authorization": {"env": "HOOK_AUTH"}}}
        # Only destinations the `composable` process knows (the test's Recording type is registered in this one).
        small.write("destinations.yaml", f"hook: {json.dumps(entry)}\n")
        (small.settings.project_dir / "audiences/high.yaml").unlink()
        small.write("audiences/hooked.yaml", HOOK_AUDIENCE)
        env = {**os.environ, "DAGSTER_HOME": str(home), "HOOK_SECRET": SECRET, "HOOK_AUTH": f"Bearer {TOKEN}",
               "COMPOSABLE_PROJECT_DIR": str(small.settings.project_dir),
               "COMPOSABLE_WAREHOUSE": small.settings.warehouse_url,
               "COMPOSABLE_DATA_DIR": str(small.settings.data_dir)}
        composable = os.path.join(os.path.dirname(sys.executable), "composable")
        command = [composable, "sync", "hooked", "--date", "2026-03-02"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)

    # The token went out with every request and came back in every answer: there was something to leak.
    assert len(receiver.requests) == 2, result.stdout + result.stderr
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in receiver.requests)
    assert result.returncode == 1 and "10 row(s) were rejected" in result.stdout + result.stderr
    with duckdb.connect(str(small.db), read_only=True) as con:
        failures = con.execute("SELECT DISTINCT reason FROM composable.sync_failures").fetchall()
        assert failures == [('HTTP 400: {"error": "token *** is not allowed here"}',)]
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        warehouse = [repr(con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall()) for s, t in tables]
    assert any("sync_failures" == t for _, t in tables) and any("sync_log" in t for _, t in tables)
    files = [p for root in (home, small.settings.data_dir) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # Dagster's run and event storage
    for where, text in [("output", result.stdout + result.stderr), ("warehouse", "\n".join(warehouse))]:
        assert TOKEN not in text, where
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path


# --- 3. credentials in URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "setting", "problem"),
    [
        ({"type": "webhook", "url": "https://hook:s3cret@hooks.example.com/in", "secret": {"env": "S"}}, "url",
         "a user name or password (user:password@)"),
        ({"type": "webhook", "url": "https://hooks.example.com/in?team=1&token=abc123", "secret": {"env": "S"}},
         "url", "the query parameter `token`"),
        ({"type": "webhook", "url": "https://hooks.example.com/in?Signature=abc", "secret": {"env": "S"}}, "url",
         "the query parameter `Signature`"),
        ({"type": "braze", "rest_endpoint": "https://rest.fra-01.braze.eu/?api_key=abc", "api_key": {"env": "K"}},
         "rest_endpoint", "the query parameter `api_key`"),
        ({"type": "iterable", "base_url": "https://me:pw@api.iterable.com", "api_key": {"env": "K"}}, "base_url",
         "a user name or password (user:password@)"),
    ],
)
def test_a_url_carrying_credentials_is_refused_at_load(small, entry, setting, problem):
    small.write("destinations.yaml", SMALL_DESTINATIONS + f"hook: {json.dumps(entry)}\n")

    assert load_error(small) == (
        f"destinations.yaml:4: `{setting}` carries a credential in the URL ({problem}): move it into a header "
        "or a setting read from {env: NAME}"
    )


def test_a_url_with_harmless_query_parameters_loads(small):
    entry = {"type": "webhook", "url": "https://hooks.example.com/in?team=growth&v=2", "secret": {"env": "S"}}
    small.write("destinations.yaml", SMALL_DESTINATIONS + f"hook: {json.dumps(entry)}\n")

    assert load_project(small.settings.project_dir).destinations["hook"].settings["url"].endswith("v=2")


def test_a_url_from_the_environment_carrying_credentials_fails_the_sync_naming_the_variable(small, monkeypatch):
    with Receiver(SECRET) as receiver:
        monkeypatch.setenv("HOOK_URL", receiver.url.replace("http://", "http://hookuser:pw-7731x@"))
        monkeypatch.setenv("HOOK_SECRET", SECRET)
        entry = {"type": "webhook", "url": {"env": "HOOK_URL"}, "secret": {"env": "HOOK_SECRET"}}
        small.write("destinations.yaml", SMALL_DESTINATIONS + f"hook: {json.dumps(entry)}\n")
        small.write("audiences/hooked.yaml", HOOK_AUDIENCE)
        outcome = small.sync(audience="hooked")

    assert not outcome.success
    assert receiver.requests == []
    error = "\n".join(outcome.errors)
    assert "environment variable HOOK_URL holds a URL with a credential in it" in error
    assert "pw-7731x" not in error and "hookuser" not in error


# --- 4. --date outside the partitions -----------------------------------------------------------------------------


def test_a_date_outside_the_partitions_names_the_allowed_range(small, monkeypatch):
    small.write("streams/scores.yaml", STREAM.format(where="score > 10"))
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    today = dt.datetime.now(ZoneInfo("UTC")).date()
    allowed = f"2026-01-01 .. {today.isoformat()} (today in UTC)"

    for command in (["sync", "high"], ["stream", "scores"]):
        for day in (today + dt.timedelta(days=400), dt.date(2025, 12, 31)):
            result = CliRunner().invoke(cli, [*command, "--date", day.isoformat()])
            assert result.exit_code == 1, result.output
            assert f"--date {day} is outside the project's days: {allowed}." in result.output, result.output
            assert "DagsterUnknownPartitionError" not in result.output and result.exception.__class__ is SystemExit

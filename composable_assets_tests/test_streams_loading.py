"""Event stream files (streams/*.yaml): loading, and every problem reported with its file and line."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.destinations import DESTINATION_TYPES
from composable_assets.project import ProjectError, ProjectErrors, load_project
from composable_assets.settings import Settings

MODEL = """\
-- Orders with the buyer's email.
SELECT order_id, customer_id, email, amount, currency, status, ordered_at FROM orders
"""

DESTINATIONS = """\
braze: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}}
iterable: {type: iterable, base_url: {env: ITERABLE_BASE_URL}, api_key: {env: ITERABLE_API_KEY}}
box: {type: outbox}
cdi: {type: braze_cdi}
"""

STREAM = """\
description: Completed orders as purchases.
owners: [crm@example.com]
table: order_facts
event_id: order_id
cursor: ordered_at
where: status = 'completed'
cadence: hourly
lookback: 2h
start: 2026-03-01
syncs:
  - destination: braze
    identifier: {external_id: customer_id}
    event: purchase
    properties: {amount: amount}
    options:
      purchase: {product_id: order_id, price: amount, currency: currency}
  - destination: iterable
    identifier: {email: email}
    event: purchase
    properties: {amount: amount, currency: currency}
"""
# Lines of STREAM the tests below point at.
TABLE, EVENT_ID, CURSOR, WHERE, CADENCE, LOOKBACK, START = 3, 4, 5, 6, 7, 8, 9
BRAZE_DESTINATION, BRAZE_IDENTIFIER, BRAZE_PROPERTIES, BRAZE_PURCHASE = 11, 12, 14, 16
ITERABLE_DESTINATION, ITERABLE_IDENTIFIER = 17, 18


def project_dir(root: Path, stream: str = STREAM, **extra: str) -> Path:
    files = {
        "project.yaml": 'name: shop\nstart_date: "2026-01-01"\n',
        "models/order_facts.sql": MODEL,
        "destinations.yaml": DESTINATIONS,
        "streams/purchases.yaml": stream,
        **extra,
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def errors_of(root: Path) -> list[str]:
    """Every problem loading reports, as printed: `file:line: message`."""
    with pytest.raises(ProjectError) as raised:
        load_project(root, known_destination_types=DESTINATION_TYPES)
    error = raised.value
    return [str(e) for e in (error.errors if isinstance(error, ProjectErrors) else [error])]


def with_(old: str, new: str) -> str:
    assert STREAM.count(old) == 1, old
    return STREAM.replace(old, new)


def test_a_valid_stream_file_loads_with_its_defaults_and_choices(tmp_path):
    project = load_project(project_dir(tmp_path), known_destination_types=DESTINATION_TYPES)
    stream = project.streams["purchases"]
    assert (stream.table, stream.event_id, stream.cursor, stream.cadence) == ("order_facts", "order_id", "ordered_at", "hourly")
    assert stream.lookback == dt.timedelta(hours=2) and stream.start == dt.date(2026, 3, 1)
    assert [s.destination for s in stream.syncs] == ["braze", "iterable"]
    assert stream.sync_for("iterable").identifier_type == "email"

    minimal = "table: orders\nevent_id: order_id\ncursor: ordered_at\nsyncs:\n  - {destination: box, identifier: {external_id: customer_id}, event: purchase}\n"
    project = load_project(project_dir(tmp_path / "b", minimal), known_destination_types=DESTINATION_TYPES)
    stream = project.streams["purchases"]
    # A source table a model reads is a valid table; the defaults: minute-level, 1h lookback, starting now.
    assert (stream.table, stream.cadence, stream.lookback, stream.start) == ("orders", "minutes", dt.timedelta(hours=1), "now")


def test_a_project_without_streams_has_none(tmp_path):
    root = project_dir(tmp_path)
    (root / "streams" / "purchases.yaml").unlink()
    assert load_project(root, known_destination_types=DESTINATION_TYPES).streams == {}


@pytest.mark.parametrize(
    "old, new, line, message",
    [
        ("table: order_facts", "table: order_fact", TABLE, "unknown table `order_fact`: not a model, nor a source table"),
        ("event_id: order_id", "event_id: id", EVENT_ID, "column `id` is not an output of model `order_facts`"),
        ("cursor: ordered_at", "cursor: placed_at", CURSOR, "column `placed_at` is not an output of model `order_facts`"),
        ("where: status = 'completed'", "where: status = 'completed'; DROP TABLE orders", WHERE, "`where` must be a single condition"),
        ("where: status = 'completed'", "where: 40 + 2", WHERE, "`where` must be a boolean condition"),
        ("cadence: hourly", "cadence: sometimes", CADENCE, "cadence must be one of"),
        ("lookback: 2h", "lookback: two hours", LOOKBACK, "is not a duration"),
        ("start: 2026-03-01", "start: yesterday", START, "start must be `now` or a date like 2026-03-01"),
        ("  - destination: braze\n", "  - destination: brazr\n", BRAZE_DESTINATION, "unknown destination `brazr`"),
        ("identifier: {email: email}", "identifier: {external_id: customer_id}", ITERABLE_IDENTIFIER,
         "iterable identifies people by email, userId, not `external_id`"),
        ("properties: {amount: amount}", "properties: {amount: total}", BRAZE_PROPERTIES, "column `total` is not an output"),
        ("price: amount", "price: total", BRAZE_PURCHASE, "column `total` is not an output of model `order_facts`"),
        ("price: amount, currency: currency}", "price: amount, currency: currency, colour: red}", BRAZE_PURCHASE,
         "unknown field `colour`"),
        ("  - destination: iterable\n", "  - destination: cdi\n", ITERABLE_DESTINATION, "cdi` (braze_cdi) cannot take events"),
        ("identifier: {email: email}", "identifier: {email: email, userId: customer_id}", ITERABLE_IDENTIFIER,
         "identifier must have exactly one entry"),
        ("    event: purchase\n    properties: {amount: amount, currency", "    properties: {amount: amount, currency",
         ITERABLE_DESTINATION, "missing required field `event`"),
    ],
)
def test_each_problem_is_reported_at_its_line(tmp_path, old, new, line, message):
    [error] = errors_of(project_dir(tmp_path, with_(old, new)))
    assert error.startswith(f"streams/purchases.yaml:{line}: "), error
    assert message in error


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    bad = with_("cursor: ordered_at", "cursor: placed_at").replace("cadence: hourly", "cadence: sometimes")
    bad = bad.replace("  - destination: braze\n", "  - destination: brazr\n")
    errors = errors_of(project_dir(tmp_path, bad))
    # A file that fails its own schema (cadence) stops there; fix it and the references are checked.
    assert [e.split(":")[1] for e in errors] == [str(CADENCE)]
    errors = errors_of(project_dir(tmp_path / "b", bad.replace("cadence: sometimes", "cadence: hourly")))
    assert sorted(int(e.split(":")[1]) for e in errors) == [CURSOR, BRAZE_DESTINATION]


def test_file_names_and_derived_keys_are_checked(tmp_path):
    root = project_dir(tmp_path, with_("description:", "name: other\ndescription:"))
    (root / "streams" / "Bad-Name.yaml").write_text(STREAM)
    (root / "streams" / "old.yml").write_text(STREAM)
    errors = errors_of(root)
    assert any(e.startswith("streams/purchases.yaml:1: unknown field `name`") for e in errors), errors
    assert any(e.startswith("streams/Bad-Name.yaml: stream name `Bad-Name` must start") for e in errors), errors
    assert any(e.startswith("streams/old.yml: stream files must end in .yaml") for e in errors), errors


def test_stream_assets_jobs_and_schedules(tmp_path):
    root = project_dir(tmp_path)
    settings = Settings(root, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path / "data")
    defs = load_definitions(settings)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["stream", "purchases", "braze"])
    node = graph.get(key)
    assert node.group_name == "streams" and node.owners == ["crm@example.com"]
    assert node.parent_keys == {dg.AssetKey(["model", "order_facts"])}
    assert {"braze", "duckdb"} <= set(node.kinds)
    assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
    assert node.metadata["guarantee"].startswith("each event at most once")
    assert graph.get(dg.AssetKey(["stream", "purchases", "iterable"])).metadata["guarantee"].startswith("each event once by id")
    assert node.description.startswith("Forwards new rows of `order_facts` as `purchase` events to `braze`")

    job = defs.resolve_job_def("stream_purchases")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "model/order_facts", "stream/purchases/braze", "stream/purchases/iterable",
    }
    project = load_project(root)
    only = stream_selection(project, "purchases", "iterable").resolve(graph)
    assert {k.to_user_string() for k in only} == {"model/order_facts", "stream/purchases/iterable"}
    [schedule] = [s for s in defs.schedules if s.name == "stream_purchases_schedule"]
    assert schedule.cron_schedule == "0 * * * *" and schedule.job_name == "stream_purchases"

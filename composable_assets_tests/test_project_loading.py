"""Tests for reading and validating a project folder (composable_assets.project)."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest
from sqlglot import exp

from composable_assets.project import (
    AudienceSpec,
    MissingSecretError,
    ProjectError,
    ProjectErrors,
    SecretRef,
    SyncSpec,
    load_project,
    parse_where,
    resolve_setting,
)

PROFILES_SQL = """\
-- One row per customer with their lifetime value.
-- owners: crm@example.com, team:growth
WITH totals AS (
    SELECT customer_id, sum(amount) AS lifetime_value, max(ordered_at) AS last_order_at
    FROM raw.orders
    GROUP BY 1
)
SELECT c.customer_id, c.email, c.first_name, t.lifetime_value, t.last_order_at
FROM customers AS c
JOIN totals AS t USING (customer_id);
"""

VIP_SQL = """\
-- owners: growth@example.com
-- Customers flagged as VIP.
SELECT p.* FROM customer_profiles AS p JOIN vip_flags USING (customer_id)
"""

AUDIENCE_YAML = """\
description: Customers who spent over 500 in the last 90 days.
owners: [crm-team@example.com]
model: customer_profiles
primary_key: customer_id
where: lifetime_value > 500 AND last_order_at >= current_date - INTERVAL 90 DAY
cadence: minutes
syncs:
  - destination: outbox
    mode: mirror
    identifier: {external_id: customer_id}
    fields: {email: email, first_name: first_name, ltv: lifetime_value}
"""

# Line numbers of AUDIENCE_YAML that the tests below point at.
MODEL_LINE, WHERE_LINE, CADENCE_LINE, DESTINATION_LINE, IDENTIFIER_LINE, FIELDS_LINE = 3, 5, 6, 8, 10, 11


def write_project(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under root, with empty models/ and audiences/."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "audiences").mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def valid_files(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """A small valid project, with some files replaced or added."""
    return {
        "models/customer_profiles.sql": PROFILES_SQL,
        "audiences/high_value.yaml": AUDIENCE_YAML,
        **(overrides or {}),
    }


def load_error(root: Path, **kwargs) -> ProjectError:
    """The single (non-aggregated) error raised when loading root."""
    with pytest.raises(ProjectError) as raised:
        load_project(root, **kwargs)
    assert not isinstance(raised.value, ProjectErrors), str(raised.value)
    return raised.value


def audience_with(old: str, new: str) -> str:
    """AUDIENCE_YAML with one exact piece of text replaced."""
    assert old in AUDIENCE_YAML
    return AUDIENCE_YAML.replace(old, new)


# --- a valid project -------------------------------------------------------------------------


def test_valid_project_loads_models_audiences_and_destinations(tmp_path, monkeypatch):
    root = write_project(
        tmp_path / "shop",
        valid_files(
            {
                "models/vip_customers.sql": VIP_SQL,
                "project.yaml": "name: shop_cdp\nstart_date: 2025-06-01\nschema: cdp\ntimezone: Europe/Berlin\n",
                "destinations.yaml": """\
                    outbox:
                      type: outbox
                    crm:
                      type: webhook
                      url: https://example.com/hook
                      api_key: {env: CRM_API_KEY}
                """,
            }
        ),
    )

    project = load_project(root, known_destination_types={"outbox", "webhook"})

    assert project.root == root
    assert project.settings.name == "shop_cdp"
    assert project.settings.start_date == datetime.date(2025, 6, 1)
    assert project.settings.schema_name == "cdp"
    assert project.settings.timezone == "Europe/Berlin"

    assert sorted(project.models) == ["customer_profiles", "vip_customers"]
    profiles = project.models["customer_profiles"]
    assert profiles.description == "One row per customer with their lifetime value."
    assert profiles.owners == ["crm@example.com", "team:growth"]
    assert profiles.model_deps == []
    assert profiles.source_deps == ["customers", "orders"]
    assert profiles.columns == ["customer_id", "email", "first_name", "lifetime_value", "last_order_at"]
    assert profiles.path == root / "models" / "customer_profiles.sql"
    # The trailing semicolon is dropped so the query can be embedded in other SQL.
    assert profiles.sql == PROFILES_SQL.rstrip().removesuffix(";")

    vip = project.models["vip_customers"]
    assert vip.description == "Customers flagged as VIP."
    assert vip.owners == ["growth@example.com"]
    assert vip.model_deps == ["customer_profiles"]
    assert vip.source_deps == ["vip_flags"]
    assert vip.columns is None

    assert project.sources == ["customers", "orders", "vip_flags"]

    audience = project.audiences["high_value"]
    assert audience.name == "high_value"
    assert audience.path == root / "audiences" / "high_value.yaml"
    assert audience.model == "customer_profiles"
    assert audience.cadence == "minutes"
    assert audience.owners == ["crm-team@example.com"]
    sync = audience.sync_for("outbox")
    assert (sync.mode, sync.identifier_type, sync.identifier_column) == ("mirror", "external_id", "customer_id")
    assert audience.columns_needed() == ["customer_id", "email", "first_name", "lifetime_value"]

    assert sorted(project.destinations) == ["crm", "outbox"]
    crm = project.destinations["crm"]
    assert crm.type == "webhook"
    assert crm.settings == {"url": "https://example.com/hook", "api_key": {"env": "CRM_API_KEY"}}
    monkeypatch.setenv("CRM_API_KEY", "s3cr3t")
    assert crm.resolved_settings() == {"url": "https://example.com/hook", "api_key": "s3cr3t"}


def test_missing_optional_files_use_defaults(tmp_path):
    root = write_project(tmp_path / "empty_project", {})

    project = load_project(root)

    assert project.settings.name == "empty_project"
    assert project.settings.start_date == datetime.date(2026, 1, 1)
    assert project.settings.schema_name == "composable"
    assert project.settings.timezone == "UTC"
    assert project.models == {}
    assert project.audiences == {}
    assert project.sources == []
    assert list(project.destinations) == ["outbox"]
    assert project.destinations["outbox"].type == "outbox"
    assert project.destinations["outbox"].settings == {}


def test_models_upstream_of_is_transitive_and_dependencies_first(tmp_path):
    root = write_project(
        tmp_path,
        {
            "models/a.sql": "SELECT id FROM raw_a",
            "models/b.sql": "SELECT id FROM a",
            "models/c.sql": "SELECT id FROM b JOIN a USING (id)",
            "models/d.sql": "SELECT id FROM c",
            "models/unrelated.sql": "SELECT id FROM raw_b",
        },
    )

    project = load_project(root)

    assert project.models_upstream_of("d") == ["a", "b", "c"]
    assert project.models_upstream_of("a") == []
    assert project.models["c"].model_deps == ["a", "b"]


def test_cte_names_are_not_dependencies_and_schema_is_dropped(tmp_path):
    root = write_project(
        tmp_path,
        {
            "models/orders_enriched.sql": """\
                WITH customers AS (SELECT * FROM crm.Customers)
                SELECT o.id FROM main.orders AS o JOIN customers USING (customer_id)
                WHERE o.id IN (SELECT order_id FROM read_parquet('refunds.parquet'))
            """,
        },
    )

    project = load_project(root)

    # `customers` is the CTE, but the CTE reads the `Customers` source table (case-insensitive).
    assert project.models["orders_enriched"].source_deps == ["customers", "orders"]
    assert project.models["orders_enriched"].description is None


# --- YAML problems ---------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    broken = audience_with("cadence: minutes\n", "cadence: [minutes\n")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": broken}))

    error = load_error(root)

    assert str(error).startswith("audiences/high_value.yaml:")
    assert error.path == root.absolute() / "audiences" / "high_value.yaml"
    # The flow sequence opened on line 6 is found unterminated at the next key, line 7.
    assert error.line == 7
    assert error.message == "invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'"


def test_duplicate_yaml_key_is_an_error(tmp_path):
    root = write_project(
        tmp_path,
        valid_files({"audiences/high_value.yaml": AUDIENCE_YAML + "cadence: daily\n"}),
    )

    assert str(load_error(root)) == "audiences/high_value.yaml:12: duplicate key `cadence`"


def test_unknown_audience_field_points_at_its_key(tmp_path):
    root = write_project(
        tmp_path,
        valid_files({"audiences/high_value.yaml": audience_with("    mode: mirror\n", "    mode: mirror\n    batch: 10\n")}),
    )

    assert str(load_error(root)) == "audiences/high_value.yaml:10: unknown field `batch`"


def test_audience_cannot_set_its_own_name(tmp_path):
    root = write_project(
        tmp_path, valid_files({"audiences/high_value.yaml": "name: other\n" + AUDIENCE_YAML})
    )

    assert str(load_error(root)) == (
        "audiences/high_value.yaml:1: unknown field `name` (an audience is named after its file)"
    )


def test_audience_cannot_set_the_destination_types_the_loader_reads_from_destinations_yaml(tmp_path):
    root = write_project(
        tmp_path, valid_files({"audiences/high_value.yaml": "destination_types: {outbox: braze}\n" + AUDIENCE_YAML})
    )

    assert str(load_error(root)) == "audiences/high_value.yaml:1: unknown field `destination_types`"


def test_missing_required_field_points_at_enclosing_mapping(tmp_path):
    text = audience_with("primary_key: customer_id\n", "")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == "audiences/high_value.yaml:1: missing required field `primary_key`"


def test_missing_field_in_a_sync_points_at_the_list_item(tmp_path):
    text = audience_with("  - destination: outbox\n    mode: mirror\n", "  - mode: mirror\n")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == "audiences/high_value.yaml:8: missing required field `destination`"


def test_wrong_value_type_names_the_field_and_line(tmp_path):
    text = audience_with("    mode: mirror\n", "    mode: sideways\n")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        "audiences/high_value.yaml:9: `syncs[0].mode`: Input should be 'upsert' or 'mirror'"
    )


def test_audience_needs_at_least_one_sync(tmp_path):
    text = AUDIENCE_YAML.split("syncs:")[0] + "syncs: []\n"
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    error = load_error(root)

    assert (error.line, error.message.split(":")[0]) == (7, "`syncs`")
    assert "at least 1 item" in error.message


def test_audience_file_must_be_a_mapping(tmp_path):
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": "- a\n- b\n"}))

    assert str(load_error(root)) == "audiences/high_value.yaml:1: an audience file must be a mapping of fields"


def test_yml_extension_is_reported_instead_of_ignored(tmp_path):
    root = write_project(tmp_path, {"audiences/vip.yml": AUDIENCE_YAML})

    assert str(load_error(root)) == "audiences/vip.yml: audience files must end in .yaml; rename this file"


# --- project.yaml ----------------------------------------------------------------------------


def test_unknown_project_setting_points_at_its_key(tmp_path):
    root = write_project(tmp_path, {"project.yaml": "name: shop\nschedule: daily\n"})

    assert str(load_error(root)) == "project.yaml:2: unknown field `schedule`"


def test_invalid_project_settings_are_reported_with_lines(tmp_path):
    root = write_project(
        tmp_path, {"project.yaml": "start_date: 2026-02-30\ntimezone: Mars/Olympus\nschema: Bad-Schema\n"}
    )

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    located = [(error.line, error.message.split(":")[0]) for error in raised.value.errors]
    assert located == [(1, "`start_date`"), (2, "`timezone`"), (3, "`schema`")]
    assert "unknown timezone 'Mars/Olympus'" in raised.value.errors[1].message


# --- references between files ----------------------------------------------------------------


def test_unknown_model_points_at_model_key(tmp_path):
    text = audience_with("model: customer_profiles", "model: customer_profile")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{MODEL_LINE}: unknown model `customer_profile` (models: customer_profiles)"
    )


def test_unknown_destination_points_at_sync_destination(tmp_path):
    root = write_project(tmp_path, valid_files({"destinations.yaml": "crm:\n  type: webhook\n"}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{DESTINATION_LINE}: unknown destination `outbox` (destinations.yaml has: crm)"
    )


def test_unknown_destination_type_points_at_type_key(tmp_path):
    root = write_project(
        tmp_path, {"destinations.yaml": "outbox:\n  type: outbox\ncrm:\n  type: hubspot\n"}
    )

    assert str(load_error(root, known_destination_types={"outbox", "webhook"})) == (
        "destinations.yaml:4: unknown destination type `hubspot`; known types: outbox, webhook"
    )
    # Without a list of known types any type is accepted.
    assert load_project(root).destinations["crm"].type == "hubspot"


def test_destination_without_type_is_an_error(tmp_path):
    root = write_project(tmp_path, {"destinations.yaml": "outbox:\n  url: x\n"})

    assert str(load_error(root)) == "destinations.yaml:1: destination `outbox`: missing required field `type`"


def test_destination_synced_twice_is_an_error(tmp_path):
    text = AUDIENCE_YAML + "  - destination: outbox\n    identifier: {external_id: customer_id}\n"
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == "audiences/high_value.yaml:12: destination `outbox` is synced twice"


# --- audience conditions and cadence ---------------------------------------------------------


def test_where_with_a_second_statement_points_at_where(tmp_path):
    text = audience_with("INTERVAL 90 DAY", "INTERVAL 90 DAY; DROP TABLE customers")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{WHERE_LINE}: `where` must be a single condition, but it has 2 statements"
    )


def test_where_that_is_not_boolean_is_an_error(tmp_path):
    text = audience_with(
        "where: lifetime_value > 500 AND last_order_at >= current_date - INTERVAL 90 DAY",
        "where: upper(email)",
    )
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{WHERE_LINE}: `where` must be a boolean condition, but `UPPER(email)` is TEXT"
    )


@pytest.mark.parametrize("cadence", ["minutes", "hourly", "daily", "weekly", "*/15 * * * *", "0 9 * * mon-fri"])
def test_valid_cadences_are_accepted(tmp_path, cadence):
    text = audience_with("cadence: minutes", f"cadence: '{cadence}'")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert load_project(root).audiences["high_value"].cadence == cadence


@pytest.mark.parametrize("cadence", ["monthly", "@daily", "* * * *", "0 0 * * * *", "61 * * * *", "0 0 31 2 *"])
def test_invalid_cadence_points_at_cadence_key(tmp_path, cadence):
    text = audience_with("cadence: minutes", f"cadence: '{cadence}'")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{CADENCE_LINE}: `cadence`: cadence must be one of minutes, hourly, "
        f"daily, weekly or a 5-field cron string, got {cadence!r}"
    )


# --- model SQL -------------------------------------------------------------------------------


def test_model_syntax_error_reports_sqlglot_line(tmp_path):
    root = write_project(
        tmp_path, {"models/broken.sql": "-- Broken model\nSELECT a\nFROM t\nWHERE (\n"}
    )

    error = load_error(root)

    assert str(error).startswith("models/broken.sql:4: model SQL is not valid SQL: ")


def test_model_with_two_statements_points_at_the_second(tmp_path):
    root = write_project(tmp_path, {"models/two.sql": "SELECT 1 AS a;\n\nDROP TABLE customers;\n"})

    assert str(load_error(root)) == (
        "models/two.sql:3: a model must be a single SELECT query, but the file has 2 statements"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE TABLE x AS SELECT 1", "a model must not contain CREATE statements"),
        ("\nINSERT INTO t SELECT 1", "a model must not contain INSERT statements"),
        ("\nVALUES (1)", "a model must be a SELECT query, not VALUES"),
    ],
)
def test_model_must_be_a_read_only_query(tmp_path, sql, message):
    root = write_project(tmp_path, {"models/bad.sql": sql})

    line = 1 if not sql.startswith("\n") else 2
    assert str(load_error(root)) == f"models/bad.sql:{line}: {message}"


def test_empty_model_file_is_an_error(tmp_path):
    root = write_project(tmp_path, {"models/empty.sql": "-- nothing here yet\n"})

    assert str(load_error(root)) == "models/empty.sql: the model file contains no SQL query"


def test_model_reading_itself_is_an_error(tmp_path):
    root = write_project(tmp_path, {"models/loop.sql": "SELECT id\nFROM loop\n"})

    assert str(load_error(root)) == "models/loop.sql:2: model `loop` reads from itself"


def test_model_cycle_names_the_files(tmp_path):
    root = write_project(
        tmp_path,
        {
            "models/first.sql": "SELECT id FROM second",
            "models/second.sql": "SELECT id FROM third",
            "models/third.sql": "SELECT id FROM first",
        },
    )

    error = load_error(root)

    assert error.message.startswith("models read from each other in a cycle: ")
    cycle = error.message.split(": ")[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["first.sql", "second.sql", "third.sql"]
    # Each file reads from the next one.
    reads = {"first.sql": "second.sql", "second.sql": "third.sql", "third.sql": "first.sql"}
    assert all(reads[a] == b for a, b in zip(cycle, cycle[1:]))


# --- static column check ---------------------------------------------------------------------


def test_column_not_produced_by_model_points_at_field(tmp_path):
    text = audience_with("ltv: lifetime_value}", "ltv: lifetime_value, phone: phone_number}")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{FIELDS_LINE}: column `phone_number` is not an output of model "
        "`customer_profiles` (its columns: customer_id, email, first_name, lifetime_value, last_order_at)"
    )


def test_unknown_primary_key_and_identifier_columns_are_both_reported(tmp_path):
    text = audience_with("primary_key: customer_id", "primary_key: id").replace(
        "{external_id: customer_id}", "{external_id: cust_id}"
    )
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    assert [(error.line, error.message.split(" is ")[0]) for error in raised.value.errors] == [
        (4, "column `id`"),
        (IDENTIFIER_LINE, "column `cust_id`"),
    ]


def test_column_check_is_case_insensitive_and_skipped_for_star_models(tmp_path):
    star_model = "SELECT *, lifetime_value * 2 AS double_value FROM customer_profiles"
    text = audience_with("model: customer_profiles", "model: star_profiles").replace(
        "ltv: lifetime_value}", "ltv: lifetime_value, anything: not_checked}"
    )
    root = write_project(
        tmp_path,
        valid_files(
            {
                "models/star_profiles.sql": star_model,
                "audiences/high_value.yaml": text,
                "audiences/upper.yaml": audience_with("primary_key: customer_id", "primary_key: Customer_ID"),
            }
        ),
    )

    project = load_project(root)

    assert project.models["star_profiles"].columns is None
    assert project.audiences["high_value"].sync_for("outbox").fields["anything"] == "not_checked"
    assert project.audiences["upper"].primary_key == "Customer_ID"


# --- sync shape ------------------------------------------------------------------------------


def test_identifier_needs_exactly_one_entry(tmp_path):
    text = audience_with("{external_id: customer_id}", "{external_id: customer_id, email: email}")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    assert str(load_error(root)) == (
        f"audiences/high_value.yaml:{IDENTIFIER_LINE}: `syncs[0].identifier`: identifier must have exactly "
        "one entry (identifier type: model column), found 2"
    )


def test_empty_identifier_type_and_field_name_are_errors(tmp_path):
    text = audience_with("{external_id: customer_id}", "{'': customer_id}").replace(
        "ltv: lifetime_value}", "'': lifetime_value}"
    )
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    assert [str(error) for error in raised.value.errors] == [
        f"audiences/high_value.yaml:{IDENTIFIER_LINE}: `syncs[0].identifier`: identifier type must not be empty",
        f"audiences/high_value.yaml:{FIELDS_LINE}: `syncs[0].fields`: field name must not be empty",
    ]


# --- names -----------------------------------------------------------------------------------


def test_invalid_names_are_reported_per_file(tmp_path):
    root = write_project(
        tmp_path,
        {
            "models/Customer-Profiles.sql": "SELECT 1 AS id",
            "audiences/High Value.yaml": AUDIENCE_YAML.replace("customer_profiles", "ok_model"),
            "models/ok_model.sql": PROFILES_SQL,
            "destinations.yaml": "outbox:\n  type: outbox\nMy-Crm:\n  type: webhook\n",
        },
    )

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    rule = "must start with a lowercase letter and contain only lowercase letters, digits and underscores"
    assert [str(error) for error in raised.value.errors] == [
        f"destinations.yaml:3: destination name `My-Crm` {rule}",
        f"models/Customer-Profiles.sql: model name `Customer-Profiles` {rule}",
        f"audiences/High Value.yaml: audience name `High Value` {rule}",
    ]


# --- secrets ---------------------------------------------------------------------------------


def test_literal_secret_in_destinations_is_an_error(tmp_path):
    root = write_project(
        tmp_path,
        {
            "destinations.yaml": """\
                crm:
                  type: webhook
                  url: https://example.com
                  auth:
                    access_token: abc123
                  headers: {X-Api-Key: zzz999, Accept: application/json}
                  api_key: {env: CRM_KEY}
            """
        },
    )

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    advice = "looks like a secret: put it in an environment variable and write"
    assert [str(error) for error in raised.value.errors] == [
        f"destinations.yaml:5: `access_token` {advice} `access_token: {{env: VARIABLE_NAME}}`",
        f"destinations.yaml:6: `X-Api-Key` {advice} `X-Api-Key: {{env: VARIABLE_NAME}}`",
    ]
    assert "abc123" not in str(raised.value)
    assert "zzz999" not in str(raised.value)


def test_secret_reference_with_extra_keys_is_an_error(tmp_path):
    root = write_project(
        tmp_path,
        {"destinations.yaml": "crm:\n  type: webhook\n  password:\n    env: CRM_PASSWORD\n    default: hunter2\n"},
    )

    assert str(load_error(root)) == "destinations.yaml:5: unknown field `default`"


def test_secret_ref_resolve_names_the_variable_without_values(monkeypatch):
    monkeypatch.delenv("COMPOSABLE_TEST_TOKEN", raising=False)
    ref = SecretRef(env="COMPOSABLE_TEST_TOKEN")

    with pytest.raises(MissingSecretError) as raised:
        ref.resolve()
    assert isinstance(raised.value, ProjectError)
    assert str(raised.value) == (
        "environment variable COMPOSABLE_TEST_TOKEN is not set (a destination setting reads it)"
    )

    monkeypatch.setenv("COMPOSABLE_TEST_TOKEN", "tok-987")
    assert ref.resolve() == "tok-987"
    assert "tok-987" not in repr(ref)


def test_resolve_setting_reads_references_only(monkeypatch):
    monkeypatch.setenv("COMPOSABLE_TEST_PASSWORD", "pw-1")

    assert resolve_setting("plain") == "plain"
    assert resolve_setting(42) == 42
    assert resolve_setting({"env": "COMPOSABLE_TEST_PASSWORD"}) == "pw-1"
    assert resolve_setting(SecretRef(env="COMPOSABLE_TEST_PASSWORD")) == "pw-1"
    assert resolve_setting({"auth": {"password": {"env": "COMPOSABLE_TEST_PASSWORD"}}, "n": 1}) == {
        "auth": {"password": "pw-1"},
        "n": 1,
    }
    # A mapping that merely contains `env` among other keys is an ordinary setting.
    assert resolve_setting({"env": "prod", "team": "x"}) == {"env": "prod", "team": "x"}


# --- aggregation and formatting --------------------------------------------------------------


def test_all_errors_in_a_folder_are_collected(tmp_path):
    root = write_project(
        tmp_path,
        valid_files(
            {
                "project.yaml": "name: shop\ncolour: blue\n",
                "models/broken.sql": "DROP TABLE customers",
                "audiences/bad_model.yaml": audience_with("model: customer_profiles", "model: nope"),
                "audiences/bad_cadence.yaml": audience_with("cadence: minutes", "cadence: sometimes"),
            }
        ),
    )

    with pytest.raises(ProjectErrors) as raised:
        load_project(root)

    errors = raised.value.errors
    assert [(error.path.relative_to(root.absolute()).as_posix(), error.line) for error in errors] == [
        ("project.yaml", 2),
        ("models/broken.sql", 1),
        ("audiences/bad_cadence.yaml", CADENCE_LINE),
        ("audiences/bad_model.yaml", MODEL_LINE),
    ]
    assert str(raised.value) == "\n".join(str(error) for error in errors)
    assert str(raised.value).splitlines()[0] == "project.yaml:2: unknown field `colour`"


def test_project_error_formats_path_and_line(tmp_path):
    inside = ProjectError("bad thing", tmp_path / "models" / "x.sql", 3, root=tmp_path)
    no_line = ProjectError("bad thing", tmp_path / "models" / "x.sql", root=tmp_path)
    outside = ProjectError("bad thing", Path("/elsewhere/x.sql"), 3, root=tmp_path)
    nowhere = ProjectError("bad thing")

    assert str(inside) == "models/x.sql:3: bad thing"
    assert str(no_line) == "models/x.sql: bad thing"
    assert str(outside) == "/elsewhere/x.sql:3: bad thing"
    assert str(nowhere) == "bad thing"
    assert (inside.message, inside.line) == ("bad thing", 3)


def test_missing_project_folder_is_an_error(tmp_path):
    error = load_error(tmp_path / "missing")

    assert error.message == "project folder not found"


# --- parse_where -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "a > 1 AND b IN (1, 2)",
        "is_vip = true",
        "email LIKE '%@example.com' OR email IS NULL",
    ],
)
def test_parse_where_accepts_conditions(where):
    condition = parse_where(where, Path("audiences/a.yaml"), 5)

    assert isinstance(condition, exp.Expression)
    assert not isinstance(condition, exp.Query)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("a > 1; DROP TABLE t", "`where` must be a single condition, but it has 2 statements"),
        ("DROP TABLE t", "`where` must not contain DROP statements"),
        ("SELECT 1", "`where` must be a condition, not a SELECT query"),
        ("DELETE FROM t", "`where` must not contain DELETE statements"),
        ("1", "`where` must be a boolean condition, but `1` is a literal"),
        ("is_vip", "`where` must be a condition, but `is_vip` is a bare column: write `is_vip = true`"),
        ("a > 1 AND b IN (SELECT x FROM t)", "`where` must not contain a subquery: a condition reads the row's own columns only"),
        ("", "`where` is empty"),
    ],
)
def test_parse_where_rejects_non_conditions(where, message):
    with pytest.raises(ProjectError) as raised:
        parse_where(where, Path("audiences/a.yaml"), 5)

    assert str(raised.value) == f"audiences/a.yaml:5: {message}"


def test_parse_where_reports_syntax_errors_at_the_given_line():
    with pytest.raises(ProjectError) as raised:
        parse_where("a > 1 AND", Path("audiences/a.yaml"), 7)

    assert str(raised.value).startswith("audiences/a.yaml:7: `where` is not valid SQL: ")


# --- specs built in code ---------------------------------------------------------------------


def test_audience_spec_helpers():
    audience = AudienceSpec(
        name="vip",
        model="customer_profiles",
        primary_key="customer_id",
        syncs=[
            SyncSpec(destination="crm", identifier={"email": "email"}, fields={"name": "first_name"}),
            SyncSpec(destination="ads", identifier={"external_id": "customer_id"}, fields={"mail": "email"}),
        ],
    )

    assert audience.columns_needed() == ["customer_id", "email", "first_name"]
    assert audience.sync_for("ads").identifier_type == "external_id"
    assert audience.sync_for("ads").mode == "upsert"
    assert audience.cadence == "daily"
    with pytest.raises(KeyError, match="no sync to destination 'sheets'"):
        audience.sync_for("sheets")


# --- freshness and project.yaml automation settings -------------------------------------------


def test_a_declared_freshness_window_is_read_with_its_durations(tmp_path):
    text = audience_with("cadence: minutes\n", "cadence: minutes\nfreshness:\n  warn_after: 90s\n  fail_after: 10m\n")
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    freshness = load_project(root).audiences["high_value"].freshness
    assert (freshness.warn_after, freshness.fail_after) == (datetime.timedelta(seconds=90), datetime.timedelta(minutes=10))


@pytest.mark.parametrize(
    "block, message",
    [
        ("  warn_after: 5m\n  fail_after: 2m\n", "warn_after must be shorter than fail_after"),
        ("  fail_after: 30s\n", "fail_after must be at least 1m"),
        ("  fail_after: 5 minutes\n", "'5 minutes' is not a duration; write it like 90s, 5m, 2h or 3d"),
        ("  deadline: '0 9 * * 1'\n", "a deadline needs a lower_bound"),
        ("  deadline: '0 9 * * 1'\n  lower_bound: 3h\n  fail_after: 5m\n", "use either warn_after/fail_after or deadline"),
    ],
)
def test_a_bad_freshness_block_is_an_error_in_the_audience_file(tmp_path, block, message):
    text = audience_with("cadence: minutes\n", "cadence: minutes\nfreshness:\n" + block)
    root = write_project(tmp_path, valid_files({"audiences/high_value.yaml": text}))

    error = str(load_error(root))
    assert error.startswith("audiences/high_value.yaml:") and message in error


def test_project_yaml_reads_landing_folders_and_the_sensor_interval(tmp_path):
    files = valid_files({"project.yaml": "landing:\n  orders: {}\n  customers: {key: customer_id}\nsensor_interval: 2s\n"})
    settings = load_project(write_project(tmp_path, files)).settings

    assert settings.landing["customers"].key == "customer_id" and settings.landing["orders"].key is None
    assert settings.sensor_interval == datetime.timedelta(seconds=2)
    bad = valid_files({"project.yaml": "sensor_interval: often\n"})
    assert "project.yaml" in str(load_error(write_project(tmp_path / "bad", bad)))

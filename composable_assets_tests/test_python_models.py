"""Python models (models/NAME.py): a function returning a pandas DataFrame, stored by Dagster's pandas I/O manager.

Real components: a DuckDB file, dagster-duckdb-pandas' I/O manager, the recording destination, `composable validate`
(in process, where the recording destination type is registered).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.definitions import load_definitions
from composable_assets.project import ProjectError, load_project
from composable_assets.project.keys import model_key, source_key

from .conftest import Recording, modules_imported_by_loading

# Reads a SQL model and a source table; its parameters name them.
PROPENSITY = '''\
"""Propensity to buy again: score over the top score, from people_model and the raw people table.

owners: team:growth, ana@example.com
"""

import pandas as pd


def model(people_model: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    frame = people_model.merge(people[["id"]], on="id")
    frame["propensity"] = frame["score"] / people["score"].max()
    frame["likely"] = frame["propensity"] >= 0.75
    return frame[["id", "email", "name", "propensity", "likely"]]
'''

LIKELY_AUDIENCE = """\
model: propensity
primary_key: id
where: likely = true
cadence: daily
syncs:
  - destination: rec_upsert
    mode: upsert
    identifier: {email: email}
    fields: {name: name, propensity: propensity}
"""


@pytest.fixture
def python_project(small):
    small.write("models/propensity.py", PROPENSITY)
    small.write("audiences/likely.yaml", LIKELY_AUDIENCE)
    return small


def test_a_python_model_loads_with_its_inputs_as_upstream_assets(python_project):
    project = load_project(python_project.settings.project_dir)
    spec = project.models["propensity"]
    assert spec.is_python and spec.model_deps == ["people_model"] and spec.source_deps == ["people"]
    assert spec.description == "Propensity to buy again: score over the top score, from people_model and the raw people table."
    assert project.refreshes["propensity"].describe() == "full: a Python model is recomputed in full"

    graph = load_definitions(python_project.settings).resolve_asset_graph()
    node = graph.get(model_key("propensity"))
    assert node.parent_keys == {model_key("people_model"), source_key("people")}
    assert node.description == spec.description
    assert {"python", "pandas", "duckdb"} <= set(node.kinds)
    assert spec.owners == ["team:growth", "ana@example.com"] and set(node.owners) == {"team:growth", "ana@example.com"}


@pytest.fixture
def validate(python_project, monkeypatch):
    """`composable validate` in this process (the recording destination type is registered here)."""
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(python_project.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", python_project.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(python_project.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return lambda: CliRunner().invoke(cli, ["validate"])


def test_validate_passes(validate):
    result = validate()
    assert result.exit_code == 0, result.output
    assert "model propensity: full: a Python model is recomputed in full" in result.output


def test_a_sync_runs_the_python_model_and_sends_its_audience(python_project):
    outcome = python_project.sync("likely")
    assert outcome.success, outcome
    # Scores 1..20: propensity = score / 20 >= 0.75 for ids 15..20.
    sent = {r.identifier: r.fields for r in Recording.received["rec_upsert"]}
    assert set(sent) == {f"p{i}@example.com" for i in range(15, 21)}
    assert sent["p20@example.com"]["propensity"] == 1.0 and sent["p15@example.com"]["name"] == "name15"
    # Stored where SQL models live, as the I/O manager typed it.
    assert python_project.query("SELECT count(*) FROM main.propensity") == [(20,)]
    assert dict(python_project.query("SELECT column_name, data_type FROM information_schema.columns "
                                     "WHERE table_name = 'propensity'"))["propensity"] == "DOUBLE"

    # A second run whose output has another shape (a column more, a row fewer): the table is replaced, not
    # appended to (the I/O manager alone would insert into the old table), and only what changed is sent.
    Recording.reset()
    python_project.set_people(
        [(i, f"p{i}@example.com", "Twenty" if i == 20 else f"name{i}", i) for i in range(1, 21) if i != 18]
    )
    ranked = PROPENSITY.replace('    return frame[["id"', '    frame["rank"] = frame["score"].rank()\n    return frame[["rank", "id"')
    python_project.write("models/propensity.py", ranked)
    outcome = python_project.sync("likely", date="2026-03-03")
    assert outcome.success, outcome
    assert python_project.query("SELECT count(*), max(rank) FROM main.propensity") == [(19, 19.0)]
    # Upsert: 18 left (not removed); 20 renamed is the one update, through the Python model's new table.
    assert [(r.identifier, r.fields["name"]) for r in Recording.received["rec_upsert"]] == [("p20@example.com", "Twenty")]


def test_an_empty_dataframe_is_an_empty_table(python_project):
    python_project.write("models/propensity.py", PROPENSITY.replace("return frame[", "return frame.iloc[0:0]["))
    outcome = python_project.sync("likely")
    assert outcome.success, outcome
    assert python_project.query("SELECT count(*) FROM main.propensity") == [(0,)]
    assert Recording.received["rec_upsert"] == []


def test_a_wrong_return_type_names_the_file(python_project):
    python_project.write("models/propensity.py", "def model(people):\n    return people.to_dict()\n")
    outcome = python_project.sync("likely")
    assert not outcome.success
    assert "models/propensity.py: model() must return a pandas DataFrame, it returned dict" in str(outcome)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def model(people)\n    return people\n", "models/propensity.py:1: Python syntax error: expected ':'"),
        ("import pandas\n\ndef score(people):\n    return people\n",
         "models/propensity.py:1: a Python model must define `def model(...)`"),
        ("\n\ndef model(*tables):\n    return tables[0]\n", "models/propensity.py:3: `model` takes one parameter"),
        ("def model(propensity):\n    return propensity\n", "models/propensity.py:1: model `propensity` reads from itself"),
    ],
)
def test_a_broken_python_model_names_the_file_and_line(python_project, text, message):
    python_project.write("models/propensity.py", text)
    with pytest.raises(ProjectError) as raised:
        load_project(python_project.settings.project_dir)
    assert message in str(raised.value)


def test_validate_names_a_broken_python_model(python_project, validate):
    python_project.write("models/propensity.py", "def model(people):\n    return people +\n")
    result = validate()
    assert result.exit_code != 0
    assert "models/propensity.py:2: Python syntax error" in result.output


def test_a_model_in_both_languages_is_refused(python_project):
    python_project.write("models/people_model.py", "def model(people):\n    return people\n")
    with pytest.raises(ProjectError, match="model `people_model` is defined twice"):
        load_project(python_project.settings.project_dir)


def test_pandas_is_imported_only_for_python_models(small, python_project):
    """Run processes of a project without Python models do not pay pandas' import (minute-level latency)."""
    assert modules_imported_by_loading(python_project, ["pandas"]) == ["pandas"]
    (python_project.settings.project_dir / "models" / "propensity.py").unlink()
    assert modules_imported_by_loading(python_project, ["pandas"]) == []


def test_a_warehouse_without_a_pandas_io_manager_refuses_python_models(python_project):
    """PostgreSQL has no Dagster pandas I/O manager: refused when the definitions load, naming the file."""
    settings = replace(python_project.settings, warehouse_url="postgresql://composable@127.0.0.1:1/warehouse")
    with pytest.raises(ProjectError) as raised:
        load_definitions(settings)
    message = str(raised.value)
    assert message.startswith("models/propensity.py: Python models need a warehouse Dagster has a pandas I/O manager")
    assert "this warehouse is postgres" in message


def test_validate_imports_a_python_model_without_running_it(python_project, validate):
    """A missing package is found by validate, at its line; `model` itself is not called."""
    python_project.write("models/propensity.py", "import pandas\n\nimport not_a_package_here\n\n\ndef model(people):\n    raise SystemExit('called')\n")
    result = validate()
    assert result.exit_code == 1
    assert ("models/propensity.py:3: importing the model failed: ModuleNotFoundError: "
            "No module named 'not_a_package_here'") in result.output
    python_project.write("models/propensity.py", "def model(people):\n    raise SystemExit('called')\n")
    result = validate()
    assert result.exit_code == 0, result.output

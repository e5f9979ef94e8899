"""Getting data in and building everything: `composable seed`, `composable build`, their jobs, and the README's CSV path.

The loader runs on DuckDB and on the local PostgreSQL; the README's block runs as it is written, in bash, with the
real `composable` command, from a clean temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.definitions import BUILD_JOB, load_definitions
from composable_assets.landing.seed import SeedError, seed_file
from composable_assets.project.keys import model_key, source_key
from composable_assets.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CUSTOMERS = """\
id,email,first_name,signed_up,total_spent,vip
1,ada@example.com,Ada,2026-01-02,1250.00,true
2,"grace@example.com","Grace, R.",2026-02-03,830.5,false
3,alan@example.com,,2026-03-04,,false
"""
MORE = "id,email,first_name,signed_up,total_spent,vip\n4,edsger@example.com,Edsger,2026-04-05,640,true\n"
# The fourth line has a field too few: the whole file is refused.
RAGGED = "id,email,first_name\n7,a@example.com,A\n8,b@example.com,B\n9,c@example.com\n"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path) -> Warehouse:
    if request.param == "duckdb":
        return Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    return Warehouse(url=request.getfixturevalue("postgres_url"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_seed_replaces_the_table_with_inferred_types_and_appends_by_name(warehouse, tmp_path):
    file = write(tmp_path / "customers.csv", CUSTOMERS)
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE raw_customers (old_column VARCHAR)")
        conn.execute("INSERT INTO raw_customers VALUES ('gone')")
        report = seed_file(conn, file, "raw_customers")
        assert (report.rows, report.appended) == (3, False)
        assert report.columns == [("id", "BIGINT"), ("email", "VARCHAR"), ("first_name", "VARCHAR"),
                                  ("signed_up", "DATE"), ("total_spent", "DOUBLE"), ("vip", "BOOLEAN")]
        # Replaced: the old column is gone; quoted fields keep their commas, an empty field is NULL.
        assert [c for c, _ in conn.table_columns(None, "raw_customers")] == [c for c, _ in report.columns]
        rows = conn.fetch_all("SELECT id, first_name, CAST(signed_up AS VARCHAR), total_spent, vip "
                              "FROM raw_customers ORDER BY id")
        assert rows == [(1, "Ada", "2026-01-02", 1250.0, True), (2, "Grace, R.", "2026-02-03", 830.5, False),
                        (3, None, "2026-03-04", None, False)]
        # Appended by column name, whatever the file's column order.
        more = write(tmp_path / "more.csv", "vip,id,email,first_name,signed_up,total_spent\ntrue,4,e@example.com,E,2026-04-05,640\n")
        assert seed_file(conn, more, "raw_customers", append=True).appended
        assert conn.fetch_all("SELECT id, total_spent FROM raw_customers ORDER BY id")[-1] == (4, 640.0)
        # --append to a table that does not exist yet creates it.
        created = seed_file(conn, more, "fresh", append=True)
        assert not created.appended and conn.fetch_row("SELECT count(*) FROM fresh") == (1,)


def test_a_bad_row_is_named_by_line_and_the_table_stays_as_it_was(warehouse, tmp_path):
    good = write(tmp_path / "customers.csv", CUSTOMERS)
    ragged = write(tmp_path / "ragged.csv", RAGGED)
    with warehouse.connect() as conn:
        seed_file(conn, good, "raw_customers")
        before = conn.fetch_all("SELECT * FROM raw_customers ORDER BY id")
        for append in (False, True):
            with pytest.raises(SeedError) as caught:
                seed_file(conn, ragged, "raw_customers", append=append)
            message = str(caught.value)
            assert str(ragged) in message and "line 4" in message and "the table is as it was" in message
            assert conn.fetch_all("SELECT * FROM raw_customers ORDER BY id") == before
        # A file that reads well but does not fit the table it is appended to: refused in the transaction, kept.
        other = write(tmp_path / "other.csv", "id,no_such_column\n5,x\n")
        with pytest.raises(SeedError, match="other.csv"):
            seed_file(conn, other, "raw_customers", append=True)
        assert conn.fetch_all("SELECT * FROM raw_customers ORDER BY id") == before
        # A file that is not what its suffix says.
        fake = write(tmp_path / "fake.parquet", "not parquet\n")
        with pytest.raises(SeedError, match="fake.parquet"):
            seed_file(conn, fake, "raw_customers")
        assert conn.fetch_all("SELECT * FROM raw_customers ORDER BY id") == before
        for name in ("Raw", "crm.customers", "1st"):
            with pytest.raises(SeedError, match="lower-case"):
                seed_file(conn, good, name)


def test_a_parquet_file_keeps_its_types(warehouse, tmp_path):
    file = tmp_path / "orders.parquet"
    pq.write_table(pa.table({"order_id": pa.array([1, 2], pa.int32()), "amount": pa.array([1.5, None]),
                             "code": ["007", "042"]}), file)
    with warehouse.connect() as conn:
        report = seed_file(conn, file, "raw_orders")
        assert report.columns == [("order_id", "INTEGER"), ("amount", "DOUBLE"), ("code", "VARCHAR")]
        assert conn.fetch_all("SELECT order_id, amount, code FROM raw_orders ORDER BY 1") == [(1, 1.5, "007"),
                                                                                          (2, None, "042")]


def test_parquet_types_postgresql_lacks_are_widened(tmp_path, postgres_url):
    """pandas writes int8 columns and nanosecond timestamps; PostgreSQL gets SMALLINT and TIMESTAMP (microseconds)."""
    import datetime as dt

    file = tmp_path / "events.parquet"
    at = dt.datetime(2026, 3, 4, 5, 6, 7, 123456)
    pq.write_table(pa.table({"level": pa.array([3], pa.int8()), "at": pa.array([at], pa.timestamp("ns")),
                             "big": pa.array([2**63 + 5], pa.uint64())}), file)
    with Warehouse(url=postgres_url).connect() as conn:
        report = seed_file(conn, file, "raw_events")
        assert report.columns == [("level", "SMALLINT"), ("at", "TIMESTAMP"), ("big", "DECIMAL(20,0)")]
        assert conn.fetch_all("SELECT level, at, big FROM raw_events") == [(3, at, 2**63 + 5)]


def test_nested_parquet_columns_load_only_into_duckdb(tmp_path, postgres_url):
    file = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"id": [1], "tags": [["a", "b"]]}), file)
    with Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        assert seed_file(conn, file, "nested").rows == 1
    with Warehouse(url=postgres_url).connect() as conn:
        with pytest.raises(SeedError, match=r"tags VARCHAR\[\]"):
            seed_file(conn, file, "nested")
        assert not conn.table_exists(None, "nested")


# A project with two models in a chain over one source table: raw_people -> people -> vips.
PEOPLE = "-- People.\nSELECT id, email, score FROM raw_people\n"
VIPS = "-- People who scored over 10.\nSELECT id, email FROM people WHERE score > 10\n"


@pytest.fixture
def chain(small, tmp_path, monkeypatch):
    (small.settings.project_dir / "models" / "people_model.sql").unlink()
    (small.settings.project_dir / "audiences" / "high.yaml").unlink()
    small.write("models/people.sql", PEOPLE)
    small.write("models/vips.sql", VIPS)
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return small


def people_csv(path: Path, scores: dict[int, int]) -> Path:
    return write(path, "id,email,score\n" + "".join(f"{i},p{i}@example.com,{s}\n" for i, s in scores.items()))


def test_the_seed_and_build_models_jobs(chain, tmp_path):
    defs = load_definitions(chain.settings)
    seed = defs.resolve_job_def("seed")
    config = {"file": str(people_csv(tmp_path / "people.csv", {1: 5, 2: 20, 3: 30})), "table": "raw_people"}
    result = seed.execute_in_process(run_config={"ops": {"seed_table": {"config": config}}}, instance=chain.instance)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == source_key("raw_people")
    assert event.materialization.metadata["rows_loaded"].value == 3

    build = defs.resolve_job_def(BUILD_JOB)
    assert build.asset_layer.selected_asset_keys == {model_key("people"), model_key("vips")}
    built = build.execute_in_process(instance=chain.instance)
    assert built.success
    assert chain.query("SELECT id FROM vips ORDER BY id") == [(2,), (3,)]

    # A bad file fails the run with the file and line; a model's table is refused; the source stays as it was.
    ragged = write(tmp_path / "ragged.csv", RAGGED)
    for config, expected in (({"file": str(ragged), "table": "raw_people"}, "line 4"),
                             ({"file": str(tmp_path / "people.csv"), "table": "vips"}, "is a model")):
        failed = seed.execute_in_process(run_config={"ops": {"seed_table": {"config": config}}},
                                         instance=chain.instance, raise_on_error=False)
        assert not failed.success
        (failure,) = failed.get_step_failure_events()
        assert expected in failure.step_failure_data.error.message
    assert chain.query("SELECT count(*) FROM raw_people") == [(3,)]


def built_models(output: str) -> dict[str, tuple[str, str]]:
    """The build summary: model -> (rows, refresh)."""
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in output.splitlines() if line.startswith("│")]
    return {model: (count, refresh) for model, count, refresh in rows}


# A Python model beside the SQL ones: `build` takes every asset of the models group, whatever kind.
TOP = '''"""The person with the highest score."""

import pandas as pd


def model(people: pd.DataFrame) -> pd.DataFrame:
    return people.nlargest(1, "score")
'''


def test_build_and_its_select(chain, tmp_path):
    chain.write("models/top.py", TOP)
    runner = CliRunner()
    seeded = runner.invoke(cli, ["seed", str(people_csv(tmp_path / "people.csv", {1: 5, 2: 20})), "--table",
                                 "raw_people"], catch_exceptions=False)
    assert seeded.exit_code == 0, seeded.output
    assert "loaded 2 rows" in seeded.output and "raw_people" in seeded.output

    every = runner.invoke(cli, ["build"], catch_exceptions=False)
    assert every.exit_code == 0, every.output
    assert built_models(every.output) == {"people": ("2", "full"), "top": ("1", "full"), "vips": ("1", "full")}
    assert "3 model(s) built, 0 unchanged" in every.output
    assert chain.query("SELECT id FROM top") == [(2,)]

    # The selected model alone: vips is rebuilt from the people table as it is, even though raw_people changed.
    runner.invoke(cli, ["seed", str(people_csv(tmp_path / "people.csv", {1: 50, 2: 20, 3: 30})), "--table",
                        "raw_people"], catch_exceptions=False)
    alone = runner.invoke(cli, ["build", "--select", "vips"], catch_exceptions=False)
    assert alone.exit_code == 0, alone.output
    assert list(built_models(alone.output)) == ["vips"]
    assert chain.query("SELECT id FROM vips ORDER BY id") == [(2,)]
    # +vips: what it reads first.
    upstream = runner.invoke(cli, ["build", "--select", "+vips"], catch_exceptions=False)
    assert built_models(upstream.output) == {"people": ("3", "full"), "vips": ("3", "full")}
    # people+: what reads it too; nothing changed since, so the SQL models are kept (a Python model always runs).
    downstream = runner.invoke(cli, ["build", "--select", "people+"], catch_exceptions=False)
    assert set(built_models(downstream.output)) == {"people", "top", "vips"}
    assert "1 model(s) built, 2 unchanged" in downstream.output
    assert chain.query("SELECT id FROM top") == [(1,)]

    unknown = runner.invoke(cli, ["build", "--select", "nope"])
    assert unknown.exit_code == 1 and "no model 'nope'" in unknown.output and "people, top, vips" in unknown.output
    chain.write("models/broken.sql", "SELECT no_such_column FROM raw_people\n")
    broken = runner.invoke(cli, ["build"])
    assert broken.exit_code == 1
    assert "model/broken" in broken.output and "no_such_column" in broken.output
    assert "1 model(s) built, 2 unchanged, 1 failed" in broken.output

    refused = runner.invoke(cli, ["seed", str(tmp_path / "people.csv"), "--table", "vips"])
    assert refused.exit_code == 1 and "is a model" in refused.output


def readme_csv_block() -> str:
    """The bash block under README.md's "From a CSV file" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("#### From a CSV file", 1)[1]
    match = re.search(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_csv_path_runs_as_written(tmp_path):
    block = readme_csv_block()
    assert block in (ROOT / "docs" / "getting-started.md").read_text()  # the docs show the same block
    # The first line activates the repository's virtualenv; here its bin folder is on PATH instead.
    activate, script = block.split("\n", 1)
    assert activate == ". .venv/bin/activate"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "BRAZE_", "ITERABLE_"))}
    env.pop("DAGSTER_HOME", None)
    env.pop("FORCE_COLOR", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Each command's output follows its own trace line, so the output can be told apart per command (set in the
    # script: bash ignores PS4 from the environment when run as root).
    traced = f"PS4='@@ '\nset -e -x\n{script}"
    result = subprocess.run(["bash", "-c", traced], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=240)
    assert result.returncode == 0, result.stdout
    steps = {}
    for chunk in result.stdout.split("@@ ")[1:]:
        command, _, output = chunk.partition("\n")
        steps[command] = output
    assert "loaded 6 rows from customers.csv into table raw_customers" in steps["composable seed customers.csv --table raw_customers"]
    assert built_models(steps["composable build"]) == {"customers": ("6", "full")}
    synced = steps["composable sync high_value_customers"]
    assert re.search(r"│ high_value_customers │ outbox\s+│\s+3 │\s+0 │\s+0 │\s+0 │", synced), synced
    assert "Traceback" not in result.stdout
    # The outbox got the three customers of the file who spent 500 or more, with the file's names.
    outbox = tmp_path / "my_shop" / "data" / "outbox" / "outbox" / "high_value_customers"
    sent = [json.loads(line) for f in outbox.glob("*/*.jsonl") for line in f.read_text().splitlines()]
    assert sorted((s["identifier"]["external_id"], s["fields"]["first_name"]) for s in sent) == [
        ("1", "Ada"), ("2", "Grace"), ("4", "Edsger")]


def test_composable_seed_reads_a_tab_separated_file(chain, tmp_path, monkeypatch):
    # With DAGSTER_HOME set, the seed is a run of the `seed` job in that instance, shown in the UI.
    home = write(tmp_path / "dagster_home" / "dagster.yaml", "").parent
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    file = write(tmp_path / "people.csv", "id\temail\tscore\n1\tp1@example.com\t3\n")
    seeded = CliRunner().invoke(cli, ["seed", str(file), "--table", "raw_people", "--delimiter", "\\t"],
                                catch_exceptions=False)
    assert seeded.exit_code == 0, seeded.output
    assert chain.query("SELECT id, email, score FROM raw_people") == [(1, "p1@example.com", 3)]
    as_text = CliRunner().invoke(cli, ["seed", str(file), "--table", "raw_people", "--delimiter", "tab", "--text", "id",
                                       "--text", "score"], catch_exceptions=False)
    assert as_text.exit_code == 0, as_text.output
    assert "id varchar, email varchar, score varchar" in as_text.output
    assert chain.query("SELECT id, score FROM raw_people") == [("1", "3")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [(r.job_name, r.is_success) for r in runs] == [("seed", True), ("seed", True)]
        latest = instance.get_latest_materialization_event(source_key("raw_people"))
        assert latest is not None and latest.run_id == runs[0].run_id
        assert latest.asset_materialization.metadata["rows_loaded"].value == 1


def test_a_replace_the_warehouse_refuses_halfway_gives_the_old_table_back(tmp_path, postgres_url):
    """On PostgreSQL the table is dropped, created and filled in one transaction: a row refused at the end undoes it."""
    file = tmp_path / "names.parquet"
    # DuckDB reads a NUL character in a string; PostgreSQL takes none, so the insert fails after the DROP and CREATE.
    pq.write_table(pa.table({"id": [1, 2], "name": ["ok", "bad\x00byte"]}), file)
    with Warehouse(url=postgres_url).connect() as conn:
        conn.execute("CREATE TABLE names (id BIGINT, name VARCHAR)")
        conn.execute("INSERT INTO names VALUES (7, 'kept')")
        with pytest.raises(SeedError, match="names.parquet: the warehouse refused the rows"):
            seed_file(conn, file, "names")
        assert conn.fetch_all("SELECT id, name FROM names") == [(7, "kept")]


def test_column_types_fit_every_row_not_only_a_sample(tmp_path):
    """DuckDB's sniffer samples 20,480 rows by default; a text value after them would fail a column typed BIGINT."""
    file = tmp_path / "late.csv"
    file.write_text("id,code\n" + "".join(f"{i},{i}\n" for i in range(1, 30_001)) + "30001,x\n")
    with Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        report = seed_file(conn, file, "codes")
        assert (report.rows, report.columns) == (30_001, [("id", "BIGINT"), ("code", "VARCHAR")])


def test_json_lines_and_upper_case_suffixes_and_what_is_refused(tmp_path):
    with Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        lines = write(tmp_path / "events.jsonl", '{"id": 1, "kind": "open"}\n{"id": 2, "kind": "click"}\n')
        assert seed_file(conn, lines, "raw_events").rows == 2
        shouted = write(tmp_path / "EXPORT.CSV", "id,kind\n3,open\n")
        assert seed_file(conn, shouted, "raw_events", append=True).appended
        assert conn.fetch_all("SELECT id, kind FROM raw_events ORDER BY id") == [(1, "open"), (2, "click"), (3, "open")]
        with pytest.raises(SeedError, match=r"book.xlsx: expected a \.csv, \.parquet or \.jsonl file"):
            seed_file(conn, write(tmp_path / "book.xlsx", "x"), "raw_events")
        with pytest.raises(SeedError, match="missing.csv: no such file"):
            seed_file(conn, tmp_path / "missing.csv", "raw_events")


def test_seed_is_refused_by_name_where_ddl_commits_on_its_own(tmp_path, snowflake_url):
    file = write(tmp_path / "customers.csv", CUSTOMERS)
    with Warehouse(url=snowflake_url).connect() as conn:
        with pytest.raises(SeedError, match=r"runs on DuckDB, PostgreSQL and Redshift; this warehouse \(snowflake\)"):
            seed_file(conn, file, "raw_customers")
        assert not conn.table_exists(None, "raw_customers")


def test_build_runs_the_landing_loads_its_models_read_first(chain):
    """Files waiting in a landing folder are loaded before the models over that table, as `composable sync` does."""
    from composable_assets.cli.build import _model_keys, _selection
    from composable_assets.project import load_project

    chain.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\nlanding:\n  raw_people: {}\n')
    defs = load_definitions(chain.settings)
    project = load_project(chain.settings.project_dir)
    landed, people, vips = source_key("raw_people"), model_key("people"), model_key("vips")
    assert defs.resolve_job_def(BUILD_JOB).asset_layer.selected_asset_keys == {landed, people, vips}
    graph = defs.resolve_asset_graph()
    models = _model_keys(defs)
    assert set(models) == {"people", "vips"}
    for selected, expected in ((("vips",), {vips}), (("+vips",), {landed, people, vips}), (("people+",), {people, vips}),
                               (("vips", "+people"), {landed, people, vips})):
        assert _selection(project, selected, models).resolve(graph) == expected, selected


def test_text_columns_stay_text(warehouse, tmp_path):
    """Codes that look like numbers (a CRM id joined to a text key) stay text when named; leading zeros always do."""
    file = write(tmp_path / "shops.csv", "shop_id,crm_id,zip\n1,12345,00501\n2,67890,02134\n")
    with warehouse.connect() as conn:
        inferred = seed_file(conn, file, "raw_shops")
        assert inferred.columns == [("shop_id", "BIGINT"), ("crm_id", "BIGINT"), ("zip", "VARCHAR")]
        kept = seed_file(conn, file, "raw_shops", text=["crm_id"])
        assert kept.columns == [("shop_id", "BIGINT"), ("crm_id", "VARCHAR"), ("zip", "VARCHAR")]
        assert conn.fetch_all("SELECT crm_id, zip FROM raw_shops ORDER BY shop_id") == [("12345", "00501"),
                                                                                        ("67890", "02134")]
        with pytest.raises(SeedError, match="shops.csv: .*no_such"):
            seed_file(conn, file, "raw_shops", text=["no_such"])
        assert conn.fetch_all("SELECT crm_id FROM raw_shops ORDER BY shop_id") == [("12345",), ("67890",)]

"""`composable sync` with nothing to do launches no Dagster run; anything that would make the run do work launches it.

Each case changes one thing after a first sync of 2026-03-02 and checks both sides: the quiet check's verdict (the
Dagster instance's runs, the command's output) and what the destination received.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.cli.quiet_check import check_sync

from .conftest import Recording, modules_imported_by

DAY = "2026-03-02"
QUIET = "no run launched"


@pytest.fixture
def run_cli(small, monkeypatch, tmp_path):
    """`composable ...` in this process, on the small project, with a DAGSTER_HOME that keeps its runs."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def runs() -> list[str]:
    """The run ids the instance holds, newest first."""
    with dg.DagsterInstance.get() as instance:
        return [r.run_id for r in instance.get_runs()]


def received() -> dict[str, int]:
    return {name: len(rows) for name, rows in Recording.received.items()}


def synced(run_cli, *extra: str):
    """A sync of the day that must launch its run and succeed."""
    before = len(runs())
    result = run_cli("sync", "high", "--date", DAY, *extra)
    assert result.exit_code == 0, result.output
    assert QUIET not in result.output
    assert len(runs()) == before + 1
    return result


def quiet(run_cli, *extra: str):
    """A sync that must launch no run and say so."""
    before = runs()
    result = run_cli("sync", "high", "--date", DAY, *extra)
    assert result.exit_code == 0, result.output
    assert QUIET in result.output, result.output
    assert runs() == before
    return result


def test_a_quiet_re_run_launches_no_run_and_changes_nothing(run_cli, small):
    synced(run_cli)
    first = runs()[0]
    delivered = received()
    ledger = small.ledger("rec_mirror"), small.ledger("rec_upsert")
    sync_runs = small.query("SELECT count(*) FROM composable.sync_runs")
    result = quiet(run_cli)
    assert f"high -> rec_mirror, rec_upsert: nothing changed since sync run {first} of {DAY}" in result.output
    assert "sync high" not in result.output  # no run summary
    assert received() == delivered
    assert (small.ledger("rec_mirror"), small.ledger("rec_upsert")) == ledger
    assert small.query("SELECT count(*) FROM composable.sync_runs") == sync_runs
    # One destination alone is checked alone.
    assert "high -> rec_upsert: nothing changed" in quiet(run_cli, "--destination", "rec_upsert").output


def test_a_source_row_changed_in_place_launches_the_run(run_cli, small):
    synced(run_cli)
    small.query("UPDATE people SET name = 'renamed' WHERE id = 15")
    synced(run_cli)
    assert [r.fields["name"] for r in Recording.received["rec_upsert"][-1:]] == ["renamed"]
    quiet(run_cli)


def test_a_changed_audience_definition_launches_the_run(run_cli, small):
    synced(run_cli)
    audience = small.settings.project_dir / "audiences/high.yaml"
    audience.write_text(audience.read_text().replace("where: score > 10", "where: score > 15"))
    synced(run_cli)
    assert set(small.ledger("rec_mirror")) == {str(i) for i in range(16, 21)}
    quiet(run_cli)


def test_a_rejected_row_pending_launches_the_run_that_retries_it(run_cli, small):
    Recording.reject["rec_mirror"] = {"13"}
    assert run_cli("sync", "high", "--date", DAY).exit_code == 1  # one rejected row
    assert "13" not in small.ledger("rec_mirror")
    Recording.reject.clear()
    synced(run_cli)
    assert [r.identifier for r in Recording.received["rec_mirror"][-1:]] == ["13"]
    assert "13" in small.ledger("rec_mirror")
    quiet(run_cli)


def test_an_in_flight_window_launches_the_run(run_cli, small):
    synced(run_cli)
    # What a sync killed mid-batch leaves: rows that may or may not have arrived.
    small.query(
        "INSERT INTO composable.sync_inflight SELECT 'high', 'rec_mirror', 'killed', min(_seq), max(_seq), now() "
        'FROM composable."delta__high__rec_mirror"'
    )
    synced(run_cli)
    assert small.query("SELECT count(*) FROM composable.sync_inflight") == [(0,)]
    quiet(run_cli)


def test_an_unfolded_acknowledgement_launches_the_run(run_cli, small):
    synced(run_cli)
    # Acknowledged rows checkpointed but not folded into the ledger (a run killed between the two).
    small.query("UPDATE composable.sync_acks SET folded = false WHERE destination = 'rec_upsert'")
    synced(run_cli)
    assert len(small.ledger("rec_upsert")) == 10
    assert small.query("SELECT count(*) FROM composable.sync_acks WHERE NOT folded") == [(0,)]
    quiet(run_cli)


def test_a_new_day_gets_its_run_then_is_quiet(run_cli, small):
    synced(run_cli)
    result = run_cli("sync", "high", "--date", "2026-03-03")
    assert result.exit_code == 0 and QUIET not in result.output
    assert small.query(
        "SELECT count(*) FROM composable.sync_runs WHERE partition_date = DATE '2026-03-03' AND status = 'succeeded'"
    ) == [(2,)]
    assert QUIET in run_cli("sync", "high", "--date", "2026-03-03").output


def test_run_anyway_launches_the_run(run_cli, small):
    synced(run_cli)
    delivered = received()
    synced(run_cli, "--run-anyway")
    assert received() == delivered  # the run found nothing to send


def test_a_model_reading_the_clock_is_never_quiet(run_cli, small):
    small.write(
        "models/people_model.sql",
        "SELECT id, email, name, score FROM people WHERE current_timestamp - INTERVAL 48 HOUR < TIMESTAMP '2999-01-01'\n",
    )
    synced(run_cli)
    synced(run_cli)


def test_the_check_says_why_with_debug(run_cli, small):
    synced(run_cli)
    small.query("UPDATE people SET name = 'renamed' WHERE id = 15")
    result = run_cli("--debug", "sync", "high", "--date", DAY)
    assert result.exit_code == 0, result.output
    assert "quiet check: a run is needed: model:people_model would compute" in result.output


_QUIET_CHECK = textwrap.dedent(
    """\
    import sys
    from composable_assets.cli.quiet_check import check_sync
    verdict = check_sync(sys.argv[1], None, lambda project: sys.argv[2])
    assert verdict.quiet, verdict.why
    print(','.join(m for m in sys.argv[4:] if m in sys.modules))
    """
)


def test_the_quiet_check_decides_without_importing_dagster(run_cli, small):
    # The recording destination type is registered in this process only: an outbox for the fresh process.
    small.write("destinations.yaml", "rec_mirror: {type: outbox}\nrec_upsert: {type: outbox}\n")
    synced(run_cli)
    env = dict(os.environ)
    modules = ["dagster", "dagster_duckdb", "composable_assets.cli.quiet_check"]
    assert modules_imported_by(_QUIET_CHECK, ["high", DAY, "-"], modules, env) == ["composable_assets.cli.quiet_check"]
    quiet(run_cli)


def test_the_default_freshness_policies_are_valid():
    from composable_assets.project.freshness import DEFAULT_FRESHNESS, FreshnessSpec

    for policy in DEFAULT_FRESHNESS.values():
        assert FreshnessSpec.model_validate(policy.model_dump()) == policy


_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_warehouse_held_by_another_process_is_not_waited_for_twice(run_cli, small):
    synced(run_cli)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(small.db), "6"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        verdict = check_sync("high", None, lambda project: DAY)
        # The check peeks and gives up; the run that follows waits for the file as it always has.
        assert not verdict.quiet and "WarehouseBusy" in verdict.why
        assert time.monotonic() - started < 4
    finally:
        holder.wait()
    assert check_sync("high", None, lambda project: DAY).quiet

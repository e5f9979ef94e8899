"""The `composable` command as a user meets it: validate, sync, preview, and its errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from composable_assets.cli import cli

from .conftest import Recording


@pytest.fixture
def run_cli(small, monkeypatch):
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(small.settings.project_dir))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", small.settings.warehouse_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(small.settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_validate_summarizes_a_good_project(run_cli):
    result = run_cli("validate")
    assert result.exit_code == 0, result.output
    assert "1 models, 1 audiences, 2 syncs, 3 destinations" in result.output
    assert "sources: people" in result.output


def test_validate_names_file_and_line_of_each_problem(run_cli, small):
    original = (small.settings.project_dir / "audiences/high.yaml").read_text()
    small.write("audiences/high.yaml", original.replace("model: people_model", "model: no_such_model"))
    small.write("audiences/other.yaml", original.replace("cadence: daily", "cadence: daily\ncolour: blue"))
    result = run_cli("validate")
    assert result.exit_code == 1
    assert "audiences/high.yaml:3:" in result.output and "no_such_model" in result.output
    assert "audiences/other.yaml:7: unknown field `colour`" in result.output


def test_sync_prints_a_summary_and_exits_zero(run_cli):
    result = run_cli("sync", "high", "--date", "2026-03-02")
    assert result.exit_code == 0, result.output
    assert "sync high (2026-03-02)" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│") and "rec_mirror" in line)
    assert row.split("│")[3].strip() == "10"  # added
    assert len(Recording.received["rec_mirror"]) == 10


def test_sync_exits_non_zero_when_rows_are_rejected(run_cli):
    Recording.reject["rec_upsert"] = {"p12@example.com"}
    result = run_cli("sync", "high", "--destination", "rec_upsert", "--date", "2026-03-02")
    assert result.exit_code == 1
    assert "1 row(s) were rejected" in result.output


def test_sync_of_an_unknown_audience_lists_the_known_ones(run_cli):
    result = run_cli("sync", "nope")
    assert result.exit_code == 1
    assert "no audience 'nope'; the project has: high" in result.output


def test_bad_date_is_a_clear_error(run_cli):
    result = run_cli("sync", "high", "--date", "03/02/2026")
    assert result.exit_code == 1 and "is not a date like 2026-01-31" in result.output


def test_preview_sends_nothing_and_leaves_the_ledger(run_cli, small):
    result = run_cli("preview", "high", "--destination", "rec_mirror", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "10 to add, 0 to update, 0 to remove (audience of 10); nothing was sent" in result.output
    assert '"external_id": "11"' in result.output and '"external_id": "12"' in result.output
    assert Recording.received == {}
    assert small.query('SELECT count(*) FROM composable."ledger__high__rec_mirror"') == [(0,)]
    # After a real sync the preview shows nothing left to do.
    run_cli("sync", "high", "--date", "2026-03-02")
    assert "0 to add, 0 to update, 0 to remove" in run_cli("preview", "high", "--destination", "rec_mirror").output


def test_installed_command_prints_one_paragraph_not_a_traceback(small, tmp_path):
    (small.settings.project_dir / "audiences/high.yaml").write_text("model: [unclosed\n")
    env = {**os.environ, "COMPOSABLE_PROJECT_DIR": str(small.settings.project_dir)}
    command = [os.path.join(os.path.dirname(sys.executable), "composable"), "validate"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "audiences/high.yaml:2: invalid YAML" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_demo_seeds_syncs_and_delivers_over_http_to_local_stand_ins(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    for name in ("COMPOSABLE_WAREHOUSE", "COMPOSABLE_PROJECT_DIR", "DAGSTER_HOME", "BRAZE_REST_ENDPOINT", "ITERABLE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["demo", "--customers", "300"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {
        tuple(cell.strip() for cell in line.split("│")[1:3]): [cell.strip() for cell in line.split("│")[3:9]]
        for line in result.output.split("after a day of changes")[0].splitlines()
        if line.startswith("│")
    }
    assert set(rows) == {
        ("cart_abandoners", "outbox"), ("lapsed_customers", "outbox"), ("vip_customers", "braze"),
        ("vip_customers", "outbox"), ("weekly_newsletter", "iterable"), ("weekly_newsletter", "outbox"),
        ("purchases", "braze"), ("purchases", "iterable"), ("purchases", "outbox"),  # the event stream's table
    }
    assert rows[("weekly_newsletter", "outbox")][0] == "300"  # everyone with an email, first sync
    # Iterable needs email_marketing consent, which the sample grants to about 80% of customers.
    assert 200 < int(rows[("weekly_newsletter", "iterable")][0]) < 280
    assert rows[("vip_customers", "braze")][0] == rows[("vip_customers", "outbox")][0]
    assert "braze stand-in received" in result.output and "iterable stand-in received" in result.output
    assert list((tmp_path / "data" / "outbox" / "outbox").glob("*/*/*.jsonl"))
    assert "BRAZE_REST_ENDPOINT" not in os.environ  # the stand-ins' settings do not outlive the demo


def test_ui_serves_the_asset_graph_and_stops_on_sigterm(small, tmp_path):
    """`composable ui` (what `make ui` runs): a real dagster dev on 127.0.0.1, stopped cleanly by its pid."""
    import json
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "dagster_home"
    home.mkdir()
    # A separate process knows only the built-in destination types.
    small.write("destinations.yaml", "rec_mirror: {type: outbox}\nrec_upsert: {type: outbox}\nbox: {type: outbox}\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "COMPOSABLE_PROJECT_DIR": str(small.settings.project_dir),
        "COMPOSABLE_WAREHOUSE": small.settings.warehouse_url,
        "COMPOSABLE_DATA_DIR": str(small.settings.data_dir),
    }
    command = [os.path.join(os.path.dirname(sys.executable), "composable"), "ui", "--port", str(port)]
    ui = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert ui.poll() is None, "the UI exited on its own"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the UI did not come up"
                time.sleep(0.5)
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", query, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            keys = {"/".join(n["assetKey"]["path"]) for n in json.load(response)["data"]["assetNodes"]}
        assert {"source/people", "model/people_model", "audience/high", "delta/high/rec_mirror", "sync/high/rec_mirror"} <= keys
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
    # dagster dev and its webserver, daemon and code servers are gone with it.
    leftovers = subprocess.run(["pgrep", "-f", f"-p {port}|--port {port}"], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""


def test_mirror_to_a_destination_that_cannot_remove_is_refused_before_anything_runs(run_cli, small):
    small.write("destinations.yaml", "rec_mirror: {type: recording, upsert_only: true}\nrec_upsert: {type: recording}\n")
    result = run_cli("validate")
    assert result.exit_code == 1
    assert "audiences/high.yaml" in result.output
    assert "destination `rec_mirror` (recording) cannot remove members; use mode: upsert" in result.output


def test_sync_shows_warnings_and_errors_of_its_assets_but_not_dagster_s_log(run_cli, small):
    """Dagster's per-event lines stay in the instance; what an asset warns about reaches the terminal."""
    small.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\nlanding:\n  people: {}\n')
    landing = small.settings.data_dir / "landing" / "people"
    landing.mkdir(parents=True)
    (landing / "0001.jsonl").write_text('{"id": 99, "email": "p99@example.com", "name": "n", "score": 50}\n')
    (landing / "0002.jsonl").write_text("this is not JSON\n")
    result = run_cli("sync", "high", "--destination", "rec_mirror", "--date", "2026-03-02")
    assert result.exit_code == 0, result.output
    refused = [line for line in result.output.splitlines() if "landing file refused" in line]
    assert len(refused) == 1 and refused[0].startswith("error (load_landing): landing file refused, moved to")
    assert "0002.jsonl" in refused[0]
    # The warehouse's own words may quote the file's rows: they stay beside the file (payload_samples is off).
    assert "the reason (it may quote the file's rows) is in 0002.jsonl.error.txt" in refused[0]
    assert " - dagster - " not in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│") and "rec_mirror" in line)
    assert row.split("│")[3].strip() == "11"  # ids 11..20, and 99 from the file that loaded

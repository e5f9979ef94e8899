"""What a user reads in the terminal: `composable init` and its first syncs, progress of a long sync, errors.

Every command runs as the installed `composable` entry point in a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.scaffold import create_project

AUDIENCE = "high_value_customers"
COMPOSABLE = os.path.join(os.path.dirname(sys.executable), "composable")
# Dagster's per-event console lines ("2026-... - dagster - INFO - ...") must stay in the instance's log.
DAGSTER_LINE = re.compile(r" - dagster - (DEBUG|INFO) - ")


def environment(project: Path, data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "BRAZE_", "ITERABLE_"))}
    env.pop("DAGSTER_HOME", None)
    env.pop("FORCE_COLOR", None)
    return {**env, "COMPOSABLE_PROJECT_DIR": str(project), "COMPOSABLE_DATA_DIR": str(data), **extra}


def composable(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COMPOSABLE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def summary_rows(output: str) -> dict[tuple[str, str], dict[str, str]]:
    """The sync summary table: (audience, destination) -> column -> cell."""
    lines = [line for line in output.splitlines() if line.startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    rows = {}
    for line in lines[1:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("│").split("│"))))
        rows[(cells["audience"], cells["destination"])] = cells
    return rows


def counts(output: str, destination: str = "outbox") -> tuple[int, ...]:
    row = summary_rows(output)[(AUDIENCE, destination)]
    return tuple(int(row[c]) for c in ("added", "updated", "removed", "rejected"))


def outbox_lines(data: Path) -> list[dict]:
    """Every line the outbox received for the audience, oldest file (one per run) first."""
    files = sorted((data / "outbox" / "outbox" / AUDIENCE).glob("*/*.jsonl"), key=lambda f: f.stat().st_mtime_ns)
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


@pytest.fixture
def scaffolded(tmp_path: Path):
    """`composable init shop` in a temporary folder: (project folder, data folder, environment)."""
    result = subprocess.run([COMPOSABLE, "init", "shop"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=environment(tmp_path / "unused", tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    project = tmp_path / "shop"
    assert f"created a project in {project}" in result.stdout
    assert "composable sync high_value_customers" in result.stdout  # what to do next
    return project, tmp_path / "data", environment(project, tmp_path / "data")


def test_init_creates_a_project_that_validates_and_syncs_at_once(scaffolded, tmp_path):
    project, data, env = scaffolded
    written = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert written == {"project.yaml", "models/customers.sql", f"audiences/{AUDIENCE}.yaml", "destinations.yaml",
                       "README.md", ".gitignore", "pyproject.toml", "composable_project/__init__.py",
                       "composable_project/definitions.py"}
    assert "{env: BRAZE_API_KEY}" in (project / "destinations.yaml").read_text()
    assert "export COMPOSABLE_PROJECT_DIR" in (project / "README.md").read_text()

    validated = composable("validate", env=env, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "1 models, 1 audiences, 1 syncs, 3 destinations" in validated.stdout
    # Braze and Iterable are declared with unset variables, but nothing syncs there yet: no warning, no error.
    assert validated.stderr == ""

    first = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"sync {AUDIENCE} (" in first.stdout
    assert counts(first.stdout) == (5, 0, 0, 0)  # the five customers who spent 500 or more
    assert first.stderr == ""
    for output in (first.stdout, validated.stdout):
        assert "Traceback" not in output and not DAGSTER_LINE.search(output)
    assert sorted(int(line["identifier"]["external_id"]) for line in outbox_lines(data)) == [1, 2, 4, 6, 7]
    assert (data / "warehouse.duckdb").exists()

    again = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{AUDIENCE} -> outbox: nothing changed since sync run" in again.stdout and "no run launched" in again.stdout
    assert len(outbox_lines(data)) == 5  # nothing new was sent
    anyway = composable("sync", AUDIENCE, "--run-anyway", env=env, cwd=tmp_path)
    assert anyway.returncode == 0, anyway.stderr
    assert counts(anyway.stdout) == (0, 0, 0, 0)
    assert len(outbox_lines(data)) == 5

    # Edit the example rows as the README suggests: one customer changes, one no longer qualifies.
    model = project / "models" / "customers.sql"
    text = model.read_text()
    model.write_text(text.replace("'Ada', 'GB', 1250.00", "'Ada L.', 'GB', 1250.00")
                     .replace("'Grace', 'US', 830.50", "'Grace', 'US', 83.05"))
    changed = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert counts(changed.stdout) == (0, 1, 1, 0)  # a mirror: Ada updated, Grace removed
    latest = {(line["change"], line["identifier"]["external_id"]): line for line in outbox_lines(data)[5:]}
    assert set(latest) == {("update", "1"), ("remove", "2")}
    assert latest[("update", "1")]["fields"]["first_name"] == "Ada L."


def test_init_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me\n")
    env = environment(tmp_path / "unused", tmp_path / "data")
    refused = composable("init", "notes", env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "error: notes is not empty" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["todo.txt"]

    forced = composable("init", "notes", "--force", env=env, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (folder / "todo.txt").read_text() == "keep me\n" and (folder / "project.yaml").exists()


def test_the_scaffold_runs_on_postgresql_too(tmp_path, postgres_url, monkeypatch):
    """The example model's inline rows are plain SQL: moving the warehouse needs no change to the project."""
    create_project(tmp_path / "shop")
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(tmp_path / "shop"))
    monkeypatch.setenv("COMPOSABLE_WAREHOUSE", postgres_url)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(cli, ["sync", AUDIENCE], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert counts(result.output) == (5, 0, 0, 0)
    again = CliRunner().invoke(cli, ["sync", AUDIENCE], catch_exceptions=False)
    assert counts(again.output) == (0, 0, 0, 0)


# A sync long enough to be shown while it runs (well over the second before the first progress line): thousands of
# rows to the outbox, one at a time. Three at a time took about a second once intent windows grew to 8 batches a slot.
LONG_ROWS = 6000


def long_sync_project(root: Path) -> Path:
    create_project(root)
    (root / "models" / "customers.sql").write_text(
        "-- Many customers.\n"
        "SELECT range AS customer_id, 'c' || range || '@example.com' AS email, 'C' AS first_name, "
        f"1000 AS lifetime_value FROM range({LONG_ROWS})\n"
    )
    (root / "destinations.yaml").write_text("outbox: {type: outbox, batch_size: 1}\n")
    return root


def test_a_long_sync_shows_progress_lines_without_a_terminal(tmp_path):
    """Piped or in CI: a line every few seconds and one at the end, with rows sent of the total and rows/s."""
    project = long_sync_project(tmp_path / "big")
    result = composable("sync", AUDIENCE, env=environment(project, tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    progress = [
        (int(sent.replace(",", "")), int(rate.replace(",", "")), float(seconds))
        for sent, rate, seconds in re.findall(
            rf"^{AUDIENCE} -> outbox: ([\d,]+) / {LONG_ROWS:,} rows sent, ([\d,]+) rows/s, ([\d.]+) s$",
            result.stdout, re.MULTILINE,
        )
    ]
    assert len(progress) >= 2, result.stdout  # the first after a second, the last when done
    assert [sent for sent, _, _ in progress] == sorted(sent for sent, _, _ in progress)
    assert 0 < progress[0][0] < LONG_ROWS and progress[-1][0] == LONG_ROWS
    assert all(rate > 0 for _, rate, _ in progress)
    assert progress[0][2] >= 1.0  # short syncs show only in the summary
    assert counts(result.stdout) == (LONG_ROWS, 0, 0, 0)
    assert result.stderr == "" and not DAGSTER_LINE.search(result.stdout)


def run_in_terminal(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, as in a user's terminal window; (exit code, everything it drew)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed with the process
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_a_long_sync_draws_a_progress_bar_in_a_terminal(tmp_path):
    project = long_sync_project(tmp_path / "big")
    env = environment(project, tmp_path / "data", TERM="xterm-256color", COLUMNS="120")
    code, drawn = run_in_terminal([COMPOSABLE, "sync", AUDIENCE], env, tmp_path)
    assert code == 0, drawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)  # what the eye sees, without colours and cursor moves
    frames = re.findall(rf"{AUDIENCE} -> outbox [━╸╺ ]+ +(\d+)/{LONG_ROWS} rows +([\d,]+) rows/s +([\d.]+) s", plain)
    assert len(frames) >= 2, plain
    sent = [int(done) for done, _, _ in frames]
    assert sent == sorted(sent) and sent[0] < LONG_ROWS and sent[-1] == LONG_ROWS
    assert len(set(sent)) >= 2  # the bar moved
    assert all(int(rate.replace(",", "")) > 0 for _, rate, _ in frames)
    # Redrawn in place (carriage return, erase line), as a terminal progress bar is, not printed line after line.
    assert "\r\x1b[2K" in drawn
    assert counts(plain) == (LONG_ROWS, 0, 0, 0)
    assert "Traceback" not in plain and not DAGSTER_LINE.search(plain)


def test_a_failed_run_is_one_paragraph_and_debug_adds_the_stack_traces(scaffolded, tmp_path):
    project, _, env = scaffolded
    model = project / "models" / "customers.sql"
    # Valid SQL that fails in the warehouse, at run time.
    model.write_text(model.read_text().replace("SELECT customer_id,", "SELECT CAST(email AS INTEGER) AS customer_id,"))
    failed = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stdout == ""  # no sync ran: no table
    paragraph = failed.stderr
    assert paragraph.startswith(
        f"error: the sync of {AUDIENCE} failed: model/customers: models/customers.sql: the model's SQL failed: "
        "Conversion Error: Could not convert string 'ada@example.com' to INT32"
    ), paragraph
    assert paragraph.count("error") == 1 and "\n\n\n" not in paragraph
    assert "Traceback" not in paragraph and "Stack Trace" not in paragraph and not DAGSTER_LINE.search(paragraph)
    assert "--debug" in paragraph

    debug = composable("--debug", "sync", AUDIENCE, env=env, cwd=tmp_path)
    assert debug.returncode == 1
    assert "Stack Trace:" in debug.stderr and 'composable_assets/assets/models.py", line' in debug.stderr
    assert DAGSTER_LINE.search(debug.stderr)  # and Dagster's whole log
    assert f"error: the sync of {AUDIENCE} failed: model/customers:" in debug.stderr


def test_a_bad_project_file_is_one_paragraph_and_debug_adds_the_traceback(scaffolded, tmp_path):
    project, _, env = scaffolded
    (project / "audiences" / f"{AUDIENCE}.yaml").write_text("model: [customers\n")
    for command in ("validate", "sync"):
        result = composable(command, *([AUDIENCE] if command == "sync" else []), env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: the project folder {project} has errors:\n"
                                        f"audiences/{AUDIENCE}.yaml:2: invalid YAML"), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    debug = composable("--debug", "validate", env=env, cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "invalid YAML" in debug.stderr


def test_a_missing_secret_fails_its_sync_alone_in_one_paragraph(scaffolded, tmp_path):
    """Once an audience syncs to Braze, its unset variables are a warning in validate and that sync's failure."""
    project, data, env = scaffolded
    audience = project / "audiences" / f"{AUDIENCE}.yaml"
    lines = audience.read_text().splitlines()
    start = lines.index("  # - destination: braze")
    lines[start:] = [line.replace("  # ", "  ", 1) for line in lines[start:]]
    audience.write_text("\n".join(lines) + "\n")

    validated = composable("validate", env=env, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert validated.stderr.strip() == (
        "warning: destination braze: environment variable BRAZE_REST_ENDPOINT is not set (a destination setting "
        "reads it); its syncs fail until it is set."
    )
    result = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: the sync of {AUDIENCE} failed: sync/{AUDIENCE}/braze: environment variable BRAZE_REST_ENDPOINT is "
        "not set (a destination setting reads it)"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert counts(result.stdout) == (5, 0, 0, 0)  # the outbox got its rows all the same
    assert len(outbox_lines(data)) == 5


def test_an_unreachable_warehouse_is_one_paragraph(scaffolded, tmp_path):
    project, _, env = scaffolded
    env = {**env, "COMPOSABLE_WAREHOUSE": "postgresql://postgres@127.0.0.1:1/nowhere"}
    result = composable("sync", AUDIENCE, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: the sync of {AUDIENCE} failed: model/customers: PostgreSQL warehouse: nothing answers at "
        "127.0.0.1:1 (host or port in COMPOSABLE_WAREHOUSE)"
    ), result.stderr
    assert "Traceback" not in result.stderr and not DAGSTER_LINE.search(result.stderr)
    unknown = composable("validate", env={**env, "COMPOSABLE_WAREHOUSE": "oracle://db/x"}, cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: COMPOSABLE_WAREHOUSE: unsupported warehouse URL scheme 'oracle'")


def test_the_templates_are_package_data():
    """An installed wheel holds every template file (pyproject's package-data globs, as setuptools reads them)."""
    import tomllib

    import composable_assets
    from composable_assets.scaffold import TEMPLATE_DIR

    package = Path(composable_assets.__file__).parent
    globs = tomllib.loads((package.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in globs["composable_assets"] for p in package.glob(pattern) if p.is_file()}
    templates = {p for p in TEMPLATE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert templates and templates <= shipped

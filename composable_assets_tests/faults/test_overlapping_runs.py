"""Overlapping syncs of one (audience, destination): two `composable sync` processes, a slow Braze, 0 rows sent twice.

Before the lease, the second run computed its delta while the first was still sending, took the first run's in-flight
rows for a killed run's leftovers, and sent them again (on PostgreSQL: 900 of 1,500 attribute objects twice).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from composable_assets_tests.fakes import BrazeFake

from ..conftest import SmallProject
from ..test_delivery_processes import API_KEY, COMPOSABLE, braze_project, cli_env
from ..test_postgres_instance import DEPLOY_YAML, pg_database  # noqa: F401  (fixture)

MEMBERS = 600


def _people_on_postgres(url: str) -> None:
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
        cur.executemany(
            "INSERT INTO people VALUES (%s, %s, %s, %s)",
            [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, MEMBERS + 1)],
        )


def _sync(project: SmallProject, fake: BrazeFake, env: dict[str, str], data: str = "data") -> subprocess.Popen:
    return subprocess.Popen(
        [COMPOSABLE, "sync", "high", "--destination", "braze", "--date", "2026-03-02"],
        env={**cli_env(project, fake, project.root / data), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_two_overlapping_syncs_of_a_pair_send_no_row_twice(tmp_path: Path, engine: str, request) -> None:
    fake = BrazeFake(api_key=API_KEY).start()
    try:
        project = braze_project(tmp_path, fake, range(1, MEMBERS + 1), batch_size=25)
        env: dict[str, str] = {}
        if engine == "postgres":
            url = request.getfixturevalue("postgres_url")
            _people_on_postgres(url)
            env["COMPOSABLE_WAREHOUSE"] = url
        fake.faults.latency_seconds = 1.0  # a slow endpoint: the first run is still sending when the second starts
        first = _sync(project, fake, env)
        deadline = time.monotonic() + 120
        while not fake.requests:  # the first run is delivering
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _sync(project, fake, env)
        assert first.poll() is None, "the second run must start while the first is sending"
        outputs = [p.communicate(timeout=180)[0] for p in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outputs
        if engine == "postgres":  # DuckDB's file lock keeps the second out of the warehouse until the first is done
            assert "waiting for sync high -> braze: run " in outputs[1], outputs[1]

        sent = Counter((p.user, p.attribute) for p in fake.data_points)
        twice = sorted(k for k, n in sent.items() if n > 1)
        assert not twice, f"{len(twice)} attribute objects sent twice, e.g. {twice[:5]}"
        assert {user for user, _ in sent} == {str(i) for i in range(1, MEMBERS + 1)}
    finally:
        fake.stop()


def test_two_syncs_on_two_machines_sharing_the_postgres_instance_send_no_row_twice(
    tmp_path: Path, postgres_url: str, pg_database: dict[str, str]
) -> None:
    """Two "machines": separate data folders and DAGSTER_HOMEs, one Dagster instance on PostgreSQL (its variables
    DAGSTER_PG_*), the `warehouse` pool raised to 2 as for a cloud warehouse. Only the instance's database is
    shared, so the lease can only have been there."""
    fake = BrazeFake(api_key=API_KEY).start()
    try:
        project = braze_project(tmp_path, fake, range(1, MEMBERS + 1), batch_size=25)
        _people_on_postgres(postgres_url)
        env = {"COMPOSABLE_WAREHOUSE": postgres_url, **pg_database}
        homes = []
        for machine in ("host_a", "host_b"):
            home = tmp_path / machine
            home.mkdir()
            (home / "dagster.yaml").write_text(DEPLOY_YAML.read_text().replace("default_limit: 1", "default_limit: 2"))
            homes.append(str(home))
        fake.faults.latency_seconds = 1.0
        first = _sync(project, fake, {**env, "DAGSTER_HOME": homes[0]}, data="data_a")
        deadline = time.monotonic() + 120
        while not fake.requests:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _sync(project, fake, {**env, "DAGSTER_HOME": homes[1]}, data="data_b")
        outputs = [p.communicate(timeout=180)[0] for p in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outputs
        assert "waiting for sync high -> braze: run " in outputs[1], outputs[1]
        assert not list(tmp_path.glob("data_*/coordination*")), "nothing may be shared through the data folders"

        sent = Counter((p.user, p.attribute) for p in fake.data_points)
        assert not sorted(k for k, n in sent.items() if n > 1)
        assert {user for user, _ in sent} == {str(i) for i in range(1, MEMBERS + 1)}
    finally:
        fake.stop()

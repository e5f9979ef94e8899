"""Killed runs never wedge the next one: SIGKILL at a random point, then a new sync on the same Dagster instance.

Before, the killed run kept its `warehouse` pool slot: every later sync waited silently at ~60% CPU, ignoring Ctrl-C,
and the killed run's sync_runs row said `started` forever.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from composable_assets_tests.fakes import BrazeFake

from ..conftest import SmallProject
from ..test_delivery_processes import API_KEY, COMPOSABLE, braze_project, cli_env

REPO = Path(__file__).parents[2]
MEMBERS = 400
# Our own lease lasts this long without renewal, far longer than the next sync takes even under load (11-14 s in a
# loaded suite), so it can only get through by seeing that the holder's process is gone, never by the lease running out.
LEASE_SECONDS = 60


def _instance_home(root: Path) -> Path:
    """A DAGSTER_HOME with the shipped local dagster.yaml: the `warehouse` pool admits one step at a time."""
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def _env(project: SmallProject, fake: BrazeFake, home: Path) -> dict[str, str]:
    return {**cli_env(project, fake, project.root / "data"), "DAGSTER_HOME": str(home),
            "COMPOSABLE_LEASE_SECONDS": str(LEASE_SECONDS)}


def _sync(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([COMPOSABLE, "sync", "high", "--date", "2026-03-02"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture
def fake():
    server = BrazeFake(api_key=API_KEY).start()
    yield server
    server.stop()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sync_killed_at_a_random_point_never_wedges_the_next(tmp_path: Path, fake: BrazeFake, seed: int) -> None:
    project = braze_project(tmp_path, fake, range(1, MEMBERS + 1), batch_size=10)
    home = _instance_home(tmp_path)
    env = _env(project, fake, home)
    fake.faults.latency_seconds = 0.3
    # At a random point of the delivery (about 6 s of sending): the killed run holds the warehouse slot and the lease.
    kill_after = random.Random(seed).uniform(0.0, 4.0)
    first = _sync(env)
    deadline = time.monotonic() + 60
    while not fake.requests:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    time.sleep(kill_after)
    assert first.poll() is None, "the first sync ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    fake.faults.latency_seconds = 0.0

    started = time.monotonic()
    second = _sync(env)
    output = second.communicate(timeout=120)[0]
    took = time.monotonic() - started
    print(f"killed {kill_after:.1f} s into the delivery; the next sync took {took:.1f} s")
    assert second.returncode == 0, output
    assert took < LEASE_SECONDS - 15, output  # start-up and sending, never a wait for the dead run's lease

    delivered = Counter((p.user, p.attribute) for p in fake.data_points)
    assert {user for user, _ in delivered} == {str(i) for i in range(1, MEMBERS + 1)}
    assert project.query("SELECT count(*) FROM composable.sync_runs WHERE status = 'started'") == [(0,)]
    statuses = dict(project.query("SELECT run_id, status FROM composable.sync_runs"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) for r in runs), [
            (r.run_id, r.status) for r in runs
        ]
        killed = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert len(killed) == 1
        info = instance.event_log_storage.get_concurrency_info("warehouse")
        assert info.claimed_slots == [] and info.pending_steps == []
    assert statuses[killed[0]] == "abandoned"
    assert "marked abandoned" in output and "its process is gone" in output, output


def test_a_run_waiting_for_the_warehouse_pool_says_so_and_obeys_ctrl_c(tmp_path: Path, fake: BrazeFake) -> None:
    project = braze_project(tmp_path, fake, range(1, MEMBERS + 1), batch_size=20)
    env = _env(project, fake, _instance_home(tmp_path))
    fake.faults.latency_seconds = 1.0  # the first run holds the warehouse slot for ~20 s while it sends
    first = _sync(env)
    try:
        deadline = time.monotonic() + 60
        while not fake.requests:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = _sync(env)
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("waiting" in line and "warehouse pool" in line for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(second.stdout.readline())
        assert "in use by run " in lines[-1] and "Ctrl-C stops this run" in lines[-1], lines
        interrupted = time.monotonic()
        os.killpg(second.pid, signal.SIGINT)
        rest = second.communicate(timeout=15)[0]
        assert time.monotonic() - interrupted < 5
        assert second.returncode == 130, rest
        assert "interrupted while waiting for the warehouse pool" in rest
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
